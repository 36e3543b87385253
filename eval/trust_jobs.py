"""The `app.py eval trust` jobs that need more than one library call: asking a part of the trust set.

Kept out of app.py (the CLI only parses, calls and prints).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from eval import trust, trust_set
from rag import Assistant
from rag.errors import InputError


def trust_config(config: Any, trust_index: str) -> Any:
    """The config pointed at the trust index (never auto-building the demo there)."""
    c = config.model_copy(deep=True)
    c.index.dir, c.index.auto_build_demo = trust_index, False
    return c


def run_part(config: Any, trust_index: str, part: str, data: Path, rows_path: Path, floor: float = 0.05,
             batch_size: int = 8, limit: int | None = None, regenerate_above: float | None = None,
             gate_from: Path | None = None, progress: Callable[[int], Callable[[int, int], None]] | None = None
             ) -> list[dict[str, Any]]:
    """Ask one part through the assistant (demo suites on ``config``'s index, the rest on the trust index).

    Questions are generated when the gate value reaches ``floor``. With ``regenerate_above``, only the
    questions of the earlier run in ``rows_path`` that were not generated but whose gate probability
    (the gate model in ``gate_from``) reaches it are asked again, with no gate, and merged in.
    """
    split = trust_set.load()
    qs = trust_set.questions(split, part, data)
    earlier: list[dict[str, Any]] = []
    if regenerate_above is not None:
        if gate_from is None or not rows_path.exists():
            raise InputError("--regenerate-above needs --gate-from CALIBRATION.json and an earlier run's records")
        gate_cal = json.loads(gate_from.read_text(encoding="utf-8"))
        earlier = trust.load_rows(rows_path)
        again = {r["id"] for r in earlier if not r["generated"] and trust.gate_value(r, gate_cal) >= regenerate_above}
        qs = [q for q in qs if q["id"] in again]
        floor = 0.0
    if limit:
        qs = [q for i, q in enumerate(qs) if sum(x["suite"] == q["suite"] for x in qs[:i]) < limit]
    cfgs = []
    for c in (trust_config(config, trust_index), config):
        c = c.model_copy(deep=True)
        c.verifier.answerable_min = floor
        cfgs.append(c)
    first = Assistant(cfgs[0])
    # One set of models for both indexes (same embedder, generator and verifier).
    assistants = {"trust": first, "demo": Assistant(cfgs[1], embedder=first.embedder, generator=first.generator,
                                                    verifier=first.verifier)}
    rows = trust.run(assistants, qs, data / trust_set.HF_CSV, batch_size,
                     on_answer=progress(len(qs)) if progress else None)
    for r in rows:
        r["floor"] = floor
    if earlier:
        new = {r["id"]: r for r in rows}
        for r in earlier:
            r["floor"] = regenerate_above  # now: never generated only below this gate probability
        rows = [new.get(r["id"], r) for r in earlier]
    trust.write_rows(rows, rows_path)
    return rows
