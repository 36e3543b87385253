"""WikiDoc patient-information QA (medAlpaca JSON array of ``{instruction, input, output}``).

Each answer becomes a reference document titled by its question; empty answers and exact
duplicate pairs are counted and skipped.
"""

from __future__ import annotations

import json
from pathlib import Path

from corpora.document import Document
from corpora.errors import SourceError
from corpora.report import LoadReport, skip


def read_wikidoc(path: Path, strict: bool = True) -> LoadReport:
    report = LoadReport(fmt="wikidoc")
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except OSError as e:
        raise SourceError(f"{path}: cannot read ({e.strerror}); check the path and its permissions") from None
    except UnicodeDecodeError:
        raise SourceError(f"{path}: not UTF-8 text; convert it (e.g. iconv -t utf-8)") from None
    except ValueError as e:
        raise SourceError(f"{path}: not valid JSON ({e}); fix the file, or name its format (FORMAT:PATH)") from None
    if not isinstance(data, list):
        raise SourceError(f"{path}: expected a JSON array of {{instruction, input, output}} objects; fix the file, or "
                          "name its format (FORMAT:PATH)")
    seen: set[tuple[str, str]] = set()
    for i, item in enumerate(data):
        if not isinstance(item, dict) or not isinstance(item.get("output"), str) \
                or not isinstance(item.get("input", ""), str):
            skip(report, f"{path}[{i}]", "expected an object with string 'input' and 'output'", strict)
            continue
        question, answer = item.get("input", "").strip(), item["output"].strip()
        if not answer:
            report.count("empty_answers")
            continue
        if (question, answer) in seen:
            report.count("duplicate_pairs")
            continue
        seen.add((question, answer))
        report.documents.append(Document(
            doc_id=f"wikidoc-{i:05d}", text=answer, title=question or f"WikiDoc entry {i}", kind="reference",
            source=f"{path.name}[{i}]", meta={"collection": "wikidoc", "question": question},
        ))
    return report
