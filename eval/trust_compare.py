"""Two answer calibrations on the same recorded answers: which one a report set prefers, and by how much.

ECE over 10 bins moves by ~0.05 between two halves of one part at a few hundred answers (BENCHMARKS.md, "Trust",
twenty-first session), so a candidate calibration is judged by the Brier score, a proper score, on a report set
no calibration has seen, with ECE reported beside it. For each calibration this replays the records with the
config's settings (as ``eval trust report``): the answers it shows, answerable abstained, right, accuracy, ECE and
Brier. Then, paired, over every generated answer (``abstain_below`` 0, so a calibration that moves answers across
the threshold is compared on the same answers): both Brier scores, their difference and a bootstrap 95% interval.

    python -m eval.trust_compare --rows .cds/eval/s22-test-ext/rows-test.jsonl --labels ... \\
        --base configs/calibration/mpnet-a.json --candidate configs/calibration/mpnet-c3.json
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np

from eval import trust


def shown(rows: list[dict[str, Any]], settings: dict[str, Any], records: dict[str, Any]) -> dict[str, Any]:
    """What the product shows under ``settings``: counts, accuracy, ECE and Brier of the answered."""
    outs = trust.outcomes(rows, settings, records)
    answerable = [o for o in outs if o["answerable"]]
    answered = [o for o in outs if o["answered"]]
    conf = np.array([o["confidence"] for o in answered], float)
    right = np.array([bool(o["right"]) for o in answered], float)
    return {"questions": len(outs), "answerable": len(answerable),
            "answerable_abstained": sum(not o["answered"] for o in answerable),
            "right": sum(bool(o["answered"] and o["right"]) for o in answerable),
            "answered": len(answered), "accuracy": round(float(right.mean()), 4) if len(right) else None,
            "ece": round(trust.ece(conf, right), 4) if len(right) else None,
            "brier": round(float(np.mean((conf - right) ** 2)), 4) if len(right) else None}


def paired(rows: list[dict[str, Any]], base: dict[str, Any], cand: dict[str, Any], records: dict[str, Any],
           n_boot: int = 2000, seed: int = 11) -> dict[str, Any]:
    """Brier of both calibrations over the answers generated and shown by both at threshold 0, the difference
    (candidate - base; negative favours the candidate) and its bootstrap 95% interval over answers."""
    def at_zero(settings: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return {r["id"]: o for r, o in zip(rows, trust.outcomes(rows, {**settings, "abstain_below": 0.0}, records),
                                           strict=True) if o["answered"]}

    a, b = at_zero(base), at_zero(cand)
    ids = sorted(set(a) & set(b))
    right = np.array([bool(a[i]["right"]) for i in ids], float)
    if [bool(b[i]["right"]) for i in ids] != right.astype(bool).tolist():
        raise ValueError("the two calibrations show different answers for the same records; not a paired comparison")
    ea = (np.array([a[i]["confidence"] for i in ids]) - right) ** 2
    eb = (np.array([b[i]["confidence"] for i in ids]) - right) ** 2
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(ids), size=(n_boot, len(ids))) if ids else np.zeros((0, 0), int)
    diffs = (eb[draws] - ea[draws]).mean(axis=1) if ids else np.array([0.0])
    return {"answers": len(ids), "brier_base": round(float(ea.mean()), 4) if ids else None,
            "brier_candidate": round(float(eb.mean()), 4) if ids else None,
            "difference": round(float((eb - ea).mean()), 4) if ids else None,
            "difference_ci95": [round(float(np.percentile(diffs, q)), 4) for q in (2.5, 97.5)],
            "only_base": len(set(a) - set(b)), "only_candidate": len(set(b) - set(a))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", required=True, help="rows-PART.jsonl of a trust run (the report set)")
    ap.add_argument("--labels", action="append", default=[], help="a person's verdicts on those answers (repeatable)")
    ap.add_argument("--base", required=True, help="the calibration in use (JSON of `eval trust fit`)")
    ap.add_argument("--candidate", required=True, help="the calibration proposed instead")
    ap.add_argument("--trust-index", default=".cds/index/trust")
    ap.add_argument("--config", default=None)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    from eval import trust_jobs
    from rag.config import load_config, resolve_path

    result: dict[str, Any] = {}
    settings: dict[str, dict[str, Any]] = {}
    rows: list[dict[str, Any]] = []
    records: dict[str, Any] = {}
    for name, calib in (("base", args.base), ("candidate", args.candidate)):
        cfg = load_config(args.config, [*args.set, f"confidence.calibration={calib}"])
        if not rows:
            records = trust_jobs.load_records(cfg)
            rows = trust_jobs.prepare_rows(cfg, resolve_path(args.rows), [resolve_path(p) for p in args.labels],
                                           args.trust_index)
        floor = max(float(r.get("floor", 0.05)) for r in rows)
        settings[name] = trust.settings_from(cfg, floor)
        result[name] = {"calibration": calib, **shown(rows, settings[name], records)}
    result["paired_at_threshold_0"] = paired(rows, settings["base"], settings["candidate"], records)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print("| calibration | answerable abstained | right | answered | accuracy | ECE | Brier (shown) |")
    print("|---|---|---|---|---|---|---|")
    for name in ("base", "candidate"):
        c = result[name]
        print(f"| {name}: {c['calibration']} | {c['answerable_abstained']}/{c['answerable']} | {c['right']} | "
              f"{c['answered']} | {c['accuracy']} | {c['ece']} | {c['brier']} |")
    p = result["paired_at_threshold_0"]
    print(f"paired over {p['answers']} generated answers (threshold 0): Brier base {p['brier_base']}, candidate "
          f"{p['brier_candidate']}, difference {p['difference']} (95% CI {p['difference_ci95'][0]} to "
          f"{p['difference_ci95'][1]}; negative favours the candidate)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
