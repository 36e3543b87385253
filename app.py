"""CDS Assistant command line: parses arguments, loads config, calls the library, prints.

Exit codes: 0 success, 1 runtime failure, 2 usage or input error, 3 index job published but
skipped unreadable files, 75 index locked by another job (retry later). Errors are one line on
stderr; ``-v`` adds the traceback and debug logs.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import sys
import textwrap
from pathlib import Path
from typing import Any, NoReturn

# Offline by default: nothing here may reach a model hub (set before transformers is imported).
for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SAMPLE_QUESTION = "What drug classes reduce mortality in heart failure with reduced ejection fraction?"


class _Parser(argparse.ArgumentParser):
    """argparse with the CLI's error contract: one line on stderr naming the fix, exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {_one_line(message)}; see `python {self.prog} --help`\n")


def _one_line(text: str) -> str:
    """``text`` on one line: control characters (a newline in a path or an id) shown escaped, never raw."""
    return re.sub(r"[\x00-\x1f\x7f]", lambda m: repr(m.group())[1:-1], text.strip())


def _seconds(raw: str) -> float:
    v = float(raw)
    if not math.isfinite(v) or v < 0:
        raise ValueError(raw)
    return v


def _fraction(raw: str) -> float:
    v = float(raw)
    if not 0.0 <= v <= 1.0:  # also refuses nan
        raise ValueError(raw)
    return v


_seconds.__name__ = "seconds (a number >= 0)"
_fraction.__name__ = "fraction (0 to 1)"


def _common(defaults: bool) -> _Parser:
    # Subcommands get the options without defaults: a subparser's default would overwrite the value
    # given before the subcommand (`app.py --config X eval ...` silently lost X).
    def d(value: Any) -> Any:
        return value if defaults else argparse.SUPPRESS

    common = _Parser(add_help=False)
    common.add_argument("--config", default=d(None), help="preset YAML (default: configs/default.yaml)")
    common.add_argument("--set", dest="overrides" if defaults else "sub_overrides", action="append", default=d([]),
                        metavar="KEY=VALUE",
                        help="override a config key, e.g. --set retrieval.top_k=8 (repeatable)")
    common.add_argument("-v", "--verbose", action="store_true", default=d(False), help="debug logs and tracebacks")
    common.add_argument("-q", "--quiet", action="store_true", default=d(False), help="no progress bars or info logs")
    return common


def _with_index(p: argparse.ArgumentParser) -> None:
    p.add_argument("--index", help="index directory (default: index.dir from config)")


def _with_lock(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lock-timeout", type=_seconds, metavar="SECONDS",
                   help="wait this long for another writer's lock (default: index.lock_timeout)")


def _model_run(p: argparse.ArgumentParser, files: str) -> None:
    """Options of a base-vs-tuned measurement."""
    p.add_argument("--output", required=True, help=f"run folder: {files}")
    p.add_argument("--adapter", help="LoRA adapter folder for the generator (default: generator.adapter)")
    p.add_argument("--base", action="store_true", help="ignore generator.adapter: evaluate the base model")


def _add_query(sub: Any, common: argparse.ArgumentParser) -> None:
    q = sub.add_parser("query", parents=[common], help="answer a question with cited sources")
    q.add_argument("question")
    q.add_argument("--patient", help="patient id: include that patient's records (and no other patient's)")
    q.add_argument("--top-k", type=int, help="number of sources (default: retrieval.top_k)")
    q.add_argument("--no-generate", action="store_true", help="return the evidence without the LLM")
    q.add_argument("--adapter", help="LoRA adapter folder for the generator")
    q.add_argument("--json", action="store_true", help="print the Answer as JSON")
    _with_index(q)


def _add_serve(sub: Any, common: argparse.ArgumentParser) -> None:
    sv = sub.add_parser("serve", parents=[common], help="warm HTTP API and clinician page (models load once)",
                        description="Serve POST /v1/query, GET /v1/index/status, /healthz, /readyz, /metrics, the "
                                    "OpenAPI docs at /docs and the clinician page at /. Binding anything but "
                                    "loopback needs an API key in the environment (serve.api_key_env, default "
                                    "CDS_API_KEY). Logs are JSON lines on stderr, without record text.")
    sv.add_argument("--host", help="address to bind (default: serve.host, 127.0.0.1)")
    sv.add_argument("--port", type=int, help="port (default: serve.port, 8000)")
    sv.add_argument("--adapter", help="LoRA adapter folder for the generator")
    _with_index(sv)


def _add_risk(sub: Any, common: argparse.ArgumentParser) -> None:
    rk = sub.add_parser("risk", parents=[common], help="heart-failure risk of a case description: inputs read from "
                        "the text, a validated model, contributions, missing inputs, guideline sources")
    rk.add_argument("case", nargs="?", help="the case description (or --file)")
    rk.add_argument("--file", help="read the case description from this text file")
    rk.add_argument("--json", action="store_true", help="print the assessment as JSON")
    rk.add_argument("--plot", metavar="PNG", help="write a bar chart of the contributions")
    rk.add_argument("--model", help="risk model JSON (default: configs/risk/hf-logistic.json)")
    rk.add_argument("--no-sources", action="store_true", help="skip the guideline passages (no index or embedder)")
    rk.add_argument("--explain", choices=["template", "generator"], default="template",
                    help="who writes the explanation: the template (default) or the generator, checked against the "
                         "computation and replaced by the template if any check fails")
    rk.add_argument("--adapter", help="LoRA adapter folder for the generator (with --explain generator)")
    _with_index(rk)



def _add_index(sub: Any, common: argparse.ArgumentParser) -> None:
    ix = sub.add_parser("index", parents=[common], help="build, update and inspect the index")
    isub = ix.add_subparsers(dest="index_command", required=True)

    b = isub.add_parser("build", parents=[common], help="build a new index version from sources (full re-embed)")
    b.add_argument("sources", nargs="*", help="[FORMAT:]PATH sources: folders of .md/.txt/.html/.pdf, MedQuAD XML "
                   "tree, NGC/USPSTF .jsonl, MTSamples/UCI heart-failure .csv, WikiDoc .json")
    b.add_argument("--source-set", help="a named source list from the config (e.g. 'full' in configs/full.yaml)")
    b.add_argument("--kind", choices=["guideline", "ehr", "reference"], help="kind for documents without one")
    b.add_argument("--skip-bad", action="store_true", help="skip unreadable files (reported) instead of failing")
    b.add_argument("--json", action="store_true")
    _with_index(b)
    _with_lock(b)
    u = isub.add_parser("update", parents=[common], help="bring the index up to date with the sources "
                        "(only changed documents are re-embedded; publishes only if anything changed)")
    u.add_argument("sources", nargs="*", help="the complete source set: documents no longer in it are removed")
    u.add_argument("--source-set", help="a named source list from the config (e.g. 'full' in configs/full.yaml)")
    u.add_argument("--kind", choices=["guideline", "ehr", "reference"], help="kind for documents without one")
    u.add_argument("--strict", action="store_true", help="abort without publishing if any file cannot be read")
    u.add_argument("--rebuild", action="store_true",
                   help="re-chunk and re-embed everything (required after changing the embedder or chunking)")
    u.add_argument("--max-removed", type=_fraction, metavar="FRACTION",
                   help="refuse to remove more than this share of documents (default: index.max_removed)")
    u.add_argument("--json", action="store_true", help="print a one-line JSON summary")
    _with_index(u)
    _with_lock(u)
    s = isub.add_parser("status", parents=[common], help="show the current index version, counts and history")
    s.add_argument("--json", action="store_true")
    _with_index(s)
    v = isub.add_parser("verify", parents=[common], help="check index files against the manifest")
    v.add_argument("--json", action="store_true")
    _with_index(v)
    r = isub.add_parser("rollback", parents=[common], help="make an earlier version current again")
    r.add_argument("--to", metavar="VERSION", help="version name or number (default: the current one's parent)")
    r.add_argument("--json", action="store_true")
    _with_index(r)
    _with_lock(r)



