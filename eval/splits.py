"""Held-out MedQuAD question splits, sampled by source XML document.

Sampling whole documents (not single questions) keeps sibling questions about the same
focus out of the other side: a model fine-tuned on "What causes X?" must not be evaluated
on "What are the treatments for X?" with the same page behind it. The split file holds ids
only (qid, doc id, source file) plus the seed, never question or answer text.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from corpora.document import Document
from rag.config import PROJECT_ROOT
from rag.errors import InputError

DEFAULT_SPLIT = PROJECT_ROOT / "eval" / "splits" / "medquad_retrieval.json"


def source_file(doc: Document) -> str:
    """The MedQuAD XML file a QA document came from (``folder/file.xml``)."""
    return doc.source.rsplit("#", 1)[0]


def make_split(docs: list[Document], seed: int = 13, test_questions: int = 2000, dev_questions: int = 500
               ) -> dict[str, Any]:
    """Shuffle the XML files with ``seed``; fill ``test`` then ``dev`` with whole files."""
    by_file: dict[str, list[Document]] = defaultdict(list)
    for d in docs:
        if d.meta.get("collection") == "medquad":
            by_file[source_file(d)].append(d)
    files = sorted(by_file)
    random.Random(seed).shuffle(files)
    parts: dict[str, list[dict[str, str]]] = {"test": [], "dev": []}
    want = {"test": test_questions, "dev": dev_questions}
    it = iter(files)
    for name in ("test", "dev"):
        for f in it:
            parts[name].extend({"doc_id": d.doc_id, "qid": str(d.meta.get("qid", "")), "file": f}
                               for d in by_file[f])
            if len(parts[name]) >= want[name]:
                break
    if len(parts["test"]) < test_questions:
        raise InputError(f"only {len(parts['test'])} answered MedQuAD questions; need {test_questions}")
    return {
        "description": "MedQuAD questions held out from fine-tuning; 'test' reports retrieval quality, 'dev' "
                       "is the only part used to choose defaults. Sampled by source XML file.",
        "seed": seed,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "unit": "medquad xml file",
        "counts": {k: len(v) for k, v in parts.items()},
        "files": {k: sorted({q["file"] for q in v}) for k, v in parts.items()},
        **parts,
    }


def write_split(split: dict[str, Any], path: Path = DEFAULT_SPLIT) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(split, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)


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
