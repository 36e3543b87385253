"""Choose the fusion defaults on the MedQuAD *dev* questions (never on test).

    python eval/sweep_fusion.py --config configs/full.yaml

Searches each dev question once per retriever, then scores every combination of fusion
method, BM25 weight and merge score on the same candidates. Prints nDCG@10 per variant;
the chosen values go into configs/*.yaml and BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="configs/full.yaml")
    ap.add_argument("--depth", type=int, default=100)
    ap.add_argument("--weights", default="0.25,0.5,0.75,1.0", help="BM25 weights (dense weight is 1)")
    args = ap.parse_args()
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    from corpora import load_sources
    from eval.metrics import bootstrap_ci, dedupe, ndcg_at
    from eval.retrieval import RetrievalEvaluator, build_queries, medquad_path
    from eval.splits import load_split
    from rag import Assistant
    from rag.config import load_config
    from rag.retrieve import MERGE_SCORES, fuse

    cfg = load_config(args.config, ["index.auto_build_demo=false"])
    assistant = Assistant(cfg, progress=False)
    docs = load_sources([f"medquad:{medquad_path(cfg, None)}"]).documents
    queries = build_queries(docs, load_split(), "dev")
    ev = RetrievalEvaluator(assistant.retriever(), depth=args.depth)
    vecs = assistant.embedder.encode_queries([q.text for q in queries])
    weights = [float(w) for w in args.weights.split(",")]
    scores: dict[str, list[float]] = {}

    def add(name: str, docs_ranked: list[str], gold: set[str]) -> None:
        scores.setdefault(name, []).append(ndcg_at(dedupe(docs_ranked), gold))

    for q, v in zip(queries, vecs, strict=True):
        dense, bm25, _ = ev.candidates(v.astype(np.float32), q.text)
        add("dense", [ev.doc_of[c] for c, _ in dense], q.gold)
        add("bm25", [ev.doc_of[c] for c, _ in bm25], q.gold)
        for method in ("rrf", "wsum"):
            for w in weights:
                fused = fuse({"dense": dense, "bm25": bm25}, {"dense": 1.0, "bm25": w}, method, cfg.retrieval.rrf_k)
                add(f"{method} bm25_weight={w}", [ev.doc_of[f.chunk_id] for f in fused], q.gold)
                for ms in MERGE_SCORES:
                    add(f"{method} bm25_weight={w} + merge({ms})", ev.merged_docs(fused, ms), q.gold)
    print(f"{len(queries)} dev questions, depth {args.depth}, index {assistant.index.version}\n")
    print("| variant | nDCG@10 (dev) | 95% CI |\n|---|---|---|")
    for name, vals in sorted(scores.items(), key=lambda kv: -np.mean(kv[1])):
        lo, hi = bootstrap_ci(vals, 1000, 0)
        print(f"| {name} | {100 * np.mean(vals):.1f} | [{100 * lo:.1f}, {100 * hi:.1f}] |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