def _add_train_and_models(sub: Any, common: argparse.ArgumentParser) -> None:
    tr = sub.add_parser("train", parents=[common], help="fine-tune the generator (LoRA/QLoRA) or build its data",
                        description="`train data` builds the SFT dataset; `train` (or `train run`) trains an adapter "
                                    "with the config's train: section, e.g. --config configs/train-qwen0.5b-cpu.yaml")
    tr.add_argument("action", nargs="?", choices=["run", "data", "verifier", "risk"], default="run",
                    help="run: the generator's adapter; data: its dataset; verifier: the evidence verifier "
                         "(pairs from ../shared/data, then the LoRA cross-encoder; resumable); risk: fit and "
                         "validate the heart-failure risk model (configs/risk/, docs/risk-calibration.png)")
    tr.add_argument("--max-steps", type=int, help="stop after N optimizer steps (overrides train.epochs)")
    tr.add_argument("--resume", action="store_true", help="continue from the last checkpoint in train.run_dir")
    tr.add_argument("--overwrite", action="store_true", help="discard existing checkpoints and start again")
    tr.add_argument("--out", help="`train data`: output folder (default: train.data_dir)")
    tr.add_argument("--source-set", default="full", help="`train data`: source set with the MedQuAD, WikiDoc and "
                                                          "heart-failure inputs (default: full)")
    tr.add_argument("--no-index", action="store_true", help="`train data`: skip the grounded part (needs the "
                                                            "full index)")
    tr.add_argument("--json", action="store_true")
    m = sub.add_parser("models", parents=[common], help="list or fetch offline models")
    msub = m.add_subparsers(dest="models_command", required=True)
    ml = msub.add_parser("list", parents=[common], help="models available locally")
    ml.add_argument("--json", action="store_true")
    mf = msub.add_parser("fetch", parents=[common], help="install and convert offline bundles")
    mf.add_argument("names", nargs="*", help="bundle names (default: the configured embedder and generator)")
    mc = msub.add_parser("convert-lora", parents=[common], help="write a peft LoRA adapter as a GGUF LoRA "
                         "(for generator.backend llamacpp)")
    mc.add_argument("adapter", nargs="?", help="adapter folder (default: generator.adapter)")
    mc.add_argument("--out", help="output file (default: ADAPTER/adapter_model.gguf)")



def _add_eval(sub: Any, common: argparse.ArgumentParser) -> None:
    ev = sub.add_parser("eval", parents=[common], help="evaluation: retrieval quality, multiple-choice benchmarks")
    esub = ev.add_subparsers(dest="eval_command", required=True)
    for add in (_add_eval_retrieval, _add_eval_mcq, _add_eval_tuning, _add_eval_trust):
        add(esub, common)


def _add_eval_retrieval(esub: Any, common: argparse.ArgumentParser) -> None:
    sp = esub.add_parser("split", parents=[common], help="write the held-out MedQuAD question split (ids only)")
    sp.add_argument("--medquad", help="MedQuAD folder (default: index.data_dir/medquad)")
    sp.add_argument("--seed", type=int, default=13)
    sp.add_argument("--test", type=int, default=2000, help="minimum test questions")
    sp.add_argument("--dev", type=int, default=500, help="minimum dev questions (for choosing defaults)")
    sp.add_argument("--output", help="split file (default: eval/splits/medquad_retrieval.json)")
    er = esub.add_parser("retrieval", parents=[common], help="MedQuAD question -> answer retrieval metrics")
    er.add_argument("--medquad", help="MedQuAD folder (default: index.data_dir/medquad)")
    er.add_argument("--split", help="split file (default: eval/splits/medquad_retrieval.json)")
    er.add_argument("--part", default="test", choices=["test", "dev"])
    er.add_argument("--modes", default="bm25,dense,rrf,wsum,hybrid+merge")
    er.add_argument("--limit", type=int, help="first N queries only")
    er.add_argument("--depth", type=int, default=100, help="candidates per retriever (default 100)")
    er.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% intervals")
    er.add_argument("--output", help="folder for summary.json, per_query.jsonl and table.md")
    er.add_argument("--json", action="store_true")
    _with_index(er)


def _add_eval_mcq(esub: Any, common: argparse.ArgumentParser) -> None:
    mcq = esub.add_parser("mcq", parents=[common], help="MedMCQA / MMLU-medical / MedQA / MIRAGE accuracy")
    mcq.add_argument("--bench", required=True, choices=["medmcqa", "mmlu", "medqa", "mirage"])
    mcq.add_argument("--data", required=True, help="benchmark file (MMLU: a folder of {subject}_{split}.csv)")
    mcq.add_argument("--output", required=True, help="run folder (one subfolder per condition with several)")
    mcq.add_argument("--adapter", help="LoRA adapter folder: enables the tuned conditions")
    mcq.add_argument("--rag", action="store_true", help="retrieve sources (question + options) into the prompt")
    mcq.add_argument("--matrix", action="store_true",
                     help="run base, tuned, base+rag, tuned+rag (tuned ones skipped without --adapter)")
    mcq.add_argument("--conditions", help="comma-separated subset of base,tuned,base+rag,tuned+rag")
    mcq.add_argument("--subjects", help="comma-separated subjects (MMLU files, MIRAGE datasets, MedMCQA subject_name)")
    mcq.add_argument("--limit", type=int, help="evaluate a seeded random subset of N questions")
    mcq.add_argument("--seed", type=int, default=1234, help="for --limit sampling and the bootstrap")
    mcq.add_argument("--batch-size", type=int, default=8, help="sequences per forward pass")
    mcq.add_argument("--k-shot", type=int, default=0, help="exemplars in the prompt (MMLU: from dev/)")
    mcq.add_argument("--fewshot", help="exemplars: MMLU dev folder, or a file in the benchmark's format")
    mcq.add_argument("--chat-template", action="store_true", help="wrap the prompt in the model's chat template")
    mcq.add_argument("--scorer", choices=["loglik", "generate"], default="loglik",
                     help="option-letter log-likelihood (default) or generate and parse the letter")
    mcq.add_argument("--max-new-tokens", type=int, default=16, help="reply length for --scorer generate")
    mcq.add_argument("--rag-k", type=int, default=3, help="sources per question with --rag")
    mcq.add_argument("--rag-tokens", type=int, default=256, help="token budget for all sources with --rag")
    mcq.add_argument("--cop-base", choices=["auto", "0", "1"], default="auto",
                     help="MedMCQA 'cop' numbering: 1 (../shared/data), 0 (Hugging Face), auto = detect or fail")
    mcq.add_argument("--no-prefix-cache", action="store_true", help="recompute the shared prefix every time")
    mcq.add_argument("--overwrite", action="store_true", help="replace an existing run in --output")
    mcq.add_argument("--json", action="store_true", help="print the summaries as JSON")
    _with_index(mcq)


