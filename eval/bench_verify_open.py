"""Cost of verifying an index version when it is opened (issue 18), against not verifying.

    .venv/bin/python -m eval.bench_verify_open --index .cds/index/demo [--index .cds/index/trust] \
        [--repeats 7] [--queries 20] [--json]

For each index (read only; nothing is written):

- load: ``HybridIndex.load`` with ``verify=True`` (sha256 of every file the manifest lists,
  then parse) and ``verify=False`` (the size check only, as before), alternated, median of
  ``--repeats``, page cache warm (the first, cold load is reported apart);
- hashing alone: ``verify_files`` (what verification adds), and its throughput in MB/s;
- per query: a long-lived ``Assistant`` (evidence only, verifier off: retrieval alone) answers
  ``--queries`` questions after the first; it loads (and so verifies) once per version switch,
  so the files hashed during those queries are counted (expected 0) and the mean query times
  with verification on and off are reported side by side.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

QUESTIONS = ["What reduces mortality in HFrEF?", "When is anticoagulation indicated in atrial fibrillation?",
             "What is the first-line treatment for hypertension?", "How is sepsis recognised?",
             "Which statin intensity after a heart attack?"]


def _median_load(root: Path, verify: bool, repeats: int) -> list[float]:
    from rag.index import HybridIndex

    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        HybridIndex.load(root, verify=verify)
        times.append(time.perf_counter() - t)
    return times


def _query_ms(root: Path, verify: bool, n: int) -> tuple[float, float, int]:
    """(first query ms, mean ms of the next ``n``, files hashed during those) for a long-lived assistant."""
    import rag.index
    from rag.assistant import Assistant
    from rag.config import load_config

    real = rag.index.HybridIndex.load.__func__  # type: ignore[attr-defined]

    def load(cls: Any, root_: Path, version: str | None = None, expect_embedder: Any = None,
             verify_: bool = True) -> Any:
        return real(cls, root_, version, expect_embedder, verify)

    hashed = [0]
    real_sha = rag.index.file_sha256

    def sha(path: Path) -> str:
        hashed[0] += 1
        return real_sha(path)

    rag.index.HybridIndex.load = classmethod(load)  # type: ignore[method-assign, assignment]
    rag.index.file_sha256 = sha
    try:
        a = Assistant(load_config(overrides=[f"index.dir={root}", "index.auto_build_demo=false",
                                             "verifier.enabled=false"]))
        t = time.perf_counter()
        a.ask(QUESTIONS[0], generate=False)
        first = (time.perf_counter() - t) * 1000
        hashed[0] = 0
        times = []
        for i in range(n):
            t = time.perf_counter()
            a.ask(QUESTIONS[i % len(QUESTIONS)], generate=False)
            times.append((time.perf_counter() - t) * 1000)
        return first, statistics.mean(times), hashed[0]
    finally:
        rag.index.HybridIndex.load = classmethod(real)  # type: ignore[method-assign, assignment]
        rag.index.file_sha256 = real_sha


def bench(root: Path, repeats: int, queries: int) -> dict[str, Any]:
    from rag.index import read_manifest, verify_files

    vdir, manifest = read_manifest(root)
    size = sum(int(f["bytes"]) for f in manifest["files"].values())
    t = time.perf_counter()
    from rag.index import HybridIndex

    HybridIndex.load(root, verify=True)
    cold = time.perf_counter() - t
    on, off = [], []
    for _ in range(repeats):
        on += _median_load(root, True, 1)
        off += _median_load(root, False, 1)
    hashing = []
    for _ in range(repeats):
        t = time.perf_counter()
        assert not verify_files(vdir, manifest), "the index fails verification: benchmark a healthy one"
        hashing.append(time.perf_counter() - t)
    q_on = _query_ms(root, True, queries)
    q_off = _query_ms(root, False, queries)
    med_on, med_off, med_hash = statistics.median(on), statistics.median(off), statistics.median(hashing)
    return {"index": str(root), "version": manifest["version"], "files": len(manifest["files"]), "mb": size / 1e6,
            "passages": manifest["counts"]["children"], "first_load_s": round(cold, 3),
            "load_verify_s": round(med_on, 3), "load_no_verify_s": round(med_off, 3),
            "added_s": round(med_on - med_off, 3), "added_pct": round(100 * (med_on - med_off) / med_off, 1),
            "hash_only_s": round(med_hash, 3), "hash_mb_per_s": round(size / 1e6 / med_hash, 0),
            "first_query_ms": {"verify": round(q_on[0], 1), "no_verify": round(q_off[0], 1)},
            "next_queries_mean_ms": {"verify": round(q_on[1], 2), "no_verify": round(q_off[1], 2)},
            "files_hashed_during_next_queries": q_on[2],
            "repeats": repeats, "queries": queries}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--index", action="append", required=True, help="index root (repeatable)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    import logging

    logging.basicConfig(level=logging.WARNING)
    rows = [bench(Path(p).resolve(), args.repeats, args.queries) for p in args.index]
    if args.json:
        print(json.dumps({"machine": platform.processor() or platform.machine(), "rows": rows}, indent=1))
        return
    print("| index | files | MB | passages | load, verified (s) | load, size check only (s) | added | sha256 alone "
          "| query after the first, verified / not (ms) | files hashed per query |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {Path(r['index']).name} | {r['files']} | {r['mb']:.1f} | {r['passages']:,} | {r['load_verify_s']} | "
              f"{r['load_no_verify_s']} | +{r['added_s']} s ({r['added_pct']}%) | {r['hash_only_s']} s "
              f"({r['hash_mb_per_s']:.0f} MB/s) | {r['next_queries_mean_ms']['verify']} / "
              f"{r['next_queries_mean_ms']['no_verify']} "
              f"| {r['files_hashed_during_next_queries'] / r['queries']:g} |")


if __name__ == "__main__":
    main()
