"""Hybrid retrieval (dense + BM25 + fusion) at 100k-1M passages: latency, recall, build, publish, memory.

    taskset -c 1 nice -n 10 python eval/bench_hybrid_scale.py --sizes 100000,1000000 \\
        --json runs/bench_hybrid_scale.json

The corpus: the trust index's real passages (text and MiniLM vectors, unchanged, patient records
included) and, beyond them, synthetic passages made from real ones. A synthetic passage copies a
random real passage (its title, section, kind) with a perturbed vector (the source's plus Gaussian
noise, cosine ~0.85, as in ``eval/bench_scale.py``) and perturbed text: each BM25 token of the
source is replaced, with probability ``--swap``, by a token drawn from the whole real corpus
(frequency-weighted, so the term distribution stays Zipf-like), and with probability ``--rare`` by
one of ``--rare-vocab`` rare terms that no question uses (a larger corpus has a larger vocabulary).
Copies of patient records go to 1,000 synthetic patients, so the real patients' scopes stay as they are.

Everything runs through the product's code: BM25 is built by ``rag.lexical`` (the update job's
stage "index"), the version is written and published by ``rag.update._write_and_publish`` (chunks.jsonl,
the dense store of ``--dense`` with the config's ``index.hnsw_*``, e.g. ``--set index.hnsw_shards=8``,
bm25s arrays, checksums, fsync, atomic rename), loaded by ``HybridIndex.load``, and searched by
``HybridRetriever.search`` (the default config's dense_k/bm25_k/RRF/auto-merge/patient slots).
Questions: the trust test rows (with their patient) plus one record question per real patient,
encoded once; latency excludes encoding. The retriever runs BM25 beside the dense search when the
process may use more than one CPU (``--overlap``: the product's rule, or forced on/off); at the chosen
efSearch the same questions are also run with BM25 beside the dense search and after it, alternating
question by question (``--no-overlap-ab`` skips it), and the two must return the same rankings.
Recall: the dense top 10 against exact search (FAISS flat) under the same scope, and the fused
top 10 against the fused top 10 with exact dense search. "Publish a one-document update" is the sum
of the stages an update runs with the current code at this size (load the previous version,
reuse its vectors, re-index BM25, write + publish the version), each timed through the real function.

PostgreSQL + pgvector: ``--postgres DIR`` starts a PostgreSQL server from the ``pgserver`` wheel with its
data in a new folder under DIR (removed at the end) and writes the version there (``index.store=postgres``:
with ``index.hnsw_shards`` N > 1 a table partitioned into N, one HNSW index each; ``rag.pgstore``); or
``--set index.store=postgres --set index.postgres_url=URL`` for a running server. CPU figures then add the
server's backend (``cpu_ms_per_query``, ``dense_cpu_ms_per_query``), and the table's size and the
server's memory are reported. ``--dump-top10 FILE`` writes each question's dense and fused top 10 at the
chosen efSearch (to compare two stores' answers: ``--compare-top10 A B``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from eval.bench_backends import PATIENT_QUESTIONS
from eval.bench_scale import pct, proc_cpu_s, rss_mb
from eval.metrics import write_json


def reset_peak_rss() -> bool:
    """Peak RSS := current RSS (Linux ``clear_refs``); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def dir_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def synth_corpus(real_children: list[Any], real_vecs: np.ndarray, n: int, swap: float, rare: float,
                 rare_vocab: int, noise_cos: float, rng: np.random.Generator) -> tuple[list[Any], np.ndarray]:
    """``n`` passages: the real ones, then synthetic copies (see the module docstring)."""
    from rag.chunk import Chunk
    from rag.text import tokenize

    n_syn = max(0, n - len(real_children))
    vocab: dict[str, int] = {}
    ids = [np.array([vocab.setdefault(t, len(vocab)) for t in tokenize(c.text)], dtype=np.int64)
           for c in real_children]
    words = np.array(list(vocab), dtype=object)
    pool = np.concatenate([i for i in ids if i.size])  # every token occurrence: frequency-weighted draws
    rare_words = np.array([f"zq{i}x" for i in range(rare_vocab)], dtype=object)
    src = rng.integers(0, len(real_children), n_syn)
    children = list(real_children)
    lens = np.array([i.size for i in ids], dtype=np.int64)[src]
    ends = np.cumsum(lens)
    flat = np.concatenate([ids[s] for s in src]) if n_syn else np.zeros(0, np.int64)
    u = rng.random(flat.size)
    swapped = u < swap
    flat[swapped] = pool[rng.integers(0, pool.size, int(swapped.sum()))]
    toks: np.ndarray = words[flat]  # object array of word strings, shared with the vocabulary
    rared = (u >= swap) & (u < swap + rare)
    toks[rared] = rare_words[rng.integers(0, rare_vocab, int(rared.sum()))]
    del flat, u, swapped, rared
    patient = rng.integers(0, 1000, n_syn)
    for j, s in enumerate(src):
        c = real_children[s]
        pid = f"SYN{patient[j]:04d}" if c.kind == "ehr" else None
        children.append(Chunk(f"syn-{j}", f"syn-doc-{j // 4}", "child", " ".join(toks[ends[j] - lens[j]:ends[j]]), 0,
                              0, c.section, c.title, c.kind, c.source, pid, None))
    del toks
    # vectors: the real ones, then the sources' vectors plus noise (cosine ~1 - noise_cos)
    vecs = np.empty((len(children), real_vecs.shape[1]), np.float32)
    vecs[:len(real_vecs)] = real_vecs
    target = np.sqrt(1 / (1 - noise_cos) ** 2 - 1) / np.sqrt(real_vecs.shape[1])
    for a in range(0, n_syn, 100_000):
        b = min(n_syn, a + 100_000)
        x = real_vecs[src[a:b]] + rng.normal(size=(b - a, real_vecs.shape[1])).astype(np.float32) * target
        vecs[len(real_vecs) + a:len(real_vecs) + b] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return children, vecs


