"""How far any operating point can take the two abstention targets at once.

Issue 12 asks for >= 95% of out-of-corpus questions abstained *and* <= 10% of answerable ones. The gate
and the confidence threshold trade one against the other; this replays every gate (0.01 steps) and
threshold (0.025 steps) on a part's recorded answers, with the config's calibration, and reports the least
answerable abstention reachable at each out-of-corpus bar, plus what remains with no gate and no threshold
at all (the abstentions no operating point can remove: questions the generator was not run on, or whose
answer had no supported sentence), by reason.

On dev it shows what the choice could reach; on test it is a bound chosen with hindsight: reported, never
used to choose anything.

    python -m eval.trust_frontier --rows .cds/eval/trust-s12-test/rows-test.jsonl \\
        --labels eval/labels/trust-s5-medquad-test.jsonl ...
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from eval import trust

BARS = (0.90, 0.93, 0.95, 0.97)


def frontier(rows: list[dict[str, Any]], settings: dict[str, Any], records: dict[str, Any],
             bars: Sequence[float] = BARS) -> dict[str, Any]:
    """The least answerable abstention at each out-of-corpus bar over every (gate, threshold), and the
    abstentions that remain with neither (``settings``: as :func:`eval.trust.settings_from`)."""
    floor = float(settings.get("floor", 0.05))
    calib = settings.get("calibration")
    gate_of = np.array([trust.gate_value(r, calib) for r in rows])
    out = trust.outcomes(rows, dict(settings, gate=floor, abstain_below=0.0, demo_point=None), records)
    answered = np.array([o["answered"] for o in out], bool)
    right = np.array([bool(o["right"]) for o in out], bool) & answered
    conf = np.array([float(o["confidence"]) for o in out])
    ooc = np.array([not r["answerable"] for r in rows], bool)
    demo = np.array([r["suite"] == "demo_answerable" for r in rows], bool)
    n_ans, n_ooc = int((~ooc).sum()), int(ooc.sum())
    best: dict[float, dict[str, Any]] = {}
    for gate in np.round(np.arange(floor, 0.951, 0.01), 3):
        for ab in np.round(np.arange(0.0, 0.951, 0.025), 3):
            shown = answered & (gate_of >= gate) & (conf >= ab)
            ooc_abst = int((~shown & ooc).sum()) / max(n_ooc, 1)
            ans_abst = int((~shown & ~ooc).sum()) / max(n_ans, 1)
            for bar in bars:
                if ooc_abst >= bar and (bar not in best or ans_abst < best[bar]["answerable_abstained"]):
                    best[bar] = {"answerable_abstained": round(ans_abst, 4), "gate": float(gate),
                                 "abstain_below": float(ab), "right": int((shown & right & ~ooc).sum()),
                                 "out_of_corpus_abstained": round(ooc_abst, 4),
                                 "demo_abstained": round(int((~shown & demo).sum()) / max(int(demo.sum()), 1), 4)}
    reasons: Counter[str] = Counter()
    for r, o in zip(rows, out, strict=True):
        if r["answerable"] and not o["answered"]:
            reasons["not generated (below the generation floor)" if not r.get("generated")
                    else r.get("reason") or "no supported sentence on replay"] += 1
    return {"answerable": n_ans, "out_of_corpus": n_ooc, "floor": floor,
            "best": {f"{bar:.2f}": best.get(bar) for bar in bars},
            "no_gate_no_threshold": {
                "answerable_abstained": round(int((~answered & ~ooc).sum()) / max(n_ans, 1), 4),
                "out_of_corpus_abstained": round(int((~answered & ooc).sum()) / max(n_ooc, 1), 4),
                "answerable_reasons": dict(reasons.most_common())}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", required=True, help="a part's rows-PART.jsonl (`eval trust run`)")
    ap.add_argument("--labels", action="append", default=[], help="person verdicts (as `eval trust report`)")
    ap.add_argument("--trust-index", default=".cds/index/trust")
    ap.add_argument("--config", default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    from eval import trust_jobs
    from rag.config import load_config, resolve_path
    from rag.errors import InputError

    cfg = load_config(args.config)
    path = resolve_path(args.rows)
    try:
        if not path.exists():
            raise InputError(f"{path} not found; run `python app.py eval trust run` first")
        rows = trust_jobs.prepare_rows(cfg, path, [resolve_path(p) for p in args.labels], args.trust_index)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    floor = max(float(r.get("floor", 0.05)) for r in rows)
    result = frontier(rows, trust.settings_from(cfg, floor), trust_jobs.load_records(cfg))
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"{result['answerable']} answerable, {result['out_of_corpus']} out of corpus")
    print("| out of corpus abstained, at least | least answerable abstained | gate | threshold | right "
          "| demo abstained |")
    print("|---|---|---|---|---|---|")
    for bar, b in result["best"].items():
        if b is None:
            print(f"| {float(bar):.0%} | unreachable | | | | |")
            continue
        print(f"| {float(bar):.0%} | {b['answerable_abstained']:.1%} | {b['gate']} | {b['abstain_below']} | "
              f"{b['right']} | {b['demo_abstained']:.0%} |")
    n = result["no_gate_no_threshold"]
    print(f"no gate and no threshold: answerable abstained {n['answerable_abstained']:.1%}, out of corpus "
          f"{n['out_of_corpus_abstained']:.1%}; answerable abstentions by reason: {n['answerable_reasons']}")
    return 0


if __name__ == "__main__":
    from eval import one_line

    one_line.run(main)
