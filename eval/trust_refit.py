"""An answer calibration refitted on kept outcomes' signals: no run records, no index, no model needed.

`eval trust fit --onto C --refit-answers` refits on a run's rows (dev, with the ece fit half's). Rows are lost with a
fresh machine; kept outcomes (`eval/results/`, :mod:`eval.trust_kept`) keep each generated answer's signals and
verdict since the twenty-third session, so the same fit (signal set and regularisation chosen by repeated 5-fold
cross-validated log loss, :func:`eval.trust.fit_answers`) runs on them. The gate model and thresholds of ``--onto``
are kept; it must be the gate the outcomes were kept under (the config's calibration's gate: checked).

    python -m eval.trust_refit --kept eval/results/trust-ece.jsonl --ece-half fit \\
        --onto configs/calibration/mpnet-c3.json --out configs/calibration/CANDIDATE.json

Fit on the fit half only: the report half and the test split report what this fits.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from eval import trust


def refit(calib: dict[str, Any], kept: list[dict[str, Any]], features: list[str] | None = None,
          extra_sets: list[tuple[str, ...]] | None = None, judged_only: bool = False) -> dict[str, Any]:
    """``calib`` with its answer calibration fitted on these kept outcomes' generated answers (with
    ``judged_only``, only those a person's or helper's verdict was kept for)."""
    from eval import trust_kept

    outs = trust_kept.replay(kept, calib, zero=True)
    zero = {k["id"]: k["at_zero"] for k in kept}
    answered = [(zero[o["id"]]["signals"], bool(o["right"])) for o in outs
                if o["answered"] and (not judged_only or zero[o["id"]]["by_person"])]
    fitted = trust.fit_answers(answered, features, extra_sets or ())
    return {**{k: v for k, v in calib.items() if k not in ("offset_fit", "rescaled")}, **fitted}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kept", required=True, action="append", help="kept outcomes with signals (repeatable)")
    ap.add_argument("--ece-half", choices=["fit", "report"], help="only this half of the ece part's outcomes")
    ap.add_argument("--added-only", action="store_true",
                    help="only the questions `eval trust split --*-medquad` appended")
    ap.add_argument("--fingerprint", help="the outcomes kept under this fingerprint (default: the most common)")
    ap.add_argument("--onto", required=True, help="the calibration whose gate and thresholds are kept")
    ap.add_argument("--feature-set", action="append", default=[], metavar="F1,F2,...",
                    help="also consider this signal set (as `eval trust fit --feature-set`)")
    ap.add_argument("--features", help="fit exactly these signals (no choice)")
    ap.add_argument("--judged-only", action="store_true",
                    help="fit only on answers with a verdict from eval/labels (not the automatic scorer's)")
    ap.add_argument("--out", required=True, help="the refitted calibration (JSON)")
    ap.add_argument("--config", default=None)
    args = ap.parse_args(argv)

    from eval import trust_kept, trust_set
    from rag.config import load_config, resolve_path
    from rag.errors import InputError

    calib = json.loads(resolve_path(args.onto).read_text(encoding="utf-8"))
    trust_kept.check_gate(calib, args.onto, load_config(args.config, []))
    added = trust_set.all_added(trust_set.load())
    kept: list[dict[str, Any]] = []
    for path in args.kept:
        _, rows = trust_kept.with_signals(resolve_path(path), args.fingerprint, args.ece_half)
        kept += [r for r in rows if not args.added_only or r["id"] in added]
    if not kept:
        raise InputError("no kept outcome left to fit on (check --ece-half / --added-only)")
    try:
        out = refit(calib, kept, args.features.split(",") if args.features else None,
                    [tuple(fs.split(",")) for fs in args.feature_set], args.judged_only)
    except ValueError as e:
        raise InputError(f"{e}; fit on more kept answers (another --kept, or without --judged-only)") from e
    out["refit_answers"] = {"onto": args.onto, "on": f"kept {', '.join(args.kept)} ({args.ece_half or 'all'} half"
                            f"{', appended questions only' if args.added_only else ''}"
                            f"{', judged answers only' if args.judged_only else ''})",
                            "answered": out["fitted_on"]["answered"]}
    trust.write_calibration(out, Path(resolve_path(args.out)))
    print(f"answer calibration refitted on {out['fitted_on']['answered']} kept answers "
          f"({out['fitted_on']['right']} right): {', '.join(out['features'])}; C={out['C']} -> {args.out}")
    return 0


if __name__ == "__main__":
    from eval import one_line

    one_line.run(main)
