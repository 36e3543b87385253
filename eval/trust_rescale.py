"""A calibration's logit rescaled (Platt) on recorded answers it was not fitted on, behind a cross-fitted gate.

`eval trust fit --onto C --rescale` rescales on dev's extension or on the ece fit half, beside a dev refit. This
rescales on any recorded part (the ece part's report half, say) with no dev rows at all, and first answers the
question that decides whether a rescale is worth trying there: fitted on one half of these answers, does it beat
the calibration as it is on the other half? ``--splits`` random 2-fold splits (seeded), both folds held out in
turn; mean held-out ECE and Brier over every generated answer (threshold 0) of both calibrations. The gate passes
only if the rescale lowers both. It writes the rescaled calibration (fitted on every answer) only when asked
(``--out``), whatever the gate said: the caller's pre-registration decides what it is used for.

    python -m eval.trust_rescale --rows .cds/eval/s22-ece-c3/rows-ece.jsonl --labels ... \\
        --onto configs/calibration/mpnet-c3.json --ece-half report --out configs/calibration/mpnet-c3r.json
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np

from eval import trust


def logits(p: np.ndarray) -> np.ndarray:
    q = np.clip(np.asarray(p, float), 1e-9, 1 - 1e-9)
    return np.log(q / (1 - q))


def cross_fitted(z: np.ndarray, y: np.ndarray, splits: int = 20, seed: int = 0) -> dict[str, Any]:
    """Held-out ECE and Brier of the scores ``sigmoid(z)`` as they are and Platt-rescaled, over ``splits`` random
    2-fold splits (each fold fitted on the other); means over splits, and the share of splits the rescale wins."""
    z, y = np.asarray(z, float), np.asarray(y, float)
    rng = np.random.default_rng(seed)
    base_e, base_b, res_e, res_b, slopes = [], [], [], [], []
    for _ in range(splits):
        fold = rng.permutation(len(z)) % 2
        p_base, p_res = 1 / (1 + np.exp(-z)), np.empty(len(z))
        for k in (0, 1):
            fit, held = fold != k, fold == k
            if len(set(y[fit].tolist())) < 2:
                raise ValueError("a fold has answers of one label only; too few answers to cross-fit a rescale")
            a, b = trust.rescale_fit(z[fit], y[fit])
            slopes.append(a)
            p_res[held] = 1 / (1 + np.exp(-np.clip(a * z[held] + b, -50, 50)))
        base_e.append(trust.ece(p_base, y.astype(bool)))
        res_e.append(trust.ece(p_res, y.astype(bool)))
        base_b.append(float(np.mean((p_base - y) ** 2)))
        res_b.append(float(np.mean((p_res - y) ** 2)))
    base = {"ece": round(float(np.mean(base_e)), 4), "brier": round(float(np.mean(base_b)), 4)}
    res = {"ece": round(float(np.mean(res_e)), 4), "brier": round(float(np.mean(res_b)), 4)}
    return {"answers": len(z), "splits": splits, "base": base, "rescaled": res,
            "rescale_wins_ece": round(float(np.mean(np.array(res_e) < np.array(base_e))), 3),
            "rescale_wins_brier": round(float(np.mean(np.array(res_b) < np.array(base_b))), 3),
            "fold_slopes": [round(float(min(slopes)), 3), round(float(max(slopes)), 3)],
            "gate_passed": bool(res["ece"] < base["ece"] and res["brier"] < base["brier"])}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", help="rows-PART.jsonl of a trust run the calibration was not fitted on")
    ap.add_argument("--kept", help="or: kept outcomes with their signals (eval/results/trust-ece.jsonl), under the "
                                   "fingerprint most of them are kept under (or --fingerprint)")
    ap.add_argument("--fingerprint")
    ap.add_argument("--labels", action="append", default=[], help="a person's verdicts on those answers (repeatable)")
    ap.add_argument("--onto", required=True, help="the calibration to rescale (JSON of `eval trust fit`)")
    ap.add_argument("--ece-half", choices=["fit", "report"], help="only this half of the ece part's rows")
    ap.add_argument("--first-only", action="store_true",
                    help="leave out the questions `eval trust split --ece-medquad` / `--test-medquad` added (a "
                         "fresh set kept for judging the rescale)")
    ap.add_argument("--splits", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="write the rescaled calibration here (fitted on every answer)")
    ap.add_argument("--trust-index", default=".cds/index/trust")
    ap.add_argument("--config", default=None)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    args = ap.parse_args(argv)

    from eval import trust_jobs, trust_kept, trust_set
    from rag.config import load_config, resolve_path
    from rag.errors import InputError

    if bool(args.rows) == bool(args.kept):
        ap.error("give a run's --rows or kept outcomes (--kept), one of them")
    fresh = trust_set.all_added(trust_set.load())
    keep = lambda qid: ((not args.ece_half or trust_set.ece_half(qid) == args.ece_half)  # noqa: E731
                        and not (args.first_only and qid in fresh))
    calib = json.loads(resolve_path(args.onto).read_text(encoding="utf-8"))
    if args.kept:
        # the kept outcomes were replayed at the config's gate and support settings; the calibration must share them
        trust_kept.check_gate(calib, args.onto, load_config(args.config, args.set))
        _, kept = trust_kept.with_signals(resolve_path(args.kept), args.fingerprint)
        outs = trust_kept.replay([k for k in kept if keep(k["id"])], calib, zero=True)
    else:
        cfg = load_config(args.config, [*args.set, f"confidence.calibration={args.onto}"])
        rows = [r for r in trust_jobs.prepare_rows(cfg, resolve_path(args.rows),
                                                   [resolve_path(p) for p in args.labels], args.trust_index)
                if keep(r["id"])]
        floor = max([float(r.get("floor", 0.05)) for r in rows] or [0.05])
        outs = trust.outcomes(rows, trust.at_threshold_zero(trust.settings_from(cfg, floor)),
                              trust_jobs.load_records(cfg))
    answered = [o for o in outs if o["answered"]]
    if not answered:
        raise InputError(f"{args.rows or args.kept}: no answers left to rescale on (check --ece-half / --first-only)")
    z = logits(np.array([o["confidence"] for o in answered]))
    y = np.array([float(bool(o["right"])) for o in answered])
    gate = cross_fitted(z, y, args.splits, args.seed)
    a, b = trust.rescale_fit(z, y)
    gate["fitted_on_all"] = {"slope": round(a, 6), "intercept": round(b, 6)}
    if args.out:
        rescaled = trust.rescaled(calib, z, y)
        rescaled["rescaled"].update({"onto": args.onto, "on": f"{args.rows or args.kept} ({args.ece_half or 'all'} "
                                     f"half{', first questions only' if args.first_only else ''})", "gate": gate})
        trust.write_calibration(rescaled, resolve_path(args.out))
        gate["written"] = args.out
    print(json.dumps(gate, indent=1))
    return 0


if __name__ == "__main__":
    from eval import one_line

    one_line.run(main)
