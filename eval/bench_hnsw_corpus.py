"""Is the scale corpus unrepresentatively hard for HNSW? And which graph layout reaches recall 0.97?

    taskset -c 1 nice -n 15 python eval/bench_hnsw_corpus.py --size 100000 \\
        --generators iso,iso-nn,local-nn --graphs 32/80/1 --json runs/bench_hnsw_corpus-100k.json
    taskset -c 1 nice -n 15 python eval/bench_hnsw_corpus.py --size 300000 --generators iso \\
        --graphs 32/80/1,32/80/3,48/200/1 --json runs/bench_hnsw_corpus-300k.json

Dense side only, through the product's store (:func:`rag.vectorstore.build_faiss`: graphs over the
shared passages, patient records apart). The corpus is the trust index's real MiniLM vectors and,
up to ``--size``, synthetic copies of random real passages, as in ``eval/bench_hybrid_scale.py``.
Three ways to make a copy's vector from its seed ``s`` (unit vectors; ``c`` is the cosine to the seed):

- ``iso``: the scale benchmarks' generator: ``s`` plus isotropic Gaussian noise, renormalised
  (``c`` ~0.85 for every copy; ``--noise-cos``).
- ``iso-nn``: ``c`` drawn from the real corpus's nearest-neighbour cosine distribution (every real
  shared passage's cosine to its nearest other real passage), the direction isotropic.
- ``local-nn``: the same ``c``, the direction towards a random convex combination of the seed's 10
  nearest real passages: the copy stays in the subspace the real data spans near the seed.

For the real corpus (and halves and quarters of it, to see the trend with size) and for each
synthetic corpus it measures the statistics that make a graph search hard: each passage's cosine
to its nearest and 10th-nearest neighbour, the local intrinsic dimensionality (Levina-Bickel MLE,
20 neighbours), and, for the real dev questions, the 1st and 10th best cosine and how many passages
sit within 0.01 of the 10th (near-ties the top 10 is picked from). Then, per graph layout
(``M/efConstruction/shards``), build time and dense recall@10 of exact search with CPU p50 per
efSearch, on the trust **dev** questions (shared scope: no patient filter).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from eval.bench_scale import pct, rss_mb
from eval.metrics import write_json

GENERATORS = ("iso", "iso-nn", "local-nn")


def exact_knn(base: np.ndarray, probes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top ``k`` of each probe in ``base`` (FAISS flat, one thread)."""
    import faiss

    index = faiss.IndexFlatIP(base.shape[1])
    index.add(np.ascontiguousarray(base, dtype=np.float32))
    scores, rows = index.search(np.ascontiguousarray(probes, dtype=np.float32), k)
    return scores, rows


def neighbour_stats(vecs: np.ndarray, probe_rows: np.ndarray, k: int = 20) -> dict[str, Any]:
    """Nearest-neighbour cosines and local intrinsic dimensionality of the probe rows within ``vecs``."""
    scores, rows = exact_knn(vecs, vecs[probe_rows], k + 1)
    own = rows == probe_rows[:, None]
    # drop each probe itself (an exact duplicate may come first instead: drop one column per row)
    keep = np.where(own.any(axis=1, keepdims=True), ~own, np.arange(k + 1)[None, :] < k)
    sims = scores[keep].reshape(len(probe_rows), k)
    dist = np.sqrt(np.maximum(2 - 2 * sims, 1e-6))  # Euclidean, unit vectors (duplicates: a floor, not 0)
    lid = 1 / np.mean(np.log(dist[:, -1:] / dist[:, :-1]), axis=1)  # Levina-Bickel MLE per probe
    q = (10, 25, 50, 75, 90)
    return {"nn1_cos": {f"p{p}": float(np.percentile(sims[:, 0], p)) for p in q},
            "nn10_cos": {f"p{p}": float(np.percentile(sims[:, 9], p)) for p in q},
            "near_duplicates": float(np.mean(sims[:, 0] > 0.99)),
            "lid_median": float(np.median(lid[np.isfinite(lid)])), "probes": len(probe_rows)}


