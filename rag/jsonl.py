"""Reading JSON-lines files that people edit or tools append to: one object a line, errors by line number."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rag.errors import InputError


def objects(path: Path, fix: str = "") -> Iterator[tuple[int, dict[str, Any]]]:
    """Each non-blank line of ``path`` as (line number, object). A line that is not a JSON object is a one-line
    :class:`InputError` naming the file and line, followed by ``fix`` (what to do) when given."""
    tail = f"; {fix}" if fix else ""
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{path}:{n}: not valid JSON ({e.msg}){tail}") from None
            if not isinstance(row, dict):
                raise InputError(f"{path}:{n}: expected a JSON object, got {type(row).__name__}{tail}")
            yield n, row
