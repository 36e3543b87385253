"""MTSamples transcriptions as clinical notes (kind ``ehr``), one patient per note.

The CSV lists the same transcription under several specialties; identical transcriptions
(after whitespace normalisation) become one note whose metadata names every specialty.
Section headers are written ``HISTORY OF PRESENT ILLNESS:,`` (upper case, colon, comma: the
comma is where a line break was); they become Markdown headings, hence parent sections.
"""

from __future__ import annotations

import re
from pathlib import Path

from corpora.csvutil import iter_csv
from corpora.document import Document
from corpora.report import LoadReport

COLUMNS = ("note_id", "description", "medical_specialty", "sample_name", "transcription")
_HEADER = re.compile(r"(?:^|(?<=[,.]))\s*([A-Z][A-Z0-9 /&()'\-]{1,60}?)\s*:\s*,")


def render_note(transcription: str) -> str:
    """Transcription -> Markdown with one ``##`` heading per section header."""
    t = transcription.strip()
    parts: list[str] = []
    pos = 0
    for m in _HEADER.finditer(t):
        parts.append(_body(t[pos:m.start()]))
        parts.append(f"\n\n## {m.group(1).strip().capitalize()}\n\n")
        pos = m.end()
    parts.append(_body(t[pos:]))
    return re.sub(r"\n{3,}", "\n\n", "".join(parts)).strip()


def _body(s: str) -> str:
    s = s.strip(" ,")
    # ".," and ":," mark lost line breaks inside a section.
    s = re.sub(r"([.:])\s*,(?=\s*\S)", r"\1\n", s)
    return re.sub(r"[ \t]{2,}", " ", s)


def read_mtsamples(path: Path, strict: bool = True) -> LoadReport:
    report = LoadReport(fmt="mtsamples")
    by_text: dict[str, Document] = {}
    for _, row in iter_csv(path, COLUMNS, report, strict):
        report.count("rows")
        raw = row["transcription"].strip()
        if not raw:
            report.count("empty_transcriptions")
            continue
        key = " ".join(raw.split())
        specialty = row["medical_specialty"].strip()
        if key in by_text:
            report.count("duplicate_transcriptions")
            specs = by_text[key].meta["specialties"]
            if specialty and specialty not in specs:
                specs.append(specialty)
            continue
        note_id = row["note_id"].strip() or str(len(by_text))
        name = row["sample_name"].strip() or "Clinical note"
        doc = Document(
            doc_id=f"mts-{note_id}", text=render_note(raw), title=f"{name} ({specialty})" if specialty else name,
            kind="ehr", source=f"{path.name}#note_id={note_id}", patient_id=f"MTS{note_id}",
            meta={"collection": "mtsamples", "description": row["description"].strip(),
                  "specialties": [specialty] if specialty else [], "keywords": row.get("keywords", "").strip()},
        )
        by_text[key] = doc
        report.documents.append(doc)
    return report
