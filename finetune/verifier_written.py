"""Answerability from questions an LLM writes in a clinician's words (eighteenth session, experiment "L").

On the trust split the gate stops clinicians' shorthand and vignette questions about the demo guidelines
although their gold section is retrieved first: "ADHF admission, takes furosemide 40 mg PO bd at home.
Starting IV loop dose?" scores 0.008 against the passage that answers it. Version 3's vignettes and the
index stage's detail questions (``verifier_index``) are templates; this stage has the best generator
here (Qwen2.5-Coder-1.5B-Instruct) write one question per guideline passage, in shorthand, often after a
short case, from a system prompt and two examples written by us (asthma and osteoporosis, not demo topics).

Passages: child passages (the index chunker) of the NGC and USPSTF summaries on the *training* side of
version 2's hash split (its held-out side and the demo corpus are never read), >= 50 words, holding a
guidance sentence that is not boilerplate, up to ``per_doc`` a document. A written question is kept when it
is one line ending in "?", 4-35 words, shares a content word with its passage and does not point at "this
service/passage/guideline". Pairs: (question, its passage) 1; (question, the BM25 top passage of another
document) 0; (question, a same-document passage sharing at most a third of its content words) 0. The
verifier continues from the config's adapter, each epoch mixed 1:1 with version 2's answerability pairs.

    python -m finetune.verifier_written --out .cds/verifier/written/adapter     # ~40 min writing + ~30 min training

Use with ``--set verifier.answerability_adapter=<out>``. Measured (pre-registered): BENCHMARKS.md, "Trust",
eighteenth session.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corpora.document import Document
from finetune.verifier_data import Lexical, Pair, Passages, _hash_part
from finetune.verifier_styles import _BOILERPLATE, _GUIDANCE, content_words
from rag.text import split_sentences
from rag.verifier import answerability_text

SOURCE = "written"
SYSTEM = ("You write questions that a busy clinician would type into a guideline search tool. "
          "Given a guideline passage, write ONE short question that the passage answers. Use clinical shorthand "
          "(abbreviations, drug names, numbers), name the condition, and often start with a brief patient case. "
          "Do not copy sentences from the passage. Output only the question.")
# Our own words, on topics the demo corpus does not cover.
SHOTS = (("Adults with asthma whose symptoms are not controlled on a low-dose inhaled corticosteroid should step up "
          "to a low-dose ICS-formoterol combination used as both maintenance and reliever therapy.",
          "Asthma still uncontrolled on low-dose ICS - next step?"),
         ("Screen women aged 65 years and older for osteoporosis with bone density testing; younger postmenopausal "
          "women should be screened if their fracture risk is increased.",
          "58F postmenopausal, mother had a hip fracture. Should I order a DEXA scan?"))
_POINTS_AT = re.compile(r"\bthis (service|passage|guideline|document|recommendation)\b|\bthe passage\b", re.I)


@dataclass(frozen=True)
class Item:
    """One passage a question is written for."""

    pid: str
    doc_id: str
    passage: str


def askable(passage: str, min_words: int = 50) -> bool:
    """Long enough, and says what to do (a guidance sentence that is not about the guideline itself)."""
    return len(passage.split()) >= min_words and any(
        _GUIDANCE.search(s) and not _BOILERPLATE.search(s) for s in split_sentences(passage))


def items(docs: Sequence[Document], passages_of: Passages, rng: random.Random, per_doc: int = 6
          ) -> tuple[list[Item], list[tuple[str, str]]]:
    """Passages to write questions for (up to ``per_doc`` a document) and every passage (doc id, text)."""
    chosen: list[Item] = []
    every: list[tuple[str, str]] = []
    for d in docs:
        ps = passages_of(d)
        every += [(d.doc_id, p) for p in ps]
        ok = [p for p in ps if askable(p)]
        chosen += [Item(f"{d.doc_id}#{i}", d.doc_id, p) for i, p in enumerate(rng.sample(ok, min(per_doc, len(ok))))]
    return chosen, every


def keep(question: str, passage: str) -> bool:
    """A usable written question: one line ending in "?", 4-35 words, about the passage's content."""
    if "\n" in question or not question.endswith("?") or not 4 <= len(question.split()) <= 35 \
            or _POINTS_AT.search(question):
        return False
    have = {w.lower() for w in content_words(passage)}
    return any(w.lower() in have for w in content_words(question))


def pairs(written: Sequence[dict[str, str]], chosen: Sequence[Item], every: Sequence[tuple[str, str]],
          rng: random.Random, stats: Counter[str]) -> list[Pair]:
    """Answerability pairs for the kept questions (``written``: ``{"pid", "q"}`` rows)."""
    by_pid = {it.pid: it for it in chosen}
    lex = Lexical([p for _, p in every])
    out: list[Pair] = []
    for r in written:
        it = by_pid.get(r["pid"])
        if it is None:
            continue
        q = r["q"]
        if not keep(q, it.passage):
            stats["dropped"] += 1
            continue
        stats["kept"] += 1
        text = answerability_text(q)
        out.append(Pair("answerable", text, it.passage, 1, "written_pos", SOURCE))
        other = [every[i][1] for i in lex.top(q, 10) if every[i][0] != it.doc_id]
        if other:
            out.append(Pair("answerable", text, other[0], 0, "written_bm25", SOURCE))
        kws = content_words(q)
        same = [p for d, p in every if d == it.doc_id and p != it.passage
                and sum(k.lower() in {w.lower() for w in content_words(p)} for k in kws) <= len(kws) / 3]
        if same:
            out.append(Pair("answerable", text, rng.choice(same), 0, "written_same_doc", SOURCE))
    return out