def _add_eval_tuning(esub: Any, common: argparse.ArgumentParser) -> None:
    eg = esub.add_parser("grounded", parents=[common], help="held-out MedQuAD through the assistant: cites the gold "
                         "page? abstains when it is withheld?")
    _model_run(eg, "summary.json, answers.jsonl")
    eg.add_argument("--limit", type=int, default=200, help="held-out questions (seeded sample; default 200)")
    eg.add_argument("--seed", type=int, default=7)
    eg.add_argument("--split", help="split file (default eval/splits/medquad_retrieval.json)")
    eg.add_argument("--medquad", help="MedQuAD folder (default: the config's source set)")
    eg.add_argument("--batch-size", type=int, default=8, help="answers generated per forward pass")
    eg.add_argument("--withheld-share", type=float, default=0.4,
                    help="share of the questions asked with their gold page withheld (seeded)")
    eg.add_argument("--both", action="store_true", help="ask every question in both conditions (twice the time)")
    eg.add_argument("--reuse", help="earlier run folder: ask its first --limit questions in the same conditions")
    eg.add_argument("--json", action="store_true")
    _with_index(eg)
    eh = esub.add_parser("hf-risk", parents=[common], help="stated heart-failure risk categories vs outcome (AUROC) "
                         "against logistic regression")
    _model_run(eh, "summary.json, replies.jsonl")
    eh.add_argument("--data", help="training-data folder with test.jsonl (default: train.data_dir)")
    eh.add_argument("--csv", help="UCI heart-failure CSV (default: the config's source set)")
    eh.add_argument("--batch-size", type=int, default=8)
    eh.add_argument("--json", action="store_true")
    ex = esub.add_parser("risk-extraction", parents=[common], help="heart-failure risk inputs read from our labelled "
                         "case descriptions (eval/hf_cases): per-variable accuracy, invented values")
    ex.add_argument("--part", choices=["dev", "test", "fresh", "all"], default="test")
    ex.add_argument("--json", action="store_true", help="the summary with one record per case")
    ep = esub.add_parser("patient-records", parents=[common], help="held-out patients' record questions through "
                         "the assistant: states the value and cites the record? abstains when it is not there?")
    _model_run(ep, "summary.json, answers.jsonl")
    ep.add_argument("--data", help="training-data folder with test.jsonl (default: train.data_dir)")
    ep.add_argument("--csv", help="UCI heart-failure CSV (default: the config's source set)")
    ep.add_argument("--limit", type=int, help="first N questions (default: all)")
    ep.add_argument("--batch-size", type=int, default=8)
    ep.add_argument("--json", action="store_true")
    _with_index(ep)


def _add_eval_trust(esub: Any, common: argparse.ArgumentParser) -> None:
    et = esub.add_parser("trust", parents=[common], help="trust: abstention out of corpus, strict correctness, "
                         "calibrated confidence (dev fits, test reports)",
                         description="split: write eval/splits/trust.json; build: the trust index; run: ask a part; "
                                     "fit: calibration + thresholds from dev; report: replay the config's settings")
    et.add_argument("action", choices=["split", "build", "run", "fit", "report"])
    et.add_argument("--part", choices=["dev", "test"], default="dev")
    et.add_argument("--output", default=".cds/eval/trust", help="run folder (rows-PART.jsonl, summaries, plots)")
    et.add_argument("--trust-index", default=".cds/index/trust", help="the trust index folder (`build` writes it)")
    et.add_argument("--floor", type=float, default=0.05,
                    help="`run`: generate when answerability reaches this (stricter gates are replayed)")
    et.add_argument("--batch-size", type=int, default=8)
    et.add_argument("--limit", type=int, help="`run`: the first N questions of each suite only (a smoke test)")
    et.add_argument("--regenerate-above", type=float, metavar="P",
                    help="`run`: ask again, with no gate, the questions of an earlier run that were not generated "
                         "but whose gate probability (the dev-fitted gate model in --gate-from) reaches P; merged "
                         "into that run's records")
    et.add_argument("--gate-from", help="calibration JSON with the gate model (for --regenerate-above)")
    et.add_argument("--replay", metavar="ROWS.jsonl",
                    help="`run`: reuse the generator's drafts of an earlier run for the same prompts (every check is "
                         "recomputed with the current verifier and settings; only new prompts are generated)")
    et.add_argument("--calibration-out", default="configs/calibration/default.json", help="`fit`: where to write")
    et.add_argument("--json", action="store_true")
    cmp = esub.add_parser("compare", parents=[common], help="paired comparison of two runs on the same questions")
    cmp.add_argument("run_a", help="run folder (or predictions.jsonl)")
    cmp.add_argument("run_b", help="run folder (or predictions.jsonl)")
    cmp.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    cmp.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples")
    cmp.add_argument("--json", action="store_true")


def _parser() -> argparse.ArgumentParser:
    """The CLI's arguments: one function per command group above."""
    common = _common(defaults=False)
    p = _Parser(prog="app.py", description="CDS Assistant: cited answers from guidelines and "
                "patient records. Not a medical device.", parents=[_common(defaults=True)])
    sub = p.add_subparsers(dest="command", required=True)
    for add in (_add_query, _add_serve, _add_risk, _add_index, _add_eval, _add_train_and_models):
        add(sub, common)
    return p


def _load_config(args: argparse.Namespace) -> Any:
    from rag.config import load_config

    overrides = list(args.overrides)
    if getattr(args, "index", None):
        # An explicitly named index is never silently replaced by the demo corpus.
        overrides += [f"index.dir={Path(args.index).resolve()}", "index.auto_build_demo=false"]
    if getattr(args, "adapter", None):
        overrides.append(f"generator.adapter={Path(args.adapter).resolve()}")
    return load_config(args.config, overrides)


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False))


