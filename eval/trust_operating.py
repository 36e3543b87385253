"""Choose an operating point (gate, threshold) for the configured index alone, from its own dev questions.

The product's point is chosen on the whole trust dev split, mostly the trust index; on the demo index it
abstained on half the dev clinician questions (the gate's scale depends on the documents it reads). This
chooses a point by the product's rule (most right answers with >= ``--target`` of the out-of-corpus questions
abstained; ties to the stricter) on records of questions asked on the configured index with no gate (``eval
trust run`` demo suites, or ``eval.trust_fresh run --floor 0``), and reports it in sample and held out (half
splits stratified by suite: chosen on one half, measured on the other), next to the general point on the same
records. ``--out`` writes it, with the index's documents and the calibration's sha256, for
``index.operating_point`` (:mod:`rag.operating`): the assistant uses it only on exactly those documents.

    python -m eval.trust_operating --rows .cds/eval/j-05/rows-dev.jsonl --rows .cds/eval/j2-ooc/rows-dev.jsonl \\
        --labels eval/labels/trust-s12-medquad-dev.jsonl --out configs/operating/demo.json
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from datetime import UTC, datetime
from typing import Any

import numpy as np

from eval import trust

GATES = tuple(round(0.01 * i, 2) for i in range(96))
THRESHOLDS = tuple(round(0.025 * i, 3) for i in range(39))


class Grid:
    """Every record's outcome once at no gate and no threshold; any (gate, threshold) is then a mask."""

    def __init__(self, rows: list[dict[str, Any]], settings: dict[str, Any], records: dict[str, Any]):
        out = trust.outcomes(rows, dict(settings, gate=0.0, abstain_below=0.0, demo_point=None), records)
        self.answered = np.array([o["answered"] for o in out], bool)
        self.right = np.array([bool(o["right"]) for o in out], bool) & self.answered
        self.confidence = np.array([float(o["confidence"]) for o in out])
        self.gate = np.array([trust.gate_value(r, settings.get("calibration")) for r in rows])
        self.ooc = np.array([not r["answerable"] for r in rows], bool)

    def stats(self, mask: np.ndarray, gate: float, threshold: float) -> dict[str, Any]:
        shown = self.answered & (self.gate >= gate) & (self.confidence >= threshold)
        ans, ooc = mask & ~self.ooc, mask & self.ooc
        return {"answerable": int(ans.sum()),
                "answerable_abstained": round(float((~shown & ans).sum() / max(ans.sum(), 1)), 4),
                "right": int((shown & self.right & ans).sum()), "out_of_corpus": int(ooc.sum()),
                "out_of_corpus_abstained": round(float((~shown & ooc).sum() / max(ooc.sum(), 1)), 4)}

    def choose(self, mask: np.ndarray, target: float, floor: float) -> tuple[float, float] | None:
        """The rule: most right answers at >= ``target`` out-of-corpus abstention; ties -> higher abstention, then
        the higher gate, then the higher threshold (None: no point reaches the target)."""
        best: tuple[tuple[Any, ...], float, float] | None = None
        for g in GATES:
            if g < floor:
                continue  # not generated below the run's floor: cannot be replayed
            for t in THRESHOLDS:
                s = self.stats(mask, g, t)
                if s["out_of_corpus_abstained"] < target:
                    continue
                key = (s["right"], s["out_of_corpus_abstained"], g, t)
                if best is None or key > best[0]:
                    best = (key, g, t)
        return None if best is None else (best[1], best[2])


