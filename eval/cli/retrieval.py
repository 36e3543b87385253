"""``app.py eval split`` (the held-out MedQuAD split) and ``eval retrieval`` (question -> answer page metrics)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rag.cli import load_config, print_json, with_index


def add(esub: Any, common: argparse.ArgumentParser) -> None:
    sp = esub.add_parser("split", parents=[common], help="write the held-out MedQuAD question split (ids only)")
    sp.add_argument("--medquad", help="MedQuAD folder (default: index.data_dir/medquad)")
    sp.add_argument("--seed", type=int, default=13)
    sp.add_argument("--test", type=int, default=2000, help="minimum test questions")
    sp.add_argument("--dev", type=int, default=500, help="minimum dev questions (for choosing defaults)")
    sp.add_argument("--output", help="split file (default: eval/splits/medquad_retrieval.json)")
    sp.set_defaults(handler=split)
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
    with_index(er)
    er.set_defaults(handler=retrieval)


def split(args: argparse.Namespace) -> int:
    from corpora import load_sources
    from eval.retrieval import medquad_path
    from eval.splits import DEFAULT_SPLIT, make_split, write_split

    cfg = load_config(args)
    docs = load_sources([f"medquad:{medquad_path(cfg, args.medquad)}"]).documents
    made = make_split(docs, seed=args.seed, test_questions=args.test, dev_questions=args.dev)
    out = Path(args.output) if args.output else DEFAULT_SPLIT
    write_split(made, out)
    print(f"wrote {out}: {made['counts']} questions from {len(made['files']['test'])} + "
          f"{len(made['files']['dev'])} MedQuAD files (seed {args.seed})")
    return 0


def retrieval(args: argparse.Namespace) -> int:
    from eval.retrieval import evaluate, markdown_table, medquad_path
    from eval.splits import DEFAULT_SPLIT
    from rag import Assistant
    from rag.errors import InputError

    cfg = load_config(args)
    if args.limit is not None and args.limit < 1:
        raise InputError("--limit must be at least 1")
    assistant = Assistant.open(cfg, progress=not args.quiet)
    summary = evaluate(assistant, medquad_path(cfg, args.medquad), Path(args.split) if args.split else DEFAULT_SPLIT,
                       part=args.part, modes=[m.strip() for m in args.modes.split(",") if m.strip()],
                       limit=args.limit, depth=args.depth, n_boot=args.bootstrap,
                       output=Path(args.output) if args.output else None, progress=not args.quiet)
    if args.json:
        print_json(summary)
        return 0
    print(f"{summary['n_queries']} {summary['part']} queries, index {summary['index_version']} "
          f"({summary['index_children']} passages), depth {summary['depth']}; query encoding "
          f"{summary['query_encode_ms_per_query']:.1f} ms/query\n")
    print(markdown_table(summary))
    print(f"best single retriever: {summary['best_single']}; best mode by nDCG@10: {summary['winner']}")
    return 0
