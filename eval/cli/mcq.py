"""``app.py eval mcq`` (multiple-choice accuracy, :mod:`eval.mcq.runner`) and ``eval compare`` (two runs, paired)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from rag.cli import load_config, print_json, say, with_index


def add(esub: Any, common: argparse.ArgumentParser) -> None:
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
    with_index(mcq)
    mcq.set_defaults(handler=run)


def add_compare(esub: Any, common: argparse.ArgumentParser) -> None:
    cmp = esub.add_parser("compare", parents=[common], help="paired comparison of two runs on the same questions")
    cmp.add_argument("run_a", help="run folder (or predictions.jsonl)")
    cmp.add_argument("run_b", help="run folder (or predictions.jsonl)")
    cmp.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    cmp.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples")
    cmp.add_argument("--json", action="store_true")
    cmp.set_defaults(handler=compare)


def compare(args: argparse.Namespace) -> int:
    from eval.mcq import report

    result = report.compare_runs(args.run_a, args.run_b, args.seed, args.resamples)
    print_json(result) if args.json else print(report.format_comparison(result))
    return 0


def run(args: argparse.Namespace) -> int:
    from eval.mcq.runner import RunSpec, conditions_from_flags
    from eval.mcq.runner import run as run_spec

    conditions = conditions_from_flags(args.matrix, args.conditions, args.adapter, args.rag)
    cfg = load_config(args)
    spec = RunSpec(bench=args.bench, data=args.data, output=args.output, conditions=conditions,
                   adapter=args.adapter, limit=args.limit, seed=args.seed, batch_size=args.batch_size,
                   subjects=[s.strip() for s in args.subjects.split(",")] if args.subjects else None,
                   k_shot=args.k_shot, fewshot=args.fewshot, chat_template=args.chat_template, scorer=args.scorer,
                   max_new_tokens=args.max_new_tokens, rag_k=args.rag_k, rag_tokens=args.rag_tokens,
                   cop_base=args.cop_base, prefix_cache=not args.no_prefix_cache, overwrite=args.overwrite,
                   skip_missing_adapter=args.matrix)
    results = run_spec(cfg, spec, progress=not args.quiet and sys.stderr.isatty(),
                       say=say(args.quiet, sys.stderr if args.json else sys.stdout))
    if args.json:
        print_json([r.summary for r in results])
    return 0
