"""Hybrid retrieval: dense + BM25 candidates, weighted reciprocal rank fusion, auto-merge.

The fusion and merge functions are pure (ids and scores in, ids and scores out) so they are
tested without models; :class:`HybridRetriever` wires them to a loaded :class:`HybridIndex`.
Patient scoping is applied inside both searches (the vector store's scoped search, BM25 score mask) and
checked again on the fused result, so a record of another patient can never surface.

The dense and the BM25 search of a query run at once when the process may use more than one CPU:
BM25 on the process's search pool (:mod:`rag.threads`), the dense search on the calling thread (a
sharded HNSW store hands its graphs to the same pool, behind BM25). The two are independent, so the
results are those of running them one after the other (tests/test_vectorstore.py checks it).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from rag.abbrev import expand
from rag.chunk import Chunk
from rag.embed import Embedder
from rag.index import HybridIndex
from rag.text import tokenize as bm25_tokenize
from rag.threads import available_cpus, search_pool

Ranking = Sequence[tuple[str, float]]  # (chunk_id, retriever score), best first


@dataclass
class Fused:
    chunk_id: str
    score: float
    ranks: dict[str, int] = field(default_factory=dict)  # retriever -> 1-based rank
    raw: dict[str, float] = field(default_factory=dict)  # retriever -> its own score


def rrf_fuse(rankings: Mapping[str, Ranking], weights: Mapping[str, float], rrf_k: int = 60) -> list[Fused]:
    """Weighted reciprocal rank fusion: score(d) = sum_r w_r / (rrf_k + rank_r(d)).

    Deduplicates by chunk id (a retriever listing an id twice counts at its best rank).
    Ties are broken by best single rank, then id, so the order is deterministic.
    """
    fused: dict[str, Fused] = {}
    for name, ranking in rankings.items():
        w = weights.get(name, 1.0)
        for rank, (cid, score) in enumerate(ranking, start=1):
            f = fused.setdefault(cid, Fused(cid, 0.0))
            if name in f.ranks:
                continue
            f.ranks[name] = rank
            f.raw[name] = float(score)
            f.score += w / (rrf_k + rank)
    return sorted(fused.values(), key=lambda f: (-f.score, min(f.ranks.values()), f.chunk_id))


@dataclass
class Unit:
    """One numbered source: a parent section (merged) or a lone child passage."""

    chunk: Chunk  # the text shown to the generator
    score: float
    hits: list[Fused]  # the retrieved children inside it, best first; their spans are what is cited
    merged: bool


def weighted_score_fusion(rankings: Mapping[str, Ranking], weights: Mapping[str, float]) -> list[Fused]:
    """Score-normalised fusion: min-max normalise each retriever's scores over its candidates,
    then sum with weights (a candidate missing from a list gets 0 from it).

    Unlike RRF it keeps how much better the top hit is than the rest, which matters when one
    retriever is clearly stronger (dense on consumer-language questions; see BENCHMARKS.md).
    """
    fused: dict[str, Fused] = {}
    for name, ranking in rankings.items():
        if not ranking:
            continue
        scores = np.array([s for _, s in ranking], dtype=np.float64)
        lo, hi = scores.min(), scores.max()
        norm = (scores - lo) / (hi - lo) if hi > lo else np.ones_like(scores)
        for rank, ((cid, raw), n) in enumerate(zip(ranking, norm, strict=True), start=1):
            f = fused.setdefault(cid, Fused(cid, 0.0))
            if name in f.ranks:
                continue
            f.ranks[name], f.raw[name] = rank, float(raw)
            f.score += weights.get(name, 1.0) * float(n)
    return sorted(fused.values(), key=lambda f: (-f.score, min(f.ranks.values()), f.chunk_id))


def fuse(rankings: Mapping[str, Ranking], weights: Mapping[str, float], method: str, rrf_k: int) -> list[Fused]:
    if method == "wsum":
        return weighted_score_fusion(rankings, weights)
    return rrf_fuse(rankings, weights, rrf_k)


MERGE_SCORES = ("max", "mean", "sum")


def auto_merge(fused: Sequence[Fused], children: Mapping[str, Chunk], parents: Mapping[str, Chunk],
               threshold: float, top_k: int, score: str = "max") -> list[Unit]:
    """Replace children by their parent when at least ``threshold`` of its children were retrieved.

    The parent takes the position of its best child. Its score is the best child's (``max``,
    the default), the mean (what llama-index's AutoMergingRetriever uses) or the sum; ``sum``
    let sections with several weak hits outrank the right answer and cost 20 nDCG points on the
    MedQuAD dev questions (BENCHMARKS.md).
    """
    by_parent: dict[str, list[Fused]] = defaultdict(list)
    for f in fused:
        pid = children[f.chunk_id].parent_id
        if pid:
            by_parent[pid].append(f)
    units: list[Unit] = []
    done: set[str] = set()
    for f in fused:
        child = children[f.chunk_id]
        pid = child.parent_id
        if pid in done:
            continue
        hits = by_parent.get(pid, []) if pid else []
        parent = parents.get(pid) if pid else None
        if parent is not None and len(hits) > 1 and len(hits) / max(1, len(parent.child_ids)) >= threshold:
            vals = [h.score for h in hits]
            merged = max(vals) if score == "max" else sum(vals) / len(vals) if score == "mean" else sum(vals)
            units.append(Unit(parent, merged, list(hits), merged=True))
            done.add(str(pid))
        else:
            units.append(Unit(child, f.score, [f], merged=False))
    units.sort(key=lambda u: -u.score)
    return units[:top_k]


def reserve_slots(units: list[Unit], wanted: Callable[[Unit], bool], slots: int, k: int) -> list[Unit]:
    """Reorder so that the top ``k`` holds at least ``slots`` units matching ``wanted`` (when that many exist).

    With ``--patient`` the question is about that patient, yet guideline passages often
    out-score the notes; the best patient records are moved up into the lowest places of
    the top ``k``, keeping every other unit's relative order.
    """
    head, tail = units[:k], units[k:]
    missing = slots - sum(1 for u in head if wanted(u))
    if missing <= 0:
        return units
    promote = [u for u in tail if wanted(u)][:missing]
    if not promote:
        return units
    removable = [i for i in range(len(head) - 1, -1, -1) if not wanted(head[i])][: len(promote)]
    demoted = [head[i] for i in sorted(removable)]
    head = [u for i, u in enumerate(head) if i not in set(removable)] + promote
    rest = [u for u in tail if u not in promote]
    return head + demoted + rest


def bm25_top(scores: np.ndarray, allowed: np.ndarray, k: int) -> np.ndarray:
    """Rows of the best ``k`` positive scores among ``allowed``, best first (ties by row).

    Only matching rows are ranked: masking and partitioning all 1M scores cost 6.7 ms a query,
    this 2.0 ms (BENCHMARKS.md, "Scale").
    """
    cand = np.flatnonzero((scores > 0) & allowed)
    if k <= 0:
        return cand[:0]
    if cand.size > k:
        s = scores[cand]
        kth = -np.partition(-s, k - 1)[k - 1]  # the k-th best score
        better = cand[s > kth]
        cand = np.concatenate([better, cand[s == kth][:k - better.size]])  # ties at the cut: lowest rows
    return cand[np.lexsort((cand, -scores[cand]))]


@dataclass
class Retrieval:
    units: list[Unit]
    fused: list[Fused]
    dense: list[tuple[str, float]]
    bm25: list[tuple[str, float]]
    query_vector: np.ndarray
    timings_ms: dict[str, float]


# Scores (question, passage) pairs: the verifier's answerability (Verifier.answerability's signature).
Scorer = Callable[[str, Sequence[str]], np.ndarray]


class HybridRetriever:
    def __init__(self, index: HybridIndex, embedder: Embedder, dense_k: int, bm25_k: int, rrf_k: int,
                 dense_weight: float, bm25_weight: float, merge_threshold: float, top_k: int,
                 patient_slots: int = 0, fusion: str = "rrf", merge_score: str = "sum",
                 expand_abbreviations: bool = False, reranker: Scorer | None = None, rerank_top_n: int = 20,
                 rerank_weight: float = 1.0, overlap: bool | None = None):
        # BM25 beside the dense search: None = when this process may use more than one CPU (on one,
        # handing BM25 to a thread only adds a switch); True/False force it (benchmarks, tests).
        self.overlap = overlap
        self.expand_abbreviations = expand_abbreviations
        self.reranker, self.rerank_top_n, self.rerank_weight = reranker, rerank_top_n, rerank_weight
        self.fusion = fusion
        self.merge_score = merge_score
        self.index = index
        self.embedder = embedder
        self.dense_k, self.bm25_k, self.rrf_k = dense_k, bm25_k, rrf_k
        self.weights = {"dense": dense_weight, "bm25": bm25_weight}
        self.merge_threshold = merge_threshold
        self.top_k = top_k
        self.patient_slots = patient_slots

    def _dense(self, qv: np.ndarray, allowed: np.ndarray, k: int) -> list[tuple[str, float]]:
        # The store searches the patient's records exactly and the shared rows by its own method
        # (rag.vectorstore), so scoping is the same for FAISS flat, FAISS HNSW and PostgreSQL.
        hits = self.index.dense.search(qv, k, allowed)
        return [(self.index.children[r].chunk_id, s) for r, s in hits]

    def _bm25(self, query: str, allowed: np.ndarray, k: int) -> list[tuple[str, float]]:
        tokens = bm25_tokenize(query)
        if not tokens:
            return []
        scores = np.asarray(self.index.bm25.get_scores(tokens), dtype=np.float32)
        return [(self.index.children[i].chunk_id, float(scores[i])) for i in bm25_top(scores, allowed, k)]

    def overlapping(self) -> bool:
        """Whether a query's BM25 search runs beside its dense search (see ``overlap``)."""
        return self.overlap if self.overlap is not None else available_cpus() > 1

    def _both(self, qv: np.ndarray, bm25_query: str, allowed: np.ndarray
              ) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
        """The dense and the BM25 hits, searched at once: BM25 on the search pool, dense here.

        A BM25 search no pool thread has started by the time the dense one is done (the pool busy
        with other queries, or a loaded CPU) is taken back and run here: waiting for a thread to
        wake up for it would only add that wait.
        """
        side = search_pool().submit(self._bm25, bm25_query, allowed, self.bm25_k)
        try:
            dense = self._dense(qv, allowed, self.dense_k)
        except BaseException:
            side.cancel()  # a BM25 search already running finishes on its own; nothing waits for it
            raise
        if side.cancel():
            return dense, self._bm25(bm25_query, allowed, self.bm25_k)
        return dense, side.result()

    def dense_query(self, query: str) -> str:
        """The text the embedder encodes: abbreviations written out after themselves when expansion is on."""
        return expand(query).dense_text if self.expand_abbreviations else query

    def bm25_query(self, query: str) -> str:
        """The text BM25 searches: both forms of each abbreviation when expansion is on."""
        return expand(query).bm25_text if self.expand_abbreviations else query

    def retrieve(self, query: str, patient_id: str | None = None, top_k: int | None = None) -> Retrieval:
        t = time.perf_counter()
        qv = self.embedder.encode_queries([self.dense_query(query)])[0].astype(np.float32)
        encode_ms = (time.perf_counter() - t) * 1000
        ret = self.search(query, qv, patient_id, top_k)
        ret.timings_ms = {"query_encode": encode_ms, **ret.timings_ms}
        return ret

    def search(self, query: str, qv: np.ndarray, patient_id: str | None = None, top_k: int | None = None,
               allowed: np.ndarray | None = None) -> Retrieval:
        """Retrieval for an already encoded query (benchmarks time this apart from encoding).

        ``allowed`` replaces the patient scope (evaluation over every passage); the product
        never passes it.
        """
        timings: dict[str, float] = {}
        t = time.perf_counter()
        scoped = allowed is None
        if allowed is None:
            allowed = self.index.allowed_mask(patient_id)
        # Patient notes carry their id in the title, so naming it lets BM25 prefer them.
        text = self.bm25_query(query)
        bm25_query = f"{text} {patient_id}" if patient_id else text
        if self.weights["dense"] > 0 and self.weights["bm25"] > 0 and self.overlapping():
            dense, bm25 = self._both(qv, bm25_query, allowed)
        else:
            dense = self._dense(qv, allowed, self.dense_k) if self.weights["dense"] > 0 else []
            bm25 = self._bm25(bm25_query, allowed, self.bm25_k) if self.weights["bm25"] > 0 else []
        fused = fuse({"dense": dense, "bm25": bm25}, self.weights, self.fusion, self.rrf_k)
        if self.reranker is not None and fused:
            t_r = time.perf_counter()
            fused = self.rerank(query, fused)
            timings["rerank"] = (time.perf_counter() - t_r) * 1000
        by_id = {c.chunk_id: c for c in (self.index.children[self.index.child_pos[f.chunk_id]] for f in fused)}
        # Defence in depth: the searches were already scoped; re-check every hit anyway.
        for c in by_id.values():
            if scoped and c.kind == "ehr" and c.patient_id != patient_id:
                raise AssertionError(f"patient scoping violated by {c.chunk_id}")
        k = top_k or self.top_k
        units = auto_merge(fused, by_id, self.index.parents, self.merge_threshold, len(fused), self.merge_score)
        if patient_id:
            units = reserve_slots(units, lambda u: u.chunk.kind == "ehr", self.patient_slots, k)
        units = units[:k]
        timings["search"] = (time.perf_counter() - t) * 1000
        return Retrieval(units, fused, dense, bm25, qv, timings)

    def rerank(self, query: str, fused: list[Fused]) -> list[Fused]:
        """The fused list with its first ``rerank_top_n`` passages reordered by the verifier (rag/rerank.py)."""
        from rag.rerank import rerank

        assert self.reranker is not None
        head = fused[: self.rerank_top_n]
        texts = [self.index.children[self.index.child_pos[f.chunk_id]].context_text() for f in head]
        return rerank(fused, self.reranker(query, texts), self.rerank_weight)
