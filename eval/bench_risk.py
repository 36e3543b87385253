"""Latency of the ``risk`` command, cold (a fresh process) and warm (in one process).

    .venv/bin/python -m eval.bench_risk [--repeats 3] [--json]

- cold: a fresh ``app.py risk CASE --json -q`` process, without the guideline sources (extraction and
  the model only) and with them (loads the embedder and the index); wall time, median of ``--repeats``;
- warm: the same pipeline inside one process after a first call: extraction + model, the template
  explanation, the guideline retrieval; medians over the labelled cases' test split.
The generator's explanation is not included (``--explain generator``; BENCHMARKS.md measures it apart).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CASE = "72M HFrEF, EF 20%. PMH: T2DM, HTN. Ex-smoker. Na 131, Cr 2.1 mg/dL, Hb 11.8, Plt 210, CK 250."


def cold(repeats: int, sources: bool) -> float:
    cmd = [sys.executable, str(ROOT / "app.py"), "risk", CASE, "--json", "-q", *([] if sources else ["--no-sources"])]
    walls = []
    for _ in range(repeats):
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        walls.append(time.perf_counter() - t)
        if proc.returncode != 0:
            raise SystemExit(f"risk failed: {proc.stderr.strip()}")
    return round(statistics.median(walls), 2)


def warm() -> dict[str, Any]:
    from eval.hf_extraction import read_cases
    from rag import Assistant
    from rag.errors import InputError
    from rag.hf_model import RiskModel
    from rag.risk import assess, cite_guidelines, explain, index_retriever

    model = RiskModel.load()
    assistant = Assistant.open()
    retrieve = index_retriever(assistant)
    r = assess(CASE, model)
    cite_guidelines(r, retrieve)  # loads the embedder and the index
    rows: dict[str, list[float]] = {"extract_and_model_ms": [], "explain_ms": [], "sources_ms": [], "total_ms": []}
    for row in read_cases("test"):
        t0 = time.perf_counter()
        try:
            r = assess(row["text"], model)
        except InputError:
            continue
        t1 = time.perf_counter()
        cite_guidelines(r, retrieve)
        t2 = time.perf_counter()
        r.explanation = explain(r)
        t3 = time.perf_counter()
        for k, v in (("extract_and_model_ms", t1 - t0), ("sources_ms", t2 - t1), ("explain_ms", t3 - t2),
                     ("total_ms", t3 - t0)):
            rows[k].append(1000 * v)
    return {k: round(statistics.median(v), 1) for k, v in rows.items()} | {"cases": len(rows["total_ms"])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    out = {"cold_s": {"no_sources": cold(args.repeats, False), "with_sources": cold(args.repeats, True)},
           "warm": warm()}
    print(json.dumps(out, indent=1) if args.json else out)


if __name__ == "__main__":
    main()
