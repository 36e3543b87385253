"""A distilled answerability reranker: a small cross-encoder that scores (question, passage) pairs.

``python app.py train reranker`` (finetune/reranker.py) cuts the evidence verifier to its first layers and
trains it on the verifier's own probabilities, so it can reorder the fused top 20 within a CPU budget the
verifier misses (BENCHMARKS.md, issue 15). The folder it writes is a Hugging Face sequence classifier with
its tokenizer and ``cds_reranker.json``; ``retrieval.reranker`` names it (``verifier``: the verifier reranks,
as before). :meth:`DistilledReranker.answerability` has the verifier's signature, so the retriever calls
either the same way. ``int8``: dynamic int8 quantisation of its Linear layers at load
(``torch.ao.quantization.quantize_dynamic``, no calibration data). Scoring runs the last layer for the [CLS]
position only (:func:`cls_logits`): a two-layer student then costs little more than one layer.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rag.errors import InputError
from rag.verifier import answerability_text

MARKER = "cds_reranker.json"
BUILD_HINT = "build one with `python app.py train reranker` or set retrieval.reranker=verifier"


def cls_logits(model: Any, enc: Any) -> Any:
    """The classifier's logits of a BERT sequence classifier, computing the last layer for the first ([CLS])
    position only: the only one the pooler reads. Same numbers as ``model(**enc).logits`` in eval mode (tests
    check it); the last layer then costs its key and value projections instead of a whole layer."""
    import torch

    bert = model.base_model
    h = bert.embeddings(input_ids=enc["input_ids"], token_type_ids=enc.get("token_type_ids"))
    mask = enc["attention_mask"][:, None, None, :].to(h.dtype)
    bias = (1.0 - mask) * torch.finfo(h.dtype).min
    layers = bert.encoder.layer
    for i, layer in enumerate(layers):
        sa = layer.attention.self
        b, n, _ = h.shape
        heads, d = sa.num_attention_heads, sa.attention_head_size
        q_in = h[:, :1] if i == len(layers) - 1 else h
        q = sa.query(q_in).view(b, -1, heads, d).transpose(1, 2)
        k = sa.key(h).view(b, n, heads, d).transpose(1, 2)
        v = sa.value(h).view(b, n, heads, d).transpose(1, 2)
        att = torch.softmax(q @ k.transpose(-1, -2) * sa.scaling + bias, dim=-1)
        ctx = (att @ v).transpose(1, 2).reshape(b, -1, heads * d)
        a = layer.attention.output.LayerNorm(layer.attention.output.dense(ctx) + q_in)
        h = layer.output.LayerNorm(layer.output.dense(layer.intermediate(a)) + a)
    return model.classifier(bert.pooler(h))


class DistilledReranker:
    """Scores pairs with a distilled cross-encoder folder; checks the folder now, loads the weights lazily. Batches of
    10 length-sorted pairs: the top 20 in two passes cost less than one padded pass (BENCHMARKS.md, issue 15)."""

    def __init__(self, folder: Path, int8: bool = False, batch_size: int = 10, threads: int | None = None):
        marker = folder / MARKER
        if not folder.is_dir():
            raise InputError(f"reranker folder {folder} not found; {BUILD_HINT}")
        try:
            spec = json.loads(marker.read_text(encoding="utf-8"))
            self.max_length = int(spec["max_length"])
            self._id = str(spec["model_id"])
        except FileNotFoundError:
            raise InputError(f"{folder} is not a distilled reranker (no {MARKER}); {BUILD_HINT}") from None
        except (ValueError, KeyError, TypeError) as e:
            raise InputError(f"{marker} is unreadable ({type(e).__name__}: {e}); {BUILD_HINT}") from None
        self.folder, self.int8, self.batch_size, self.threads = folder, int8, batch_size, threads
        self._model: Any = None
        self._tok: Any = None

    @property
    def model_id(self) -> str:
        return self._id + ("+int8" if self.int8 else "")

    def _load(self) -> None:
        if self._model is not None:
            return
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        try:
            tok = AutoTokenizer.from_pretrained(str(self.folder))
            model = AutoModelForSequenceClassification.from_pretrained(str(self.folder)).eval()
        except (OSError, ValueError, RuntimeError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise InputError(f"reranker {self.folder} cannot be loaded ({first}); {BUILD_HINT}") from None
        if self.int8:
            model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        if self.threads:
            torch.set_num_threads(self.threads)
        self._model, self._tok = model, tok

    def score(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """Probability (0..1) that each passage answers its text_a, as the verifier gives it."""
        if not pairs:
            return np.zeros(0, dtype=np.float32)
        import torch

        self._load()
        order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
        out = []
        with torch.inference_mode():
            for s in range(0, len(order), self.batch_size):
                idx = order[s: s + self.batch_size]
                enc = self._tok([pairs[i][0] for i in idx], [pairs[i][1] for i in idx], truncation="longest_first",
                                max_length=self.max_length, padding=True, return_tensors="pt")
                out.append(torch.sigmoid(cls_logits(self._model, enc).squeeze(-1).float()).numpy())
        result = np.empty(len(pairs), dtype=np.float32)
        result[order] = np.concatenate(out)
        return result

    def answerability(self, question: str, passages: Sequence[str]) -> np.ndarray:
        return self.score([(answerability_text(question), p) for p in passages])
