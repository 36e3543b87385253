"""Rerank fused candidates by the evidence verifier's answerability score.

The fusion of dense and BM25 ranks passages by similarity; real questions ("my mom's heart
flutters, what treatments will they offer?") are often closest to a passage *about* the
condition that does not *answer* them. The verifier (rag/verifier.py) reads question and
passage together and was tuned here to say whether the passage answers; reading the top
``top_n`` fused passages costs one small cross-encoder batch (BENCHMARKS.md, latency).

:func:`rerank` is pure: the fused list and one probability per head passage in, a reordered
list out. The new score mixes the probability with the fusion score, min-max normalised over
the head: ``weight * p + (1 - weight) * fusion``; ``weight`` 1 is the verifier alone. Passages
past the head keep their order below every reranked one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from rag.retrieve import Fused


def rerank(fused: Sequence[Fused], probs: Sequence[float] | np.ndarray, weight: float) -> list[Fused]:
    """Reorder the first ``len(probs)`` of ``fused`` by the mixed score; the rest follow unchanged.

    Returns new :class:`Fused` objects (the input is not modified): scores of the head are the
    mixed score plus an offset that keeps them above the tail, so score-based steps downstream
    (auto-merge's ``max``) keep this order. The verifier's probability is kept in ``raw["rerank"]``.
    """
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"rerank weight must be in [0, 1], got {weight}")
    n = len(probs)
    if n == 0:
        return list(fused)
    if n > len(fused):
        raise ValueError(f"{n} probabilities for {len(fused)} candidates")
    head, tail = list(fused[:n]), list(fused[n:])
    s = np.array([f.score for f in head], dtype=np.float64)
    lo, hi = float(s.min()), float(s.max())
    norm = (s - lo) / (hi - lo) if hi > lo else np.ones_like(s)
    mixed = weight * np.asarray(probs, dtype=np.float64) + (1.0 - weight) * norm
    top_tail = max((f.score for f in tail), default=0.0)
    # head scores sit above every tail score (mixed is in [0, 1])
    offset = top_tail + 1.0
    order = sorted(range(n), key=lambda i: (-mixed[i], i))
    out = [replace(head[i], score=float(mixed[i] + offset), raw={**head[i].raw, "rerank": float(probs[i])})
           for i in order]
    return out + tail