def _wrap(text: str, indent: str = "") -> str:
    return "\n".join(textwrap.fill(line, width=100, initial_indent=indent, subsequent_indent=indent)
                     for line in text.splitlines() if line.strip())


def cmd_query(args: argparse.Namespace) -> int:
    from rag import Assistant

    cfg = _load_config(args)
    assistant = Assistant(cfg, progress=not args.quiet)
    stream = sys.stdout.isatty() and not args.json and not args.no_generate
    if stream:
        print("Draft (checking citations when done):\n", flush=True)
    answer = assistant.ask(args.question, patient_id=args.patient, top_k=args.top_k,
                           generate=not args.no_generate,
                           on_text=(lambda t: print(t, end="", flush=True)) if stream else None)
    if args.json:
        _print_json(answer.to_dict())
        return 0
    if stream:
        print("\n")
    calibrated = bool(cfg.confidence.calibration) and cfg.confidence.calibrated_answers and answer.generated \
        and not answer.abstained
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
    text = " ".join(re.sub(r"\[(\d+)\]", r"[\1*]", s.text) if s.attributed else s.text for s in shown) \
        if attributed else answer.answer
    print(_wrap(text, "  "))
    if attributed:
        print("  * citation added by the support check: the generator gave this sentence no (or a wrong) source")
    unsupported = [s for s in answer.sentences if not s.supported]
    if unsupported and not answer.abstained:
        print(f"  ! {len(unsupported)} sentence(s) not supported by their cited source:")
        for s in unsupported:
            print(_wrap(s.text, "    - "))
    if answer.removed_citations:
        print(f"  ! {answer.removed_citations} citation marker(s) pointed at no source and were removed")
    print("\nSOURCES" if not answer.abstained else "\nCLOSEST SOURCES")
    for c in answer.citations:
        who = f", patient {c.patient_id}" if c.patient_id else ""
        print(f" [{c.n}] {c.title} — {c.section}")
        print(f"     {c.kind}{who}; {c.source} chars {c.start}-{c.end}")
        excerpt = c.text if len(c.text) <= 300 else c.text[:300].rsplit(" ", 1)[0] + " …"
        print(_wrap(excerpt.replace("\n", " "), "     > "))
    t = answer.timings_ms
    adapter = answer.models.get("adapter")
    lora = f" + LoRA {Path(adapter).name}" if adapter else ""
    print(f"\nindex {answer.index_version}; embedder {answer.models['embedder']}; generator "
          f"{answer.models['generator'] or '-'}{lora}; retrieval {t.get('retrieval_search', 0):.0f} ms, generation "
          f"{t.get('generation', 0):.0f} ms")
    print("Demo/decision support only: not a medical device; verify against the cited guideline.")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from serve import api_key, run
    from serve.logs import json_handler

    if args.port is not None and not 1 <= args.port <= 65535:
        from rag.errors import InputError

        raise InputError("--port must be between 1 and 65535")
    cfg = _load_config(args)
    if args.host is not None:
        cfg.serve.host = args.host
    if args.port is not None:
        cfg.serve.port = args.port
    key = api_key(cfg.serve)  # refuses a non-loopback bind without a key, before any model loads
    logging.basicConfig(force=True, handlers=[json_handler()], level=logging.DEBUG if args.verbose else logging.WARNING)
    for name in ("serve", "uvicorn.error"):
        logging.getLogger(name).setLevel(logging.DEBUG if args.verbose else logging.INFO)
    run(cfg, key)
    return 0


def cmd_risk(args: argparse.Namespace) -> int:
    """Exit codes: 0 the assessment was printed, 2 bad input (no heart-failure data, an impossible value, an empty
    or unreadable file), 1 a runtime failure."""
    import time

    from rag.errors import InputError
    from rag.hf_model import DEFAULT_MODEL, RiskModel
    from rag.risk import assess, cite_guidelines, explain, generator_explanation, index_retriever, plot_contributions

    t0 = time.perf_counter()
    if (args.case is None) == (args.file is None):
        raise InputError("give the case description as text or with --file PATH (one of them)")
    if args.file:
        from rag.fsutil import read_small_text
        from rag.risk import MAX_CASE_CHARS

        path = Path(args.file)
        if not path.exists():
            raise InputError(f"--file {path}: no such file; check the path")
        try:
            case = read_small_text(path, 4 * MAX_CASE_CHARS)
        except IsADirectoryError:
            raise InputError(f"--file {path} is a folder; pass the text file with the case description") from None
        except ValueError as e:
            raise InputError(f"--file {path} {e}") from None
        if not case.strip():
            raise InputError(f"--file {path} is empty; write the case description in it")
    else:
        case = args.case
    report = assess(case, RiskModel.load(args.model or DEFAULT_MODEL))  # bad input fails before any model loads
    if not args.no_sources or args.explain == "generator":
        from rag import Assistant

        assistant = Assistant(_load_config(args), progress=not args.quiet)  # --index and --adapter applied there
        if not args.no_sources:
            t = time.perf_counter()
            cite_guidelines(report, index_retriever(assistant))
            report.timings_ms["sources"] = (time.perf_counter() - t) * 1000
    report.explanation = explain(report)
    if args.explain == "generator":
        t = time.perf_counter()
        gen = assistant.generator
        generator_explanation(report, lambda m: gen.generate(m, 160).text)
        report.timings_ms["generator_explanation"] = (time.perf_counter() - t) * 1000
    if args.plot:
        plot_contributions(report, args.plot)
    report.timings_ms["total"] = (time.perf_counter() - t0) * 1000
    if args.json:
        _print_json(report.to_dict())
        return 0
    _print_risk(report, args.plot)
    return 0


