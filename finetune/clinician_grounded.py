"""Grounded examples in clinicians' wording on guideline passages (part ``grounded_clinician``).

Every other grounded target is the gold passage's *leading* sentences (:func:`finetune.data.cited_target`):
right for MedQuAD, whose pages open with the answer, wrong for a guideline section, where the sentence that
answers a bedside question sits in the middle. Asked in clinicians' shorthand on the demo guidelines, the
adapted 0.5B generator copied the opening sentences of a retrieved section while the answering one was in the
same prompt (BENCHMARKS.md, "Trust", twenty-fifth session).

The questions (``finetune/questions/clinician_grounded.jsonl``) were written by the team in clinicians' wording
(shorthand, vignettes, bedside and yes/no questions) on parent sections of the NGC guideline summaries in
``../shared/data`` (never the demo corpus, whose questions are evaluation data), each with the numbers of the 1-3
sentences of that section that answer it. The file holds no source text: a question points at
the index's parent chunk ``<ngc_id>#p<n>`` (its chunk id) and sentence numbers of :func:`rag.text.split_sentences`
over it, with a short hash of each sentence so a changed chunker or data file is caught, not trained on. The
example is the runtime prompt (:func:`rag.generate.build_messages`) with the section among retrieved distractors,
and the target is exactly the answering sentences, each cited ``[n]``. No withheld (abstention) variant: another
guideline in the index may answer the same question, so removing one document does not make it unanswerable.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from finetune.data import source_of
from rag.chunk import Chunk
from rag.errors import InputError
from rag.generate import build_messages, fit_sources
from rag.jsonl import objects
from rag.text import split_sentences

PART = "grounded_clinician"
STYLES = ("shorthand", "vignette", "direct", "yesno")


def sentence_key(sentence: str) -> str:
    """A short hash of one source sentence (whitespace-normalised): the spec file stores this, never the text."""
    return hashlib.sha1(" ".join(sentence.split()).encode()).hexdigest()[:10]


@dataclass(frozen=True)
class ClinicianQuestion:
    """One written question: where its answer is (document, parent chunk, sentence numbers) and how it reads."""

    id: str
    passage: str  # the parent chunk's id, "<doc_id>#p<n>"
    question: str
    style: str
    sentences: tuple[int, ...]
    keys: tuple[str, ...]

    @classmethod
    def from_json(cls, row: dict[str, Any], where: str) -> ClinicianQuestion:
        try:
            q = cls(str(row["id"]), str(row["passage"]), str(row["question"]).strip(), str(row["style"]),
                    tuple(int(i) for i in row["sentences"]), tuple(str(k) for k in row["keys"]))
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"{where}: not a clinician question ({e!r}); each line needs id, passage "
                             "('<doc_id>#p<n>'), question, style, sentences and keys") from e
        if "#p" not in q.passage or not q.question or not q.sentences or len(q.sentences) != len(q.keys):
            raise InputError(f"{where}: no '<doc_id>#p<n>' passage, an empty question or sentences, or sentences and "
                             "keys differ in length")
        return q

    @property
    def doc_id(self) -> str:
        return self.passage.rpartition("#p")[0]


def read_questions(path: Path) -> list[ClinicianQuestion]:
    """The spec file, one JSON object a line; a malformed line is a one-line error naming it."""
    if not path.is_file():
        raise InputError(f"{path} not found; train.clinician_questions names the clinician question file "
                         "(null to build the data without it)")
    return [ClinicianQuestion.from_json(row, f"{path}:{n}")
            for n, row in objects(path, "fix or remove the line")]


def cite(sentences: Iterable[str], n: int) -> str:
    """The answering sentences, each ending in ``[n]`` before its full stop (as every grounded target does)."""
    out = []
    for s in sentences:
        s = s.strip().lstrip("-•* ").strip()  # a list item's marker is layout, not part of the sentence
        out.append(f"{s[:-1].rstrip()} [{n}]{s[-1]}" if s.endswith((".", "!")) else f"{s} [{n}].")
    return " ".join(out)


def answer_sentences(q: ClinicianQuestion, parent: Chunk) -> list[str] | None:
    """The question's sentences in its parent chunk, or None if a number or a sentence hash no longer matches."""
    sents = split_sentences(parent.text)
    if any(not 0 <= i < len(sents) for i in q.sentences):
        return None
    picked = [sents[i] for i in q.sentences]
    return picked if [sentence_key(s) for s in picked] == list(q.keys) else None


def _normal(text: str) -> str:
    return " ".join(text.split())


def clinician_examples(questions: list[ClinicianQuestion], assistant: Any, count_tokens: Callable[[str], int],
                       source_tokens: int, seed: int, hidden: set[str], stats: Counter[str]) -> list[dict[str, Any]]:
    """One example per question whose passage is in ``assistant``'s index and still matches: the answering
    section among the retriever's distractors (other documents; never a ``hidden`` one), 3-5 sources, target =
    the cited answering sentences. Returns :class:`finetune.data.Example` fields (the caller assigns splits by
    document)."""
    rng = random.Random(seed + 7)
    retriever = assistant.retriever()
    allowed = assistant.index.allowed_mask(None).copy()
    hide = [i for i, c in enumerate(assistant.index.children) if c.doc_id in hidden]
    allowed[hide] = False
    parents: dict[str, Chunk] = assistant.index.parents  # by chunk id
    out: list[dict[str, Any]] = []
    qvs = assistant.embedder.encode_queries([q.question for q in questions]).astype(np.float32)
    for q, qv in zip(questions, qvs, strict=True):
        gold = parents.get(q.passage)
        if gold is None:
            stats[f"{PART}.skipped.passage_not_indexed"] += 1
            continue
        target_sents = answer_sentences(q, gold)
        if target_sents is None:
            stats[f"{PART}.skipped.passage_changed"] += 1
            continue
        units = retriever.search(q.question, qv, None, 10, allowed=allowed).units
        others = [u.chunk for u in units if u.chunk.doc_id != q.doc_id]
        k = rng.choice([3, 4, 5])
        chosen = others[: k - 1]
        pos = rng.randrange(len(chosen) + 1)
        chosen.insert(pos, gold)
        sources = fit_sources([source_of(n, c) for n, c in enumerate(chosen, 1)], count_tokens, source_tokens)
        gold_n = pos + 1
        # A tight budget trims sources; the example is kept only if every answering sentence is still shown.
        if len(sources) < gold_n or not all(_normal(s) in _normal(sources[gold_n - 1].text) for s in target_sents):
            stats[f"{PART}.skipped.answer_trimmed"] += 1
            continue
        stats[f"{PART}.answer"] += 1
        out.append({"id": f"gc-{q.id}", "part": PART, "source": "ngc", "group": f"ngc:{q.doc_id}",
                    "prompt": build_messages(q.question, sources, None),
                    "completion": [{"role": "assistant", "content": cite(target_sents, gold_n)}],
                    "meta": {"doc_id": q.doc_id, "withheld": False, "gold_n": gold_n, "n_sources": len(sources),
                             "style": q.style, "source_doc_ids": [c.doc_id for c in chosen[: len(sources)]]}})
    return out
