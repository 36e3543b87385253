"""The held-out MedQuAD split as training reads it: which documents fine-tuning must never see.

``eval/splits.py`` makes and writes the split (``python app.py eval split``); training only reads
its ids, so the reader sits here, below ``eval`` (which re-exports it). The file holds ids only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rag.config import PROJECT_ROOT
from rag.errors import InputError

DEFAULT_SPLIT = PROJECT_ROOT / "eval" / "splits" / "medquad_retrieval.json"


def read_split_file(path: Path, parts: tuple[str, ...], command: str, what: str = "a split file"
                    ) -> dict[str, Any]:
    """A split JSON with the ``parts`` lists; every failure is one InputError naming ``command`` to recreate it."""
    try:
        split = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"split file {path} not found; create it with `{command}`") from None
    except ValueError as e:
        raise InputError(f"split file {path} is not valid JSON ({e}); recreate it with `{command}`") from None
    if not isinstance(split, dict) or any(p not in split for p in parts):
        names = "/".join(parts)
        raise InputError(f"{path} is not {what} (no {names}); recreate it with `{command}`")
    return split


def load_split(path: Path = DEFAULT_SPLIT) -> dict[str, Any]:
    return read_split_file(path, ("test",), "python app.py eval split")


def held_out_doc_ids(path: Path = DEFAULT_SPLIT) -> set[str]:
    """Every MedQuAD document id in any held-out part: what training data must exclude."""
    split = load_split(path)
    return {q["doc_id"] for part in ("test", "dev") for q in split.get(part, [])}
