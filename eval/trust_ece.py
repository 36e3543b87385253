"""Calibration on more answers: the test part pooled with the ``ece`` part (answerable MedQuAD questions).

ECE over 10 bins is noisy at the ~110 answers of the trust test part: a perfectly calibrated confidence
scores 0.075 there by chance. The ``ece`` part (``python app.py eval trust split --ece 500``) holds more
answerable MedQuAD questions, asked like test (``eval trust run --part ece --resume``, resumable across
sessions) and never fitted on. This replays both parts' records with the config's settings (as ``eval trust
report``) and reports ECE, its 95% interval, Brier, accuracy and the ECE a perfectly calibrated confidence
would show at the same size, for test alone, ece alone and both pooled, with the reliability diagram.

    python -m eval.trust_ece --test-rows .cds/eval/trust-s10-final-test/rows-test.jsonl \\
        --ece-rows .cds/eval/trust-ece/rows-ece.journal.jsonl --labels ... --output .cds/eval/trust-ece
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np

from eval import trust


def chance_ece(conf: list[float], draws: int = 200, seed: int = 0) -> float:
    """Mean ECE of a perfectly calibrated confidence (labels drawn from it) over these confidences."""
    rng = np.random.default_rng(seed)
    c = np.asarray(conf, float)
    return float(np.mean([trust.ece(c, rng.random(len(c)) < c) for _ in range(draws)])) if len(c) else 0.0


def calibration(rows: list[dict[str, Any]], settings: dict[str, Any], records: dict[str, Any]) -> dict[str, Any]:
    answered = [o for o in trust.outcomes(rows, settings, records) if o["answered"]]
    conf = [o["confidence"] for o in answered]
    right = [bool(o["right"]) for o in answered]
    lo, hi = trust.ece_interval(conf, right)
    return {"questions": len(rows), "answered": len(answered),
            "accuracy": round(float(np.mean(right)), 4) if right else None,
            "mean_confidence": round(float(np.mean(conf)), 4) if conf else None,
            "ece": round(trust.ece(conf, right), 4), "ece_ci95": [round(lo, 4), round(hi, 4)],
            "brier": round(float(np.mean([(c - r) ** 2 for c, r in zip(conf, right, strict=True)])), 4)
            if conf else None,
            "chance_ece_if_perfect": round(chance_ece(conf), 4)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--test-rows", required=True)
    ap.add_argument("--ece-rows", required=True, help="rows-ece.jsonl, or the journal of a run still going")
    ap.add_argument("--labels", action="append", default=[], help="person verdicts (as `eval trust report`)")
    ap.add_argument("--trust-index", default=".cds/index/trust")
    ap.add_argument("--config", default=None)
    ap.add_argument("--output", default=".cds/eval/trust-ece")
    args = ap.parse_args(argv)

    from eval import trust_jobs
    from rag.config import load_config, resolve_path

    cfg = load_config(args.config)
    labels = [resolve_path(p) for p in args.labels]
    test = trust_jobs.prepare_rows(cfg, resolve_path(args.test_rows), labels, args.trust_index)
    ece_rows = trust_jobs.prepare_rows(cfg, resolve_path(args.ece_rows), [], args.trust_index)
    records = trust_jobs.load_records(cfg)
    floor = max(float(r.get("floor", 0.05)) for r in test + ece_rows)
    settings = trust.settings_from(cfg, floor)
    out = resolve_path(args.output)
    result: dict[str, Any] = {"settings": {k: v for k, v in settings.items() if k != "calibration"},
              "test": calibration(test, settings, records), "ece": calibration(ece_rows, settings, records),
              "pooled": calibration(test + ece_rows, settings, records)}
    result["figures"] = [str(p) for p in trust.plots(test + ece_rows, settings, records, out, "test+ece")]
    out.mkdir(parents=True, exist_ok=True)
    (out / "calibration-test+ece.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print("| rows | questions | answered | accuracy | mean confidence | ECE (95% CI) | chance ECE if perfect | Brier |")
    print("|---|---|---|---|---|---|---|---|")
    for name in ("test", "ece", "pooled"):
        c = result[name]
        print(f"| {name} | {c['questions']} | {c['answered']} | {c['accuracy']} | {c['mean_confidence']} | "
              f"{c['ece']} ({c['ece_ci95'][0]}-{c['ece_ci95'][1]}) | {c['chance_ece_if_perfect']} | {c['brier']} |")
    print(f"figure: {result['figures'][0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
