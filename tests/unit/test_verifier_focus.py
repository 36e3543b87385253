"""The held-out figures `finetune.verifier_focus` reports per source, task and kind."""

from __future__ import annotations

import numpy as np

from finetune.verifier_data import Pair
from finetune.verifier_focus import by_kind


class _Scores:
    """A stand-in verifier that scores a pair by its text_a (what the figures are computed from)."""

    def __init__(self, probs: dict[str, float]):
        self.probs = probs

    def score(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        return np.array([self.probs[a] for a, _ in pairs], dtype=np.float32)


def test_by_kind_counts_acceptance_per_kind_and_auroc_per_source_and_task():
    pairs = [Pair("support", "pos1", "p", 1, "pos", "record"), Pair("support", "pos2", "p", 1, "pos", "record"),
             Pair("support", "off", "p", 0, "off_question", "record"),
             Pair("support", "neg", "p", 0, "negation", "record"),
             Pair("answerable", "q", "p", 1, "pos", "medquad")]
    out = by_kind(_Scores({"pos1": 0.9, "pos2": 0.4, "off": 0.6, "neg": 0.1, "q": 0.7}), pairs)
    assert out["record/support/pos/1"] == {"n": 2, "accepted": 0.5}
    assert out["record/support/off_question/0"]["accepted"] == 1.0
    assert out["record/support"]["n"] == 4 and out["record/support"]["auroc"] == 0.75  # 3 of 4 pos>neg orderings
    assert out["medquad/answerable"]["auroc"] is None  # one class only