def _print_risk(report: Any, plot: str | None) -> None:
    from rag.hf_model import BOOLEAN_INPUTS, NAMES
    from rag.risk import NOTICE

    p = report.prediction
    pct = lambda x: f"{100 * x:.0f}%"  # noqa: E731
    print(f"HEART-FAILURE RISK: {pct(p.probability)} (95% CI {pct(p.interval[0])}-{pct(p.interval[1])}), "
          f"category {p.category.upper()}")
    if p.range:
        print(f"  incomplete inputs: between {pct(p.range[0])} and {pct(p.range[1])} over plausible values of what "
              "is missing or given as a range")
    who = "the generator (checked against the computation)" if report.explained_by == "generator" else "template"
    print(f"\nEXPLANATION ({who})")
    for line in report.explanation.splitlines():
        print(_wrap(line, "  "))
    if report.generator_problems:
        print(f"  (the generator's explanation failed {len(report.generator_problems)} check(s) and was replaced: "
              f"{report.generator_problems[0]})")
    print("\nCONTRIBUTIONS (log-odds against the cohort's average patient, 95% bootstrap interval)")
    for c in p.contributions:
        name, shown = NAMES[c.input], f"{c.value:,.0f}" if c.input == "platelets" else f"{c.value:g}"
        if c.input == "male":
            name, shown = "sex", "male" if c.value else "female"
        elif c.input in BOOLEAN_INPUTS:
            shown = "yes" if c.value else "no"
        flag = "" if c.certain else "  (direction uncertain)"
        print(f"  {name:<18} {shown:>9}  {c.log_odds:+.2f} ({c.low:+.2f} to {c.high:+.2f})  "
              f"odds x{c.odds_ratio:.2f}{flag}")
    if report.missing:
        print("\nMISSING INPUTS (the estimate sets them to the cohort average; the range covers them)")
        for m in report.missing:
            print(_wrap(f"{NAMES[m.input]}: {m.why}", "  - "))
    print("\nREAD FROM THE TEXT")
    for v in report.extraction.values.values():
        note = f"  [{v.note}]" if v.note else ""
        print(_wrap(f"{v.name} = {v.value}  <- '{v.text}' (chars {v.start}-{v.end}){note}", "  "))
    for n in report.notes:
        print(_wrap(n, "  ! "))
    if report.outside_cohort:
        print(_wrap("outside the cohort's range (the model extrapolates): "
                    + ", ".join(NAMES[k] for k in report.outside_cohort), "  ! "))
    if report.sources:
        print("\nSOURCES (guideline passages for the modifiable factors)")
        shown_n: set[int] = set()
        for s in report.sources:
            if s.n in shown_n:
                continue
            shown_n.add(s.n)
            print(f" [{s.n}] {s.title} — {s.section}  ({NAMES[s.factor]})")
            excerpt = s.text if len(s.text) <= 300 else s.text[:300].rsplit(" ", 1)[0] + " …"
            print(_wrap(excerpt.replace("\n", " "), "     > "))
    auc = report.model["auroc"]
    print(_wrap(f"\nCOHORT: {report.cohort}.", ""))
    print(f"model {report.model['path']} (fitted {report.model['date']}; nested-CV AUROC {auc['value']:.2f}, 95% CI "
          f"{auc['ci95'][0]:.2f}-{auc['ci95'][1]:.2f}); {report.timings_ms['total']:.0f} ms"
          + (f"; plot {plot}" if plot else ""))
    print(NOTICE)


