"""Guideline readers: NGC summaries JSONL, USPSTF recommendations JSONL, and folders of
``.md``/``.txt``/``.html``/``.pdf`` guideline files (what a hospital actually has).

NGC records carry their text as Markdown with ``## Major Recommendations`` style headings,
which the chunker turns into parent sections. The NGC text contains mojibake from its own
source (UTF-8 read as cp1252, e.g. ``â€™``); ``ftfy.fix_encoding`` repairs it only when the
repair is unambiguous and leaves correct text alone.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from corpora.document import Document, Kind
from corpora.errors import SourceError
from corpora.files import DEFAULT_READ, ReadOptions, check_file, walk
from corpora.markdown import read_markdown
from corpora.report import LoadReport, skip

FOLDER_SUFFIXES = (".md", ".markdown", ".txt", ".html", ".htm", ".pdf")


def fix_mojibake(text: str) -> str:
    import ftfy

    return str(ftfy.fix_encoding(text))


def iter_jsonl(path: Path, report: LoadReport, strict: bool) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each JSON object line; bad lines are reported with their number."""
    try:
        f = path.open(encoding="utf-8-sig")
    except OSError as e:
        raise SourceError(f"{path}: cannot read ({e.strerror}); check the path and its permissions") from None
    with f:
        try:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except ValueError as e:
                    skip(report, f"{path}:{lineno}", f"not valid JSON ({e})", strict)
                    continue
                if not isinstance(obj, dict):
                    skip(report, f"{path}:{lineno}", "expected a JSON object", strict)
                    continue
                yield lineno, obj
        except UnicodeDecodeError:
            raise SourceError(f"{path}: not UTF-8 text; convert it (e.g. iconv -t utf-8)") from None


def _has_fields(rec: dict[str, Any], keys: tuple[str, ...], report: LoadReport, where: str, strict: bool) -> bool:
    """True when every key holds a non-empty value; otherwise the record is reported (or raises)."""
    missing = [k for k in keys if not str(rec.get(k) or "").strip()]
    if missing:
        skip(report, where, f"missing {', '.join(missing)}", strict)
    return not missing


def read_ngc(path: Path, strict: bool = True) -> LoadReport:
    """National Guideline Clearinghouse summaries (``ngc_id, title, ..., text``)."""
    report = LoadReport(fmt="ngc")
    for lineno, rec in iter_jsonl(path, report, strict):
        if not _has_fields(rec, ("ngc_id", "title", "text"), report, f"{path}:{lineno}", strict):
            continue
        text = fix_mojibake(str(rec["text"])).strip()
        title = fix_mojibake(str(rec["title"])).strip()
        if text != str(rec["text"]).strip():
            report.count("mojibake_repaired")
        report.documents.append(Document(
            doc_id=str(rec["ngc_id"]), text=text, title=title, kind="guideline",
            source=f"{path.name}:{lineno}",
            meta={"collection": "ngc", "developers": str(rec.get("developers") or ""),
                  "date_released": str(rec.get("date_released") or "")},
        ))
    return report


def read_uspstf(path: Path, strict: bool = True) -> LoadReport:
    """USPSTF specific recommendations (``id, title, grade, sex, ageRange, text, servFreq, riskText``)."""
    report = LoadReport(fmt="uspstf")
    for lineno, rec in iter_jsonl(path, report, strict):
        if not _has_fields(rec, ("id", "title", "text"), report, f"{path}:{lineno}", strict):
            continue
        parts = [f"## Recommendation (grade {rec.get('grade') or 'not stated'})\n\n{str(rec['text']).strip()}"]
        who = []
        if rec.get("sex"):
            who.append(f"Sex: {rec['sex']}.")
        age = rec.get("ageRange")
        if isinstance(age, list) and len(age) == 2:
            who.append(f"Age range: {age[0]} to {age[1]} years.")
        if who:
            parts.append("## Population\n\n" + " ".join(who))
        if str(rec.get("riskText") or "").strip():
            parts.append(f"## Risk assessment\n\n{str(rec['riskText']).strip()}")
        if str(rec.get("servFreq") or "").strip():
            parts.append(f"## Service and frequency\n\n{str(rec['servFreq']).strip()}")
        report.documents.append(Document(
            doc_id=f"uspstf-{rec['id']}", text=fix_mojibake("\n\n".join(parts)),
            title=f"USPSTF: {str(rec['title']).strip()}", kind="guideline", source=f"{path.name}:{lineno}",
            meta={"collection": "uspstf", "grade": str(rec.get("grade") or "")},
        ))
    return report


