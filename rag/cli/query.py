"""``app.py query``: a cited answer (or an abstention) to one question, printed or as JSON."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from rag.cli import excerpt, load_config, print_json, with_index, wrap


def add(sub: Any, common: argparse.ArgumentParser) -> None:
    q = sub.add_parser("query", parents=[common], help="answer a question with cited sources")
    q.add_argument("question")
    q.add_argument("--patient", help="patient id: include that patient's records (and no other patient's)")
    q.add_argument("--top-k", type=int, help="number of sources (default: retrieval.top_k)")
    q.add_argument("--no-generate", action="store_true", help="return the evidence without the LLM")
    q.add_argument("--adapter", help="LoRA adapter folder for the generator")
    q.add_argument("--json", action="store_true", help="print the Answer as JSON")
    with_index(q)
    q.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from rag import Assistant

    cfg = load_config(args)
    assistant = Assistant(cfg, progress=not args.quiet)
    assistant.check_input(args.question, args.patient, args.top_k)  # bad input fails before a demo index is built
    assistant.ensure_index()
    stream = sys.stdout.isatty() and not args.json and not args.no_generate
    if stream:
        print("Draft (checking citations when done):\n", flush=True)
    answer = assistant.ask(args.question, patient_id=args.patient, top_k=args.top_k,
                           generate=not args.no_generate,
                           on_text=(lambda t: print(t, end="", flush=True)) if stream else None)
    if args.json:
        print_json(answer.to_dict())
        return 0
    if stream:
        print("\n")
    calibrated = bool(cfg.confidence.calibration) and cfg.confidence.calibrated_answers and answer.generated \
        and not answer.abstained
    _print_answer(answer, calibrated)
    return 0


def _shown(s: Any) -> str:
    from rag.cite import mark_cut  # rag.cite loads numpy: not at `app.py --help` time

    return mark_cut(s.text) if s.cut_off else s.text


def _print_answer(answer: Any, calibrated: bool) -> None:
    label = (f"confidence {answer.confidence:.2f} ({answer.confidence_label}"
             f"{'; estimated probability the answer is right' if calibrated else ''})")
    if answer.abstained:
        print(f"NO SUPPORTED ANSWER [{label}]: {answer.abstain_reason}")
    elif not answer.generated:
        print(f"EVIDENCE ONLY [{label}]")
    else:
        print(f"ANSWER [{label}]")
    shown = [s for s in answer.sentences if s.supported]
    attributed = not answer.abstained and any(s.attributed for s in shown)
    # Citations the support check added (the generator wrote none there) are starred: "[2*]".
    text = " ".join(re.sub(r"\[(\d+)\]", r"[\1*]", _shown(s)) if s.attributed else _shown(s) for s in shown) \
        if attributed else answer.answer
    print(wrap(text, "  "))
    if not answer.abstained and any(s.cut_off for s in shown):
        print("  … the answer was cut off at the length limit (generator.max_new_tokens): its last sentence is "
              "unfinished; read the source")
    if attributed:
        print("  * citation added by the support check: the generator gave this sentence no (or a wrong) source")
    if answer.first_try is not None and not answer.abstained:
        print("  (second try, from source [1] alone: the first answer was withheld: "
              f"{answer.first_try.abstain_reason})")
    unsupported = [s for s in answer.sentences if not s.supported]
    if unsupported and not answer.abstained:
        print(f"  ! {len(unsupported)} sentence(s) not supported by their cited source:")
        for s in unsupported:
            print(wrap(s.text, "    - "))
    if answer.removed_citations:
        print(f"  ! {answer.removed_citations} citation marker(s) pointed at no source and were removed")
    print("\nSOURCES" if not answer.abstained else "\nCLOSEST SOURCES")
    for c in answer.citations:
        who = f", patient {c.patient_id}" if c.patient_id else ""
        print(f" [{c.n}] {c.title} — {c.section}")
        print(f"     {c.kind}{who}; {c.source} chars {c.start}-{c.end}")
        print(wrap(excerpt(c.text).replace("\n", " "), "     > "))
    t = answer.timings_ms
    adapter = answer.models.get("adapter")
    lora = f" + LoRA {Path(adapter).name}" if adapter else ""
    print(f"\nindex {answer.index_version}; embedder {answer.models['embedder']}; generator "
          f"{answer.models['generator'] or '-'}{lora}; retrieval {t.get('retrieval_search', 0):.0f} ms, generation "
          f"{t.get('generation', 0):.0f} ms")
    print("Demo/decision support only: not a medical device; verify against the cited guideline.")