def halves(rows: list[dict[str, Any]], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two masks splitting the records in half within each suite."""
    rng = random.Random(seed)
    a = np.zeros(len(rows), bool)
    for suite in sorted({r["suite"] for r in rows}):
        ids = [i for i, r in enumerate(rows) if r["suite"] == suite]
        rng.shuffle(ids)
        a[ids[: len(ids) // 2]] = True
    return a, ~a


def study(rows: list[dict[str, Any]], settings: dict[str, Any], records: dict[str, Any], target: float = 0.97,
          splits: int = 20) -> dict[str, Any]:
    """The point chosen on all records, the general point beside it, and the held-out comparison."""
    floor = max(float(r.get("floor", 0.05)) for r in rows)
    grid = Grid(rows, settings, records)
    everything = np.ones(len(rows), bool)
    general = (float(settings["gate"]), float(settings["abstain_below"]))
    chosen = grid.choose(everything, target, floor)
    held: list[dict[str, Any]] = []
    for seed in range(splits):
        a, b = halves(rows, seed)
        point = grid.choose(a, target, floor)
        if point is not None:
            held.append({"point": list(point), "chosen": grid.stats(b, *point), "general": grid.stats(b, *general)})

    def mean(which: str, key: str) -> float:
        return round(float(np.mean([h[which][key] for h in held])), 4) if held else float("nan")

    keys = ("answerable_abstained", "right", "out_of_corpus_abstained")
    return {"records": len(rows), "floor": floor, "target": target, "general": list(general),
            "chosen": list(chosen) if chosen else None,
            "in_sample": {"chosen": grid.stats(everything, *chosen) if chosen else None,
                          "general": grid.stats(everything, *general)},
            "held_out": {"splits": len(held), "chosen": {k: mean("chosen", k) for k in keys},
                         "general": {k: mean("general", k) for k in keys},
                         "points": [h["point"] for h in held]}}


def point_file(config: Any, result: dict[str, Any], sources: list[str]) -> dict[str, Any]:
    """The ``index.operating_point`` file: the point and what it was chosen with."""
    from rag.config import resolve_path
    from rag.index import read_manifest
    from rag.operating import sha256_of

    if not config.confidence.calibration:
        raise ValueError("the config has no confidence.calibration: an operating point is chosen for one")
    manifest = read_manifest(resolve_path(config.index.dir))[1]
    gate, threshold = result["chosen"]
    return {"answerable_min": gate, "abstain_below": threshold,
            "documents": {k: v.get("hash") for k, v in sorted(manifest.get("documents", {}).items())},
            "calibration_sha256": sha256_of(resolve_path(config.confidence.calibration)),
            "chosen": {"on": sources, "at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%MZ"),
                       "rule": f"most right answers with >= {result['target']:.0%} of out-of-corpus questions "
                               "abstained; ties to the stricter",
                       "in_sample": result["in_sample"], "held_out": {k: v for k, v in result["held_out"].items()
                                                                      if k != "points"}}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", action="append", required=True,
                    help="records of questions asked on the configured index with no gate (repeatable)")
    ap.add_argument("--labels", action="append", default=[], help="person verdicts (as `eval trust report`)")
    ap.add_argument("--target", type=float, default=0.97, help="out-of-corpus abstention the point must reach")
    ap.add_argument("--splits", type=int, default=20, help="half splits for the held-out comparison")
    ap.add_argument("--out", default=None, help="write the point here for index.operating_point")
    ap.add_argument("--trust-index", default=".cds/index/trust")
    ap.add_argument("--config", default=None)
    args = ap.parse_args(argv)

    from eval import trust_jobs
    from rag.config import load_config, resolve_path
    from rag.errors import InputError
    from rag.index import read_manifest

    try:
        if not 0.0 < args.target <= 1.0 or args.splits < 0:
            raise InputError("--target must be in (0, 1] and --splits >= 0")
        cfg = load_config(args.config)
        rows: list[dict[str, Any]] = []
        for p in args.rows:
            path = resolve_path(p)
            if not path.exists():
                raise InputError(f"--rows {path}: no such file; run `python app.py eval trust run` first")
            rows += trust_jobs.prepare_rows(cfg, path, [resolve_path(x) for x in args.labels], args.trust_index)
        docs = set(read_manifest(resolve_path(cfg.index.dir))[1].get("documents", {}))
        other = sorted({r["id"] for r in rows for s in r.get("sources", []) if s.get("doc_id") not in docs})
        if other:
            raise InputError(f"--rows: {other[0]} (and {len(other) - 1} more) cite documents {cfg.index.dir} does not "
                             "hold: only questions asked on the configured index choose its point")
        if all(r["answerable"] for r in rows) or not any(r["answerable"] for r in rows):
            raise InputError("--rows must hold both answerable and out-of-corpus questions")
        result = study(rows, dict(trust.settings_from(cfg, 0.0), demo_point=None),
                       trust_jobs.load_records(cfg), args.target, args.splits)
        if args.out and result["chosen"] is None:
            raise InputError(f"no (gate, threshold) reaches {args.target:.0%} out-of-corpus abstention on these "
                             "records; nothing written")
        if args.out:
            out = resolve_path(args.out)
            out.parent.mkdir(parents=True, exist_ok=True)
            body = point_file(cfg, result, [str(p) for p in args.rows])
            tmp = out.with_name(out.name + ".tmp")
            tmp.write_text(json.dumps(body, indent=1) + "\n", encoding="utf-8")
            tmp.replace(out)
    except (InputError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    from eval import one_line

    one_line.run(main)