def _print_update(res: Any, root: Path) -> None:
    d, c, e = res.documents, res.chunks, res.embeddings
    if res.published:
        print(f"published {res.version} at {root} ({res.mode}; previous {res.previous or '-'}): "
              f"+{len(d['added'])} added, ~{len(d['changed'])} changed, -{len(d['removed'])} removed documents; "
              f"{c['total']} passages ({e['computed']} embedded, {e['cached']} reused)")
    else:
        print(f"no changes: {res.previous} at {root} is up to date (nothing published)")
    for label in ("changed", "removed", "kept"):
        if d[label]:
            shown = ", ".join(d[label][:20]) + (f" … (+{len(d[label]) - 20})" if len(d[label]) > 20 else "")
            what = "kept previous version (source unreadable now)" if label == "kept" else label
            print(f"  {what}: {shown}")
    if d["added"] and res.mode == "update":
        print(f"  added: {', '.join(d['added'][:20])}" + (" …" if len(d["added"]) > 20 else ""))
    for p, r in res.skipped:
        print(f"  skipped {p}: {r}")
    if res.pruned:
        print(f"  pruned old versions: {', '.join(res.pruned)}")
    print("  seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in res.seconds.items()))


def _sources(args: argparse.Namespace, cfg: Any) -> list[str]:
    """SOURCE paths given on the command line plus those of ``--source-set NAME``."""
    from rag.config import source_set
    from rag.errors import InputError

    sources = list(args.sources) + (source_set(cfg, args.source_set) if args.source_set else [])
    if not sources:
        raise InputError(f"index {args.index_command} needs SOURCE paths or --source-set NAME (e.g. --config "
                         "configs/full.yaml --source-set full)")
    return sources


def cmd_index(args: argparse.Namespace) -> int:
    """Exit codes: 0 ok, 1 runtime failure or damaged index, 2 input error, 3 published (or up to date)
    but some source files were skipped, 75 another writer holds the lock (retry later)."""
    from rag import Assistant
    from rag.index import verify_index

    cfg = _load_config(args)
    assistant = Assistant(cfg, progress=not args.quiet and not getattr(args, "json", False))
    root = assistant.index_root
    lock_timeout = getattr(args, "lock_timeout", None)
    if args.index_command == "build":
        manifest = assistant.build(_sources(args, cfg), kind=args.kind, strict=not args.skip_bad,
                                   lock_timeout=lock_timeout)
        summary = {"version": manifest["version"], "index": str(root), "counts": manifest["counts"],
                   "seconds": {k: round(v, 2) for k, v in manifest["seconds"].items()},
                   "read": manifest.get("load_stats", {}),
                   "skipped": [{"path": p, "reason": r} for p, r in manifest["skipped"]]}
        if args.json:
            _print_json(summary)
        else:
            c = manifest["counts"]
            print(f"published {manifest['version']} at {root}: {c['documents']} documents, {c['parents']} sections, "
                  f"{c['children']} passages")
            secs = ", ".join(f"{k} {v:.1f}s" for k, v in manifest["seconds"].items())
            print(f"  stages: {secs}")
            for k, v in sorted(manifest.get("load_stats", {}).items()):
                print(f"  {k}: {v}")
            for p, r in manifest["skipped"]:
                print(f"  skipped {p}: {r}")
        return 3 if manifest["skipped"] else 0
    if args.index_command == "update":
        res = assistant.update(_sources(args, cfg), kind=args.kind, strict=args.strict, rebuild=args.rebuild,
                               lock_timeout=lock_timeout, max_removed=args.max_removed)
        if args.json:
            print(json.dumps({"index": str(root), **res.summary()}, ensure_ascii=False))
        else:
            _print_update(res, root)
        return 3 if res.skipped else 0
    if args.index_command == "rollback":
        old, new = assistant.rollback(args.to, lock_timeout=lock_timeout)
        if args.json:
            print(json.dumps({"index": str(root), "from": old, "to": new}))
        else:
            print(f"rolled back {root}: current version is now {new} (was {old})")
        return 0
    if args.index_command == "status":
        from rag.status import index_status

        status = index_status(root)
        if args.json:
            _print_json(status)
        else:
            _print_status(status)
        return 0
    problems = verify_index(root, store_url=cfg.index.postgres_url)
    if args.json:
        _print_json({"ok": not problems, "problems": problems})
    else:
        print("index OK" if not problems else "index BROKEN:\n  " + "\n  ".join(problems))
    return 0 if not problems else 1


def cmd_eval(args: argparse.Namespace) -> int:
    if args.eval_command in ("mcq", "compare"):
        return _cmd_eval_mcq(args)
    if args.eval_command == "risk-extraction":
        from eval.hf_extraction import markdown, read_cases, score

        summary = score(read_cases(args.part))
        if args.json:
            _print_json(summary)
        else:
            print(markdown(summary, args.part), end="")
        return 0
    from eval.splits import DEFAULT_SPLIT

    cfg = _load_config(args)
    if args.eval_command in ("grounded", "hf-risk", "patient-records"):
        return _cmd_eval_tuning(args)
    if args.eval_command == "trust":
        return _cmd_eval_trust(args, cfg)
    if args.eval_command == "split":
        from corpora import load_sources
        from eval.retrieval import medquad_path
        from eval.splits import make_split, write_split

        docs = load_sources([f"medquad:{medquad_path(cfg, args.medquad)}"]).documents
        split = make_split(docs, seed=args.seed, test_questions=args.test, dev_questions=args.dev)
        out = Path(args.output) if args.output else DEFAULT_SPLIT
        write_split(split, out)
        print(f"wrote {out}: {split['counts']} questions from {len(split['files']['test'])} + "
              f"{len(split['files']['dev'])} MedQuAD files (seed {args.seed})")
        return 0
    from eval.retrieval import evaluate, markdown_table, medquad_path
    from rag import Assistant

    assistant = Assistant(cfg, progress=not args.quiet)
    if args.limit is not None and args.limit < 1:
        from rag.errors import InputError

        raise InputError("--limit must be at least 1")
    summary = evaluate(assistant, medquad_path(cfg, args.medquad), Path(args.split) if args.split else DEFAULT_SPLIT,
                       part=args.part, modes=[m.strip() for m in args.modes.split(",") if m.strip()],
                       limit=args.limit, depth=args.depth, n_boot=args.bootstrap,
                       output=Path(args.output) if args.output else None, progress=not args.quiet)
    if args.json:
        _print_json(summary)
        return 0
    print(f"{summary['n_queries']} {summary['part']} queries, index {summary['index_version']} "
          f"({summary['index_children']} passages), depth {summary['depth']}; query encoding "
          f"{summary['query_encode_ms_per_query']:.1f} ms/query\n")
    print(markdown_table(summary))
    print(f"best single retriever: {summary['best_single']}; best mode by nDCG@10: {summary['winner']}")
    return 0


def _cmd_eval_trust(args: argparse.Namespace, cfg: Any) -> int:
    from corpora.heart_failure import read_records
    from corpora.report import LoadReport
    from eval import trust, trust_jobs, trust_set
    from rag import Assistant
    from rag.config import data_dir, resolve_path
    from rag.errors import InputError

    data = data_dir(cfg)
    out = resolve_path(args.output)
    if args.action == "split":
        split = trust_set.make(data)
        trust_set.write(split)
        print(f"wrote {trust_set.TRUST_SPLIT}: {split['counts']}; trust index: {len(split['index_medquad_files'])} "
              "MedQuAD files + the demo corpus + the heart-failure records")
        return 0
    if args.action == "build":
        sources = trust_set.materialise(trust_set.load(), data, resolve_path(".cds/trust/medquad"))
        manifest = Assistant(trust_jobs.trust_config(cfg, args.trust_index), progress=not args.quiet).build(sources)
        print(f"trust index built at {resolve_path(args.trust_index)}: {manifest['counts']}")
        return 0
    records = {r.patient_id: r for r in read_records(data / trust_set.HF_CSV, LoadReport(fmt="uci-heart-failure"))}
    rows_path = out / f"rows-{args.part}.jsonl"
    if args.action == "run":
        rows = trust_jobs.run_part(cfg, args.trust_index, args.part, data, rows_path, args.floor, args.batch_size,
                                   args.limit, args.regenerate_above,
                                   resolve_path(args.gate_from) if args.gate_from else None,
                                   None if args.quiet else (lambda n: _advance(_bar(n))),
                                   resolve_path(args.replay) if args.replay else None)
        print(f"{len(rows)} {args.part} questions answered or abstained; records in {rows_path}")
        return 0
    if not rows_path.exists():
        raise InputError(f"{rows_path} not found; run `python app.py eval trust run --part {args.part}` first")
    rows = trust.load_rows(rows_path)
    floor = max(float(r.get("floor", args.floor)) for r in rows)
    if args.action == "fit":
        if args.part != "dev":
            raise InputError("`eval trust fit` fits on dev only; report test with `eval trust report --part test`")
        calib = trust.fit_dev(rows, records, floor, resolve_path(args.calibration_out))
        if args.json:
            _print_json(calib)
            return 0
        print(f"calibration written to {resolve_path(args.calibration_out)}; chosen on dev: "
              f"verifier.answerable_min={calib['answerable_min']} confidence.abstain_below={calib['abstain_below']}")
        return 0
    summary = trust.report(rows, trust.settings_from(cfg, floor), records, out, args.part)
    if args.json:
        _print_json(summary)
        return 0
    print(trust.markdown(summary))
    print(f"figures and summary-{args.part}.json in {out}")
    return 0


def _print_status(st: dict[str, Any]) -> None:
    c = st["counts"]
    print(f"index {st['index']}\n  version {st['version']} (parent {st['parent_version']}), created {st['created']}")
    print(f"  embedder {st['embedder']['model_id']} dim {st['embedder']['dim']}")
    d = st["dense"]
    params = ", ".join(f"{k} {d[k]}" for k in ("m", "ef_construction", "ef_search") if k in d)
    where = f"table {d['table']} at {d.get('url')}" if d["store"] == "postgres" else d.get("file", "dense.faiss")
    print(f"  dense {d['store']} {d['type']}{f' ({params})' if params else ''}: {where}")
    print(f"  {c['documents']} documents {c['documents_by_kind']}, {c['parents']} sections, "
          f"{c['children']} passages {c['children_by_kind']}")
    docs, pars, kids = (c.get(f"{x}_by_collection", {}) for x in ("documents", "parents", "children"))
    if docs:
        kinds = st.get("collection_kinds", {})
        print(f"  {'collection':22s} {'kind':10s} {'documents':>10s} {'sections':>10s} {'passages':>10s}")
        for name in docs:
            print(f"  {name or '-':22s} {kinds.get(name, ''):10s} {docs[name]:>10,} {pars.get(name, 0):>10,} "
                  f"{kids.get(name, 0):>10,}")
    for src in st["sources"]:
        print(f"  source {src['path']}: {src['documents']} documents {src['by_kind']}")
    pts = st["patients"]
    shown = ", ".join(pts[:8]) + (f", … ({len(pts)} in all)" if len(pts) > 8 else "")
    print(f"  patients: {shown or '-'}; size {st['bytes'] / 1e6:.1f} MB "
          f"(embedding cache {st['cache_bytes'] / 1e6:.1f} MB)")
    last = st.get("last_update")
    if last:
        d = last["documents"]
        print(f"  last change ({last['mode']}): +{len(d['added'])} added, ~{len(d['changed'])} changed, "
              f"-{len(d['removed'])} removed documents; {last['embeddings']['computed']} passages embedded, "
              f"{last['embeddings']['cached']} reused; {len(last['skipped'])} files skipped")
        for label in ("changed", "removed", "kept"):
            if d.get(label):
                print(f"    {label}: {', '.join(d[label][:20])}" + (" …" if len(d[label]) > 20 else ""))
    print("  versions: " + ", ".join(v["version"] + (" (current)" if v["current"] else "") for v in st["versions"]))
    if st["lock"]:
        print(f"  locked by writer: {st['lock']}")


def cmd_models(args: argparse.Namespace) -> int:
    from rag.config import resolve_path
    from rag.models import fetch, list_models

    cfg = _load_config(args)
    cache = resolve_path(cfg.models.cache_dir)
    if args.models_command == "list":
        from rag.config import PROJECT_ROOT

        rows = list_models(cache, [PROJECT_ROOT / "adapters", resolve_path(cfg.train.output_dir).parent])
        if args.json:
            _print_json([r.__dict__ for r in rows])
        else:
            for r in rows:
                print(f"{r.name:40s} {r.role:10s} {r.status:12s} {r.model_id}")
            if cfg.generator.adapter:
                print(f"configured adapter: {cfg.generator.adapter}")
        return 0
    if args.models_command == "convert-lora":
        from rag.gguf_lora import convert_adapter

        lora = convert_adapter(cfg, args.adapter, args.out)
        print(f"GGUF LoRA written to {lora.path}: {lora.tensors} tensors ({lora.arch}, rank {lora.rank}, "
              f"alpha {lora.alpha:g})")
        return 0
    wanted = [cfg.embedder.model, cfg.generator.model] + ([cfg.verifier.model] if cfg.verifier.enabled else [])
    names = args.names or list(dict.fromkeys(m.split(":", 1)[1] for m in wanted if m.startswith("bundle:")))
    for name in names:
        print(f"ready: bundle:{name} -> {fetch(name, cache).path}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    cfg = _load_config(args)
    if args.action == "data":
        return _cmd_train_data(args, cfg)
    if args.action == "verifier":
        return _cmd_train_verifier(args, cfg)
    if args.action == "risk":
        return _cmd_train_risk(args, cfg)
    from finetune.train import train

    card = train(cfg, max_steps=args.max_steps, resume=args.resume, overwrite=args.overwrite, quiet=args.quiet)
    if args.json:
        _print_json(card)
        return 0
    v = card["val_loss"]
    print(f"adapter written to {cfg.train.output_dir}: {card['steps']} steps, {card['trainable_parameters']:,} "
          f"trainable parameters ({', '.join(card['lora']['target_modules'])}); val loss {v['base']} -> {v['final']}; "
          f"{card['train_samples_per_second']} samples/s")
    return 0


def _cmd_train_risk(args: argparse.Namespace, cfg: Any) -> int:
    from finetune.hf_risk_model import comparison_table, train
    from rag.config import PROJECT_ROOT, data_dir, resolve_path
    from rag.errors import InputError
    from rag.hf_model import DEFAULT_MODEL

    csv_path = data_dir(cfg) / "heart_failure" / "heart_failure_clinical_records_dataset.csv"
    if not csv_path.is_file():
        raise InputError(f"{csv_path} not found; set index.data_dir (or CDS_DATA_DIR) to the folder holding "
                         "heart_failure/")
    out = resolve_path(args.out) if args.out else DEFAULT_MODEL
    card = train(csv_path, out, PROJECT_ROOT / "docs" / "risk-calibration.png",
                 say=(lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True)))
    if args.json:
        _print_json(card)
        return 0
    print(comparison_table(card), end="")
    print(f"model and card written to {out} and {out.parent / 'MODEL_CARD.md'}; plot docs/risk-calibration.png")
    return 0


def _cmd_train_verifier(args: argparse.Namespace, cfg: Any) -> int:
    import shutil

    from eval.splits import held_out_doc_ids
    from finetune import verifier, verifier_data
    from rag.config import data_dir, resolve_path
    from rag.models import resolve

    data_out = resolve_path(".cds/verifier/data")
    run_dir = resolve_path(".cds/verifier/run")
    if args.overwrite and run_dir.exists():
        shutil.rmtree(run_dir)
    if not (data_out / "train.jsonl").exists() or args.overwrite:
        from transformers import AutoTokenizer

        # Pairs cut by the index's own chunker and the embedder's tokenizer: what the verifier reads at run time.
        tok = AutoTokenizer.from_pretrained(str(resolve(cfg.embedder.model, resolve_path(cfg.models.cache_dir)).path))
        ch = cfg.chunking
        passages_of = verifier_data.chunk_passages(lambda t: tok.encode(t, add_special_tokens=False),
                                                   ch.parent_max_tokens, ch.child_tokens, ch.child_overlap)
        parts, card = verifier_data.build(data_dir(cfg), held_out_doc_ids(), verifier_data.VerifierDataOptions(),
                                          passages_of)
        verifier_data.write(parts, card, data_out)
    base = resolve(cfg.verifier.model, resolve_path(cfg.models.cache_dir)).path
    out = resolve_path(args.out or cfg.verifier.adapter)
    card = verifier.train(data_out, base, out, run_dir, verifier.VerifierTrainOptions(), progress=not args.quiet)
    if args.json:
        _print_json(card)
        return 0
    for task, m in card["heldout"].items():
        print(f"{task}: AUROC {m['auroc']}, precision {m['precision']}, recall {m['recall']} at {m['threshold']} "
              f"({m['n']} held-out pairs)")
    print(f"verifier adapter written to {out}")
    return 0


def _cmd_train_data(args: argparse.Namespace, cfg: Any) -> int:
    from transformers import AutoTokenizer

    from eval.splits import held_out_doc_ids
    from finetune import data
    from rag import Assistant
    from rag.config import resolve_path, source_set
    from rag.models import resolve

    t = cfg.train
    inputs = data.inputs_from_sources(source_set(cfg, args.source_set))
    opts = data.DataOptions(seed=t.seed, grounded_questions=0 if args.no_index else t.grounded_questions,
                            withheld_share=t.withheld_share, source_tokens=t.source_tokens, hf_format=t.hf_format)
    tok = AutoTokenizer.from_pretrained(str(resolve(cfg.generator.model, resolve_path(cfg.models.cache_dir)).path))

    def count(text: str) -> int:
        return len(tok.encode(text, add_special_tokens=False))

    assistant = None if args.no_index else Assistant(cfg, progress=not args.quiet)
    examples, card = data.build(inputs, held_out_doc_ids(), opts, assistant, count, progress=not args.quiet)
    out = Path(args.out) if args.out else resolve_path(t.data_dir)
    data.write(examples, card, out)
    if args.json:
        _print_json(card)
        return 0
    print(data.card_markdown(card))
    print(f"written to {out}")
    return 0


def _bar(total: int) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc="answering", unit="answer", file=sys.stderr)


