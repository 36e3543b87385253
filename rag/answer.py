"""The Answer returned by :meth:`rag.Assistant.ask` (and printed as ``--json``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Citation:
    n: int
    doc_id: str
    chunk_id: str  # the child passage cited (its span is start..end in the document text)
    title: str
    source: str
    kind: str
    patient_id: str | None
    section: str
    start: int
    end: int
    score: float  # fused retrieval score of the source
    text: str  # the cited passage
    merged: bool = False  # the generator saw the whole parent section
    parent_id: str | None = None
    answerability: float | None = None  # verifier: probability that this source answers the question


@dataclass
class SentenceRecord:
    text: str
    citations: list[int]
    supported: bool
    support_score: float
    attributed: bool = False  # citation added by the support check (the generator gave no marker)
    checks: dict[str, bool | None] = field(default_factory=dict)  # see rag.cite.SentenceSupport.checks
    cosine: float | None = None  # embedding similarity to the best cited passage
    # Per cited source, the passage that best supports *this* sentence ({n, chunk_id, start, end, text}):
    # ``citations[n]`` spans one passage per source (the best for any sentence), which need not be the
    # text behind every sentence citing it.
    spans: list[dict[str, Any]] = field(default_factory=list)
    # The generation stopped at its token limit inside this (last) sentence: shown ending in "…", never
    # as a finished claim (the cut can drop the words that qualify it).
    cut_off: bool = False


@dataclass
class Answer:
    question: str
    answer: str
    abstained: bool
    confidence: float
    confidence_label: str
    citations: list[Citation]
    sentences: list[SentenceRecord]
    index_version: str
    models: dict[str, str | None]
    timings_ms: dict[str, float]
    patient_id: str | None = None
    abstain_reason: str | None = None
    confidence_signals: dict[str, float] = field(default_factory=dict)
    removed_citations: int = 0
    generated: bool = True
    # The generator's unchecked reply, kept for audit and evaluation; never shown as the answer.
    draft: str | None = None
    # generator.second_try: the first answer, withheld after the gate, when this one is the second try
    # (from the best-answering source alone); kept for audit and evaluation, never shown as the answer.
    first_try: Answer | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["confidence"] = round(self.confidence, 4)
        d["timings_ms"] = {k: round(v, 1) for k, v in self.timings_ms.items()}
        d["confidence_signals"] = {k: round(v, 4) for k, v in self.confidence_signals.items()}
        d["first_try"] = self.first_try.to_dict() if self.first_try is not None else None
        return d