def manifest_maker(facts: dict[str, Any], parents: list[Any], children: list[Any]) -> Any:
    """The manifest a synthetic version is published with (what loading and verifying read)."""
    patients = sorted({c.patient_id for c in children if c.patient_id})

    def make(v: str, files: dict[str, Any], dense: dict[str, Any]) -> dict[str, Any]:
        return {"format_version": 1, "version": v, "embedder": facts, "documents": {},
                "counts": {"documents": 0, "parents": len(parents), "children": len(children)},
                "patients": patients, "files": files, "dense": dense}
    return make


def one_document_update(root: Path, version: str, settings: Any, facts: dict[str, Any], parents: list[Any],
                        rng: np.random.Generator, noise_cos: float) -> dict[str, float]:
    """Publish the next version with one synthetic document (4 passages) replaced, through the update
    job's own stages: load the previous version (keeping its HNSW graph), reuse its vectors, re-index
    BM25 over every passage, write (graph updated in place, or rebuilt) and publish."""
    import dataclasses

    from rag.lexical import build_bm25
    from rag.update import _load_previous, _Stages, _vectors, _write_and_publish, previous_rows

    out: dict[str, float] = {}
    t = time.perf_counter()
    _m, prev_chunks, prev_vectors, prev_store = _load_previous(root, version, keep_graph=True)
    out["load_previous_s"] = time.perf_counter() - t
    prev_children = [c for c in prev_chunks if c.level == "child"]
    doc = next(c.doc_id for c in reversed(prev_children) if c.doc_id.startswith("syn-doc-"))
    old = [c for c in prev_children if c.doc_id == doc]
    new = [dataclasses.replace(c, chunk_id=c.chunk_id + "-v2", text=c.text + " revised") for c in old]
    children = [c for c in prev_children if c.doc_id != doc] + new
    t = time.perf_counter()
    vectors, _, _ = _vectors(children[:-len(new)], None, root, facts, prev_chunks,  # type: ignore[arg-type]
                             prev_vectors, False, False)
    x = prev_vectors[[prev_children.index(c) for c in old]]  # the new passages: their old vectors, perturbed
    x = x + rng.normal(size=x.shape).astype(np.float32) * (np.sqrt(1 / (1 - noise_cos) ** 2 - 1) / np.sqrt(x.shape[1]))
    vectors = np.concatenate([vectors, x / np.linalg.norm(x, axis=1, keepdims=True)]).astype(np.float32)
    prev_rows = previous_rows(children, prev_chunks)
    kept = prev_rows >= 0
    vectors[kept] = prev_vectors[prev_rows[kept]]
    out["vectors_s"] = time.perf_counter() - t
    del prev_vectors
    t = time.perf_counter()
    bm25 = build_bm25(c.context_text() for c in children)
    out["bm25_s"] = time.perf_counter() - t
    stage = _Stages()
    previous = (prev_store, prev_rows) if prev_store is not None else None
    _write_and_publish(root, stage, parents, children, vectors, bm25, settings,
                       manifest_maker(facts, parents, children), previous)
    out["write_s"], out["publish_s"] = stage.seconds["write"], stage.seconds["publish"]
    out["total_s"] = sum(out.values())
    from rag.index import read_manifest

    out["tombstones"] = float(read_manifest(root)[1]["dense"].get("tombstones", 0))
    return out


def run_queries(ret: Any, questions: list[tuple[str, str | None]], qvs: np.ndarray, backend_pid: int | None = None
                ) -> tuple[list[Any], dict[str, float]]:
    for _ in range(3):
        ret.search(questions[0][0], qvs[0], questions[0][1])
    lat, cpu_lat, out = [], [], []
    cpu0, srv0 = time.process_time(), proc_cpu_s(backend_pid) if backend_pid else 0.0
    for (q, p), qv in zip(questions, qvs, strict=True):
        t, c = time.perf_counter(), time.process_time()
        out.append(ret.search(q, qv, p))
        lat.append((time.perf_counter() - t) * 1000)
        cpu_lat.append((time.process_time() - c) * 1000)
    cpu = time.process_time() - cpu0 + ((proc_cpu_s(backend_pid) - srv0) if backend_pid else 0.0)
    # CPU time per query: the steady figure when other jobs share the core (wall time waits for them)
    return out, {"p50_ms": pct(lat, 50), "p95_ms": pct(lat, 95), "mean_ms": float(np.mean(lat)),
                 "cpu_p50_ms": pct(cpu_lat, 50), "cpu_p95_ms": pct(cpu_lat, 95),
                 "cpu_ms_per_query": cpu * 1000 / len(questions)}


