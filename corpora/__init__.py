"""Readers: raw sources -> :class:`Document`. Pure parsing, no models."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from corpora.document import KINDS, Document, Kind, content_hash
from corpora.markdown import SUFFIXES, read_markdown
from rag.errors import SourceError

__all__ = ["KINDS", "Document", "Kind", "LoadReport", "content_hash", "load_sources"]

log = logging.getLogger(__name__)


@dataclass
class LoadReport:
    """Documents read plus the files that were skipped and why (never silently dropped)."""

    documents: list[Document] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _files(source: Path) -> Iterable[tuple[Path, Path]]:
    if source.is_file():
        yield source, source.parent
        return
    for p in sorted(source.rglob("*")):
        if p.is_file() and p.suffix.lower() in SUFFIXES and not p.name.startswith(".") and p.name != "README.md":
            yield p, source


def load_sources(sources: Sequence[str | Path], kind: Kind | None = None, strict: bool = True) -> LoadReport:
    """Read every supported file under ``sources``.

    With ``strict`` a bad file raises :class:`SourceError`; otherwise it is recorded in
    ``skipped``. Duplicate doc_ids are always an error: they would silently shadow each other.
    """
    report = LoadReport()
    seen: dict[str, str] = {}
    for s in sources:
        src = Path(s)
        if not src.exists():
            raise SourceError(f"source not found: {src}")
        found = False
        for path, root in _files(src):
            found = True
            try:
                doc = read_markdown(path, root, kind)
            except SourceError as e:
                if strict:
                    raise
                report.skipped.append((str(path), str(e)))
                log.warning("skipped %s", e)
                continue
            if doc.doc_id in seen:
                raise SourceError(f"duplicate doc_id '{doc.doc_id}' in {path} and {seen[doc.doc_id]}; make ids unique")
            seen[doc.doc_id] = str(path)
            report.documents.append(doc)
        if not found:
            raise SourceError(f"no .md/.txt documents under {src}")
    return report
