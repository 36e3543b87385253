"""Score the heart-failure input extraction (rag/hf_extract.py) on our labelled case descriptions.

Per variable: right (the value read equals the gold one, or both absent), wrong (a different value,
or a value missed), **invented** (a value read where the text states none), and for the cases whose
text holds an impossible value, whether it was flagged as an input error instead of read. Every value
read must also be written in its span (the span's text holds the number or the term), checked here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from rag.config import PROJECT_ROOT
from rag.hf_extract import NUMERIC, VARIABLES, extract

CASES = PROJECT_ROOT / "eval" / "hf_cases" / "extraction.jsonl"
PARTS = ("dev", "test", "fresh", "all")


def read_cases(part: str = "dev", path: Path = CASES) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return rows if part == "all" else [r for r in rows if r["split"] == part]


def same(name: str, got: Any, gold: Any) -> bool:
    if got is None or gold is None:
        return got is None and gold is None
    if name in NUMERIC:
        return abs(float(got) - float(gold)) <= max(0.011, 0.002 * abs(float(gold)))
    return bool(got == gold)


def _in_span(v: Any, text: str) -> bool:
    """The value is written where it says: its span is the case text's, and a number's span holds digits."""
    return bool(text[v.start:v.end] == v.text and v.text.strip() and (v.name not in NUMERIC
                                                                    or re.search(r"\d", v.text)))


def score(rows: list[dict[str, Any]]) -> dict[str, Any]:
    per: dict[str, dict[str, int]] = {n: {"right": 0, "wrong": 0, "missed": 0, "invented": 0, "stated": 0}
                                      for n in VARIABLES}
    errors: dict[str, int] = {"flagged": 0, "of": 0, "false_alarms": 0}
    records = []
    for r in rows:
        ex = extract(r["text"])
        flagged = {p.name for p in ex.problems}
        errors["of"] += len(r["errors"])
        errors["flagged"] += len(set(r["errors"]) & flagged)
        errors["false_alarms"] += len(flagged - set(r["errors"]))
        wrong: dict[str, Any] = {}
        for name in VARIABLES:
            gold, got = r["gold"].get(name), ex.get(name)
            c = per[name]
            c["stated"] += gold is not None
            if same(name, got, gold):
                c["right"] += 1
                continue
            wrong[name] = {"gold": gold, "got": got, "span": ex.values[name].text if name in ex.values else None}
            if gold is None:
                c["invented"] += 1
            elif got is None:
                c["missed"] += 1
            else:
                c["wrong"] += 1
        unsupported = [v.name for v in ex.values.values() if not _in_span(v, r["text"])]
        records.append({"id": r["id"], "style": r["style"], "errors_flagged": sorted(flagged), "wrong": wrong,
                        "unsupported": unsupported})
    n = len(rows)
    values = sum(c["stated"] for c in per.values())
    right_stated = sum(c["stated"] - c["wrong"] - c["missed"] for c in per.values())
    cells = n * len(VARIABLES)
    return {
        "cases": n,
        "per_variable": {k: {**c, "accuracy": round(c["right"] / n, 4) if n else None} for k, c in per.items()},
        "accuracy_all_cells": round(sum(c["right"] for c in per.values()) / cells, 4) if cells else None,
        "stated_values": values,
        "stated_values_right": round(right_stated / values, 4) if values else None,
        "invented": sum(c["invented"] for c in per.values()),
        "values_not_in_their_span": sum(len(r["unsupported"]) for r in records),
        "input_errors": errors,
        "records": records,
    }


def markdown(s: dict[str, Any], part: str) -> str:
    lines = [f"| variable ({part}, {s['cases']} cases) | stated | right (of all cases) | wrong | missed | invented |",
             "|---|---|---|---|---|---|"]
    for k, c in s["per_variable"].items():
        lines.append(f"| {k} | {c['stated']} | {c['right']} ({100 * c['accuracy']:.1f}%) | {c['wrong']} | "
                     f"{c['missed']} | {c['invented']} |")
    e = s["input_errors"]
    lines.append(f"| **all** | {s['stated_values']} | {100 * s['accuracy_all_cells']:.1f}% of cells; "
                 f"{100 * s['stated_values_right']:.1f}% of stated values | | | {s['invented']} |")
    lines.append(f"\nImpossible values flagged as input errors: {e['flagged']} of {e['of']} "
                 f"(false alarms {e['false_alarms']}).")
    return "\n".join(lines) + "\n"
