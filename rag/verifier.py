"""The evidence verifier: a small cross-encoder that reads (question [+ claim], passage) together.

One model, two questions asked of it (the input says which):

- **answerability**: does this passage answer this question? ``question: Q`` against the passage.
  Scored for the retrieved passages before generating: when none answers, the assistant abstains
  without spending a generation, and the best score is a confidence signal.
- **claim support**: is this answer sentence, as an answer to this question, stated by the
  passage it cites? ``question: Q / claim: S`` against the passage. Catches what embedding
  similarity misses: the question's subject put in front of another condition's treatment, a
  changed number or unit, a flipped negation, another measurement's value.

It is the bundled sentence encoder (all-MiniLM-L6-v2) with a classification head, tuned by
``python app.py train verifier`` (finetune/verifier.py) as a LoRA delta of a few MB that ships in
``adapters/``; no NLI or reranker model can be installed offline here. Scores are probabilities
from a sigmoid; the thresholds that act on them are chosen on a development split (eval/trust.py).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rag.errors import InputError

log = logging.getLogger(__name__)

MAX_LENGTH = 192  # question + claim + passage tokens, as trained; runtime passages are child chunks (~96 tokens)


def answerability_text(question: str) -> str:
    return f"question: {question.strip()}"


def support_text(question: str, claim: str) -> str:
    return f"question: {question.strip()}\nclaim: {claim.strip()}"


class Verifier:
    """Scores (text_a, passage) pairs with the tuned cross-encoder; loads lazily, CPU by default."""

    def __init__(self, base: Path, adapter: Path, max_length: int = MAX_LENGTH, batch_size: int = 16,
                 threads: int | None = None):
        if not (adapter / "adapter_config.json").exists():
            raise InputError(f"verifier adapter {adapter} has no adapter_config.json; train one with "
                             "`python app.py train verifier` or set verifier.enabled=false")
        self.base, self.adapter = base, adapter
        self.max_length, self.batch_size, self.threads = max_length, batch_size, threads
        self._model: Any = None
        self._tok: Any = None

    @property
    def model_id(self) -> str:
        return f"{self.base.name}+{self.adapter.name}"

    def _load(self) -> None:
        if self._model is not None:
            return
        import torch
        from peft import PeftModel
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self._tok = AutoTokenizer.from_pretrained(str(self.base))
        model = AutoModelForSequenceClassification.from_pretrained(str(self.base), num_labels=1)
        model = PeftModel.from_pretrained(model, str(self.adapter))
        self._model = model.merge_and_unload().eval()
        if self.threads:
            torch.set_num_threads(self.threads)

    def score(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """Probability (0..1) that each passage answers / supports its text_a."""
        if not pairs:
            return np.zeros(0, dtype=np.float32)
        import torch

        self._load()
        out: list[np.ndarray] = []
        # Length-sorted batches: less padding (the pairs differ a lot in length).
        order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
        with torch.inference_mode():
            for s in range(0, len(order), self.batch_size):
                idx = order[s: s + self.batch_size]
                # longest_first, not only_second: a long question (up to query.max_question_chars) or claim
                # alone can exceed max_length, and only_second then raises instead of truncating.
                enc = self._tok([pairs[i][0] for i in idx], [pairs[i][1] for i in idx], truncation="longest_first",
                                max_length=self.max_length, padding=True, return_tensors="pt")
                logits = self._model(**enc).logits.squeeze(-1).float()
                out.append(torch.sigmoid(logits).numpy())
        flat = np.concatenate(out) if out else np.zeros(0, dtype=np.float32)
        result = np.empty(len(pairs), dtype=np.float32)
        result[order] = flat
        return result

    def answerability(self, question: str, passages: Sequence[str]) -> np.ndarray:
        return self.score([(answerability_text(question), p) for p in passages])

    def support(self, question: str, claims: Sequence[str], passages: Sequence[str]) -> np.ndarray:
        """One score per (claim, passage) pair, aligned."""
        return self.score([(support_text(question, c), p) for c, p in zip(claims, passages, strict=True)])


def answer_answerability(verifier: Any, question: str, sentences: Sequence[str]) -> float:
    """Does the answer, read as a whole, answer the question? The answerability model on the shown
    answer (citation markers removed) instead of on a source. Each sentence of an answer made of a
    page's template lines ("... provides the following list of signs and symptoms for X"), or of a
    true fact about another aspect (the definition when the cause was asked), is supported by its
    source; the answer as a whole still does not answer the question, and this scores it low."""
    from rag.cite import strip_markers

    text = " ".join(strip_markers(s) for s in sentences).strip()
    return float(verifier.answerability(question, [text])[0]) if text else 0.0


ADAPTED_DOCUMENTS = "adapted_documents"  # in an index adapter's training_card.json: {doc_id: content hash}


def adapter_mismatch(adapter: Path, manifest: dict[str, Any]) -> str | None:
    """Why the index adapter at ``adapter`` does not fit the index version of ``manifest`` (None: it fits).

    An index adapter (``finetune/verifier_index.py``) learned answerability from its index's own guideline
    documents; its card lists them with their content hashes. It fits a version whose every document other than
    patient records is one of them, unchanged: on other documents the gate's scale is not the one it was fitted
    with (measured: BENCHMARKS.md, "Trust", thirteenth session)."""
    import json

    card = adapter / "training_card.json"
    try:
        adapted = json.loads(card.read_text(encoding="utf-8")).get(ADAPTED_DOCUMENTS)
    except (OSError, ValueError) as e:
        return f"cannot read {card}: {type(e).__name__}"
    if not isinstance(adapted, dict) or not adapted:
        return f"{card} lists no adapted documents"
    docs = {k: v.get("hash") for k, v in manifest.get("documents", {}).items() if v.get("kind") != "ehr"}
    if not docs:
        return "the index holds no documents other than patient records"
    new = sorted(k for k in docs if k not in adapted)
    changed = sorted(k for k in docs if k in adapted and adapted[k] != docs[k])
    if new or changed:
        return (f"{len(new)} of its {len(docs)} documents were not adapted on, {len(changed)} changed since "
                f"(e.g. {(new or changed)[0]})")
    return None