def question_stats(vecs: np.ndarray, qvs: np.ndarray) -> dict[str, float]:
    """How the questions meet the corpus: best and 10th cosine, passages within 0.01 of the 10th."""
    scores, _ = exact_knn(vecs, qvs, 200)
    ties = (scores >= scores[:, 9:10] - 0.01).sum(axis=1)  # capped at 200
    return {"q_top1_cos_p50": float(np.median(scores[:, 0])), "q_top10_cos_p50": float(np.median(scores[:, 9])),
            "q_near_ties_p50": float(np.median(ties)), "q_near_ties_p90": float(np.percentile(ties, 90))}


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def synth_vectors(real: np.ndarray, src: np.ndarray, generator: str, rng: np.random.Generator,
                  noise_cos: float = 0.15, nn_cos: np.ndarray | None = None,
                  neighbours: np.ndarray | None = None) -> np.ndarray:
    """One vector per entry of ``src`` (a real row): a copy of it made by ``generator`` (module docstring)."""
    out = np.empty((len(src), real.shape[1]), np.float32)
    for a in range(0, len(src), 100_000):
        s = src[a:a + 100_000]
        seed = real[s]
        if generator == "iso":  # exactly eval/bench_hybrid_scale.py's noise
            target = np.sqrt(1 / (1 - noise_cos) ** 2 - 1) / np.sqrt(real.shape[1])
            out[a:a + len(s)] = _unit(seed + rng.normal(size=seed.shape).astype(np.float32) * target)
            continue
        assert nn_cos is not None
        c = np.clip(rng.choice(nn_cos, len(s)), -1.0, 1.0)[:, None].astype(np.float32)
        if generator == "iso-nn":
            u = rng.normal(size=seed.shape).astype(np.float32)
        elif generator == "local-nn":
            assert neighbours is not None
            w = rng.dirichlet(np.ones(neighbours.shape[1]), len(s)).astype(np.float32)
            u = np.einsum("nk,nkd->nd", w, real[neighbours[s]]) - seed
        else:
            raise ValueError(generator)
        v = _unit(u - np.sum(u * seed, axis=1, keepdims=True) * seed)  # orthogonal to the seed
        out[a:a + len(s)] = _unit(c * seed + np.sqrt(1 - c ** 2) * v)
    return out


def sweep(store: Any, vecs: np.ndarray, allowed: np.ndarray, qvs: np.ndarray, efs: list[int]) -> dict[int, Any]:
    """Dense recall@10 of exact search and CPU p50 per efSearch, the questions one at a time."""
    rows = np.flatnonzero(allowed)
    _, top = exact_knn(vecs[rows], qvs, 10)
    want = [set(rows[t].tolist()) for t in top]
    out: dict[int, Any] = {}
    for ef in efs:
        store.spec["ef_search"] = ef
        rec, lat = [], []
        for qv, w in zip(qvs, want, strict=True):
            t = time.process_time()
            got = store.search(qv, 10, allowed)
            lat.append((time.process_time() - t) * 1000)
            rec.append(len({r for r, _ in got} & w) / 10)
        out[ef] = {"recall@10": float(np.mean(rec)), "cpu_p50_ms": pct(lat, 50), "cpu_p95_ms": pct(lat, 95)}
    return out


