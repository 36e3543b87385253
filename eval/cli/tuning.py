"""What fine-tuning changed, base vs adapter: ``eval grounded``, ``eval hf-risk``, ``eval patient-records``;
and ``eval risk-extraction`` (the risk inputs read from our labelled case descriptions)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from eval.cli import advance, bar
from rag.cli import load_config, print_json, with_index


def _model_run(p: argparse.ArgumentParser, files: str, records: bool = False) -> None:
    """Options of a base-vs-tuned measurement (``records``: on the held-out heart-failure patients)."""
    p.add_argument("--output", required=True, help=f"run folder: {files}")
    p.add_argument("--adapter", help="LoRA adapter folder for the generator (default: generator.adapter)")
    p.add_argument("--base", action="store_true", help="ignore generator.adapter: evaluate the base model")
    if records:
        p.add_argument("--data", help="training-data folder with test.jsonl (default: train.data_dir)")
        p.add_argument("--csv", help="UCI heart-failure CSV (default: the config's source set)")


def add(esub: Any, common: argparse.ArgumentParser) -> None:
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
    with_index(eg)
    eg.set_defaults(handler=grounded)
    eh = esub.add_parser("hf-risk", parents=[common], help="stated heart-failure risk categories vs outcome (AUROC) "
                         "against logistic regression")
    _model_run(eh, "summary.json, replies.jsonl", records=True)
    eh.add_argument("--batch-size", type=int, default=8)
    eh.add_argument("--json", action="store_true")
    eh.set_defaults(handler=hf_risk)
    ex = esub.add_parser("risk-extraction", parents=[common], help="heart-failure risk inputs read from our labelled "
                         "case descriptions (eval/hf_cases): per-variable accuracy, invented values")
    ex.add_argument("--part", choices=["dev", "test", "fresh", "all"], default="test")
    ex.add_argument("--json", action="store_true", help="the summary with one record per case")
    ex.set_defaults(handler=risk_extraction)
    ep = esub.add_parser("patient-records", parents=[common], help="held-out patients' record questions through "
                         "the assistant: states the value and cites the record? abstains when it is not there?")
    _model_run(ep, "summary.json, answers.jsonl", records=True)
    ep.add_argument("--limit", type=int, help="first N questions (default: all)")
    ep.add_argument("--batch-size", type=int, default=8)
    ep.add_argument("--json", action="store_true")
    with_index(ep)
    ep.set_defaults(handler=patient_records)


def _config(args: argparse.Namespace) -> Any:
    if args.base:
        args.overrides = [*args.overrides, "generator.adapter=null"]
    return load_config(args)


def _records(args: argparse.Namespace, cfg: Any) -> tuple[Path, Path]:
    """The UCI heart-failure CSV and the training-data folder (the flags, else the config's)."""
    from rag.config import resolve_path, source_in_set

    csv_path = Path(args.csv) if args.csv else source_in_set(cfg, "full", "uci-heart-failure")
    return csv_path, Path(args.data) if args.data else resolve_path(cfg.train.data_dir)


def _opened(cfg: Any, args: argparse.Namespace, build_missing: bool = True) -> Any:
    from rag import Assistant

    return Assistant.open(cfg, build_missing=build_missing, progress=not args.quiet)


def risk_extraction(args: argparse.Namespace) -> int:
    from eval.hf_extraction import markdown, read_cases, score

    summary = score(read_cases(args.part))
    if args.json:
        print_json(summary)
    else:
        print(markdown(summary, args.part), end="")
    return 0


def hf_risk(args: argparse.Namespace) -> int:
    from eval.hf_risk import evaluate

    cfg = _config(args)
    assistant = _opened(cfg, args, build_missing=False)  # the generator only: no index
    csv_path, data = _records(args, cfg)
    out = Path(args.output)
    summary = evaluate(assistant.generator, data, csv_path, out, batch_size=args.batch_size)
    if args.json:
        print_json(summary)
    else:
        a = summary["auroc"]
        print(f"{summary['patients']} held-out patients ({summary['deaths']} died): AUROC stated category "
              f"{a['stated_category']}, logistic regression {a['logistic_regression']}, rule points "
              f"{a['rule_points']}; unparsed {summary['unparsed']}; written to {out}")
    return 0


def patient_records(args: argparse.Namespace) -> int:
    from eval import patient_records as pr

    cfg = _config(args)
    csv_path, data = _records(args, cfg)
    qs = pr.questions(data, args.limit)
    assistant = _opened(cfg, args)
    out = Path(args.output)
    progress_bar = None if args.quiet else bar(len(qs))
    summary = pr.evaluate(assistant, qs, csv_path, out, batch_size=args.batch_size, progress=advance(progress_bar))
    if progress_bar is not None:
        progress_bar.close()
    if args.json:
        print_json(summary)
    else:
        print(pr.markdown({str(summary["model"].get("adapter") or "base"): summary}), end="")
        print(f"written to {out}")
    return 0


def grounded(args: argparse.Namespace) -> int:
    from eval import grounded as gr
    from eval.retrieval import medquad_path
    from eval.splits import DEFAULT_SPLIT
    from rag.errors import InputError

    cfg = _config(args)
    if args.limit < 1:
        raise InputError("--limit must be at least 1")
    withheld = None
    if args.reuse:
        qs, withheld = gr.reuse(Path(args.reuse), args.limit)
    else:
        qs = gr.questions(medquad_path(cfg, args.medquad), Path(args.split) if args.split else DEFAULT_SPLIT,
                          args.limit, args.seed)
    assistant, out = _opened(cfg, args), Path(args.output)
    progress_bar = None if args.quiet else bar(len(qs) * (2 if args.both else 1))
    summary = gr.evaluate(assistant, qs, out, batch_size=args.batch_size, progress=advance(progress_bar),
                          withheld_share=args.withheld_share, both=args.both, seed=args.seed, withheld=withheld)
    if progress_bar is not None:
        progress_bar.close()
    if args.reuse:
        summary["paired"] = gr.paired(Path(args.reuse), out)
        (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    if args.json:
        print_json(summary)
        return 0
    print(gr.markdown({str(summary["model"].get("adapter") or "base"): summary}), end="")
    for k, v in summary.get("paired", {}).items():
        if isinstance(v, dict):
            print(f"paired with {args.reuse}, {k}: {v['only_a']} only there, {v['only_b']} only here "
                  f"(of {v['n']}; McNemar p={v['mcnemar_p']})")
    print(f"written to {out}")
    return 0
