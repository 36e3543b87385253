"""What the evidence verifier costs per answer, side by side with the embedding-cosine check it replaces.

    .venv/bin/python -m eval.bench_verifier [--config configs/default.yaml] [--repeats 2] [--question Q] [--json]

One process, the demo index, warm models. Each demo question is answered once with the verifier
(answerability gate + claim support) and once with ``verifier.enabled=false`` (cosine support, no
gate); both share the same generator, so the difference is the checks. Reported: medians of the
answerability and citation-check times, of the whole answer, and the checks' share of the answer.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

from rag import Assistant
from rag.config import load_config

QUESTIONS: list[tuple[str, str | None]] = [
    ("What drug classes reduce mortality in heart failure with reduced ejection fraction?", None),
    ("When should anticoagulation be started in atrial fibrillation?", None),
    ("What is the first-line treatment for community-acquired pneumonia in adults?", None),
    ("What is the latest ejection fraction of this patient?", "P002"),
    ("How is hyperkalaemia treated urgently?", None),
    ("What is the target blood pressure for adults with hypertension?", None),
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config")
    ap.add_argument("--set", action="append", default=[], dest="overrides")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--question", action="append", default=[],
                    help="ask this question instead of the built-in six (repeatable; no patient)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    with_v = Assistant.open(load_config(args.config, args.overrides))
    without = Assistant(load_config(args.config, [*args.overrides, "verifier.enabled=false"]),
                        embedder=with_v.embedder, generator=with_v.generator)
    questions: list[tuple[str, str | None]] = [(q, None) for q in args.question] or QUESTIONS
    with_v.ask(questions[0][0])  # warm-up: loads every model once
    rows: dict[str, list[dict[str, float]]] = {"verifier": [], "cosine": []}
    for _ in range(args.repeats):
        for q, pid in questions:
            for name, a in (("verifier", with_v), ("cosine", without)):
                t = time.perf_counter()
                ans = a.ask(q, patient_id=pid)
                wall = (time.perf_counter() - t) * 1000
                tm = ans.timings_ms
                rows[name].append({"wall": wall, "answerability": tm.get("answerability", 0.0),
                                   "citation_check": tm.get("citation_check", 0.0),
                                   "generation": tm.get("generation", 0.0), "generated": float(ans.generated)})

    def med(name: str, key: str, generated_only: bool = False) -> float:
        xs = [r[key] for r in rows[name] if r["generated"] or not generated_only]
        return round(statistics.median(xs), 1) if xs else float("nan")

    out: dict[str, Any] = {"questions": len(questions), "repeats": args.repeats, "overrides": args.overrides}
    for name in rows:
        checks = [r["answerability"] + r["citation_check"] for r in rows[name] if r["generated"]]
        shares = [c / r["wall"] for c, r in zip(checks, [r for r in rows[name] if r["generated"]], strict=True)]
        out[name] = {"answer_ms_median": med(name, "wall", True), "answerability_ms_median": med(name, "answerability"),
                     "citation_check_ms_median": med(name, "citation_check", True),
                     "checks_share_of_answer_median": round(statistics.median(shares), 4) if shares else None,
                     "generated": int(sum(r["generated"] for r in rows[name]))}
    out["verifier_vs_cosine_check_ms_ratio"] = round(
        (out["verifier"]["answerability_ms_median"] + out["verifier"]["citation_check_ms_median"])
        / max(out["cosine"]["citation_check_ms_median"], 1e-9), 2)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
