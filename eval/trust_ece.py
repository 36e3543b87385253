"""Calibration on more answers: the test part pooled with the ``ece`` part (answerable MedQuAD questions).

ECE over 10 bins is noisy at the ~110 answers of the trust test part: a perfectly calibrated confidence
scores 0.075 there by chance. The ``ece`` part (``python app.py eval trust split --ece 500``) holds more
answerable MedQuAD questions, asked like test over several sessions (``eval trust run --part ece
--skip-kept eval/results/trust-ece.jsonl``, then ``eval trust keep``) and never fitted on. This replays
both parts' records with the config's settings (as ``eval trust report``), or reads their kept outcomes,
and reports ECE, its 95% interval, Brier, accuracy and the ECE a perfectly calibrated confidence would show
at the same size, for test alone, ece alone and both pooled, with the reliability diagram.

    python -m eval.trust_ece --test-rows .cds/eval/trust-s10-final-test/rows-test.jsonl \\
        --ece-rows .cds/eval/trust-ece/rows-ece.journal.jsonl --labels ... --output .cds/eval/trust-ece
    python -m eval.trust_ece --test-kept eval/results/trust-test.jsonl --ece-kept eval/results/trust-ece.jsonl

Runs' records are lost with a fresh machine; kept outcomes (:mod:`eval.trust_kept`) are committed and
pooled only under the current config's fingerprint.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import numpy as np

from eval import trust


def chance_ece(conf: list[float], draws: int = 200, seed: int = 0) -> float:
    """Mean ECE of a perfectly calibrated confidence (labels drawn from it) over these confidences."""
    rng = np.random.default_rng(seed)
    c = np.asarray(conf, float)
    return float(np.mean([trust.ece(c, rng.random(len(c)) < c) for _ in range(draws)])) if len(c) else 0.0


def answered_of(rows: list[dict[str, Any]], settings: dict[str, Any], records: dict[str, Any]
                ) -> tuple[int, list[float], list[bool]]:
    """Replayed records: (questions, confidence and rightness of each answered one)."""
    answered = [o for o in trust.outcomes(rows, settings, records) if o["answered"]]
    return len(rows), [o["confidence"] for o in answered], [bool(o["right"]) for o in answered]


def kept_of(path: Any, fp: str, half: str | None = None) -> tuple[int, list[float], list[bool]]:
    """Kept outcomes (eval/results/, :mod:`eval.trust_kept`) under fingerprint ``fp`` only (and of one ece half)."""
    from eval import trust_kept, trust_set

    rows = [r for r in trust_kept.load(path) if r.get("fingerprint") == fp
            and (half is None or trust_set.ece_half(r["id"]) == half)]
    answered = [r for r in rows if r["answered"]]
    return len(rows), [float(r["confidence"]) for r in answered], [bool(r["right"]) for r in answered]


def calibration(questions: int, conf: list[float], right: list[bool]) -> dict[str, Any]:
    if not conf:
        return {"questions": questions, "answered": 0}
    lo, hi = trust.ece_interval(conf, right)
    return {"questions": questions, "answered": len(conf),
            "accuracy": round(float(np.mean(right)), 4) if right else None,
            "mean_confidence": round(float(np.mean(conf)), 4) if conf else None,
            "ece": round(trust.ece(conf, right), 4), "ece_ci95": [round(lo, 4), round(hi, 4)],
            "brier": round(float(np.mean([(c - r) ** 2 for c, r in zip(conf, right, strict=True)])), 4)
            if conf else None,
            "chance_ece_if_perfect": round(chance_ece(conf), 4)}


def reliability_png(conf: list[float], right: list[bool], path: Any, title: str) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from eval.mcq import stats

    filled = [b for b in stats.reliability(np.array(conf), np.array(right, float), 10) if b.n]
    fig, ax = plt.subplots(figsize=(5, 4.2))
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    ax.plot([b.confidence for b in filled], [b.accuracy for b in filled], "o-", label="answered questions")
    for b in filled:
        ax.annotate(str(b.n), (b.confidence, b.accuracy), textcoords="offset points", xytext=(4, -10), fontsize=8)
    ax.set(xlabel="confidence", ylabel="share right (strict)", title=f"Reliability ({title}; n per bin)",
           xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--test-rows", help="rows-test.jsonl of a test run")
    ap.add_argument("--test-kept", help="or: kept test outcomes (eval/results/, `eval trust keep`)")
    ap.add_argument("--ece-rows", help="rows-ece.jsonl, or the journal of a run still going")
    ap.add_argument("--ece-kept", help="or: kept ece outcomes (eval/results/trust-ece.jsonl)")
    ap.add_argument("--labels", action="append", default=[], help="person verdicts on the test rows (as `eval trust "
                    "report`)")
    ap.add_argument("--ece-labels", action="append", default=[], help="person verdicts on the ece rows")
    ap.add_argument("--ece-half", choices=["fit", "report"],
                    help="only this half of the ece part (eval.trust_set.ece_half): `report` when a calibration was "
                         "fitted on the other")
    ap.add_argument("--trust-index", default=".cds/index/trust")
    ap.add_argument("--config", default=None)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config key, e.g. --set confidence.calibration=FILE (a candidate's confidence)")
    ap.add_argument("--floor", type=float, default=0.05, help="the runs' generation floor (for the fingerprint)")
    ap.add_argument("--output", default=".cds/eval/trust-ece")
    args = ap.parse_args(argv)
    if not (args.test_rows or args.test_kept):
        ap.error("give --test-rows or --test-kept (and --ece-rows or --ece-kept to pool the ece part)")

    from eval import trust_jobs
    from rag.config import load_config, resolve_path

    cfg = load_config(args.config, args.set)
    labels = [resolve_path(p) for p in args.labels]
    ece_labels = [resolve_path(p) for p in args.ece_labels]
    records = trust_jobs.load_records(cfg)
    fp = trust_jobs.kept_fingerprint(cfg, args.trust_index, args.floor) if args.test_kept or args.ece_kept else None
    parts: dict[str, tuple[int, list[float], list[bool]]] = {}
    for name, rows_file, kept_file, part_labels in (("test", args.test_rows, args.test_kept, labels),
                                                    ("ece", args.ece_rows, args.ece_kept, ece_labels)):
        half = args.ece_half if name == "ece" else None
        if not (rows_file or kept_file):  # test alone (the ece part not asked under this config yet)
            parts[name] = (0, [], [])
            continue
        if kept_file:
            parts[name] = kept_of(resolve_path(kept_file), str(fp), half)
            if not parts[name][0]:
                # Outcomes under another fingerprint are never pooled: say why the row is empty and what fills it.
                print(f"{name}: no outcome in {kept_file} is kept under the current fingerprint {fp}; ask the part "
                      f"again (`python app.py eval trust run --part {name} --skip-kept {kept_file} --resume`, then "
                      "`eval trust keep`)", file=sys.stderr)
        else:
            rows = trust_jobs.prepare_rows(cfg, resolve_path(rows_file), part_labels, args.trust_index)
            if half:
                from eval import trust_set

                rows = [r for r in rows if trust_set.ece_half(r["id"]) == half]
            floor = max(float(r.get("floor", 0.05)) for r in rows)
            parts[name] = answered_of(rows, trust.settings_from(cfg, floor), records)
    pooled = (parts["test"][0] + parts["ece"][0], parts["test"][1] + parts["ece"][1],
              parts["test"][2] + parts["ece"][2])
    out = resolve_path(args.output)
    result: dict[str, Any] = {"fingerprint": fp, "test": calibration(*parts["test"]),
                              "ece": calibration(*parts["ece"]), "pooled": calibration(*pooled)}
    name = "test+ece" if parts["ece"][0] else "test"
    result["figures"] = [str(reliability_png(pooled[1], pooled[2], out / f"trust-{name}.png", name))]
    out.mkdir(parents=True, exist_ok=True)
    (out / "calibration-test+ece.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print("| rows | questions | answered | accuracy | mean confidence | ECE (95% CI) | chance ECE if perfect | Brier |")
    print("|---|---|---|---|---|---|---|---|")
    for name in ("test", "ece", "pooled"):
        c = result[name]
        if not c["answered"]:
            print(f"| {name} | {c['questions']} | 0 | - | - | - | - | - |")
            continue
        print(f"| {name} | {c['questions']} | {c['answered']} | {c['accuracy']} | {c['mean_confidence']} | "
              f"{c['ece']} ({c['ece_ci95'][0]}-{c['ece_ci95'][1]}) | {c['chance_ece_if_perfect']} | {c['brier']} |")
    print(f"figure: {result['figures'][0]}")
    return 0


if __name__ == "__main__":
    from eval import one_line

    one_line.run(main)
