"""Does the question name things the indexed sources never mention?

Asked about a condition no indexed document covers, retrieval still returns the nearest passages, and
they can read like an answer. The words that name the subject of such a question are rare: either no
indexed passage contains them, or the passages shown do not. Two signals, from the index's own BM25
statistics (no learned model, no list of any corpus's terms):

- ``coverage``: the idf-weighted share of the question's distinct BM25 tokens that appear in the shown
  sources' text;
- ``unseen``: the idf-weighted share that no indexed passage contains at all.

A token the index never saw gets the highest idf, so the asked subject weighs more than "treatment" or
"symptoms". Both are gate and confidence signals; what they are worth is fitted on the trust dev split.

The same statistics give a hard check (``verifier.unseen_terms``): an answer sentence that restates one
of the question's :func:`unseen_terms` ("First-line treatment for glaucoma is metformin [2]" on an index
that never mentions glaucoma) says something no indexed source states, whatever the claim checker reads.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

import numpy as np

from rag.text import tokenize

_DIGIT = re.compile(r"\d")


@dataclass(frozen=True)
class TermStats:
    """Document frequency of every BM25 token of an index, over its passages."""

    vocab: Mapping[str, int]
    df: np.ndarray
    n_docs: int

    @classmethod
    def from_bm25(cls, bm25: Any) -> TermStats | None:
        """From a bm25s index (its score matrix is column-compressed by token); None if it has no scores."""
        scores = getattr(bm25, "scores", None)
        vocab = getattr(bm25, "vocab_dict", None)
        if not isinstance(scores, Mapping) or "indptr" not in scores or not isinstance(vocab, Mapping):
            return None
        df = np.diff(np.asarray(scores["indptr"], dtype=np.int64))
        return cls(vocab, df, int(scores.get("num_docs", 0)))

    def doc_freq(self, token: str) -> int:
        i = self.vocab.get(token)
        return int(self.df[i]) if i is not None and 0 <= i < len(self.df) else 0

    def idf(self, token: str) -> float:
        """BM25's idf (Lucene form, always positive): higher for rarer tokens, highest for unseen ones."""
        df = self.doc_freq(token)
        return math.log(1.0 + (self.n_docs - df + 0.5) / (df + 0.5))


def lexical_signals(question: str, source_texts: Iterable[str], stats: TermStats) -> dict[str, float]:
    """``coverage`` and ``unseen`` of ``question`` against the shown sources and the whole index."""
    tokens = set(tokenize(question))
    if not tokens:  # a question of stopwords only names nothing the sources could lack
        return {"coverage": 1.0, "unseen": 0.0}
    shown: set[str] = set()
    for text in source_texts:
        shown.update(tokenize(text))
    weight = {t: stats.idf(t) for t in tokens}
    total = sum(weight.values()) or 1.0
    return {"coverage": sum(w for t, w in weight.items() if t in shown) / total,
            "unseen": sum(w for t, w in weight.items() if stats.doc_freq(t) == 0) / total}


def unseen_terms(question: str, stats: TermStats) -> frozenset[str]:
    """The question's BM25 tokens that no indexed passage contains. Tokens with a digit are left out: the
    question's own numbers are exempt from the number check (an answer may restate "145 mmHg")."""
    return frozenset(t for t in tokenize(question) if not _DIGIT.search(t) and stats.doc_freq(t) == 0)


def subject_weights(question: str, stats: TermStats) -> dict[str, float]:
    """The question's BM25 tokens that the index holds, with their idf (tokens with a digit are left to the number
    check and unseen ones to :func:`unseen_terms`): what an answer to it should name or cite."""
    return {t: stats.idf(t) for t in set(tokenize(question)) if not _DIGIT.search(t) and stats.doc_freq(t) > 0}


def named_share(weights: Mapping[str, float], texts: Iterable[str]) -> float:
    """The idf-weighted share of ``weights``' tokens found in ``texts`` (1.0 when there are no weights)."""
    found: set[str] = set()
    for text in texts:
        found.update(tokenize(text))
    return share_found(weights, found)


def share_found(weights: Mapping[str, float], found: AbstractSet[str]) -> float:
    """:func:`named_share` on tokens already made."""
    total = sum(weights.values())
    if total <= 0:
        return 1.0
    return sum(w for t, w in weights.items() if t in found) / total


def restates(sentence: str, terms: frozenset[str]) -> bool:
    """Whether ``sentence`` contains one of ``terms`` (BM25 tokens, so "Glaucoma's" finds "glaucoma")."""
    return bool(terms) and not terms.isdisjoint(tokenize(sentence))


def novel_terms(sentence: str, question: str, stats: TermStats) -> frozenset[str]:
    """The sentence's BM25 tokens that no indexed passage contains and the question does not contain (tokens
    with a digit left to the number check): words the generator brought that no source can have stated
    ("Pulmonary embolism is diagnosed by a bronchoscopy" on an index that never names bronchoscopy)."""
    return _novel(set(tokenize(sentence)), set(tokenize(question)), stats)


def _novel(tokens: AbstractSet[str], asked: AbstractSet[str], stats: TermStats) -> frozenset[str]:
    return frozenset(t for t in tokens if t not in asked and not _DIGIT.search(t) and stats.doc_freq(t) == 0)


def vocabulary_checks(sentences: Iterable[str], question: str, stats: TermStats
                      ) -> list[tuple[frozenset[str], frozenset[str]]]:
    """Per sentence (citation markers stripped): the :func:`unseen_terms` of the question it restates, and its
    :func:`novel_terms`; each sentence and the question tokenized once. What the assistant records on every
    answer sentence and ``eval.trust_jobs`` records on old rows (one implementation for both)."""
    asked = set(tokenize(question))
    unseen = unseen_terms(question, stats)
    out = []
    for sentence in sentences:
        tokens = set(tokenize(sentence))
        out.append((frozenset(unseen & tokens), _novel(tokens, asked, stats)))
    return out
