"""A monotone (isotonic) map of an answer calibration's probability, fitted on kept answers, behind a cross-fitted gate.

A logistic score over a few signals can rank answers well (low Brier) and still have the wrong *shape*: C3 is
over-confident below 0.5 and under-confident at 0.6-0.8 on every report set since it was fitted (BENCHMARKS.md,
"Trust", twenty-third session), and a one-slope Platt rescale did not carry across halves. An isotonic regression of
"right" on the score keeps its ranking and fixes any monotone distortion. It is fitted on kept outcomes (signals and
verdicts, `eval/results/`), so no index, model or run records are needed.

Gate: ``--folds``-fold cross-fitting repeated ``--splits`` times (seeded): each answer's mapped probability comes from
a map fitted without it; mean held-out ECE (10 bins) and Brier of the map vs the calibration as it is, on every
generated answer (threshold 0). The gate passes only if the map lowers both. The map fitted on every answer is written
with ``--out`` whatever the gate said: the caller's pre-registration decides what it is used for.

    python -m eval.trust_monotone --kept eval/results/trust-ece.jsonl --judged-only --leave-out-ece-round 2 \\
        --onto configs/calibration/mpnet-c3.json --out configs/calibration/mpnet-c3m.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from eval import trust


def fit_map(p: np.ndarray, y: np.ndarray, y_min: float = 0.01, y_max: float = 0.99) -> tuple[list[float], list[float]]:
    """Knots of the isotonic regression of ``y`` (right or not) on ``p`` (non-decreasing, bounded to [y_min, y_max])."""
    from sklearn.isotonic import IsotonicRegression

    if len(set(np.asarray(y).tolist())) < 2:
        raise ValueError("the answers are all right or all wrong; a map needs both")
    iso = IsotonicRegression(y_min=y_min, y_max=y_max, increasing=True, out_of_bounds="clip").fit(p, y)
    return [float(x) for x in iso.X_thresholds_], [float(v) for v in iso.y_thresholds_]


def apply_map(p: np.ndarray, xs: list[float], ys: list[float]) -> np.ndarray:
    # np.interp is flat beyond the end knots, as rag.confidence.monotone_map
    return np.interp(np.asarray(p, float), xs, ys)


def cross_fitted(p: np.ndarray, y: np.ndarray, folds: int = 5, splits: int = 20, seed: int = 0,
                 y_min: float = 0.01, y_max: float = 0.99) -> dict[str, Any]:
    """Held-out ECE and Brier of ``p`` as it is and mapped, over ``splits`` random ``folds``-fold splits; means over
    splits and the share of splits the map wins."""
    p, y = np.asarray(p, float), np.asarray(y, float)
    rng = np.random.default_rng(seed)
    base_e, base_b, map_e, map_b = [], [], [], []
    for _ in range(splits):
        fold = rng.permutation(len(p)) % folds
        mapped = np.empty(len(p))
        for k in range(folds):
            fit, held = fold != k, fold == k
            mapped[held] = apply_map(p[held], *fit_map(p[fit], y[fit], y_min, y_max))
        base_e.append(trust.ece(p, y.astype(bool)))
        map_e.append(trust.ece(mapped, y.astype(bool)))
        base_b.append(float(np.mean((p - y) ** 2)))
        map_b.append(float(np.mean((mapped - y) ** 2)))
    base = {"ece": round(float(np.mean(base_e)), 4), "brier": round(float(np.mean(base_b)), 4)}
    mono = {"ece": round(float(np.mean(map_e)), 4), "brier": round(float(np.mean(map_b)), 4)}
    return {"answers": len(p), "right": int(y.sum()), "folds": folds, "splits": splits, "base": base, "mapped": mono,
            "map_wins_ece": round(float(np.mean(np.array(map_e) < np.array(base_e))), 3),
            "map_wins_brier": round(float(np.mean(np.array(map_b) < np.array(base_b))), 3),
            "gate_passed": bool(mono["ece"] < base["ece"] and mono["brier"] < base["brier"])}


def fit_data(kept: list[dict[str, Any]], calib: dict[str, Any], judged_only: bool) -> tuple[np.ndarray, np.ndarray]:
    """(probability, right) of every generated answer (threshold 0) among ``kept``, replayed under ``calib``."""
    from eval import trust_kept

    outs = [o for o in trust_kept.replay(kept, calib, zero=True)
            if o["answered"] and (o["labelled"] or not judged_only)]
    return np.array([o["confidence"] for o in outs]), np.array([float(bool(o["right"])) for o in outs])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kept", required=True, action="append", help="kept outcomes with signals (repeatable)")
    ap.add_argument("--fingerprint", help="the outcomes kept under this fingerprint (default: the most common)")
    ap.add_argument("--ece-half", choices=["fit", "report"], help="only this half of the ece part's outcomes")
    ap.add_argument("--leave-out-ece-round", type=int, action="append", default=[], metavar="K",
                    help="leave out the questions round K of `eval trust split --ece-medquad` added (a report set)")
    ap.add_argument("--judged-only", action="store_true",
                    help="fit only on answers with a verdict from eval/labels (not the automatic scorer's)")
    ap.add_argument("--onto", required=True, help="the calibration whose probability is mapped (no map of its own)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--splits", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--y-min", type=float, default=0.01)
    ap.add_argument("--y-max", type=float, default=0.99)
    ap.add_argument("--out", help="write the calibration with the map fitted on every answer here")
    ap.add_argument("--config", default=None)
    args = ap.parse_args(argv)

    from eval import trust_kept, trust_set
    from rag.config import load_config, resolve_path
    from rag.errors import InputError

    calib = json.loads(resolve_path(args.onto).read_text(encoding="utf-8"))
    if calib.get("monotone"):
        raise InputError(f"--onto {args.onto} already has a monotone map; give the calibration it was made from")
    trust_kept.check_gate(calib, args.onto, load_config(args.config, []))
    split = trust_set.load()
    left_out = {i for k in args.leave_out_ece_round for i in trust_set.added_round(split, "ece", k)}
    kept: list[dict[str, Any]] = []
    for path in args.kept:
        _, rows = trust_kept.with_signals(resolve_path(path), args.fingerprint, args.ece_half)
        kept += [r for r in rows if r["id"] not in left_out]
    p, y = fit_data(kept, calib, args.judged_only)
    if len(p) < 2 * args.folds:
        raise InputError(f"{len(p)} answers are too few to cross-fit {args.folds} folds; add --kept files")
    try:
        gate = cross_fitted(p, y, args.folds, args.splits, args.seed, args.y_min, args.y_max)
        xs, ys = fit_map(p, y, args.y_min, args.y_max)
    except ValueError as e:
        raise InputError(f"{e}; fit on more kept answers") from e
    if args.out:
        out = {**calib, "monotone": {
            "x": [round(x, 6) for x in xs], "y": [round(v, 6) for v in ys], "onto": args.onto,
            "on": f"kept {', '.join(args.kept)} ({args.ece_half or 'all'} half"
                  f"{', ece rounds ' + ','.join(map(str, args.leave_out_ece_round)) + ' left out' if left_out else ''}"
                  f"{', judged answers only' if args.judged_only else ''}; every generated answer, threshold 0)",
            "y_bounds": [args.y_min, args.y_max], "gate": gate}}
        out["note"] = ("P(answer strictly right) = monotone map (x -> y, linear between knots) of sigmoid(intercept + "
                       "coef . signals); refit both when the generator, verifier or retrieval changes")
        trust.write_calibration(out, Path(resolve_path(args.out)))
        gate["written"] = args.out
    gate["knots"] = len(xs)
    print(json.dumps(gate, indent=1))
    return 0


if __name__ == "__main__":
    from eval import one_line

    one_line.run(main)