def graphs(store_vecs: np.ndarray, is_ehr: np.ndarray, qvs: np.ndarray, layouts: list[str], efs: list[int],
           threads: int) -> dict[str, Any]:
    import faiss

    from rag.vectorstore import DenseSettings, build_faiss, faiss_spec

    out: dict[str, Any] = {}
    for layout in layouts:
        m, efc, shards = (int(v) for v in layout.split("/"))
        spec = faiss_spec(DenseSettings(dense="hnsw", hnsw_m=m, hnsw_ef_construction=efc, hnsw_shards=shards))
        r0, t, c = rss_mb(), time.perf_counter(), time.process_time()
        store = build_faiss(store_vecs, spec, is_ehr)
        res: dict[str, Any] = {"build_s": time.perf_counter() - t, "build_cpu_s": time.process_time() - c,
                               "rss_mb": rss_mb() - r0,
                               "size_mb": sum(faiss.serialize_index(g).nbytes for g in store.graphs) / 2**20}
        store.threads = threads
        res["sweep"] = sweep(store, store_vecs, ~is_ehr, qvs, efs)
        store.close()
        shown = ", ".join(f"ef {ef}: {v['recall@10']:.3f} / {v['cpu_p50_ms']:.2f} ms" for ef, v in res["sweep"].items())
        print(f"    graph M {m} efC {efc} shards {shards}: build {res['build_s']:.0f} s "
              f"(CPU {res['build_cpu_s']:.0f} s), {res['size_mb']:.0f} MB; {shown}", flush=True)
        out[layout] = res
        del store
    return out


