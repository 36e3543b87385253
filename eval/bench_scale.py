"""Scale curve of the dense stores: FAISS flat, FAISS HNSW and PostgreSQL + pgvector HNSW, side by side.

    python eval/bench_scale.py --sizes 10000,100000 --queries 200 --json runs/bench_scale.json

Vectors: the real passage vectors of an index (``--index``, default the trust index, MiniLM 384-d)
and, beyond its size, perturbed copies of them (a real vector plus Gaussian noise, renormalised;
cosine ~``1 - --noise-cos`` to its source), so sizes past the real corpus keep its geometry.
Queries: other real vectors, perturbed the same way. 30% of rows are patient records spread over
1,000 patients (``--ehr-share``), as in a hospital deployment.

For each size and store, through the product's own store classes (:mod:`rag.vectorstore`,
:mod:`rag.pgstore`): build time (FAISS add / PostgreSQL COPY + CREATE INDEX in one transaction),
size (serialised FAISS index; PostgreSQL table + indexes on disk) and process RSS growth, single-query
latency p50/p95 for a shared (no patient) and a patient-scoped search, and recall@10 of the exact
top 10 under the same scope. PostgreSQL runs from the ``pgserver`` wheel (PostgreSQL 16, pgvector
0.6.2) over a Unix socket in a temporary folder, or ``--postgres-url``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from eval.metrics import write_json
from rag.vectorstore import DenseSettings, build_faiss, faiss_spec


@dataclass
class Row:
    chunk_id: str
    doc_id: str
    kind: str
    patient_id: str | None
    text: str


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def pct(xs: list[float], p: float) -> float:
    return float(np.percentile(xs, p)) if xs else float("nan")


def load_real_vectors(index: Path) -> np.ndarray:
    from rag.index import HybridIndex

    idx = HybridIndex.load(index, verify=False)
    return idx.dense.reconstruct_n(0, idx.dense.ntotal).astype(np.float32)


def perturb(base: np.ndarray, n: int, cos_drop: float, rng: np.random.Generator) -> np.ndarray:
    """``n`` vectors: copies of random rows of ``base`` plus noise giving cosine ~``1 - cos_drop``."""
    src = base[rng.integers(0, len(base), n)]
    # |noise| = s * sqrt(d); cos ~ 1 / sqrt(1 + |noise|^2)
    target = np.sqrt(1 / (1 - cos_drop) ** 2 - 1)
    noise = rng.normal(size=src.shape).astype(np.float32) * (target / np.sqrt(base.shape[1]))
    x = src + noise
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def corpus(real: np.ndarray, n: int, cos_drop: float, rng: np.random.Generator) -> np.ndarray:
    if n <= len(real):
        return real[rng.permutation(len(real))[:n]].copy()
    return np.concatenate([real, perturb(real, n - len(real), cos_drop, rng)])


def exact_top(x: np.ndarray, q: np.ndarray, allowed: np.ndarray, k: int) -> set[int]:
    s = x @ q
    s[~allowed] = -np.inf
    return {int(i) for i in np.argpartition(-s, k - 1)[:k]}


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (a PostgreSQL backend), from /proc (10 ms ticks)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(store: Any, x: np.ndarray, queries: np.ndarray, scopes: list[np.ndarray], k: int = 10,
            backend_pid: int | None = None) -> dict[str, Any]:
    """Wall latency per query (p50/p95), CPU per query (this process + the database backend: what
    the query costs whatever else the machine runs), and recall@10 against exact search."""
    out: dict[str, Any] = {}
    for name, pick in (("shared", lambda i: scopes[0]), ("patient", lambda i: scopes[1 + i % (len(scopes) - 1)])):
        lat, found = [], []
        for _ in range(3):  # warm-up
            store.search(queries[0], k, pick(0))
        server0 = proc_cpu_s(backend_pid) if backend_pid else 0.0
        cpu0 = time.process_time()
        for i, q in enumerate(queries):
            t = time.perf_counter()
            found.append(store.search(q, k, pick(i)))
            lat.append((time.perf_counter() - t) * 1000)
        cpu = time.process_time() - cpu0 + ((proc_cpu_s(backend_pid) - server0) if backend_pid else 0.0)
        rec = []
        for i, (q, hits) in enumerate(zip(queries, found, strict=True)):
            allowed = pick(i)
            assert all(allowed[r] for r, _ in hits), "scope violated"
            rec.append(len({r for r, _ in hits} & exact_top(x, q, allowed, k)) / k)
        out[name] = {"p50_ms": pct(lat, 50), "p95_ms": pct(lat, 95), "cpu_ms_per_query": cpu * 1000 / len(queries),
                     "recall@10": float(np.mean(rec))}
    return out


def bench_faiss(kind: Literal["flat", "hnsw"], x: np.ndarray, is_ehr: np.ndarray, queries: np.ndarray,
                scopes: list[np.ndarray], s: DenseSettings) -> dict[str, Any]:
    import faiss

    spec = faiss_spec(DenseSettings(dense=kind, hnsw_m=s.hnsw_m, hnsw_ef_construction=s.hnsw_ef_construction,
                                    hnsw_ef_search=s.hnsw_ef_search))
    r0 = rss_mb()
    t = time.perf_counter()
    store = build_faiss(x, spec, is_ehr)
    build_s = time.perf_counter() - t
    rss = rss_mb() - r0
    size_mb = sum(faiss.serialize_index(p).nbytes for p in (store.index, store.ehr) if p is not None) / 2**20
    res = {"build_s": build_s, "size_mb": size_mb, "rss_growth_mb": rss, **measure(store, x, queries, scopes)}
    del store
    return res


def bench_pg(url: str, x: np.ndarray, is_ehr: np.ndarray, patient: np.ndarray, queries: np.ndarray,
             scopes: list[np.ndarray], s: DenseSettings, work: Path) -> dict[str, Any]:
    from rag.pgstore import PgStore, connect, drop_pg, write_pg

    rows = [Row(f"c{i}", f"d{i // 4}", "ehr" if is_ehr[i] else "guideline",
                f"P{patient[i]}" if is_ehr[i] else None, "") for i in range(len(x))]
    settings = DenseSettings(store="postgres", dense="hnsw", hnsw_m=s.hnsw_m,
                             hnsw_ef_construction=s.hnsw_ef_construction, hnsw_ef_search=s.hnsw_ef_search,
                             postgres_url=url)
    t = time.perf_counter()
    spec = write_pg(settings, x, rows, f"v{len(x) % 10000:04d}-bench{len(x)}", work)
    build_s = time.perf_counter() - t
    with connect(url) as conn:
        table_mb = conn.execute("SELECT pg_total_relation_size(%s)", (spec["table"],)).fetchone()[0] / 2**20
        hnsw_mb = conn.execute("SELECT pg_relation_size(%s)", (spec["table"] + "_hnsw",)).fetchone()[0] / 2**20
    store = PgStore(url, spec, is_ehr)
    try:
        pid = int(store.conn.execute("SELECT pg_backend_pid()").fetchone()[0])
        res = {"build_s": build_s, "size_mb": table_mb, "hnsw_index_mb": hnsw_mb,
               **measure(store, x, queries, scopes, backend_pid=pid)}
    finally:
        store.close()
        drop_pg(url, spec)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--index", default=".cds/index/trust", help="index whose vectors seed the corpora")
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--ehr-share", type=float, default=0.3)
    ap.add_argument("--patients", type=int, default=1000)
    ap.add_argument("--noise-cos", type=float, default=0.15, help="1 - cosine of a perturbed copy to its source")
    ap.add_argument("--stores", default="faiss-flat,faiss-hnsw,pg-hnsw")
    ap.add_argument("--hnsw-m", type=int, default=32)
    ap.add_argument("--ef-construction", type=int, default=80)
    ap.add_argument("--ef-search", type=int, default=64)
    ap.add_argument("--postgres-url", default=None, help="default: start pgserver in a temporary folder")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    import faiss

    faiss.omp_set_num_threads(1)
    rng = np.random.default_rng(0)
    real = load_real_vectors(Path(args.index))
    settings = DenseSettings(dense="hnsw", hnsw_m=args.hnsw_m, hnsw_ef_construction=args.ef_construction,
                             hnsw_ef_search=args.ef_search)
    stores = args.stores.split(",")
    srv = None
    url = args.postgres_url
    if "pg-hnsw" in stores and url is None:
        import pgserver

        srv = pgserver.get_server(tempfile.mkdtemp(prefix="cds-pg-bench-"), cleanup_mode="delete")
        url = srv.get_uri()
    results: dict[str, Any] = {
        "command": " ".join(["python", "eval/bench_scale.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": {"cpus_allowed": len(os.sched_getaffinity(0)), "python": platform.python_version(),
                    "faiss": faiss.__version__},
        "params": {"hnsw_m": args.hnsw_m, "ef_construction": args.ef_construction, "ef_search": args.ef_search,
                   "queries": args.queries, "ehr_share": args.ehr_share, "patients": args.patients,
                   "real_vectors": len(real), "noise_cos": args.noise_cos},
        "sizes": {},
    }
    try:
        work = Path(tempfile.mkdtemp(prefix="cds-bench-scale-"))
        for n in (int(v) for v in args.sizes.split(",")):
            x = corpus(real, n, args.noise_cos, rng)
            is_ehr = rng.random(n) < args.ehr_share
            patient = np.where(is_ehr, rng.integers(0, args.patients, n), -1)
            queries = perturb(real, args.queries, args.noise_cos, rng)
            shared = ~is_ehr
            scopes = [shared] + [shared | (patient == p) for p in rng.integers(0, args.patients, 20)]
            per: dict[str, Any] = {}
            for name in stores:
                t = time.perf_counter()
                if name == "pg-hnsw":
                    assert url is not None
                    per[name] = bench_pg(url, x, is_ehr, patient, queries, scopes, settings, work)
                else:
                    kind = cast(Literal["flat", "hnsw"], name.split("-")[1])
                    per[name] = bench_faiss(kind, x, is_ehr, queries, scopes, settings)
                r = per[name]
                sh, pa = r["shared"], r["patient"]
                print(f"n={n:>9,} {name:<10} build {r['build_s']:7.1f} s  size {r['size_mb']:8.1f} MB  "
                      f"shared p50 {sh['p50_ms']:6.2f} p95 {sh['p95_ms']:6.2f} cpu {sh['cpu_ms_per_query']:6.2f} ms "
                      f"recall {sh['recall@10']:.3f} | patient p50 {pa['p50_ms']:6.2f} p95 {pa['p95_ms']:6.2f} "
                      f"cpu {pa['cpu_ms_per_query']:6.2f} ms recall {pa['recall@10']:.3f} "
                      f"({time.perf_counter() - t:.0f} s)", flush=True)
            flat = per.get("faiss-flat")
            if flat:
                per["ratios_vs_flat"] = {
                    name: {"build": per[name]["build_s"] / flat["build_s"] if flat["build_s"] else None,
                           "shared_p50": per[name]["shared"]["p50_ms"] / flat["shared"]["p50_ms"],
                           "patient_p50": per[name]["patient"]["p50_ms"] / flat["patient"]["p50_ms"],
                           "shared_cpu": per[name]["shared"]["cpu_ms_per_query"]
                           / flat["shared"]["cpu_ms_per_query"]}
                    for name in stores if name != "faiss-flat"}
            results["sizes"][str(n)] = per
            if args.json:
                write_json(args.json, results)
    finally:
        if srv is not None:
            srv.cleanup()
    print(json.dumps({n: per.get("ratios_vs_flat") for n, per in results["sizes"].items()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
