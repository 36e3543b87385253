"""How calibrated is the answer confidence on questions it was not fitted on? Dev only.

`eval trust fit` fits the confidence (logistic regression of strict rightness on the signals) on every
answered dev question, so its dev ECE is in-sample (0.033 in the tenth session, against 0.144 on test).
This compares ways of fitting by repeated 50/50 splits of the **dev** rows (stratified by suite): fit on
half A, measure ECE and Brier on half B's answered questions (operating point fixed: the config's gate,
support settings and abstention threshold). Also reported: the ECE a perfectly calibrated confidence
would show on half B by chance alone (labels drawn from the confidence itself), the floor that noise sets
with ~55 answers.

Candidates: ``chosen`` (today: the signal set and regularisation chosen by cross-validated log loss among
``trust.FEATURE_SETS``), each fixed signal set (regularisation chosen the same way), and ``flat`` (one
probability for every answer: the share right on A).

    python -m eval.trust_calibration --rows .cds/eval/trust-s10-final/rows-dev.jsonl --labels ... --output F
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np

from eval import trust


def _gate_model(settings: dict[str, Any]) -> dict[str, Any] | None:
    return settings["calibration"].get("gate") if settings.get("calibration") else None


def answered_at(rows: list[dict[str, Any]], settings: dict[str, Any], records: dict[str, Any]
                ) -> list[dict[str, Any]]:
    """Per row: answered at the gate (abstention threshold off), its signals and strict rightness."""
    gate = _gate_model(settings)
    return [trust.replay(r, settings["gate"], 0.0, {"gate": gate} if gate else None, records,
                         support_min=settings["support_min"], support_cosine=settings["support_cosine"],
                         **trust.switches(settings)) for r in rows]


def _fit(candidate: str, rows_a: list[dict[str, Any]], records: dict[str, Any], settings: dict[str, Any]
         ) -> dict[str, Any]:
    opts = trust.switches(settings)
    gate_model = _gate_model(settings)
    features = None if candidate == "chosen" else candidate.split("+")
    return trust.fit_calibration(rows_a, records, gate=settings["gate"], features=features, gate_model=gate_model,
                                 support_cosine=settings["support_cosine"], support_min=settings["support_min"],
                                 options=opts)


def compare(rows: list[dict[str, Any]], outcome: list[dict[str, Any]], records: dict[str, Any],
            settings: dict[str, Any], candidates: list[str], repeats: int = 20, seed: int = 0) -> dict[str, Any]:
    from eval.trust_jobs import halves

    noise = np.random.default_rng(seed)
    res: dict[str, list[dict[str, float]]] = {c: [] for c in [*candidates, "flat"]}
    chance: list[float] = []
    for mask in halves(rows, repeats, seed):
        a = {int(j) for j in np.flatnonzero(mask)}
        rows_a = [rows[j] for j in sorted(a)]
        b = [j for j in range(len(rows)) if j not in a and outcome[j]["answered"]]
        y_b = np.array([bool(outcome[j]["right"]) for j in b])
        a_answered = [j for j in a if outcome[j]["answered"]]
        share = float(np.mean([bool(outcome[j]["right"]) for j in a_answered])) if a_answered else 0.5
        for c in [*candidates, "flat"]:
            if c == "flat":
                p = np.full(len(b), share)
            else:
                calib = _fit(c, rows_a, records, settings)
                p = np.array([trust.probability(calib, outcome[j]["signals"]) for j in b])
            keep = p >= settings["abstain_below"]
            res[c].append({"ece_all": trust.ece(p, y_b), "brier_all": float(np.mean((p - y_b) ** 2)),
                           "ece_shown": trust.ece(p[keep], y_b[keep]) if keep.any() else float("nan"),
                           "brier_shown": float(np.mean((p[keep] - y_b[keep]) ** 2)) if keep.any() else float("nan"),
                           "n": len(b), "n_shown": int(keep.sum())})
            if c == candidates[0]:
                # What a perfectly calibrated confidence (labels drawn from p itself) scores on these answers.
                chance.append(float(np.mean([trust.ece(p, noise.random(len(p)) < p) for _ in range(50)])))
    out: dict[str, Any] = {}
    for c, vals in res.items():
        out[c] = {k: round(float(np.nanmean([v[k] for v in vals])), 4) for k in vals[0]}
    out["chance_ece_if_perfect"] = round(float(np.mean(chance)), 4) if chance else None
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", required=True, help="a dev rows file of `eval trust run`")
    ap.add_argument("--labels", action="append", default=[], help="person verdicts (as `eval trust report`)")
    ap.add_argument("--trust-index", default=".cds/index/trust")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--output", default=".cds/eval/trust_calibration.json")
    args = ap.parse_args(argv)

    from eval import trust_jobs
    from rag.config import resolve_path

    cfg, rows, records, floor = trust_jobs.dev_study(args.rows, args.labels, args.trust_index,
                                                     "fitting procedures are compared on dev")
    settings = trust.settings_from(cfg, floor)
    outcome = answered_at(rows, settings, records)
    candidates = ["chosen", *("+".join(f) for f in trust.FEATURE_SETS)]
    summary = compare(rows, outcome, records, settings, candidates, args.repeats)
    out = resolve_path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    for c, s in summary.items():
        print(c, s)
    return 0


if __name__ == "__main__":
    from eval import one_line

    one_line.run(main)
