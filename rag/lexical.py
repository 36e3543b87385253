"""Building the BM25 (bm25s) index of a version in bounded memory.

``bm25s.BM25.index(list of token lists)`` needs every passage's tokens as Python strings at once,
then converts them to a second list of lists of Python ints: at 1M passages (~70 tokens each) the
index job peaked at 8.7 GB RSS (BENCHMARKS.md, "Scale"). Here passages are tokenized one at a time
into a vocabulary and one flat ``int32`` array of token ids (4 bytes a token), handed to bm25s as
(ids, vocabulary), which turns a passage's ids into a short list only while it scores that passage.
The scores are bm25s's own: the same index as from the token lists, only the ids of the terms differ.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from types import SimpleNamespace
from typing import Any

import numpy as np

from rag.text import tokenize

BATCH_TOKENS = 1 << 20  # token ids kept as Python ints before they move into an int32 array


def import_bm25s() -> Any:
    import bm25s

    # bm25s sets its own logger to DEBUG at import, which prints through any root handler.
    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return bm25s


class TokenIds:
    """Each passage's token ids as one flat ``int32`` array and offsets; iterating yields one passage's
    ids as a list (what bm25s's index builder reads, passage by passage)."""

    def __init__(self, flat: np.ndarray, offsets: np.ndarray):
        self.flat = flat
        self.offsets = offsets

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> list[int]:
        return [int(t) for t in self.flat[self.offsets[i]:self.offsets[i + 1]]]

    def __iter__(self) -> Iterator[list[int]]:
        for a, b in zip(self.offsets[:-1].tolist(), self.offsets[1:].tolist(), strict=True):
            yield self.flat[a:b].tolist()


def tokenize_corpus(texts: Iterable[str], batch_tokens: int = BATCH_TOKENS) -> tuple[TokenIds, dict[str, int]]:
    """Every passage's BM25 tokens (:func:`rag.text.tokenize`) as ids into a vocabulary built on the way."""
    vocab: dict[str, int] = {}
    parts: list[np.ndarray] = []
    lengths: list[int] = []
    buf: list[int] = []
    for text in texts:
        tokens = tokenize(text)
        lengths.append(len(tokens))
        for t in tokens:
            i = vocab.get(t)
            if i is None:
                i = vocab[t] = len(vocab)
            buf.append(i)
        if len(buf) >= batch_tokens:
            parts.append(np.array(buf, dtype=np.int32))
            buf = []
    parts.append(np.array(buf, dtype=np.int32))
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(np.array(lengths, dtype=np.int64), out=offsets[1:])
    return TokenIds(np.concatenate(parts), offsets), vocab


def index_bm25(ids: TokenIds, vocab: dict[str, int]) -> Any:
    """A bm25s index over token ids from :func:`tokenize_corpus` (``vocab`` gains bm25s's empty token)."""
    bm25 = import_bm25s().BM25()
    bm25.index(SimpleNamespace(ids=ids, vocab=vocab), show_progress=False)
    return bm25


def build_bm25(texts: Iterable[str]) -> Any:
    """The BM25 index of a version: tokenize passage by passage, then index the ids."""
    ids, vocab = tokenize_corpus(texts)
    return index_bm25(ids, vocab)