def overlap_ab(ret: Any, questions: list[tuple[str, str | None]], qvs: np.ndarray) -> dict[str, Any]:
    """The hybrid search with BM25 beside the dense search and after it, alternating per question (which
    goes first alternates too, so drifting load hits both alike); latency and CPU of each, and whether
    the rankings were the same."""
    setting = ret.overlap
    lat: dict[bool, list[float]] = {True: [], False: []}
    cpu: dict[bool, list[float]] = {True: [], False: []}
    same = []
    try:
        for on in (True, False):
            ret.overlap = on
            for _ in range(3):
                ret.search(questions[0][0], qvs[0], questions[0][1])
        for i, ((q, p), qv) in enumerate(zip(questions, qvs, strict=True)):
            got = {}
            for on in ((True, False) if i % 2 == 0 else (False, True)):
                ret.overlap = on
                t, c = time.perf_counter(), time.process_time()
                r = ret.search(q, qv, p)
                lat[on].append((time.perf_counter() - t) * 1000)
                cpu[on].append((time.process_time() - c) * 1000)
                got[on] = (r.dense, r.bm25, [(f.chunk_id, f.score) for f in r.fused])
            same.append(got[True] == got[False])
    finally:
        ret.overlap = setting
    out: dict[str, Any] = {name: {"p50_ms": pct(lat[on], 50), "p95_ms": pct(lat[on], 95),
                                  "mean_ms": float(np.mean(lat[on])), "cpu_p50_ms": pct(cpu[on], 50),
                                  "cpu_p95_ms": pct(cpu[on], 95)}
                           for name, on in (("concurrent", True), ("sequential", False))}
    out["same_results"] = float(np.mean(same))
    out["load_avg_1min"] = os.getloadavg()[0]
    return out


def legacy_bm25_top(scores: np.ndarray, allowed: np.ndarray, k: int) -> list[int]:
    """The retriever's BM25 top-k before bm25_top: mask and partition every score."""
    scores = np.where(allowed, scores, -np.inf)
    k = min(k, int(np.isfinite(scores).sum()))
    if k <= 0:
        return []
    top = np.argpartition(-scores, k - 1)[:k]
    top = top[np.argsort(-scores[top], kind="stable")]
    return [int(i) for i in top if scores[i] > 0]


def graph_cpu_ms(store: Any, qv: np.ndarray, k: int) -> list[float]:
    """CPU time of searching each graph of an HNSW store alone (as the store does, no filter)."""
    import faiss

    out = []
    for graph in store.graphs:
        params = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]
        params.efSearch = max(int(store.spec["ef_search"]), k)
        t = time.process_time()
        graph.search(qv.reshape(1, -1), k, params=params)
        out.append((time.process_time() - t) * 1000)
    return out


def two_thread_ms(costs: list[float]) -> float:
    """The longer of two threads' loads when the graphs go to whichever thread is free first (in order)."""
    load = [0.0, 0.0]
    for c in costs:
        load[load.index(min(load))] += c
    return max(load)


def critical_path(ret: Any, idx: Any, questions: list[tuple[str, str | None]], qvs: np.ndarray) -> dict[str, float]:
    """Sharded store searched on one core: per question, the hybrid search's CPU time, its graphs'
    share, and the estimate on two cores (graphs split over two threads, the rest unchanged)."""
    hybrid, graphs, est = [], [], []
    for (q, p), qv in zip(questions, qvs, strict=True):
        t = time.process_time()
        ret.search(q, qv, p)
        h = (time.process_time() - t) * 1000
        g = graph_cpu_ms(idx.dense, np.asarray(qv, np.float32), ret.dense_k)
        hybrid.append(h)
        graphs.append(sum(g))
        est.append(max(h - sum(g), 0.0) + two_thread_ms(g))
    return {"hybrid_cpu_p50_ms": pct(hybrid, 50), "graphs_cpu_p50_ms": pct(graphs, 50),
            "hybrid_two_cores_est_p50_ms": pct(est, 50), "hybrid_two_cores_est_p95_ms": pct(est, 95)}


def parts(ret: Any, idx: Any, questions: list[tuple[str, str | None]], qvs: np.ndarray) -> dict[str, float]:
    """CPU time of the dense and the BM25 search alone (the retriever's own methods), and of BM25's
    two steps: bm25s scoring every passage, then the scoped top k (now and before bm25_top)."""
    from rag.retrieve import bm25_top
    from rag.text import tokenize

    dense, bm25, score, top, legacy, same, tok_n = [], [], [], [], [], [], []
    for (q, p), qv in zip(questions, qvs, strict=True):
        allowed = idx.allowed_mask(p)
        t = time.process_time()
        ret._dense(qv, allowed, ret.dense_k)
        t1 = time.process_time()
        ret._bm25(f"{q} {p}" if p else q, allowed, ret.bm25_k)
        t2 = time.process_time()
        dense.append((t1 - t) * 1000)
        bm25.append((t2 - t1) * 1000)
        tokens = tokenize(f"{q} {p}" if p else q)
        tok_n.append(len(tokens))
        if not tokens:
            continue
        t = time.process_time()
        sc = np.asarray(idx.bm25.get_scores(tokens), dtype=np.float32)
        t1 = time.process_time()
        a = bm25_top(sc, allowed, ret.bm25_k)
        t2 = time.process_time()
        b = legacy_bm25_top(sc, allowed, ret.bm25_k)
        t3 = time.process_time()
        score.append((t1 - t) * 1000)
        top.append((t2 - t1) * 1000)
        legacy.append((t3 - t2) * 1000)
        # the same scores (rows may differ only among passages tied at the k-th score)
        same.append(np.array_equal(np.sort(sc[a]), np.sort(sc[np.asarray(b, dtype=np.int64)])))
    return {"dense_cpu_p50_ms": pct(dense, 50), "dense_cpu_p95_ms": pct(dense, 95),
            "bm25_cpu_p50_ms": pct(bm25, 50), "bm25_cpu_p95_ms": pct(bm25, 95),
            "bm25_get_scores_cpu_p50_ms": pct(score, 50),
            "bm25_get_scores_cpu_p95_ms": pct(score, 95), "bm25_top_cpu_p50_ms": pct(top, 50),
            "bm25_legacy_top_cpu_p50_ms": pct(legacy, 50), "bm25_top_same_as_legacy": float(np.mean(same)),
            "query_tokens_mean": float(np.mean(tok_n))}


