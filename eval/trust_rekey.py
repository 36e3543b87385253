"""Kept outcomes moved to a calibration that changes the shown probability only (a monotone map), by replay.

Kept outcomes are pooled only under the fingerprint of the config that decided them, and the fingerprint holds the
whole calibration file. A calibration that adds a monotone map to the one the outcomes were kept under shows the same
answers with other confidences (the threshold meets the probability before the map), so its outcomes are the kept
ones replayed: no question is asked again. This checks that the config's calibration differs from ``--was`` (the one
they were kept under) in the map alone, replays every outcome kept under ``--from`` with signals, and writes them
under the config's fingerprint (one outcome per question: they replace the old ones, whose confidences a replay
under ``--was`` gives back).

    python -m eval.trust_rekey --kept eval/results/trust-test.jsonl --from 88bd3cb08b212d2c \\
        --was configs/calibration/mpnet-c3.json
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def map_only(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether ``new`` differs from ``old`` in entries that change the shown probability only."""
    from eval.trust_kept import MAP_ONLY

    strip = lambda c: {k: v for k, v in c.items() if k not in MAP_ONLY}  # noqa: E731
    return strip(old) == strip(new)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kept", required=True, action="append", help="a kept-outcome file (repeatable)")
    ap.add_argument("--from", dest="from_fp", required=True, help="the fingerprint the outcomes were kept under")
    ap.add_argument("--was", required=True, help="the calibration they were kept under")
    ap.add_argument("--trust-index", default=".cds/index/trust")
    ap.add_argument("--floor", type=float, default=0.05, help="the runs' generation floor (for the fingerprint)")
    ap.add_argument("--config", default=None)
    args = ap.parse_args(argv)

    from eval import trust_jobs, trust_kept
    from rag.config import load_config, resolve_path
    from rag.errors import InputError

    cfg = load_config(args.config, [])
    if not cfg.confidence.calibration:
        raise InputError("the config has no confidence.calibration to move the kept outcomes to")
    new = json.loads(resolve_path(cfg.confidence.calibration).read_text(encoding="utf-8"))
    old = json.loads(resolve_path(args.was).read_text(encoding="utf-8"))
    if not map_only(old, new):
        raise InputError(f"{cfg.confidence.calibration} differs from {args.was} in more than its monotone map; kept "
                         "outcomes cannot be replayed into it: keep a run's rows under it (`eval trust keep`)")
    fp = trust_jobs.kept_fingerprint(cfg, args.trust_index, args.floor)
    for path in args.kept:
        _, kept = trust_kept.with_signals(resolve_path(path), args.from_fp)
        _, replaced = trust_kept.merge(resolve_path(path), trust_kept.rekeyed(kept, new, fp))
        print(f"{path}: {replaced} outcomes moved from {args.from_fp} to {fp} ({cfg.confidence.calibration})")
    return 0


if __name__ == "__main__":
    from eval import one_line

    one_line.run(main)