def write_questions(todo: Sequence[Item], model_dir: Path, out_file: Path, batch: int = 8, seed: int = 18) -> None:
    """Append one written question per item to ``out_file`` (JSON lines; resumable: done items are skipped
    by the caller). bfloat16: 3x faster than float32 here on 2 cores."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.bfloat16).eval()

    def prompt(passage: str) -> str:
        msgs = [{"role": "system", "content": SYSTEM}]
        for a, b in SHOTS:
            msgs += [{"role": "user", "content": "Passage:\n" + a}, {"role": "assistant", "content": b}]
        msgs.append({"role": "user", "content": "Passage:\n" + passage})
        return str(tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True))

    t0 = time.perf_counter()
    for b in range(0, len(todo), batch):
        part = todo[b:b + batch]
        enc = tok([prompt(x.passage) for x in part], return_tensors="pt", padding=True)
        with torch.no_grad():
            gen = model.generate(**enc, max_new_tokens=48, do_sample=True, temperature=0.7, top_p=0.9,
                                 pad_token_id=tok.eos_token_id)
        with out_file.open("a", encoding="utf-8") as f:
            for it, g in zip(part, gen, strict=True):
                q = str(tok.decode(g[enc.input_ids.shape[1]:], skip_special_tokens=True)).strip()
                f.write(json.dumps({"pid": it.pid, "doc_id": it.doc_id, "q": q}) + "\n")
        print(f"wrote {b + len(part)}/{len(todo)} {time.perf_counter() - t0:.0f}s", flush=True)


def main(argv: list[str] | None = None) -> int:
    import argparse

    from corpora import load_sources
    from finetune import verifier, verifier_data
    from finetune.verifier_index import _measure
    from rag.config import data_dir, load_config, resolve_path
    from rag.errors import InputError
    from rag.models import resolve
    from rag.verifier import Verifier

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="configs/default.yaml")
    ap.add_argument("--writer", default=".cds/models/qwen2.5-coder-1.5b-instruct", help="the question writer's folder")
    ap.add_argument("--work", default=".cds/verifier/written", help="written questions and the resumable run")
    ap.add_argument("--out", default=".cds/verifier/written/adapter")
    ap.add_argument("--per-doc", type=int, default=6)
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--learning-rate", type=float, default=3e-4)
    args = ap.parse_args(argv)
    cfg = load_config(Path(args.config))
    root = data_dir(cfg)
    share = verifier_data.VerifierDataOptions().heldout_share
    docs: list[Document] = []
    for spec in (f"ngc:{root / 'guidelines' / 'ngc_usgov_guideline_summaries.jsonl'}",
                 f"uspstf:{root / 'guidelines' / 'uspstf_specific_recommendations_text.jsonl'}"):
        if not Path(spec.split(":", 1)[1]).exists():
            raise InputError(f"{spec.split(':', 1)[1]} not found; the guideline summaries are read from the data "
                             "folder (see ../shared/data/README.md)")
        docs += [d for d in load_sources([spec]).documents if _hash_part(d.doc_id, share) == "train"]
    writer = resolve_path(args.writer)
    if not (writer / "config.json").exists():
        raise InputError(f"no model in {writer}; fetch it with "
                         "`python app.py models fetch qwen2.5-coder-1.5b-instruct`")
    rng = random.Random(18)
    chosen, every = items(docs, verifier_data.index_passages(cfg), rng, args.per_doc)
    work = resolve_path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    qfile = work / "questions.jsonl"
    done = {json.loads(line)["pid"] for line in qfile.open(encoding="utf-8")} if qfile.exists() else set()
    todo = [it for it in chosen if it.pid not in done]
    if todo:
        write_questions(todo, writer, qfile)
    stats: Counter[str] = Counter()
    written = [json.loads(line) for line in qfile.open(encoding="utf-8")]
    new = pairs(written, chosen, every, rng, stats)
    rep = resolve_path(".cds/verifier/data/train.jsonl")
    if not rep.exists():
        verifier_data.build_v2_pairs(cfg, rep.parent)
    replay = [p for p in verifier_data.read(rep) if p.task == "answerable"]
    held = [p for p in verifier_data.read(rep.parent / "heldout.jsonl") if p.task == "answerable"]
    base = resolve(cfg.verifier.model, resolve_path(cfg.models.cache_dir)).path
    start = resolve_path(cfg.verifier.adapter)
    out = resolve_path(args.out)
    opts = verifier.VerifierTrainOptions(epochs=args.epochs, learning_rate=args.learning_rate, save_steps=50, seed=13)
    card: dict[str, Any] = {"documents": len(docs), "passages": len(chosen), "questions": dict(stats),
                            "pairs": dict(Counter(p.kind for p in new))}
    card["tune"] = verifier.tune(new, replay, base, start, out, work / "run", opts, progress=True)
    card["v2_heldout"] = {"before": _measure(Verifier(base, start, batch_size=32), held),
                          "after": _measure(Verifier(base, out, batch_size=32), held)}
    (out / "training_card.json").write_text(json.dumps(card, indent=1, default=str) + "\n", encoding="utf-8")
    print(json.dumps(card["v2_heldout"], default=str))
    return 0


def cli(argv: list[str] | None = None) -> int:
    """:func:`main` with bad input as one line and exit 2 (as ``verifier_index``)."""
    from finetune.verifier_index import one_line_errors

    return one_line_errors(main, argv)


if __name__ == "__main__":
    raise SystemExit(cli())
