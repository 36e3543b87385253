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


def shown(outs: list[dict[str, Any]]) -> dict[str, Any]:
    """What the product shows (outcomes of :func:`eval.trust.outcomes` or :func:`eval.trust_kept.replay`): counts,
    accuracy, ECE and Brier of the answered."""
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


def paired(base: list[dict[str, Any]], cand: list[dict[str, Any]], n_boot: int = 2000, seed: int = 11
           ) -> dict[str, Any]:
    """Brier of both calibrations over the answers generated and shown by both at threshold 0 (the outcomes of each
    with no threshold, ``id`` in each), the difference (candidate - base; negative favours the candidate) and its
    bootstrap 95% interval over answers."""
    a = {o["id"]: o for o in base if o["answered"]}
    b = {o["id"]: o for o in cand if o["answered"]}
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


def _diagram(outs: list[dict[str, Any]], out_dir: str | None, name: str, calibration: str = "") -> dict[str, Any]:
    """With ``out_dir``: ECE's bootstrap interval, the ECE a perfect confidence shows at this size and the reliability
    diagram (PNG) of the shown answers."""
    if not out_dir:
        return {}
    from pathlib import Path

    from eval.trust_ece import chance_ece, reliability_png

    answered = [o for o in outs if o["answered"]]
    conf, right = [float(o["confidence"]) for o in answered], [bool(o["right"]) for o in answered]
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    png = reliability_png(conf, right, Path(out_dir) / f"reliability-{name}.png",
                          f"{name}: {Path(calibration).stem}" if calibration else name)
    lo, hi = trust.ece_interval(conf, right)
    return {"ece_ci95": [round(lo, 4), round(hi, 4)], "chance_ece_if_perfect": round(chance_ece(conf), 4),
            "figure": str(png)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", help="rows-PART.jsonl of a trust run (the report set)")
    ap.add_argument("--kept", action="append", default=[], metavar="FILE.jsonl",
                     help="or: kept outcomes with their signals (eval/results/trust-test.jsonl; repeatable), replayed "
                          "under each calibration; both must share the gate model")
    ap.add_argument("--ece-kept", metavar="FILE.jsonl", help="or/and: the ece part's kept outcomes (with --ece-half)")
    ap.add_argument("--fingerprint", help="with --kept: the outcomes kept under this fingerprint (default: the one "
                                          "most outcomes with signals are kept under, in each file)")
    ap.add_argument("--ece-half", choices=["fit", "report"], help="with --ece-kept: only this half of the ece part")
    ap.add_argument("--ece-round", type=int, action="append", default=[], metavar="K",
                    help="with --ece-kept: only the questions round K of `eval trust split --ece-medquad` added "
                         "(repeatable; e.g. 2 = the report set G of the twenty-fourth session)")
    ap.add_argument("--png", metavar="DIR", help="also draw each calibration's reliability diagram (shown answers) "
                                                 "into DIR, and report ECE's 95%% interval and its value if perfect")
    ap.add_argument("--labels", action="append", default=[], help="a person's verdicts on those answers (repeatable)")
    ap.add_argument("--base", required=True, help="the calibration in use (JSON of `eval trust fit`)")
    ap.add_argument("--candidate", required=True, help="the calibration proposed instead")
    ap.add_argument("--trust-index", default=".cds/index/trust")
    ap.add_argument("--config", default=None)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if bool(args.rows) == bool(args.kept or args.ece_kept):
        ap.error("give a run's --rows, or kept outcomes (--kept / --ece-kept), not both")
    if args.ece_round and not args.ece_kept:
        ap.error("--ece-round selects among --ece-kept outcomes; give --ece-kept")

    from eval import trust_jobs, trust_kept, trust_set
    from rag.config import load_config, resolve_path
    from rag.errors import InputError

    result: dict[str, Any] = {}
    zero: dict[str, list[dict[str, Any]]] = {}
    if args.kept or args.ece_kept:
        kept = []
        files = [(p, None) for p in args.kept] + ([(args.ece_kept, args.ece_half)] if args.ece_kept else [])
        split = trust_set.load() if args.ece_round else {}
        rounds = {i for k in args.ece_round for i in trust_set.added_round(split, "ece", k)}
        for path, half in files:
            fp, of_file = trust_kept.with_signals(resolve_path(path), args.fingerprint, half)
            result.setdefault("fingerprints", {})[path] = fp
            kept += [k for k in of_file if not rounds or path != args.ece_kept or k["id"] in rounds]
        calibs = {name: json.loads(resolve_path(c).read_text(encoding="utf-8"))
                  for name, c in (("base", args.base), ("candidate", args.candidate))}
        if calibs["base"].get("gate") != calibs["candidate"].get("gate"):
            raise InputError("the two calibrations have different gate models; kept outcomes replay an answer "
                             "calibration only: compare on a run's rows (--rows)")
        for name, calib in calibs.items():
            outs = trust_kept.replay(kept, calib)
            path = getattr(args, name)
            result[name] = {"calibration": path, **shown(outs), **_diagram(outs, args.png, name, path)}
            zero[name] = trust_kept.replay(kept, calib, zero=True)
    else:
        rows: list[dict[str, Any]] = []
        records: dict[str, Any] = {}
        for name, calib_path in (("base", args.base), ("candidate", args.candidate)):
            cfg = load_config(args.config, [*args.set, f"confidence.calibration={calib_path}"])
            if not rows:
                records = trust_jobs.load_records(cfg)
                rows = trust_jobs.prepare_rows(cfg, resolve_path(args.rows), [resolve_path(p) for p in args.labels],
                                               args.trust_index)
            floor = max(float(r.get("floor", 0.05)) for r in rows)
            settings = trust.settings_from(cfg, floor)
            outs = trust.outcomes(rows, settings, records)
            result[name] = {"calibration": calib_path, **shown(outs), **_diagram(outs, args.png, name, calib_path)}
            zero[name] = [{**o, "id": r["id"]} for r, o in
                          zip(rows, trust.outcomes(rows, trust.at_threshold_zero(settings), records), strict=True)]
    result["paired_at_threshold_0"] = paired(zero["base"], zero["candidate"])
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print("| calibration | answerable abstained | right | answered | accuracy | ECE | Brier (shown) |")
    print("|---|---|---|---|---|---|---|")
    for name in ("base", "candidate"):
        c = result[name]
        print(f"| {name}: {c['calibration']} | {c['answerable_abstained']}/{c['answerable']} | {c['right']} | "
              f"{c['answered']} | {c['accuracy']} | {c['ece']} | {c['brier']} |")
    for name in ("base", "candidate") if args.png else ():
        c = result[name]
        print(f"{name}: ECE 95% interval {c['ece_ci95'][0]}-{c['ece_ci95'][1]}, a perfect confidence shows "
              f"{c['chance_ece_if_perfect']} at this size; reliability diagram {c['figure']}")
    p = result["paired_at_threshold_0"]
    print(f"paired over {p['answers']} generated answers (threshold 0): Brier base {p['brier_base']}, candidate "
          f"{p['brier_candidate']}, difference {p['difference']} (95% CI {p['difference_ci95'][0]} to "
          f"{p['difference_ci95'][1]}; negative favours the candidate)")
    return 0


if __name__ == "__main__":
    from eval import one_line

    one_line.run(main)
