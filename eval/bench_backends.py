"""The same questions through each vector store: top-10 overlap with FAISS flat, patient scoping, latency.

    python eval/bench_backends.py --index .cds/index/trust --rows .cds/eval/trust/rows-test.jsonl \\
        --json runs/bench_backends.json

The index (default: the trust index, 9,806 passages of MedQuAD, guideline summaries and 304
patients' records: the 299 heart-failure records and 5 demo patients) is loaded once; its vectors
are copied into a FAISS HNSW index and a PostgreSQL + pgvector table (``pgserver`` in a temporary
folder, or ``--postgres-url``), and the full hybrid retriever of the config (dense + BM25, fusion,
auto-merge, patient slots) runs over each with the same chunks and BM25. Questions: the trust test
rows (their patient when they have one), plus one record question per patient (every patient).
Reported per store: overlap of the fused top 10 and the dense top 10 with FAISS flat's, the
foreign-patient passages seen in any list (must be 0), and search latency excluding encoding.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from eval.metrics import write_json

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PATIENT_QUESTIONS = ("What is the latest ejection fraction of this patient?",
                     "What is the serum creatinine of this patient?",
                     "Does this patient have diabetes?")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=None)
    ap.add_argument("--index", default=".cds/index/trust")
    ap.add_argument("--rows", default=".cds/eval/trust/rows-test.jsonl", help="questions (JSON lines: question, "
                    "patient_id)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="config override, e.g. index.hnsw_ef_search=256 (repeatable)")
    ap.add_argument("--postgres-url", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    import faiss

    from rag.assistant import Assistant
    from rag.config import load_config
    from rag.index import HybridIndex
    from rag.pgstore import PgStore, drop_pg, write_pg
    from rag.retrieve import HybridRetriever
    from rag.vectorstore import DenseSettings, build_faiss, faiss_spec

    faiss.omp_set_num_threads(1)
    cfg = load_config(Path(args.config) if args.config else None,
                      overrides=[f"index.dir={Path(args.index).resolve()}", "index.auto_build_demo=false",
                                 *args.overrides])
    assistant = Assistant(cfg)
    flat = HybridIndex.load(Path(args.index), verify=False)
    vectors = flat.dense.reconstruct_n(0, flat.dense.ntotal)
    s = DenseSettings(dense="hnsw", hnsw_m=cfg.index.hnsw_m, hnsw_ef_construction=cfg.index.hnsw_ef_construction,
                      hnsw_ef_search=cfg.index.hnsw_ef_search)
    spec = faiss_spec(s)
    t = time.perf_counter()
    hnsw_store = build_faiss(vectors, spec, flat.is_ehr)
    builds = {"faiss-hnsw": time.perf_counter() - t}
    srv = None
    url = args.postgres_url
    if url is None:
        import pgserver

        srv = pgserver.get_server(tempfile.mkdtemp(prefix="cds-pg-bench-"), cleanup_mode="delete")
        url = srv.get_uri()
    pg_settings = DenseSettings(store="postgres", dense="hnsw", hnsw_m=s.hnsw_m,
                                hnsw_ef_construction=s.hnsw_ef_construction, hnsw_ef_search=s.hnsw_ef_search,
                                postgres_url=url)
    work = Path(tempfile.mkdtemp(prefix="cds-bench-backends-"))
    t = time.perf_counter()
    pg_spec = write_pg(pg_settings, vectors, flat.children, "v0001-backends", work)
    builds["pg-hnsw"] = time.perf_counter() - t
    pg_store = PgStore(url, pg_spec, flat.is_ehr)
    try:
        indexes = {"faiss-flat": flat}
        for name, store in (("faiss-hnsw", hnsw_store), ("pg-hnsw", pg_store)):
            indexes[name] = HybridIndex(flat.root, flat.version, flat.manifest, flat.parents, flat.children,
                                        store, flat.bm25)
        r = cfg.retrieval
        retrievers = {name: HybridRetriever(idx, assistant.embedder, r.dense_k, r.bm25_k, r.rrf_k, r.dense_weight,
                                            r.bm25_weight, r.merge_threshold, r.top_k, r.patient_slots, r.fusion,
                                            r.merge_score) for name, idx in indexes.items()}
        rows = [json.loads(line) for line in Path(args.rows).read_text(encoding="utf-8").splitlines() if line.strip()]
        questions = [(str(x["question"]), x.get("patient_id")) for x in rows]
        patients = sorted(flat.patients)
        questions += [(PATIENT_QUESTIONS[i % len(PATIENT_QUESTIONS)], p) for i, p in enumerate(patients)]
        qvs = assistant.embedder.encode_queries([q for q, _ in questions]).astype(np.float32)
        out: dict[str, Any] = {"command": " ".join(["python", "eval/bench_backends.py", *(argv or sys.argv[1:])]),
                               "hnsw": {"m": s.hnsw_m, "ef_construction": s.hnsw_ef_construction,
                                        "ef_search": s.hnsw_ef_search},
                               "passages": len(flat.children), "patients": len(patients),
                               "questions": len(questions), "patient_questions": sum(1 for _, p in questions if p),
                               "build_s": builds, "stores": {}}
        results: dict[str, list[Any]] = {}
        for name, ret in retrievers.items():
            for _ in range(3):
                ret.search(questions[0][0], qvs[0], questions[0][1])
            lat, res, foreign = [], [], 0
            for (q, p), qv in zip(questions, qvs, strict=True):
                t = time.perf_counter()
                got = ret.search(q, qv, p)
                lat.append((time.perf_counter() - t) * 1000)
                res.append(got)
                for cid in [c for c, _ in got.dense] + [c for c, _ in got.bm25] + [f.chunk_id for f in got.fused]:
                    c = flat.children[flat.child_pos[cid]]
                    foreign += c.kind == "ehr" and c.patient_id != p
            results[name] = res
            out["stores"][name] = {"p50_ms": float(np.percentile(lat, 50)), "p95_ms": float(np.percentile(lat, 95)),
                                   "foreign_patient_passages": foreign}
        for name, res in results.items():
            fused, dense = [], []
            for a, b in zip(results["faiss-flat"], res, strict=True):
                fa, fb = {f.chunk_id for f in a.fused[:10]}, {f.chunk_id for f in b.fused[:10]}
                fused.append(len(fa & fb) / max(1, len(fa)))
                da, db = {c for c, _ in a.dense[:10]}, {c for c, _ in b.dense[:10]}
                dense.append(len(da & db) / max(1, len(da)))
            out["stores"][name].update(fused_top10_overlap=float(np.mean(fused)),
                                       dense_top10_overlap=float(np.mean(dense)),
                                       fused_top10_identical=float(np.mean([x == 1.0 for x in fused])))
            st = out["stores"][name]
            print(f"{name:<10} hybrid search p50 {st['p50_ms']:6.2f} p95 {st['p95_ms']:6.2f} ms | top-10 overlap with "
                  f"flat: fused {st['fused_top10_overlap']:.3f} (identical {st['fused_top10_identical']:.0%}), dense "
                  f"{st['dense_top10_overlap']:.3f} | foreign-patient passages {st['foreign_patient_passages']}")
        shown = json.dumps({k: round(v, 1) for k, v in builds.items()})
        print(f"HNSW M {s.hnsw_m}, efConstruction {s.hnsw_ef_construction}, efSearch {s.hnsw_ef_search}; "
              f"{len(questions)} questions ({out['patient_questions']} scoped to a patient, all {len(patients)} "
              f"patients), {len(flat.children):,} passages; builds {shown}")
        if args.json:
            write_json(args.json, out)
    finally:
        pg_store.close()
        drop_pg(url, pg_spec)
        if srv is not None:
            srv.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