class _HTMLText(HTMLParser):
    """HTML -> text with ``h1``-``h6`` as Markdown headings; scripts, styles and nav dropped."""

    _SKIP = frozenset({"script", "style", "nav", "header", "footer", "noscript", "template"})
    _BLOCK = frozenset({"p", "div", "li", "tr", "br", "section", "article", "table", "ul", "ol", "dd", "dt",
                        "blockquote"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.title = ""
        self._skip = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skip += 1
        elif tag == "title":
            self._in_title = True
        elif re.fullmatch(r"h[1-6]", tag):
            self.out.append("\n\n" + "#" * int(tag[1]) + " ")
        elif tag in self._BLOCK:
            self.out.append("\n")
            if tag == "li":
                self.out.append("- ")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self._skip = max(0, self._skip - 1)
        elif tag == "title":
            self._in_title = False
        elif re.fullmatch(r"h[1-6]", tag) or tag in self._BLOCK:
            self.out.append("\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        elif not self._skip:
            self.out.append(re.sub(r"[ \t\r\n]+", " ", data))

    def text(self) -> str:
        raw = "".join(self.out)
        lines = [ln.strip() for ln in raw.splitlines()]
        return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _doc_id(rel: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", rel.lower()).strip("-")


def read_html(path: Path, root: Path, kind: Kind | None = None, options: ReadOptions = DEFAULT_READ) -> Document:
    check_file(path, options)
    try:
        raw = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise SourceError(f"{path}: not UTF-8 HTML; convert it (e.g. iconv -t utf-8)") from None
    except OSError as e:
        raise SourceError(f"{path}: cannot read ({e.strerror}); check the path and its permissions") from None
    parser = _HTMLText()
    parser.feed(raw)
    parser.close()
    text = parser.text()
    if not text:
        raise SourceError(f"{path}: no text in the HTML body; remove the file or fill it in")
    rel = path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name
    heading = re.search(r"^#\s+(.+)$", text, re.M)
    title = parser.title.strip() or (heading.group(1).strip() if heading else path.stem)
    return Document(doc_id=_doc_id(rel), text=text, title=title, kind=kind or "guideline", source=rel)


def read_pdf(path: Path, root: Path, kind: Kind | None = None, options: ReadOptions = DEFAULT_READ) -> Document:
    """Text of every page (pypdf); scanned PDFs without a text layer are reported, not indexed empty."""
    check_file(path, options)
    import pypdf
    from pypdf.errors import PdfReadError

    try:
        reader = pypdf.PdfReader(str(path))
        pages = [(p.extract_text() or "").strip() for p in reader.pages]
        meta_title = str(reader.metadata.title) if reader.metadata and reader.metadata.title else ""
    except (PdfReadError, OSError, ValueError, KeyError) as e:
        raise SourceError(f"{path}: unreadable PDF ({str(e)[:80] or type(e).__name__}); re-export it or remove "
                          "it from the folder") from None
    text = "\n\n".join(p for p in pages if p)
    if not text.strip():
        raise SourceError(f"{path}: PDF has no text layer (scanned?); OCR it first")
    rel = path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name
    return Document(doc_id=_doc_id(rel), text=text, title=meta_title.strip() or path.stem, kind=kind or "guideline",
                    source=rel, meta={"pages": len(pages)})


def read_file(path: Path, root: Path, kind: Kind | None = None, options: ReadOptions = DEFAULT_READ) -> Document:
    suffix = path.suffix.lower()
    if suffix in (".html", ".htm"):
        return read_html(path, root, kind, options)
    if suffix == ".pdf":
        return read_pdf(path, root, kind, options)
    return read_markdown(path, root, kind, options)


def _folder_file(p: Path) -> bool:
    return p.suffix.lower() in FOLDER_SUFFIXES and not p.name.startswith(".") and p.name != "README.md"


def read_folder(source: Path, kind: Kind | None = None, strict: bool = True,
                options: ReadOptions = DEFAULT_READ) -> LoadReport:
    """Every supported guideline file under ``source`` (or ``source`` itself if it is a file).

    Symbolic links leaving ``source`` are skipped and reported (even when ``strict``: they are
    never read, so they are not bad input but a boundary kept).
    """
    report = LoadReport(fmt="files")
    if source.is_file():
        files, root = [source], source.parent
    else:
        root = source
        files, escapes = walk(source, _folder_file)
        report.skipped.extend(escapes)
        if not files and escapes:
            raise SourceError(f"{source}: its only documents are symbolic links leaving the folder, which are not "
                              "followed; copy the files into the folder")
    if not files:
        raise SourceError(f"no {'/'.join(FOLDER_SUFFIXES)} documents under {source}; point at a folder of guideline "
                          "files, or name the format, e.g. medquad:PATH")
    for path in files:
        try:
            report.documents.append(read_file(path, root, kind, options))
        except SourceError as e:
            if strict:
                raise
            report.skipped.append((str(path), str(e).removeprefix(f"{path}: ")))
    return report
