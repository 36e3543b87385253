"""Hierarchical chunking: parents are sections, children are sentence-aware passages.

Parents come from Markdown headings (``#``..``######``); a section longer than
``parent_max_tokens`` is split into several parents at sentence boundaries. Children are
passages of ``child_tokens`` embedder tokens with ``child_overlap`` tokens of overlap,
cut by llama-index's :class:`SentenceSplitter`.

Heading detection is our own: llama-index's MarkdownNodeParser gives no character offsets
and drops the text before the first heading, and citations need exact spans. Offsets of
the SentenceSplitter's pieces are recovered here (its own ``start_char_idx`` comes from a
plain ``str.find`` over the whole document and is None whenever it fails).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from corpora.document import Document

Tokenize = Callable[[str], Sequence[Any]]

_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)


@dataclass
class Chunk:
    """A parent (section) or child (passage). ``start``/``end`` index into the document text."""

    chunk_id: str
    doc_id: str
    level: str  # "parent" | "child"
    text: str
    start: int
    end: int
    section: str
    title: str
    kind: str
    source: str
    patient_id: str | None = None
    parent_id: str | None = None
    child_ids: list[str] = field(default_factory=list)

    def context_text(self) -> str:
        """What gets embedded and BM25-indexed: the span with its title and section as context."""
        head = self.title if not self.section or self.section == self.title else f"{self.title} — {self.section}"
        return f"{head}\n{self.text}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Chunk:
        return cls(**d)


@dataclass(frozen=True)
class Section:
    heading_path: str
    start: int
    end: int


def split_sections(text: str, title: str) -> list[Section]:
    """Sections delimited by Markdown headings; each carries its heading path ("A > B")."""
    heads = list(_HEADING.finditer(text))
    sections: list[Section] = []
    stack: list[tuple[int, str]] = []
    if not heads or heads[0].start() > 0:
        end = heads[0].start() if heads else len(text)
        if text[:end].strip():
            sections.append(Section(title, 0, end))
    for i, m in enumerate(heads):
        level, name = len(m.group(1)), m.group(2).strip()
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, name))
        end = heads[i + 1].start() if i + 1 < len(heads) else len(text)
        # The top-level document title is context for every section, not a path element.
        path = " > ".join(n for lv, n in stack if not (lv == 1 and n == title)) or name
        body = text[m.end():end]
        if body.strip():
            sections.append(Section(path, m.start(), end))
    return sections


def _locate(pieces: list[str], text: str, base: int, overlap: bool) -> list[tuple[int, int]]:
    """Character spans of each piece in ``text`` (pieces are in order and may overlap)."""
    spans: list[tuple[int, int]] = []
    cursor = 0
    for piece in pieces:
        idx = text.find(piece, cursor)
        if idx < 0:
            # The splitter may normalise whitespace; match its words with any whitespace between.
            words = [re.escape(w) for w in piece.split()]
            m = re.compile(r"\s+".join(words)).search(text, cursor) if words else None
            if m is None:
                raise ValueError(f"chunker could not locate a passage in its source: {piece[:60]!r}")
            s, e = m.start(), m.end()
        else:
            s, e = idx, idx + len(piece)
        spans.append((base + s, base + e))
        # The next piece starts after this one's start (overlap) but must not match an earlier
        # copy of the same words: with no overlap it cannot start before this piece ends.
        cursor = s + 1 if overlap else e
    return spans


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    seg = text[start:end]
    lead = len(seg) - len(seg.lstrip())
    trail = len(seg) - len(seg.rstrip())
    return start + lead, end - trail


class HierarchicalChunker:
    """Documents -> parent and child :class:`Chunk` lists with deterministic ids."""

    def __init__(self, tokenize: Tokenize, parent_max_tokens: int, child_tokens: int, child_overlap: int):
        from llama_index.core.node_parser import SentenceSplitter

        self._count = lambda s: len(tokenize(s))
        self.parent_max_tokens = parent_max_tokens
        self._parent_splitter = SentenceSplitter(chunk_size=parent_max_tokens, chunk_overlap=0, tokenizer=tokenize)
        self._child_splitter = SentenceSplitter(chunk_size=child_tokens, chunk_overlap=child_overlap,
                                                tokenizer=tokenize)

    def _pieces(self, splitter: Any, text: str, start: int, end: int) -> list[tuple[int, int]]:
        seg = text[start:end]
        pieces = [p for p in splitter.split_text(seg) if p.strip()]
        return _locate(pieces, seg, start, overlap=splitter.chunk_overlap > 0)

    def chunk(self, doc: Document) -> tuple[list[Chunk], list[Chunk]]:
        """Return (parents, children) for one document."""
        text = doc.text
        parents: list[Chunk] = []
        children: list[Chunk] = []
        common: dict[str, Any] = {"doc_id": doc.doc_id, "title": doc.title, "kind": doc.kind,
                                  "source": doc.source, "patient_id": doc.patient_id}
        for sec in split_sections(text, doc.title):
            s, e = _trim(text, sec.start, sec.end)
            spans = [(s, e)]
            if self._count(text[s:e]) > self.parent_max_tokens:
                spans = self._pieces(self._parent_splitter, text, s, e)
            for ps, pe in spans:
                pid = f"{doc.doc_id}#p{len(parents)}"
                parent = Chunk(chunk_id=pid, level="parent", text=text[ps:pe], start=ps, end=pe,
                               section=sec.heading_path, **common)
                for j, (cs, ce) in enumerate(self._pieces(self._child_splitter, text, ps, pe)):
                    child = Chunk(chunk_id=f"{pid}.c{j}", level="child", text=text[cs:ce], start=cs, end=ce,
                                  section=sec.heading_path, parent_id=pid, **common)
                    parent.child_ids.append(child.chunk_id)
                    children.append(child)
                parents.append(parent)
        return parents, children