def _advance(bar: Any) -> Any:
    """A ``progress(done, total)`` callback that moves ``bar`` (None: no callback)."""
    if bar is None:
        return None

    def progress(done: int, _total: int) -> None:
        bar.n = done
        bar.refresh()

    return progress


def _cmd_eval_tuning(args: argparse.Namespace) -> int:
    """`eval grounded` and `eval hf-risk`: what fine-tuning changed, base vs adapter."""
    from rag import Assistant
    from rag.config import resolve_path, source_set

    if args.base:
        args.overrides = [*args.overrides, "generator.adapter=null"]
    cfg = _load_config(args)
    assistant = Assistant(cfg, progress=not args.quiet)
    out = Path(args.output)
    if args.eval_command in ("hf-risk", "patient-records"):
        csv_path = Path(args.csv) if args.csv else Path(next(
            s.partition(":")[2] for s in source_set(cfg, "full") if s.startswith("uci-heart-failure:")))
        data = Path(args.data) if args.data else resolve_path(cfg.train.data_dir)
    if args.eval_command == "patient-records":
        from eval import patient_records as pr

        qs = pr.questions(data, args.limit)
        bar = None if args.quiet else _bar(len(qs))
        summary = pr.evaluate(assistant, qs, csv_path, out, batch_size=args.batch_size, progress=_advance(bar))
        if bar is not None:
            bar.close()
        if args.json:
            _print_json(summary)
        else:
            print(pr.markdown({str(summary["model"].get("adapter") or "base"): summary}), end="")
            print(f"written to {out}")
        return 0
    if args.eval_command == "hf-risk":
        from eval.hf_risk import evaluate as hf_evaluate

        summary = hf_evaluate(assistant.generator, data, csv_path, out, batch_size=args.batch_size)
        if args.json:
            _print_json(summary)
        else:
            a = summary["auroc"]
            print(f"{summary['patients']} held-out patients ({summary['deaths']} died): AUROC stated category "
                  f"{a['stated_category']}, logistic regression {a['logistic_regression']}, rule points "
                  f"{a['rule_points']}; unparsed {summary['unparsed']}; written to {out}")
        return 0
    from eval import grounded
    from eval.retrieval import medquad_path
    from eval.splits import DEFAULT_SPLIT

    if args.limit < 1:
        from rag.errors import InputError

        raise InputError("--limit must be at least 1")
    withheld = None
    if args.reuse:
        qs, withheld = grounded.reuse(Path(args.reuse), args.limit)
    else:
        qs = grounded.questions(medquad_path(cfg, args.medquad), Path(args.split) if args.split else DEFAULT_SPLIT,
                                args.limit, args.seed)
    bar = None if args.quiet else _bar(len(qs) * (2 if args.both else 1))

    summary = grounded.evaluate(assistant, qs, out, batch_size=args.batch_size, progress=_advance(bar),
                                withheld_share=args.withheld_share, both=args.both, seed=args.seed, withheld=withheld)
    if bar is not None:
        bar.close()
    if args.reuse:
        summary["paired"] = grounded.paired(Path(args.reuse), out)
        (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    if args.json:
        _print_json(summary)
    else:
        print(grounded.markdown({str(summary["model"].get("adapter") or "base"): summary}), end="")
        for k, v in summary.get("paired", {}).items():
            if isinstance(v, dict):
                print(f"paired with {args.reuse}, {k}: {v['only_a']} only there, {v['only_b']} only here "
                      f"(of {v['n']}; McNemar p={v['mcnemar_p']})")
        print(f"written to {out}")
    return 0


def _cmd_eval_mcq(args: argparse.Namespace) -> int:
    from eval.mcq import report

    if args.eval_command == "compare":
        result = report.compare_runs(args.run_a, args.run_b, args.seed, args.resamples)
        _print_json(result) if args.json else print(report.format_comparison(result))
        return 0
    from eval.mcq.runner import RunSpec, conditions_from_flags, run

    conditions = conditions_from_flags(args.matrix, args.conditions, args.adapter, args.rag)
    cfg = _load_config(args)
    spec = RunSpec(bench=args.bench, data=args.data, output=args.output, conditions=conditions,
                   adapter=args.adapter, limit=args.limit, seed=args.seed, batch_size=args.batch_size,
                   subjects=[s.strip() for s in args.subjects.split(",")] if args.subjects else None,
                   k_shot=args.k_shot, fewshot=args.fewshot, chat_template=args.chat_template, scorer=args.scorer,
                   max_new_tokens=args.max_new_tokens, rag_k=args.rag_k, rag_tokens=args.rag_tokens,
                   cop_base=args.cop_base, prefix_cache=not args.no_prefix_cache, overwrite=args.overwrite,
                   skip_missing_adapter=args.matrix)
    out = sys.stderr if args.json else sys.stdout
    results = run(cfg, spec, progress=not args.quiet and sys.stderr.isatty(),
                  say=(lambda m: None) if args.quiet else (lambda m: print(m, file=out, flush=True)))
    if args.json:
        _print_json([r.summary for r in results])
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.overrides = [*args.overrides, *getattr(args, "sub_overrides", [])]
    level = logging.DEBUG if args.verbose else (logging.ERROR if args.quiet else logging.WARNING)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        import warnings

        warnings.filterwarnings("ignore")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        # bitsandbytes (imported by peft with an adapter) warns on every run that an optional CPU
        # kernel package is missing; we do not use 4-bit inference, so it is noise in the answer.
        logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
        if "transformers" in sys.modules:  # imported before main() (Python callers, tests): env vars came too late
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            hf_logging.set_verbosity_error()
    from rag.errors import CDSError

    handlers = {"query": cmd_query, "serve": cmd_serve,
                "index": cmd_index, "models": cmd_models, "eval": cmd_eval, "train": cmd_train,
                "risk": cmd_risk}
    try:
        return handlers[args.command](args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if args.verbose:
            raise
        message, code = _error_line(e, CDSError)
        print(f"error: {message}", file=sys.stderr)
        return code


def _error_line(e: Exception, cds_error: type[Exception]) -> tuple[str, int]:
    """One line saying what went wrong and what to do, and the exit code (2 input, 1 runtime)."""
    if isinstance(e, cds_error):
        return _one_line(str(e)), int(getattr(e, "exit_code", 1))
    if isinstance(e, PermissionError):
        return (f"permission denied: {_one_line(str(e.filename or e))}; check its permissions, or run as the "
                "owner of the files"), 2
    if isinstance(e, OSError):
        return (f"{_one_line(e.strerror or str(e))}: {_one_line(str(e.filename or ''))}; check the path, the "
                "free disk space and the folder's permissions (run with -v for the traceback)"), 1
    return (f"{type(e).__name__}: {_one_line(str(e).splitlines()[0] if str(e) else '')} "
            "(an unexpected failure: run with -v for the traceback and report it)"), 1

if __name__ == "__main__":
    sys.exit(main())
