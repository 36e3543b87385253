"""MedQuAD reader: one document per answered question-answer pair.

MedQuAD ships as 12 source folders of XML files, one ``<Document>`` per file with a
``<Focus>`` and ``<QAPairs>``. Folders 10-12 (MedlinePlus A.D.A.M., drugs, herbs) keep the
questions but had their answers removed for copyright; those pairs are counted and skipped.

The question is metadata, not document text: an index whose passages contain the question
would make the retrieval evaluation (question -> answer) trivial. The question type becomes
the section heading ("Treatment"), as it would be on the source web page.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from corpora.document import Document
from corpora.errors import SourceError
from corpora.files import DEFAULT_READ, ReadOptions, size_problem, walk
from corpora.report import LoadReport, skip

# Most files are <Document>; a few use older layouts (<DiseaseFile>, and <doc> with lower-case
# <qaPairs>/<pair>/<question>/<answer>). All carry answers, so all are read.
ROOTS = ("Document", "DiseaseFile", "doc")


def _first_text(el: ET.Element, *tags: str) -> str | None:
    for tag in tags:
        found = el.find(tag)
        if found is not None:
            return "".join(found.itertext())
    return None


def _folder_key(folder: str) -> str:
    """``1_CancerGov_QA`` -> ``1``: qids repeat across folders, so ids carry the folder number."""
    head = folder.split("_", 1)[0]
    return head if head.isdigit() else folder.lower()


def _label(qtype: str) -> str:
    return qtype[:1].upper() + qtype[1:] if qtype else "Answer"


def read_medquad(root: Path, strict: bool = True, options: ReadOptions = DEFAULT_READ) -> LoadReport:
    """Read every ``*.xml`` under ``root`` (the MedQuAD folder or one of its source folders)."""
    report = LoadReport(fmt="medquad")
    files = [root]
    if root.is_dir():
        files, escapes = walk(root, lambda p: p.suffix.lower() == ".xml")
        report.skipped.extend(escapes)
    if not files:
        raise SourceError(f"{root}: no MedQuAD .xml files found; point at the MedQuAD folder")
    for path in files:
        if problem := size_problem(path, options):
            skip(report, path, problem, strict)
            continue
        try:
            doc_el = ET.parse(path).getroot()
        except ET.ParseError as e:
            skip(report, path, f"malformed XML ({e})", strict)
            continue
        except OSError as e:
            skip(report, path, f"cannot read ({e.strerror})", strict)
            continue
        if doc_el.tag not in ROOTS:
            skip(report, path, f"root element is <{doc_el.tag}>, expected MedQuAD <Document>", strict)
            continue
        if doc_el.tag != "Document":
            report.count(f"variant_layout_{doc_el.tag}")
        focus = (_first_text(doc_el, "Focus", "doctitle-focus") or "").strip() or path.stem
        folder = path.parent.name
        rel = path.relative_to(root).as_posix() if root.is_dir() else path.name
        pairs = [el for el in doc_el.iter() if el.tag in ("QAPair", "pair")]
        for n, qa in enumerate(pairs, start=1):
            report.count("qa_pairs")
            q_el = qa.find("Question")
            if q_el is None:
                q_el = qa.find("question")
            question = (q_el.text or "").strip() if q_el is not None else ""
            answer = (_first_text(qa, "Answer", "answer") or "").strip()
            if not answer:
                report.count("pairs_without_answer")
                continue
            qtype = (q_el.get("qtype", "") if q_el is not None else "").strip()
            pid = qa.get("pid") or str(n)
            label = _label(qtype)
            report.documents.append(Document(
                doc_id=f"medquad-{_folder_key(folder)}-{path.stem}-{pid}",
                text=f"## {label}\n\n{answer}",
                title=focus,
                kind="reference",
                source=f"{rel}#{pid}",
                meta={"collection": "medquad", "focus": focus, "qtype": qtype, "question": question,
                      "qid": q_el.get("qid", "") if q_el is not None else "",
                      "source_name": doc_el.get("source") or doc_el.get("corpus", ""),
                      "url": doc_el.get("url", ""), "folder": folder},
            ))
    return report