def equal_size(real: np.ndarray, real_ehr: np.ndarray, qvs: np.ndarray, nn_cos: np.ndarray,
               neighbours: np.ndarray, generators: list[str], fracs: list[float], efs: list[int],
               noise_cos: float, probes: int) -> dict[str, Any]:
    """Like for like: the real shared passages against corpora of the same size grown from a random
    ``frac`` of them by each generator (the rest of the real passages left out), one graph each."""
    from rag.vectorstore import DenseSettings, build_faiss, faiss_spec

    spec = faiss_spec(DenseSettings(dense="hnsw"))
    shared_rows = np.flatnonzero(~real_ehr)
    n = len(shared_rows)
    out: dict[str, Any] = {}

    def measure(vecs: np.ndarray, seed: int) -> dict[str, Any]:
        rng = np.random.default_rng(seed)
        st = neighbour_stats(vecs, rng.choice(len(vecs), min(probes, len(vecs)), replace=False))
        st.update(question_stats(vecs, qvs))
        st["sweep"] = sweep(build_faiss(vecs, spec), vecs, np.ones(len(vecs), bool), qvs, efs)
        return st

    out["real"] = measure(real[shared_rows], 1)
    for frac in fracs:
        rng = np.random.default_rng(2)
        seeds = np.sort(rng.choice(shared_rows, int(frac * n), replace=False))
        for gen in generators:
            g = np.random.default_rng(3)
            src = seeds[g.integers(0, len(seeds), n - len(seeds))]
            vecs = np.concatenate([real[seeds], synth_vectors(real, src, gen, g, noise_cos, nn_cos, neighbours)])
            out[f"{gen}@{frac}"] = measure(vecs, 1)
    for name, st in out.items():
        print(f"  equal size ({n:,}): {name}: NN1 cos p50 {st['nn1_cos']['p50']:.3f}, NN10 p50 "
              f"{st['nn10_cos']['p50']:.3f}, LID {st['lid_median']:.1f}, near-ties p50 {st['q_near_ties_p50']:.0f}; "
              + ", ".join(f"ef {ef}: {v['recall@10']:.3f}" for ef, v in st["sweep"].items()), flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--index", default=".cds/index/trust")
    ap.add_argument("--dev-rows", default=".cds/eval/trust/rows-dev.jsonl")
    ap.add_argument("--size", type=int, default=100_000)
    ap.add_argument("--generators", default="iso,iso-nn,local-nn")
    ap.add_argument("--graphs", default="32/80/1", help="graph layouts M/efConstruction/shards, comma-separated")
    ap.add_argument("--ef", default="16,32,64,128,256,512,1024")
    ap.add_argument("--noise-cos", type=float, default=0.15)
    ap.add_argument("--probes", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=1, help="threads searching a sharded store's graphs")
    ap.add_argument("--real-graph", action="store_true", help="also sweep a graph over the real corpus alone")
    ap.add_argument("--equal-size", default="", help="seed fractions (e.g. 0.1,0.25) for the like-for-like test; "
                                                       "--size 0 runs only that")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    import faiss

    from rag.assistant import Assistant
    from rag.config import load_config
    from rag.index import HybridIndex

    faiss.omp_set_num_threads(1)
    real_idx = HybridIndex.load(Path(args.index), verify=False)
    real = real_idx.dense.reconstruct_n(0, real_idx.dense.ntotal).astype(np.float32)
    real_ehr = np.asarray(real_idx.is_ehr, dtype=bool)
    cfg = load_config(None, overrides=[f"index.dir={Path(args.index).resolve()}", "index.auto_build_demo=false"])
    rows = [json.loads(x) for x in Path(args.dev_rows).read_text(encoding="utf-8").splitlines() if x.strip()]
    qvs = Assistant(cfg).embedder.encode_queries([str(r["question"]) for r in rows]).astype(np.float32)
    rng = np.random.default_rng(0)
    results: dict[str, Any] = {"command": " ".join(["python", "eval/bench_hnsw_corpus.py", *(argv or sys.argv[1:])]),
                               "cpus_allowed": len(os.sched_getaffinity(0)), "faiss": faiss.__version__,
                               "questions": len(qvs), "real_passages": len(real), "real_shared": int((~real_ehr).sum())}

    # the real corpus (shared passages, what the graph holds), and random halves and quarters of it
    shared = real[~real_ehr]
    results["real"] = {}
    for frac in (0.25, 0.5, 1.0):
        sub = shared[np.sort(rng.choice(len(shared), int(frac * len(shared)), replace=False))]
        st = neighbour_stats(sub, rng.choice(len(sub), min(args.probes, len(sub)), replace=False))
        st.update(question_stats(sub, qvs))
        results["real"][str(len(sub))] = st
        print(f"real, {len(sub):,} shared passages: {json.dumps(st)}", flush=True)
    # the nearest-neighbour cosine of every real shared passage, and its 10 nearest: what -nn generators draw
    nn_s, nn_r = exact_knn(shared, shared, 11)
    nn_cos = np.where(nn_r[:, 0] == np.arange(len(shared)), nn_s[:, 1], nn_s[:, 0])
    neighbours = np.full((len(real), 10), -1, np.int64)
    shared_rows = np.flatnonzero(~real_ehr)
    neighbours[shared_rows] = shared_rows[nn_r[:, 1:11]]
    _, e_r = exact_knn(real, real[real_ehr], 11)  # records: their nearest among all passages
    neighbours[real_ehr] = e_r[:, 1:11]
    layouts, efs = args.graphs.split(","), [int(e) for e in args.ef.split(",")]
    if args.equal_size:
        results["equal_size"] = equal_size(real, real_ehr, qvs, nn_cos, neighbours, args.generators.split(","),
                                           [float(f) for f in args.equal_size.split(",")], [8, 16, 32, 64],
                                           args.noise_cos, args.probes)
    if args.real_graph:
        results["real"]["graphs"] = graphs(real, real_ehr, qvs, layouts, efs, args.threads)

    results["synthetic"] = {}
    for gen in (args.generators.split(",") if args.size else []):
        rng = np.random.default_rng(0)
        n_syn = args.size - len(real)
        src = rng.integers(0, len(real), n_syn)
        vecs = np.concatenate([real, synth_vectors(real, src, gen, rng, args.noise_cos, nn_cos, neighbours)])
        is_ehr = np.concatenate([real_ehr, real_ehr[src]])
        sv = vecs[~is_ehr]
        seed_cos = np.sum(vecs[len(real):] * real[src], axis=1)
        st = neighbour_stats(sv, rng.choice(len(sv), args.probes, replace=False))
        st.update(question_stats(sv, qvs))
        st["copy_seed_cos"] = {f"p{p}": float(np.percentile(seed_cos, p)) for p in (10, 50, 90)}
        print(f"{gen}, {args.size:,} passages ({len(sv):,} shared): {json.dumps(st)}", flush=True)
        st["graphs"] = graphs(vecs, is_ehr, qvs, layouts, efs, args.threads)
        results["synthetic"][gen] = st
        if args.json:
            write_json(args.json, results)
        del vecs, sv
    if args.json:
        write_json(args.json, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
