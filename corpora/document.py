"""The unit every reader produces and every indexer consumes."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Kind = Literal["guideline", "ehr", "reference"]
KINDS: tuple[str, ...] = ("guideline", "ehr", "reference")


@dataclass
class Document:
    """A source document.

    ``source`` is where it came from (a path relative to the source root when possible);
    ``patient_id`` is set for EHR records and only for them.
    """

    doc_id: str
    text: str
    title: str
    kind: Kind
    source: str
    patient_id: str | None = None
    version: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"document {self.doc_id}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "ehr" and not self.patient_id:
            raise ValueError(f"document {self.doc_id}: an EHR record needs a patient_id")
        if not self.version:
            self.version = content_hash(self.text, self.title, self.kind, self.patient_id or "")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def content_hash(*parts: str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()[:16]
