"""The whole dev fit, measured on dev questions it did not see. Dev only.

`eval trust fit` fits the gate model and the answer calibration and chooses the gate, the abstention threshold
and the support settings on every dev question, so its dev figures are in-sample. Here each candidate fitting
procedure runs on half A of repeated 50/50 splits of the **dev** rows (stratified by suite) and half B is
answered under what it chose: out-of-corpus abstention, answerable abstention and answerable right on B.
Candidates differ in the gate's signals and the calibration's candidate signal sets (``--candidate``).

    python -m eval.trust_holdout --rows .cds/eval/trust-s12-dev/rows-dev.jsonl --labels ... \\
        --candidate standard= --candidate lexical=gate:answerability_logit,retrieval,agreement,coverage,unseen \\
        --output .cds/eval/trust_holdout.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from eval import trust


def parse_candidate(spec: str) -> tuple[str, dict[str, Any]]:
    """``NAME=gate:F1,F2;set:F1,F2;set:...;offset:F`` -> (name, fit_dev keyword arguments); ``NAME=`` is today's
    fit. ``offset:F`` adds signal F afterwards as one coefficient, the others frozen (``eval trust fit --offset``)."""
    name, _, rest = spec.partition("=")
    kw: dict[str, Any] = {"gate_features": trust.GATE_FEATURES, "extra_sets": [], "offsets": []}
    for part in filter(None, rest.split(";")):
        key, _, feats = part.partition(":")
        if key == "gate":
            kw["gate_features"] = tuple(feats.split(","))
        elif key == "set":
            kw["extra_sets"].append(tuple(feats.split(",")))
        elif key == "offset":
            kw["offsets"].append(feats)
        else:
            raise SystemExit(f"error: candidate {name}: unknown part {key!r} (gate:..., set:... or offset:...)")
    return name, kw


def measure(rows: list[dict[str, Any]], records: dict[str, Any], floor: float, options: dict[str, Any],
            kw: dict[str, Any], a: np.ndarray) -> dict[str, Any]:
    """Fit on the rows in ``a``, answer the others under what the fit chose."""
    train = [r for r, m in zip(rows, a, strict=True) if m]
    held = [r for r, m in zip(rows, a, strict=True) if not m]
    with tempfile.TemporaryDirectory() as tmp:
        calib = trust.fit_dev(train, records, floor, Path(tmp) / "calibration.json", options, **kw)
    settings = {"gate": calib["answerable_min"], "abstain_below": calib["abstain_below"], "calibration": calib,
                "record_rules": False, "support_min": calib["support_min"],
                "support_cosine": calib["support_cosine"], **options}
    out = trust.outcomes(held, settings, records)
    ooc = [o for o in out if not o["answerable"]]
    ans = [o for o in out if o["answerable"]]
    answered = [o for o in ans if o["answered"]]
    # Record answers (questions about one patient's record) on their own: the calibration's weakest class.
    rec = [o for o, r in zip(out, held, strict=True) if r.get("patient_id")]
    rec_ans = [o for o in rec if o["answered"] and o["answerable"]]
    rec_conf = np.array([o["confidence"] for o in rec_ans])
    rec_right = np.array([bool(o["right"]) for o in rec_ans], float)
    return {"record_answered": len(rec_ans),
            "record_gap": abs(float(rec_conf.mean() - rec_right.mean())) if rec_ans else None,
            "record_brier": float(np.mean((rec_conf - rec_right) ** 2)) if rec_ans else None,
            "record_wrong_shown": sum(o["answered"] and not o["right"] for o in rec),
            "ooc_abstained": sum(not o["answered"] for o in ooc) / len(ooc),
            "answerable_abstained": sum(not o["answered"] for o in ans) / len(ans),
            "answerable_right": sum(o["right"] for o in ans) / len(ans),
            "answered_accuracy": (sum(o["right"] for o in answered) / len(answered)) if answered else None,
            "answered_confidence": float(np.mean([o["confidence"] for o in answered])) if answered else None,
            "chosen": {k: calib[k] for k in ("answerable_min", "abstain_below", "support_min", "support_cosine")},
            "features": calib["features"], "gate_features": calib["gate"]["features"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", required=True, help="a dev rows file of `eval trust run`")
    ap.add_argument("--labels", action="append", default=[], help="person verdicts (as `eval trust fit`)")
    ap.add_argument("--trust-index", default=".cds/index/trust")
    ap.add_argument("--candidate", action="append", required=True, metavar="NAME=gate:F,...;set:F,...")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--output", default=".cds/eval/trust_holdout.json")
    args = ap.parse_args(argv)

    from eval import trust_jobs
    from rag.config import resolve_path

    cfg, rows, records, floor = trust_jobs.dev_study(args.rows, args.labels, args.trust_index,
                                                     "fitting procedures are compared on dev")
    options = trust.pipeline_options(cfg)
    candidates = [parse_candidate(c) for c in args.candidate]
    masks = trust_jobs.halves(rows, args.repeats)
    results: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in candidates}
    for k, a in enumerate(masks):
        for name, kw in candidates:
            results[name].append(measure(rows, records, floor, options, kw, a))
        line = "; ".join(f"{n} ooc {r[-1]['ooc_abstained']:.3f} abst {r[-1]['answerable_abstained']:.3f} "
                         f"right {r[-1]['answerable_right']:.3f}" for n, r in results.items())
        print(f"repeat {k + 1}/{len(masks)}: {line}", flush=True)
    summary = {}
    for name, res in results.items():
        summary[name] = {key: round(float(np.mean([r[key] for r in res if r.get(key) is not None])), 4)
                         for key in ("ooc_abstained", "answerable_abstained", "answerable_right", "record_answered",
                                     "record_gap", "record_brier", "record_wrong_shown")}
        summary[name]["b_ooc_at_least_95"] = sum(r["ooc_abstained"] >= 0.95 for r in res)
        summary[name]["repeats"] = len(res)
    out = resolve_path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"summary": summary, "repeats": results}, indent=1) + "\n", encoding="utf-8")
    for name, s in summary.items():
        print(name, s)
    return 0


if __name__ == "__main__":
    from eval import one_line

    one_line.run(main)
