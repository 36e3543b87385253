"""Reader for Markdown/text documents with an optional ``key: value`` front-matter block.

This is the format of the bundled demo corpus and of a hospital's folder of guideline
summaries. Front matter is parsed as flat ``key: value`` lines (no YAML features are
needed, and a flat parser cannot execute or expand anything).
"""

from __future__ import annotations

import re
from pathlib import Path

from corpora.document import KINDS, Document, Kind
from corpora.errors import SourceError
from corpora.files import DEFAULT_READ, ReadOptions, check_file

_FM = re.compile(r"\A---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)", re.S)
_KEY = re.compile(r"^([A-Za-z_][\w-]*)\s*:\s*(.*)$")
SUFFIXES = (".md", ".markdown", ".txt")


def parse_front_matter(raw: str, where: str) -> tuple[dict[str, str], str]:
    """Split ``raw`` into (front-matter dict, body). No front matter -> ({}, raw)."""
    m = _FM.match(raw)
    if not m:
        return {}, raw
    meta: dict[str, str] = {}
    for lineno, line in enumerate(m.group(1).splitlines(), start=2):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        km = _KEY.match(line.strip())
        if not km:
            # The line itself is not quoted: in an EHR note it may hold patient details, and errors get logged.
            raise SourceError(f"{where}:{lineno}: front matter line is not 'key: value'; fix or remove that line")
        meta[km.group(1).lower()] = km.group(2).strip()
    return meta, raw[m.end():]


def _title_from_body(body: str, fallback: str) -> str:
    for line in body.splitlines():
        s = line.strip()
        if s.startswith("#"):
            return s.lstrip("#").strip() or fallback
        if s:
            break
    return fallback


def read_markdown(path: Path, root: Path, kind: Kind | None = None, options: ReadOptions = DEFAULT_READ
                  ) -> Document:
    """Read one file. ``kind`` from the command line wins over front matter; default 'guideline'."""
    check_file(path, options)
    try:
        raw = path.read_text(encoding="utf-8-sig")  # -sig: a BOM must not hide front matter
    except UnicodeDecodeError:
        raise SourceError(f"{path}: not UTF-8 text; convert it (e.g. iconv -t utf-8)") from None
    except OSError as e:
        raise SourceError(f"{path}: cannot read ({e.strerror}); check the path and its permissions") from None
    meta, body = parse_front_matter(raw, str(path))
    if not body.strip():
        raise SourceError(f"{path}: empty document (no text after the front matter); add its text or remove it")
    rel = path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name
    doc_kind = kind or meta.pop("kind", None) or "guideline"
    meta.pop("kind", None)
    if doc_kind not in KINDS:
        raise SourceError(f"{path}: kind '{doc_kind}' is not one of {', '.join(KINDS)}; fix its front matter")
    patient_id = meta.pop("patient_id", None) or None
    if doc_kind == "ehr" and not patient_id:
        raise SourceError(f"{path}: EHR notes need 'patient_id: ...' in their front matter; add it")
    if doc_kind != "ehr" and patient_id:
        raise SourceError(f"{path}: patient_id is only allowed on kind: ehr documents; add 'kind: ehr' or remove "
                          "the patient_id")
    doc_id = meta.pop("doc_id", None) or re.sub(r"[^a-z0-9]+", "-", rel.lower()).strip("-")
    title = meta.pop("title", None) or _title_from_body(body, path.stem)
    return Document(
        doc_id=doc_id,
        text=body.strip("\n"),
        title=title,
        kind=doc_kind,  # type: ignore[arg-type]
        source=rel,
        patient_id=patient_id,
        meta=meta,
    )
