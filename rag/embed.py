"""Embedders: a transformers-based encoder driven by an :class:`EmbedderSpec`.

Anything with the :class:`Embedder` protocol can be passed to the index and retriever
(tests pass a hash-based fake). Vectors are float32; normalised when the spec says so, which
makes FAISS inner product equal to cosine similarity.
"""

from __future__ import annotations

import logging
from array import array
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from rag.models import EmbedderSpec, embedder_spec, folder_embedder_spec, resolve

log = logging.getLogger(__name__)

# Text is tokenised in pieces of at most this many characters: a fast tokenizer handed a whole
# 50 MB document at once allocates its offsets and alignments for all of it (1.1 GB, then abort).
TOKENIZE_PIECE_CHARS = 100_000


def text_pieces(text: str, size: int = TOKENIZE_PIECE_CHARS) -> Iterator[str]:
    """Consecutive pieces of ``text`` of at most ``size`` characters, cut at whitespace where there is some.

    Cutting just before a whitespace character keeps every word whole, so a word-piece or
    byte-level BPE tokenizer gives the same tokens as on the whole text (its pre-tokenizer
    splits there anyway).
    """
    start = 0
    while len(text) - start > size:
        cut = max(text.rfind(" ", start + 1, start + size), text.rfind("\n", start + 1, start + size))
        if cut <= start:
            cut = start + size
        yield text[start:cut]
        start = cut
    yield text[start:]


class Embedder(Protocol):
    """What the index and retriever need from an embedding model."""

    spec: EmbedderSpec

    @property
    def model_id(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def tokenize(self, text: str) -> Sequence[Any]: ...

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray: ...

    def encode_passages(self, texts: Sequence[str], progress: bool = False) -> np.ndarray: ...


class TransformersEmbedder:
    """Mean- or CLS-pooled encoder from a local HF folder (BERT/MiniLM/E5/BGE families)."""

    def __init__(self, path: Path, spec: EmbedderSpec, batch_size: int = 32, max_length: int | None = None,
                 dtype: str = "float32"):
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.spec = spec
        self.batch_size = batch_size
        self.max_length = max_length or spec.max_length
        self._torch = torch
        self._tok = AutoTokenizer.from_pretrained(str(path))
        self._model = AutoModel.from_pretrained(str(path)).eval()
        self.dtype = dtype
        if dtype == "bfloat16":
            self._model = self._model.to(torch.bfloat16)
        self._dim = int(self._model.config.hidden_size)

    @property
    def model_id(self) -> str:
        return self.spec.model_id

    @property
    def dim(self) -> int:
        return self._dim

    def tokenize(self, text: str) -> Sequence[int]:
        """Token ids without special tokens: the unit chunk sizes are measured in.

        Long text is encoded piece by piece (:func:`text_pieces`) into a compact int array, so
        memory stays proportional to the text, not to the tokenizer's per-call bookkeeping.
        """
        if len(text) <= TOKENIZE_PIECE_CHARS:
            return list(self._tok.encode(text, add_special_tokens=False, truncation=False))
        ids = array("i")
        for piece in text_pieces(text):
            ids.extend(self._tok.encode(piece, add_special_tokens=False, truncation=False))
        return ids

    def _encode(self, texts: Sequence[str], progress: bool) -> np.ndarray:
        torch = self._torch
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        # Sorting by length keeps padding (wasted compute) low within each batch.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        batches = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        it: Any = batches
        if progress:
            from tqdm import tqdm

            it = tqdm(batches, desc="embedding", unit="batch", disable=None)
        with torch.inference_mode():
            for idx in it:
                enc = self._tok([texts[i] for i in idx], padding=True, truncation=True,
                                max_length=self.max_length, return_tensors="pt")
                hidden = self._model(**enc).last_hidden_state
                if self.spec.pooling == "cls":
                    vec = hidden[:, 0]
                else:
                    mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                    vec = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                if self.spec.normalize:
                    vec = torch.nn.functional.normalize(vec, p=2, dim=1)
                out[idx] = vec.float().numpy()
        return out

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode([self.spec.query_prefix + t for t in texts], progress=False)

    def encode_passages(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        return self._encode([self.spec.passage_prefix + t for t in texts], progress=progress)


def load_embedder(model: str, cache_dir: Path, batch_size: int = 32, max_length: int | None = None,
                  dtype: str = "float32") -> TransformersEmbedder:
    """The configured embedder (``embedder.model`` resolved in the model cache), loaded once per caller."""
    resolved = resolve(model, cache_dir)
    spec = folder_embedder_spec(resolved.path, resolved.model_id) or embedder_spec(resolved.model_id)
    return TransformersEmbedder(resolved.path, spec, batch_size, max_length, dtype)
