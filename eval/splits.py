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

# Training reads the held-out ids too, and finetune sits below eval: the reader lives there.
from finetune.heldout import DEFAULT_SPLIT as DEFAULT_SPLIT
from finetune.heldout import held_out_doc_ids as held_out_doc_ids
from finetune.heldout import load_split as load_split
from finetune.heldout import read_split_file as read_split_file
from rag.errors import InputError


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