def ef_sweep(ret: Any, idx: Any, flat: Any, questions: list[tuple[str, str | None]], qvs: np.ndarray,
             efs: list[int], backend_pid: int | None = None) -> dict[int, dict[str, float]]:
    """Dense recall@10 of the HNSW store against exact search, its CPU p50 (this process) and wall p50, and
    with a database, its CPU per query with the server's backend, per efSearch (dev questions)."""
    exact = [{r for r, _ in flat.search(qv, 10, idx.allowed_mask(p))} for (_, p), qv in zip(questions, qvs,
                                                                                               strict=True)]
    out: dict[int, dict[str, float]] = {}
    for ef in efs:
        idx.dense.spec["ef_search"] = ef
        rec, lat, wall = [], [], []
        idx.dense.search(qvs[0], ret.dense_k, idx.allowed_mask(questions[0][1]))  # warm-up at this efSearch
        cpu0, srv0 = time.process_time(), proc_cpu_s(backend_pid) if backend_pid else 0.0
        for (_, p), qv, want in zip(questions, qvs, exact, strict=True):
            allowed = idx.allowed_mask(p)
            t, w = time.process_time(), time.perf_counter()
            got = idx.dense.search(qv, ret.dense_k, allowed)
            lat.append((time.process_time() - t) * 1000)
            wall.append((time.perf_counter() - w) * 1000)
            rec.append(len({r for r, _ in got[:10]} & want) / max(1, len(want)))
        cpu = time.process_time() - cpu0 + ((proc_cpu_s(backend_pid) - srv0) if backend_pid else 0.0)
        out[ef] = {"dense_recall@10": float(np.mean(rec)), "dense_cpu_p50_ms": pct(lat, 50),
                   "dense_wall_p50_ms": pct(wall, 50), "dense_wall_p95_ms": pct(wall, 95),
                   "dense_cpu_ms_per_query": cpu * 1000 / len(questions)}
    return out


def overlaps(ref: list[Any], got: list[Any]) -> dict[str, float]:
    fused, dense = [], []
    for a, b in zip(ref, got, strict=True):
        fa, fb = {f.chunk_id for f in a.fused[:10]}, {f.chunk_id for f in b.fused[:10]}
        fused.append(len(fa & fb) / max(1, len(fa)))
        da, db = {c for c, _ in a.dense[:10]}, {c for c, _ in b.dense[:10]}
        dense.append(len(da & db) / max(1, len(da)))
    return {"dense_recall@10": float(np.mean(dense)), "fused_top10_overlap": float(np.mean(fused)),
            "fused_top10_identical": float(np.mean([x == 1.0 for x in fused]))}


def foreign_passages(idx: Any, questions: list[tuple[str, str | None]], got: list[Any]) -> int:
    """Patient records of another patient than the question's in any list (dense, BM25, fused): must be 0."""
    n = 0
    for (_, p), r in zip(questions, got, strict=True):
        for cid in [c for c, _ in r.dense] + [c for c, _ in r.bm25] + [f.chunk_id for f in r.fused]:
            row = idx.child_pos.get(cid)
            c = idx.children[row] if row is not None else idx.parents.get(cid)
            n += c is not None and c.kind == "ehr" and c.patient_id != p
    return n


