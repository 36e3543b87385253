"""How well does a rule for choosing the operating point hold on questions it was not chosen on? Dev only.

`eval trust fit` chooses the answerability gate and the confidence threshold as the setting with the most
right answers at >= 95% out-of-corpus abstention on dev. Chosen exactly at the bar, a few questions' noise
moves a new split below it. This compares choosing rules by repeated 50/50 splits of the **dev** rows
(stratified by suite): the rule picks a setting on half A (calibration and support settings fixed: the
config's), half B measures it. Reported per rule: in how many repeats half B abstains on >= 95% of its
out-of-corpus questions, and half B's answerable right and abstained (medians).

Rules: ``exact`` (today: OOC >= 95% on A), ``margin`` (OOC >= 97% on A), ``wilson`` (the Wilson 95% lower
bound of A's OOC abstention >= 90%).

    python -m eval.trust_procedure --rows .cds/eval/trust-s10-sv/rows-dev.jsonl --labels ... --output F
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np

from eval import trust
from eval.mcq import stats

GATES = tuple(float(g) for g in np.round(np.arange(0.05, 0.951, 0.05), 3))
THRESHOLDS = tuple(float(a) for a in np.round(np.arange(0.0, 0.951, 0.025), 3))
RULES = {
    "exact": lambda k, n: n == 0 or k / n >= 0.95,
    "margin": lambda k, n: n == 0 or k / n >= 0.97,
    "wilson": lambda k, n: n == 0 or stats.wilson(k, n)[0] >= 0.90,
}


def grid(rows: list[dict[str, Any]], settings: dict[str, Any], records: dict[str, Any], floor: float
         ) -> tuple[list[tuple[float, float]], np.ndarray, np.ndarray]:
    """Per (gate, threshold) setting, each row's answered and right flags (settings x rows)."""
    points = [(g, a) for g in GATES if g >= floor for a in THRESHOLDS]
    answered = np.zeros((len(points), len(rows)), bool)
    right = np.zeros((len(points), len(rows)), bool)
    for i, (g, a) in enumerate(points):
        for j, o in enumerate(trust.outcomes(rows, dict(settings, gate=g, abstain_below=a, demo_point=None), records)):
            answered[i, j], right[i, j] = o["answered"], o["right"]
    return points, answered, right


def pick(rule: str, answered: np.ndarray, right: np.ndarray, ooc: np.ndarray, mask: np.ndarray,
         points: list[tuple[float, float]]) -> int | None:
    """The setting the rule picks on the rows in ``mask``: most right answerable, ties to the stricter."""
    best: tuple[Any, ...] | None = None
    chosen = None
    n_ooc = int((ooc & mask).sum())
    for i, (g, a) in enumerate(points):
        k = int((~answered[i] & ooc & mask).sum())
        if not RULES[rule](k, n_ooc):
            continue
        key = (int((right[i] & ~ooc & mask).sum()), -g, -a)
        if best is None or key > best:
            best, chosen = key, i
    return chosen


def compare(rows: list[dict[str, Any]], points: list[tuple[float, float]], answered: np.ndarray, right: np.ndarray,
            repeats: int = 20, seed: int = 0) -> dict[str, Any]:
    ooc = np.array([not r["answerable"] for r in rows])
    from eval.trust_jobs import halves

    results: dict[str, list[dict[str, Any]]] = {rule: [] for rule in RULES}
    for a in halves(rows, repeats, seed):
        b = ~a
        for rule in RULES:
            i = pick(rule, answered, right, ooc, a, points)
            if i is None:
                results[rule].append({"setting": None})
                continue
            n_ooc, n_ans = int((ooc & b).sum()), int((~ooc & b).sum())
            results[rule].append({
                "setting": points[i],
                "ooc_abstained_b": int((~answered[i] & ooc & b).sum()) / n_ooc,
                "right_b": int((right[i] & ~ooc & b).sum()) / n_ans,
                "abstained_b": int((~answered[i] & ~ooc & b).sum()) / n_ans})
    summary = {}
    for rule, res in results.items():
        ok = [r for r in res if r["setting"] is not None]
        summary[rule] = {
            "repeats": len(res), "no_setting_on_a": len(res) - len(ok),
            "b_ooc_at_least_95": sum(r["ooc_abstained_b"] >= 0.95 for r in ok),
            "b_ooc_median": round(float(np.median([r["ooc_abstained_b"] for r in ok])), 4) if ok else None,
            "b_ooc_min": round(float(min(r["ooc_abstained_b"] for r in ok)), 4) if ok else None,
            "b_right_median": round(float(np.median([r["right_b"] for r in ok])), 4) if ok else None,
            "b_abstained_median": round(float(np.median([r["abstained_b"] for r in ok])), 4) if ok else None,
            "settings": [r["setting"] for r in ok]}
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", required=True, help="a dev rows file of `eval trust run`")
    ap.add_argument("--labels", action="append", default=[], help="person verdicts (as `eval trust report`)")
    ap.add_argument("--trust-index", default=".cds/index/trust")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--output", default=".cds/eval/trust_procedure.json")
    args = ap.parse_args(argv)

    from eval import trust_jobs
    from rag.config import resolve_path

    cfg, rows, records, floor = trust_jobs.dev_study(args.rows, args.labels, args.trust_index,
                                                     "the choosing rule is compared on dev")
    points, answered, right = grid(rows, trust.settings_from(cfg, floor), records, floor)
    summary = compare(rows, points, answered, right, args.repeats)
    out = resolve_path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    for rule, s in summary.items():
        print(rule, {k: v for k, v in s.items() if k != "settings"})
    return 0


if __name__ == "__main__":
    from eval import one_line

    one_line.run(main)
