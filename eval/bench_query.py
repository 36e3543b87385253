"""Query latency and memory benchmark for the default preset (and a dtype alternative).

    .venv/bin/python -m eval.bench_query [--config configs/default.yaml] [--repeats 3] [--json]

Measures, in one run on this machine:
- cold start: a fresh `app.py query --json` process (index already built): wall time, time to
  first generated token inside the process, and peak RSS of that process;
- warm queries in one process: query encoding, retrieval (search + fusion + merge), prompt
  prefill (first token), generation, tokens/s; medians over the demo questions x repeats;
- the same warm queries with the generator in bfloat16 instead of float32, as ratios (the
  alternative a user on an AVX512-BF16 CPU would try).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS: list[tuple[str, str | None]] = [
    ("What drug classes reduce mortality in heart failure with reduced ejection fraction?", None),
    ("What is the latest ejection fraction of this patient?", "P002"),
    ("What is the target blood pressure for most adults with hypertension?", None),
    ("When is an ICD recommended for primary prevention in heart failure?", None),
    ("Who won the 1998 FIFA World Cup?", None),
]


def cold_start(config: str | None) -> dict[str, Any]:
    cmd = [sys.executable, str(ROOT / "app.py"), "query", QUESTIONS[0][0], "--json", "-q"]
    if config:
        cmd[2:2] = ["--config", config]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"cold query failed: {proc.stderr.strip()}")
    ans = json.loads(proc.stdout)
    rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    tm = ans["timings_ms"]
    # Process start to first token = wall time minus what came after the first token.
    after_first = tm.get("generation", 0) - tm.get("first_token", 0) + tm.get("citation_check", 0)
    return {"wall_s": round(wall, 2), "first_token_s": round(wall - after_first / 1000, 2),
            "peak_rss_mb": round(rss_mb), "load_ms": round(tm.get("load", 0))}


def warm(config: str | None, overrides: list[str], repeats: int) -> dict[str, Any]:
    from rag import Assistant

    assistant = Assistant.open(config, overrides)
    assistant.ask(QUESTIONS[0][0])  # load models and index, warm caches
    rows: list[dict[str, float]] = []
    for _ in range(repeats):
        for q, pid in QUESTIONS:
            a = assistant.ask(q, patient_id=pid)
            rows.append(a.timings_ms)
    keys = ["retrieval_query_encode", "retrieval_search", "answerability", "prompt_tokens", "first_token",
            "generation", "new_tokens", "decode_tokens_per_s", "citation_check", "total"]
    out = {k: round(statistics.median(r[k] for r in rows if k in r), 1) for k in keys if any(k in r for r in rows)}
    # the evidence checks' share of each generated answer (the gate's answerability and the citation check)
    answered = [r for r in rows if "generation" in r and r.get("total")]
    shares = [(r.get("answerability", 0.0) + r.get("citation_check", 0.0)) / r["total"] for r in answered]
    return out | {"checks_share": round(statistics.median(shares), 3) if shares else None, "n": len(rows)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=None)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    result: dict[str, Any] = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "python": platform.python_version()},
        "cold": cold_start(args.config),
        "warm_float32": warm(args.config, ["generator.dtype=float32"], args.repeats),
        "warm_bfloat16": warm(args.config, ["generator.dtype=bfloat16"], args.repeats),
    }
    f32, b16 = result["warm_float32"], result["warm_bfloat16"]
    result["ratio_bf16_over_fp32"] = {k: round(b16[k] / f32[k], 2) for k in ("first_token", "generation", "total")
                                      if f32.get(k)}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    c = result["cold"]
    print(f"cold start: {c['wall_s']} s wall, first token at {c['first_token_s']} s, peak RSS {c['peak_rss_mb']} MB")
    for name in ("warm_float32", "warm_bfloat16"):
        w = result[name]
        print(f"{name}: encode {w['retrieval_query_encode']} ms, retrieval {w['retrieval_search']} ms, "
              f"prefill of {w['prompt_tokens']} tokens {w['first_token']} ms, generation {w['generation']} ms, "
              f"decode {w['decode_tokens_per_s']} tok/s, answerability {w.get('answerability')} ms, "
              f"citation check {w.get('citation_check')} ms (checks {w['checks_share']} of an answer), "
              f"total {w['total']} ms (median of {w['n']})")
    print(f"bf16/fp32 ratios: {result['ratio_bf16_over_fp32']}")


if __name__ == "__main__":
    main()