def dump_top10(path: str, questions: list[tuple[str, str | None]], got: list[Any]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for (q, p), r in zip(questions, got, strict=True):
            f.write(json.dumps({"question": q, "patient_id": p, "dense": [c for c, _ in r.dense[:10]],
                                "fused": [x.chunk_id for x in r.fused[:10]]}) + "\n")


def compare_top10(a: str, b: str) -> dict[str, float]:
    """Top-10 overlap between two ``--dump-top10`` files of the same questions (e.g. FAISS HNSW vs pgvector)."""
    ra = [json.loads(x) for x in Path(a).read_text(encoding="utf-8").splitlines()]
    rb = [json.loads(x) for x in Path(b).read_text(encoding="utf-8").splitlines()]
    assert [(x["question"], x["patient_id"]) for x in ra] == [(x["question"], x["patient_id"]) for x in rb]
    out = {}
    for key in ("dense", "fused"):
        ov = [len(set(x[key]) & set(y[key])) / max(1, len(x[key])) for x, y in zip(ra, rb, strict=True)]
        out[f"{key}_top10_overlap"] = float(np.mean(ov))
        out[f"{key}_top10_identical"] = float(np.mean([v == 1.0 for v in ov]))
    return out


def server_memory_mb(conn: Any) -> dict[str, float]:
    """The PostgreSQL server's memory (same machine): the query backend's RSS, and the proportional set
    size (shared pages counted once) of all the server's processes."""
    def status(pid: int, key: str) -> float:
        for line in Path(f"/proc/{pid}/{'smaps_rollup' if key == 'Pss:' else 'status'}").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1]) / 1024
        return float("nan")

    backend = int(conn.execute("SELECT pg_backend_pid()").fetchone()[0])
    out = {"backend_rss_mb": status(backend, "VmRSS:")}
    try:
        data = Path(conn.execute("SHOW data_directory").fetchone()[0])
        master = int((data / "postmaster.pid").read_text().split()[0])
        pids = [master] + [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()
                           and f" {master} " in f" {(p / 'stat').read_text().rsplit(')', 1)[1].split()[1]} "]
        out["server_pss_mb"] = sum(status(pid, "Pss:") for pid in pids)
        out["server_processes"] = float(len(pids))
    except OSError:
        pass  # another machine's server, or not readable
    return out


