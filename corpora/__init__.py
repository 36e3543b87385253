"""Readers: raw sources -> :class:`Document`. Pure parsing, no models.

A source is ``PATH`` or ``FORMAT:PATH``. Without a format the reader is chosen from what the
path holds (a MedQuAD XML tree, NGC/USPSTF JSONL, MTSamples/UCI CSV, WikiDoc JSON, or a
folder of ``.md``/``.txt``/``.html``/``.pdf`` files); when that cannot be told, the error
asks for the prefix instead of guessing.
"""

from __future__ import annotations

import json
import logging
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from pathlib import Path

from corpora.document import KINDS, Document, Kind, content_hash
from corpora.errors import SourceError
from corpora.files import DEFAULT_READ, ReadOptions, check_file, size_problem, walk
from corpora.guidelines import read_folder, read_ngc, read_uspstf
from corpora.heart_failure import read_heart_failure
from corpora.medquad import read_medquad
from corpora.mtsamples import read_mtsamples
from corpora.report import LoadReport
from corpora.wikidoc import read_wikidoc

__all__ = ["FORMATS", "KINDS", "Document", "Kind", "LoadReport", "ReadOptions", "content_hash", "detect_format",
           "load_sources", "parse_source"]

log = logging.getLogger(__name__)

Reader = Callable[[Path, "Kind | None", bool, ReadOptions], LoadReport]

# Formats read from one file are size-checked before they are opened (load_sources); folder
# formats check each file as they walk.
FORMATS: dict[str, Reader] = {
    "files": read_folder,
    "medquad": lambda p, k, s, o: read_medquad(p, s, o),
    "ngc": lambda p, k, s, o: read_ngc(p, s),
    "uspstf": lambda p, k, s, o: read_uspstf(p, s),
    "mtsamples": lambda p, k, s, o: read_mtsamples(p, s),
    "uci-heart-failure": lambda p, k, s, o: read_heart_failure(p, s),
    "wikidoc": lambda p, k, s, o: read_wikidoc(p, s),
}
# Formats whose kind is fixed by the data; --kind applies to generic files only.
FIXED_KIND = {"medquad": "reference", "ngc": "guideline", "uspstf": "guideline", "mtsamples": "ehr",
              "uci-heart-failure": "ehr", "wikidoc": "reference"}


def parse_source(source: str | Path) -> tuple[str | None, Path]:
    """``"medquad:/data/medquad"`` -> ("medquad", path); a plain path -> (None, path)."""
    s = str(source)
    head, sep, rest = s.partition(":")
    if sep and head in FORMATS and rest:
        return head, Path(rest)
    return None, Path(s)


def _first_line(path: Path) -> str:
    with path.open(encoding="utf-8-sig", errors="replace") as f:
        for line in f:
            if line.strip():
                return line
    return ""


def _has_folder_files(path: Path) -> bool:
    from corpora.guidelines import FOLDER_SUFFIXES

    return any(p.suffix.lower() in FOLDER_SUFFIXES for p in path.rglob("*"))


def detect_format(path: Path) -> str:
    """Name of the reader for ``path``; raise when the content does not say."""
    hint = f"; name the format explicitly, e.g. medquad:{path} (formats: {', '.join(FORMATS)})"
    if path.is_dir():
        # The first XML file the walk accepts (never one behind a link leaving the folder, nor a FIFO).
        xml = next((p for p in walk(path, lambda p: p.suffix.lower() == ".xml")[0]
                    if size_problem(p, DEFAULT_READ) is None), None)
        if xml is not None:
            try:
                if ET.parse(xml).getroot().tag == "Document":
                    return "medquad"
            except ET.ParseError as e:
                # A folder of XML and nothing else is meant as MedQuAD: say what is wrong with it,
                # not that it holds no .md files.
                if not _has_folder_files(path):
                    raise SourceError(f"{xml}: malformed XML ({e}); fix the file, or if this is not MedQuAD name "
                                      f"the format{hint.split(';', 1)[1]}") from None
            except OSError as e:
                raise SourceError(f"{xml}: cannot read ({e.strerror}); check its permissions") from None
        return "files"
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        try:
            keys = set(json.loads(_first_line(path)))
        except (ValueError, TypeError):
            raise SourceError(f"{path}: first line is not a JSON object; fix the file{hint}") from None
        if "ngc_id" in keys:
            return "ngc"
        if {"grade", "text"} <= keys or "servFreq" in keys:
            return "uspstf"
        raise SourceError(f"{path}: unrecognised JSONL fields {sorted(keys)[:6]}{hint}")
    if suffix == ".csv":
        header = {h.strip() for h in _first_line(path).split(",")}
        if "transcription" in header:
            return "mtsamples"
        if {"ejection_fraction", "serum_creatinine"} <= header:
            return "uci-heart-failure"
        raise SourceError(f"{path}: unrecognised CSV header{hint}")
    if suffix == ".json":
        return "wikidoc"
    if suffix == ".xml":
        return "medquad"
    return "files"


def load_sources(sources: Sequence[str | Path], kind: Kind | None = None, strict: bool = True,
                 options: ReadOptions | None = None) -> LoadReport:
    """Read every source (see module docstring).

    With ``strict`` a bad file or record raises :class:`SourceError`; otherwise it is recorded
    in ``skipped`` with its path (and line) and the reason. Duplicate doc_ids are always an
    error: they would silently shadow each other.
    """
    options = options or ReadOptions()
    report = LoadReport()
    seen: dict[str, str] = {}
    for s in sources:
        fmt, path = parse_source(s)
        if not path.exists():
            raise SourceError(f"source not found: {path}; check the path (sources are folders or files, "
                              "optionally FORMAT:PATH)")
        if not path.is_dir():
            check_file(path, options)  # before anything reads it: /dev/zero, a FIFO or 50 GB stop here
        fmt = fmt or detect_format(path)
        if kind is not None and fmt in FIXED_KIND and kind != FIXED_KIND[fmt]:
            raise SourceError(f"{path}: {fmt} documents are kind '{FIXED_KIND[fmt]}'; --kind {kind} only applies "
                              "to folders of .md/.txt/.html/.pdf files")
        part = FORMATS[fmt](path, kind, strict, options)
        part.fmt = fmt
        collection = path.name if fmt == "files" else fmt
        for doc in part.documents:
            doc.meta.setdefault("collection", collection)
            if doc.doc_id in seen:
                raise SourceError(f"duplicate doc_id '{doc.doc_id}' in {doc.source} and {seen[doc.doc_id]}; "
                                  "make ids unique")
            seen[doc.doc_id] = doc.source
        log.info("read %d documents from %s (%s)", len(part.documents), path, fmt)
        report.extend(part)
    return report
