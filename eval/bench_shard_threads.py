"""A sharded HNSW version searched by one thread vs by a thread per CPU: latency and CPU per question.

    taskset -c 1 nice -n 15 python eval/bench_shard_threads.py --root .cds/scale/n1000000 --ef 256 \\
        --json .cds/runs/bench_shard_threads-1m.json

Loads a published version (e.g. the one ``eval/bench_hybrid_scale.py`` writes into ``--work``, kept
when that run is stopped before its clean-up) as the app does and runs the hybrid retriever (default
config) over the trust test questions plus one record question per real patient, encoded once;
search time only. For each thread count: wall p50/p95 and CPU p50 per question (``time.process_time``:
all threads of this process). On one allowed CPU the threads share it, so the difference in CPU is
the cost of handing the graphs to a thread pool; with two free CPUs the wall time shows the gain.
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

from eval.bench_backends import PATIENT_QUESTIONS
from eval.bench_scale import pct
from eval.metrics import write_json


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", required=True, help="index folder with a sharded FAISS HNSW version")
    ap.add_argument("--rows", default=".cds/eval/trust/rows-test.jsonl")
    ap.add_argument("--real-index", default=".cds/index/trust", help="the real patients' ids come from here")
    ap.add_argument("--ef", type=int, default=0, help="efSearch to serve with (0: the version's)")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    import faiss

    from rag.assistant import Assistant
    from rag.config import load_config
    from rag.index import HybridIndex
    from rag.retrieve import HybridRetriever

    faiss.omp_set_num_threads(1)
    cfg = load_config(None, overrides=[f"index.dir={Path(args.real_index).resolve()}", "index.auto_build_demo=false"])
    assistant = Assistant(cfg)
    rows = [json.loads(x) for x in Path(args.rows).read_text(encoding="utf-8").splitlines() if x.strip()]
    questions = [(str(x["question"]), x.get("patient_id")) for x in rows]
    real = HybridIndex.load(Path(args.real_index), verify=False)
    questions += [(PATIENT_QUESTIONS[i % len(PATIENT_QUESTIONS)], p) for i, p in enumerate(sorted(real.patients))]
    qvs = assistant.embedder.encode_queries([q for q, _ in questions]).astype(np.float32)
    idx = HybridIndex.load(Path(args.root), verify=False)
    if args.ef:
        idx.dense.spec["ef_search"] = args.ef
    r = cfg.retrieval
    ret = HybridRetriever(idx, assistant.embedder, r.dense_k, r.bm25_k, r.rrf_k, r.dense_weight, r.bm25_weight,
                          r.merge_threshold, r.top_k, r.patient_slots, r.fusion, r.merge_score)
    store: Any = idx.dense
    out: dict[str, Any] = {"command": " ".join(["python", "eval/bench_shard_threads.py", *(argv or sys.argv[1:])]),
                           "cpus_allowed": len(os.sched_getaffinity(0)), "graphs": len(store.graphs),
                           "ef_search": int(store.spec["ef_search"]), "questions": len(questions), "runs": {}}
    tops: dict[int, list[Any]] = {}
    for threads in (int(t) for t in args.threads.split(",")):
        store.close()
        store.threads = threads
        for (q, p), qv in list(zip(questions, qvs, strict=True))[:5]:  # warm up (and start the pool)
            ret.search(q, qv, p)
        wall, cpu, got = [], [], []
        for (q, p), qv in zip(questions, qvs, strict=True):
            t, c = time.perf_counter(), time.process_time()
            got.append([f.chunk_id for f in ret.search(q, qv, p).fused[:10]])
            wall.append((time.perf_counter() - t) * 1000)
            cpu.append((time.process_time() - c) * 1000)
        tops[threads] = got
        out["runs"][threads] = {"wall_p50_ms": pct(wall, 50), "wall_p95_ms": pct(wall, 95), "cpu_p50_ms": pct(cpu, 50),
                                "cpu_p95_ms": pct(cpu, 95), "load_avg": os.getloadavg()[0]}
        print(f"threads {threads}: {json.dumps(out['runs'][threads])}", flush=True)
    first = next(iter(tops.values()))
    out["same_fused_top10"] = all(v == first for v in tops.values())
    print(f"same fused top 10 with every thread count: {out['same_fused_top10']}", flush=True)
    if args.json:
        write_json(args.json, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