def pg_sizes_mb(url: str, table: str) -> dict[str, float]:
    """The version's table in PostgreSQL: all of it, and its HNSW indexes (partitions summed)."""
    from rag.pgstore import connect

    with connect(url) as conn:
        rels = [r[0] for r in conn.execute("SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = "
                                           "%s::regclass", (table,)).fetchall()] or [table]
        total = sum(conn.execute("SELECT pg_total_relation_size(%s)", (r,)).fetchone()[0] for r in rels)
        hnsw = sum(conn.execute("SELECT coalesce(pg_relation_size(to_regclass(%s)), 0)", (f"{r}_hnsw",)).fetchone()[0]
                   for r in rels)
        db = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    return {"table_total_mb": total / 2**20, "hnsw_indexes_mb": hnsw / 2**20, "database_mb": db / 2**20,
            "partitions": float(len(rels) if rels != [table] else 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=None)
    ap.add_argument("--index", default=".cds/index/trust")
    ap.add_argument("--rows", default=".cds/eval/trust/rows-test.jsonl")
    ap.add_argument("--sizes", default="100000")
    ap.add_argument("--dense", default="hnsw", choices=("flat", "hnsw"))
    ap.add_argument("--work", default=".cds/scale", help="scratch folder for the written versions (deleted)")
    ap.add_argument("--swap", type=float, default=0.15)
    ap.add_argument("--rare", type=float, default=0.02)
    ap.add_argument("--rare-vocab", type=int, default=2_000_000)
    ap.add_argument("--noise-cos", type=float, default=0.15)
    ap.add_argument("--max-questions", type=int, default=0, help="0: all")
    ap.add_argument("--dev-rows", default=".cds/eval/trust/rows-dev.jsonl",
                    help="questions that choose efSearch (the test rows are only reported)")
    ap.add_argument("--ef-sweep", default="64,128,256,512,1024,2048", help="efSearch values tried on the dev questions")
    ap.add_argument("--target-recall", type=float, default=0.975,
                    help="choose the smallest efSearch whose dev dense recall@10 reaches this")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--skip-update", action="store_true", help="do not time a one-document update")
    ap.add_argument("--overlap", choices=("auto", "on", "off"), default="auto",
                    help="BM25 beside the dense search: auto (the product: with more than one CPU), on, off")
    ap.add_argument("--no-overlap-ab", action="store_true",
                    help="skip the interleaved run with BM25 beside vs after the dense search")
    ap.add_argument("--postgres", default=None, metavar="DIR",
                    help="write the versions to a PostgreSQL server started (pgserver) with its data under DIR")
    ap.add_argument("--pg-setting", action="append", default=[], metavar="KEY=VALUE",
                    help="with --postgres: a server setting (ALTER SYSTEM, then a restart), e.g. shared_buffers=2GB")
    ap.add_argument("--skip-fresh-load", action="store_true",
                    help="do not time loading the version with checksums in a fresh process")
    ap.add_argument("--dump-top10", default=None, metavar="FILE", help="each question's top 10 at the chosen efSearch")
    ap.add_argument("--compare-top10", nargs=2, default=None, metavar="FILE",
                    help="only compare two --dump-top10 files and exit")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.compare_top10:
        print(json.dumps(compare_top10(*args.compare_top10), indent=1))
        return 0
    srv = None
    if args.postgres:
        import tempfile

        import pgserver

        Path(args.postgres).mkdir(parents=True, exist_ok=True)
        folder = tempfile.mkdtemp(prefix="cds-pg-scale-", dir=args.postgres)
        srv = pgserver.get_server(folder, cleanup_mode="stop" if args.pg_setting else "delete")
        if args.pg_setting:  # e.g. a server sized for its index: set, then restart to apply
            import psycopg

            with psycopg.connect(srv.get_uri(), autocommit=True) as conn:
                for kv in args.pg_setting:
                    key, value = kv.split("=", 1)
                    conn.execute(f"ALTER SYSTEM SET {key} = '{value}'")
            srv.cleanup()
            srv = pgserver.get_server(folder, cleanup_mode="delete")
        args.overrides += ["index.store=postgres", f"index.postgres_url={srv.get_uri()}"]
    try:
        return run(args, argv)
    finally:
        if srv is not None:
            srv.cleanup()


def run(args: Any, argv: list[str] | None) -> int:
    """Long: the benchmark itself (see the module docstring), one size after another."""

    import faiss

    from rag.assistant import Assistant
    from rag.config import load_config
    from rag.index import HybridIndex, embedder_manifest, import_bm25s
    from rag.lexical import index_bm25, tokenize_corpus
    from rag.retrieve import HybridRetriever
    from rag.threads import available_cpus
    from rag.update import _Stages, _write_and_publish
    from rag.vectorstore import DenseSettings, build_faiss, faiss_spec

    faiss.omp_set_num_threads(1)
    cfg = load_config(Path(args.config) if args.config else None,
                      overrides=[f"index.dir={Path(args.index).resolve()}", "index.auto_build_demo=false",
                                 *args.overrides])
    assistant = Assistant(cfg)
    real = HybridIndex.load(Path(args.index), verify=False)
    real_vecs = real.dense.reconstruct_n(0, real.dense.ntotal).astype(np.float32)
    rows = [json.loads(line) for line in Path(args.rows).read_text(encoding="utf-8").splitlines() if line.strip()]
    questions = [(str(x["question"]), x.get("patient_id")) for x in rows]
    questions += [(PATIENT_QUESTIONS[i % len(PATIENT_QUESTIONS)], p) for i, p in enumerate(sorted(real.patients))]
    if args.max_questions:
        questions = questions[:args.max_questions]
    qvs = assistant.embedder.encode_queries([q for q, _ in questions]).astype(np.float32)
    dev_rows = [json.loads(line) for line in Path(args.dev_rows).read_text(encoding="utf-8").splitlines()
                if line.strip()]
    dev_q = [(str(x["question"]), x.get("patient_id")) for x in dev_rows]
    dev_qvs = assistant.embedder.encode_queries([q for q, _ in dev_q]).astype(np.float32)
    facts = embedder_manifest(assistant.embedder)
    import dataclasses

    settings = dataclasses.replace(DenseSettings.from_config(cfg.index), dense=args.dense)
    pg_url = settings.postgres_url if settings.store == "postgres" else None
    r = cfg.retrieval
    results: dict[str, Any] = {
        "command": " ".join(["python", "eval/bench_hybrid_scale.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": {"cpus_allowed": len(os.sched_getaffinity(0)), "python": platform.python_version(),
                    "faiss": faiss.__version__, "bm25s": import_bm25s().__version__},
        "params": {"store": settings.store, "dense": args.dense, "hnsw_m": settings.hnsw_m,
                   "ef_construction": settings.hnsw_ef_construction,
                   "ef_search": settings.hnsw_ef_search, "hnsw_shards": settings.hnsw_shards,
                   "dense_k": r.dense_k, "bm25_k": r.bm25_k,
                   "overlap": args.overlap,
                   "questions": len(questions), "patient_questions": sum(1 for _, p in questions if p),
                   "real_passages": len(real.children), "swap": args.swap, "rare": args.rare},
        "sizes": {}}
    work = Path(args.work)
    for n in (int(v) for v in args.sizes.split(",")):
        rng = np.random.default_rng(0)
        res: dict[str, Any] = {}
        rss0 = rss_mb()
        t = time.perf_counter()
        children, vecs = synth_corpus(real.children, real_vecs, n, args.swap, args.rare, args.rare_vocab,
                                      args.noise_cos, rng)
        parents = list(real.parents.values())
        res["synth_s"] = time.perf_counter() - t
        res["rss_corpus_mb"] = rss_mb() - rss0
        print(f"n={n:,}: corpus {res['synth_s']:.0f} s, RSS +{res['rss_corpus_mb']:.0f} MB", flush=True)

        # BM25 index: the product's path (rag.update, stage "index": rag.lexical)
        rss_before, hwm_reset = rss_mb(), reset_peak_rss()
        t = time.perf_counter()
        ids, vocab = tokenize_corpus(c.context_text() for c in children)
        res["bm25_tokenize_s"] = time.perf_counter() - t
        t = time.perf_counter()
        bm25 = index_bm25(ids, vocab)
        res["bm25_index_s"] = time.perf_counter() - t
        del ids
        res["bm25_peak_rss_above_mb"] = peak_rss_mb() - rss_before if hwm_reset else float("nan")
        res["bm25_vocab"] = len(bm25.vocab_dict)
        print(f"  bm25: tokenize {res['bm25_tokenize_s']:.0f} s, index {res['bm25_index_s']:.0f} s, "
              f"vocabulary {res['bm25_vocab']:,}, peak RSS +{res['bm25_peak_rss_above_mb']:.0f} MB above the corpus",
              flush=True)

        # write + publish a version (the dense store is built inside write_dense)
        root = work / f"n{n}"
        shutil.rmtree(root, ignore_errors=True)
        (root / "versions").mkdir(parents=True)
        stage = _Stages()
        cpu = time.process_time()
        _write_and_publish(root, stage, parents, children, vecs, bm25, settings,
                           manifest_maker(facts, parents, children))
        res["write_cpu_s"] = time.process_time() - cpu  # the graph build's share of a shared core
        res["write_s"], res["publish_s"] = stage.seconds["write"], stage.seconds["publish"]
        version = (root / "CURRENT").read_text().strip()
        vdir = root / "versions" / version
        res["disk_mb"] = {p.name: (dir_mb(p) if p.is_dir() else p.stat().st_size / 2**20) for p in vdir.iterdir()}
        from rag.index import read_manifest

        dense_spec = read_manifest(root)[1]["dense"]
        if pg_url:
            res["postgres"] = {**pg_sizes_mb(pg_url, dense_spec["table"]),
                               "build_mem_mb": dense_spec.get("build_mem_mb"), "shards": dense_spec.get("shards", 1)}
            print(f"  PostgreSQL: {json.dumps({k: round(v) for k, v in res['postgres'].items() if v is not None})}",
                  flush=True)
        exact_vecs = vecs if pg_url else None  # the exact reference without reading 1M vectors back from the server
        del bm25, vecs, children
        shown = json.dumps({k: round(v) for k, v in res["disk_mb"].items()})
        res["peak_rss_since_bm25_mb"] = peak_rss_mb()
        print(f"  write {res['write_s']:.0f} s, CPU {res['write_cpu_s']:.0f} s (dense {args.dense} built inside), "
              f"peak RSS {res['peak_rss_since_bm25_mb']:.0f} MB, publish {res['publish_s']:.1f} s, "
              f"disk {sum(res['disk_mb'].values()):.0f} MB {shown}", flush=True)

        # serve: load the version as the app does, search with the default retriever
        t = time.perf_counter()
        idx = HybridIndex.load(root, verify=False)
        res["load_s"] = time.perf_counter() - t
        ret = HybridRetriever(idx, assistant.embedder, r.dense_k, r.bm25_k, r.rrf_k, r.dense_weight, r.bm25_weight,
                              r.merge_threshold, r.top_k, r.patient_slots, r.fusion, r.merge_score,
                              overlap={"auto": None, "on": True, "off": False}[args.overlap])
        res["bm25_beside_dense"] = ret.overlapping()
        res["search_threads"] = {"cpus": available_cpus(), "graph_threads": getattr(idx.dense, "threads", 1)}
        flat = build_faiss(exact_vecs if exact_vecs is not None else idx.dense.reconstruct_n(0, idx.dense.ntotal),
                           faiss_spec(DenseSettings()), idx.is_ehr)
        del exact_vecs
        pg_conn: Any = getattr(idx.dense, "conn", None)
        pid = int(pg_conn.execute("SELECT pg_backend_pid()").fetchone()[0]) if pg_url else None
        if pg_url:
            res["postgres"]["memory_after_load"] = server_memory_mb(pg_conn)
            res["postgres"]["settings"] = {k: pg_conn.execute(f"SHOW {k}").fetchone()[0] for k in (
                "shared_buffers", "max_parallel_maintenance_workers", "server_version")}
        ef0 = int(idx.dense.spec.get("ef_search", 0))
        runs: dict[str, Any] = {}
        got, runs[f"{args.dense}"] = run_queries(ret, questions, qvs, pid)
        if args.dense == "hnsw":
            res["ef_sweep_dev"] = ef_sweep(ret, idx, flat, dev_q, dev_qvs, [int(e) for e in args.ef_sweep.split(",")],
                                           pid)
            ok = [ef for ef, v in res["ef_sweep_dev"].items() if v["dense_recall@10"] >= args.target_recall]
            res["ef_chosen"] = min(ok) if ok else max(res["ef_sweep_dev"])
            print("  efSearch on dev: " + ", ".join(f"{ef}: recall {v['dense_recall@10']:.3f} CPU p50 "
                                                    f"{v['dense_cpu_p50_ms']:.2f} ms, with server "
                                                    f"{v['dense_cpu_ms_per_query']:.2f} ms, wall p50 "
                                                    f"{v['dense_wall_p50_ms']:.2f} ms"
                                                    for ef, v in res["ef_sweep_dev"].items())
                  + f" -> {res['ef_chosen']}", flush=True)
            idx.dense.spec["ef_search"] = ef0
            runs["hnsw"]["ef_search"] = ef0
            if res["ef_chosen"] != ef0:
                idx.dense.spec["ef_search"] = res["ef_chosen"]
                got2, runs[f"hnsw-ef{res['ef_chosen']}"] = run_queries(ret, questions, qvs, pid)
                runs[f"hnsw-ef{res['ef_chosen']}"]["ef_search"] = res["ef_chosen"]
            else:
                got2 = got
            if not args.no_overlap_ab:
                res["overlap_ab"] = {"ef_search": res["ef_chosen"], **overlap_ab(ret, questions, qvs)}
                ab = res["overlap_ab"]
                print(f"  BM25 beside vs after the dense search (efSearch {res['ef_chosen']}, interleaved, load "
                      f"{ab['load_avg_1min']:.1f}): " + "; ".join(
                          f"{k} wall p50 {ab[k]['p50_ms']:.2f} p95 {ab[k]['p95_ms']:.2f} ms, CPU p50 "
                          f"{ab[k]['cpu_p50_ms']:.2f} ms" for k in ("concurrent", "sequential"))
                      + f"; same rankings {ab['same_results']:.0%}", flush=True)
        hnsw_store, idx.dense = idx.dense, flat
        ref, runs["flat"] = run_queries(ret, questions, qvs)
        idx.dense = hnsw_store
        if pg_url:
            res["postgres"]["memory_after_queries"] = server_memory_mb(pg_conn)
        for name, g in ((args.dense, got), ("flat", ref), *(((f"hnsw-ef{res['ef_chosen']}", got2),)
                                                            if args.dense == "hnsw" else ())):
            if name in runs:
                runs[name]["foreign_patient_passages"] = foreign_passages(idx, questions, g)
        if args.dump_top10:
            dump_top10(args.dump_top10, questions, got2 if args.dense == "hnsw" else got)
        if args.dense == "hnsw":
            for name, g in ((args.dense, got), (f"hnsw-ef{res['ef_chosen']}", got2)):
                if name in runs:
                    idx.dense.spec["ef_search"] = runs[name]["ef_search"]
                    runs[name].update(overlaps(ref, g))
                    runs[name].update(parts(ret, idx, questions, qvs))
                    n_graphs = len(getattr(idx.dense, "graphs", []))
                    if n_graphs > 1:
                        runs[name]["sharded"] = critical_path(ret, idx, questions, qvs)
                        print(f"  {name}, {n_graphs} graphs: {json.dumps(runs[name]['sharded'])}",
                              flush=True)
        del flat
        for name, s in runs.items():
            extra = (f" | vs exact: dense recall@10 {s['dense_recall@10']:.3f}, fused top-10 overlap "
                     f"{s['fused_top10_overlap']:.3f} (identical {s['fused_top10_identical']:.0%})"
                     if "dense_recall@10" in s else "")
            detail = (f"; dense alone CPU p50 {s['dense_cpu_p50_ms']:.2f}, BM25 alone CPU p50 "
                      f"{s['bm25_cpu_p50_ms']:.2f} p95 {s['bm25_cpu_p95_ms']:.2f} ms (bm25s scoring p50 "
                      f"{s['bm25_get_scores_cpu_p50_ms']:.2f}, top-k {s['bm25_top_cpu_p50_ms']:.2f}, before "
                      f"{s['bm25_legacy_top_cpu_p50_ms']:.2f} ms, same scores {s['bm25_top_same_as_legacy']:.0%})"
                      if "dense_cpu_p50_ms" in s else "")
            how = "beside" if res["bm25_beside_dense"] else "after"
            print(f"  {name} (BM25 {how} dense): hybrid wall p50 {s['p50_ms']:.2f} p95 {s['p95_ms']:.2f} ms, CPU p50 "
                  f"{s['cpu_p50_ms']:.2f} p95 {s['cpu_p95_ms']:.2f} ms, CPU per query with the server "
                  f"{s['cpu_ms_per_query']:.2f} ms{detail}{extra}; foreign-patient passages "
                  f"{s.get('foreign_patient_passages')}", flush=True)
        res["runs"] = runs
        print(f"  load {res['load_s']:.0f} s", flush=True)
        del idx, ret, got, ref
        results["sizes"][str(n)] = res
        if args.json:
            write_json(args.json, results)

        # memory of a serving process: load the version in a fresh process (RSS before/after)
        import subprocess

        if args.skip_fresh_load:
            shutil.rmtree(root, ignore_errors=True)
            continue
        probe = ("import sys, time; sys.path.insert(0, '.'); from eval.bench_scale import rss_mb; "
                 "from rag.index import HybridIndex, import_bm25s; import faiss; import_bm25s(); r0 = rss_mb(); "
                 f"t = time.perf_counter(); i = HybridIndex.load(__import__('pathlib').Path({str(root)!r})); "
                 "print(time.perf_counter() - t, rss_mb() - r0)")
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
        res["load_verified_s"], res["rss_loaded_mb"] = float(out[-2]), float(out[-1])
        print(f"  fresh process: load with checksums {res['load_verified_s']:.0f} s, "
              f"RSS +{res['rss_loaded_mb']:.0f} MB", flush=True)

        # a one-document update: before this change every publish rebuilt BM25 and the dense store
        # (the stages just timed, plus loading the previous version); now the graph is updated in place
        upd = (one_document_update(root, version, settings, facts, parents, rng, args.noise_cos)
               if not args.skip_update else None)
        res["update_one_document"] = upd
        if upd is not None:
            res["update_one_document_rebuild_s"] = (upd["load_previous_s"] + upd["vectors_s"] + res["bm25_tokenize_s"]
                                                    + res["bm25_index_s"] + res["write_s"] + res["publish_s"])
            print(f"  one-document update: load previous {upd['load_previous_s']:.1f} s + vectors "
                  f"{upd['vectors_s']:.1f} s "
                  f"+ BM25 {upd['bm25_s']:.1f} s + write {upd['write_s']:.1f} s ({args.dense}, tombstones "
                  f"{upd['tombstones']:.0f}) + publish {upd['publish_s']:.1f} s = {upd['total_s']:.0f} s; with the "
                  f"graph rebuilt: {res['update_one_document_rebuild_s']:.0f} s", flush=True)

        results["sizes"][str(n)] = res
        if args.json:
            write_json(args.json, results)
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
