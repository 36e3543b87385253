"""Retrieval evaluation: MedQuAD question -> the document holding its answer.

The corpus is the whole index (all answered MedQuAD pairs plus every other source as
distractors, patient records included: evaluation is unscoped). Queries are a held-out split
(:mod:`eval.splits`). A retrieved passage counts when it belongs to a gold document; gold
is the question's own answer plus any other MedQuAD document with the identical answer text
(MedQuAD repeats some answers verbatim across questions). Rankings are compared at the
document level, so several passages of one answer count once and modes that merge passages
into sections stay comparable with modes that do not.

Modes:
    bm25      BM25 alone                      dense     dense (FAISS) alone
    rrf       weighted reciprocal rank fusion
    wsum      score-normalised weighted fusion (min-max per retriever, then weighted sum)
    hybrid+merge  the configured fusion (retrieval.fusion), then auto-merge into parent sections
              (retrieval.merge_score): exactly what `query` ranks
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from corpora.document import Document
from eval.metrics import bootstrap_ci, dedupe, mrr_at, ndcg_at, paired_bootstrap_diff, recall_at
from rag.errors import InputError
from rag.index import HybridIndex
from rag.retrieve import HybridRetriever, auto_merge, rrf_fuse, weighted_score_fusion

log = logging.getLogger(__name__)

MODES = ("bm25", "dense", "rrf", "wsum", "hybrid+merge")
METRICS = ("recall@1", "recall@5", "recall@10", "recall@20", "mrr@10", "ndcg@10")


@dataclass
class Query:
    qid: str
    doc_id: str
    text: str
    gold: set[str]


@dataclass
class ModeResult:
    per_query: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    ranked: list[list[str]] = field(default_factory=list)
    search_ms: list[float] = field(default_factory=list)


def build_queries(docs: Sequence[Document], split: dict[str, Any], part: str, limit: int | None = None
                  ) -> list[Query]:
    """Queries of one split part, with gold = documents sharing the answer text."""
    by_id = {d.doc_id: d for d in docs}
    same_answer: dict[str, set[str]] = defaultdict(set)
    for d in docs:
        if d.meta.get("collection") == "medquad":
            same_answer[_answer_key(d)].add(d.doc_id)
    queries = []
    missing = 0
    for q in split[part]:
        doc = by_id.get(q["doc_id"])
        if doc is None:
            missing += 1
            continue
        queries.append(Query(q["qid"], doc.doc_id, str(doc.meta["question"]), same_answer[_answer_key(doc)]))
    if missing:
        raise InputError(f"{missing} split questions are not in the MedQuAD data read; the split was made from "
                         "another copy of MedQuAD: recreate it with `python app.py eval split`")
    return queries[:limit] if limit else queries


def _answer_key(d: Document) -> str:
    return " ".join(d.text.split("\n", 2)[-1].split())  # drop the "## Qtype" heading


class RetrievalEvaluator:
    """Runs every mode on shared candidate lists (each query is searched once per retriever)."""

    def __init__(self, retriever: HybridRetriever, depth: int = 100):
        self.r = retriever
        self.index: HybridIndex = retriever.index
        self.depth = depth
        self.doc_of = {c.chunk_id: c.doc_id for c in self.index.children}
        self.all_allowed = np.ones(len(self.index.children), dtype=bool)

    def candidates(self, qv: np.ndarray, text: str) -> tuple[list[tuple[str, float]], list[tuple[str, float]],
                                                             dict[str, float]]:
        """Dense and BM25 candidate lists over every passage, and their search times; ``text`` is the question
        as asked (BM25 gets the configured abbreviation expansion, as in :meth:`HybridRetriever.search`)."""
        text = self.r.bm25_query(text)
        t = time.perf_counter()
        dense = self.r._dense(qv, self.all_allowed, self.depth)
        t1 = time.perf_counter()
        bm25 = self.r._bm25(text, self.all_allowed, self.depth)
        t2 = time.perf_counter()
        return dense, bm25, {"dense": (t1 - t) * 1000, "bm25": (t2 - t1) * 1000}

    def merged_docs(self, fused: list[Any], merge_score: str) -> list[str]:
        children = {f.chunk_id: self.index.children[self.index.child_pos[f.chunk_id]] for f in fused}
        units = auto_merge(fused, children, self.index.parents, self.r.merge_threshold, len(fused), merge_score)
        return [u.chunk.doc_id for u in units]

    def rankings(self, qv: np.ndarray, text: str) -> tuple[dict[str, list[str]], dict[str, float]]:
        dense, bm25, ms = self.candidates(qv, text)
        lists = {"dense": dense, "bm25": bm25}
        t = time.perf_counter()
        rrf = rrf_fuse(lists, self.r.weights, self.r.rrf_k)
        ms["rrf"] = ms["dense"] + ms["bm25"] + (time.perf_counter() - t) * 1000
        t = time.perf_counter()
        wsum = weighted_score_fusion(lists, self.r.weights)
        ms["wsum"] = ms["dense"] + ms["bm25"] + (time.perf_counter() - t) * 1000
        t = time.perf_counter()
        configured = rrf if self.r.fusion == "rrf" else wsum
        merged = self.merged_docs(configured, self.r.merge_score)
        ms["hybrid+merge"] = ms[self.r.fusion] + (time.perf_counter() - t) * 1000
        ranked = {
            "bm25": [self.doc_of[c] for c, _ in bm25],
            "dense": [self.doc_of[c] for c, _ in dense],
            "rrf": [self.doc_of[f.chunk_id] for f in rrf],
            "wsum": [self.doc_of[f.chunk_id] for f in wsum],
            "hybrid+merge": merged,
        }
        return {k: dedupe(v) for k, v in ranked.items()}, ms

    def run(self, queries: Sequence[Query], modes: Sequence[str] = MODES, progress: bool = False
            ) -> tuple[dict[str, ModeResult], dict[str, float]]:
        t = time.perf_counter()
        # The configured query handling (abbreviation expansion), as the product's retrieve() applies it.
        vectors = self.r.embedder.encode_queries([self.r.dense_query(q.text) for q in queries])
        encode_s = time.perf_counter() - t
        results = {m: ModeResult() for m in modes}
        it: Any = range(len(queries))
        if progress:
            from tqdm import tqdm

            it = tqdm(it, desc="queries", unit="q", disable=None)
        for i in it:
            q = queries[i]
            ranked, ms = self.rankings(vectors[i].astype(np.float32), q.text)
            for m in modes:
                res = results[m]
                res.ranked.append(ranked[m][:20])
                res.search_ms.append(ms[m])
                for k in (1, 5, 10, 20):
                    res.per_query[f"recall@{k}"].append(recall_at(ranked[m], q.gold, k))
                res.per_query["mrr@10"].append(mrr_at(ranked[m], q.gold))
                res.per_query["ndcg@10"].append(ndcg_at(ranked[m], q.gold))
        return results, {"query_encode_ms_per_query": encode_s * 1000 / max(1, len(queries))}


def summarise(results: dict[str, ModeResult], n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for mode, res in results.items():
        row: dict[str, Any] = {}
        for metric in METRICS:
            vals = res.per_query[metric]
            lo, hi = bootstrap_ci(vals, n_boot, seed)
            row[metric] = {"mean": float(np.mean(vals)), "ci95": [lo, hi]}
        ms = np.asarray(res.search_ms)
        row["search_ms"] = {"p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95))}
        table[mode] = row
    best_single = max(("bm25", "dense"), key=lambda m: table[m]["ndcg@10"]["mean"]) \
        if {"bm25", "dense"} <= set(results) else None
    comparisons = {}
    if best_single:
        for mode in results:
            if mode in ("bm25", "dense"):
                continue
            d, lo, hi = paired_bootstrap_diff(results[mode].per_query["ndcg@10"],
                                              results[best_single].per_query["ndcg@10"], n_boot, seed)
            comparisons[f"{mode} - {best_single}"] = {"ndcg@10_diff": d, "ci95": [lo, hi]}
    winner = max(table, key=lambda m: table[m]["ndcg@10"]["mean"])
    return {"modes": table, "best_single": best_single, "paired_vs_best_single": comparisons, "winner": winner}


def markdown_table(summary: dict[str, Any]) -> str:
    head = "| mode | " + " | ".join(METRICS) + " | search p50 / p95 ms |"
    lines = [head, "|" + "---|" * (len(METRICS) + 2)]
    for mode, row in summary["modes"].items():
        cells = [f"{100 * row[m]['mean']:.1f} [{100 * row[m]['ci95'][0]:.1f}, {100 * row[m]['ci95'][1]:.1f}]"
                 for m in METRICS]
        lines.append(f"| {mode} | " + " | ".join(cells) +
                     f" | {row['search_ms']['p50']:.1f} / {row['search_ms']['p95']:.1f} |")
    lines.append("")
    for name, c in summary["paired_vs_best_single"].items():
        lines.append(f"- nDCG@10 {name}: {100 * c['ndcg@10_diff']:+.1f} points "
                     f"[{100 * c['ci95'][0]:+.1f}, {100 * c['ci95'][1]:+.1f}] (paired bootstrap)")
    return "\n".join(lines) + "\n"


def write_outputs(out: Path, summary: dict[str, Any], queries: Sequence[Query], results: dict[str, ModeResult]
                  ) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    (out / "table.md").write_text(markdown_table(summary), encoding="utf-8")
    with (out / "per_query.jsonl").open("w", encoding="utf-8") as f:
        for i, q in enumerate(queries):
            rec: dict[str, Any] = {"qid": q.qid, "doc_id": q.doc_id, "gold": sorted(q.gold)}
            for mode, res in results.items():
                rec[mode] = {"top": res.ranked[i][:10], **{m: res.per_query[m][i] for m in METRICS}}
            f.write(json.dumps(rec) + "\n")


def medquad_path(config: Any, given: str | None) -> Path:
    from rag.config import data_dir

    return Path(given) if given else data_dir(config) / "medquad"


def evaluate(assistant: Any, medquad: Path, split_path: Path, part: str = "test", modes: Sequence[str] = MODES,
             limit: int | None = None, depth: int = 100, n_boot: int = 1000, seed: int = 0,
             output: Path | None = None, progress: bool = False) -> dict[str, Any]:
    """Evaluate the configured index and retriever on one split part; optionally write outputs."""
    from corpora import load_sources
    from eval.splits import load_split

    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise InputError(f"unknown mode(s) {', '.join(unknown)}; choose from {', '.join(MODES)}")
    split = load_split(split_path)
    if part not in split:
        have = ", ".join(k for k in ("test", "dev") if k in split)
        raise InputError(f"split {split_path} has no part '{part}' (has {have})")
    if not medquad.exists():
        raise InputError(f"MedQuAD not found at {medquad}; pass --medquad PATH or set index.data_dir / CDS_DATA_DIR")
    docs = load_sources([f"medquad:{medquad}"]).documents
    queries = build_queries(docs, split, part, limit)
    index = assistant.index
    missing = [q.doc_id for q in queries if q.doc_id not in index.manifest["documents"]]
    if missing:
        raise InputError(f"index {index.root} (version {index.version}) lacks {len(missing)} of the "
                         f"{len(queries)} gold MedQuAD documents; build the full index first: "
                         "`python app.py --config configs/full.yaml index build --source-set full`")
    evaluator = RetrievalEvaluator(assistant.retriever(), depth=depth)
    t = time.perf_counter()
    results, timing = evaluator.run(queries, modes, progress=progress)
    summary = summarise(results, n_boot, seed)
    summary.update({
        "n_queries": len(queries), "part": part, "split": str(split_path), "split_seed": split.get("seed"),
        "depth": depth, "bootstrap": n_boot, "index": str(index.root), "index_version": index.version,
        "index_children": len(index.children), "embedder": index.manifest["embedder"],
        "weights": evaluator.r.weights, "rrf_k": evaluator.r.rrf_k, "merge_threshold": evaluator.r.merge_threshold,
        "fusion": evaluator.r.fusion, "merge_score": evaluator.r.merge_score,
        "wall_s": time.perf_counter() - t, **timing,
    })
    if output is not None:
        write_outputs(output, summary, queries, results)
    return summary
