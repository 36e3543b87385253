"""Confidence: a documented weighted mean of four signals, each in [0, 1].

- retrieval: top dense cosine of the shown sources mapped through the embedder's scale,
  ``clip((cos - sim_floor) / (sim_ceiling - sim_floor), 0, 1)``;
- agreement: share of the dense top-5 whose parent section also appears among BM25's
  top-5 parents (two different retrievers pointing at the same sections);
- generation: geometric mean of the probabilities the generator gave its own tokens;
- support: share of answer sentences supported by a passage of a source they cite.

confidence = sum(w_i * s_i) / sum(w_i) over the signals available (no generation signals
with ``--no-generate``). Labels: high >= ``high``, medium >= ``medium``, else low.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from rag.config import ConfidenceConfig


def retrieval_strength(top_cosine: float, floor: float, ceiling: float) -> float:
    if ceiling <= floor:
        raise ValueError("sim_ceiling must exceed sim_floor")
    return min(1.0, max(0.0, (top_cosine - floor) / (ceiling - floor)))


def agreement(dense_parents: Sequence[str], bm25_parents: Sequence[str], k: int = 5) -> float:
    d = list(dict.fromkeys(dense_parents))[:k]
    b = set(list(dict.fromkeys(bm25_parents))[:k])
    if not d:
        return 0.0
    return sum(1 for p in d if p in b) / len(d)


def generation_probability(token_probs: Sequence[float]) -> float:
    if not token_probs:
        return 0.0
    return math.exp(sum(math.log(max(p, 1e-12)) for p in token_probs) / len(token_probs))


def combine(signals: Mapping[str, float], cfg: ConfidenceConfig) -> float:
    weights = {"retrieval": cfg.w_retrieval, "agreement": cfg.w_agreement,
               "generation": cfg.w_generation, "support": cfg.w_support}
    used = {k: w for k, w in weights.items() if k in signals and w > 0}
    total = sum(used.values())
    if total == 0:
        return 0.0
    return sum(w * signals[k] for k, w in used.items()) / total


def label(confidence: float, cfg: ConfidenceConfig) -> str:
    if confidence >= cfg.high:
        return "high"
    if confidence >= cfg.medium:
        return "medium"
    return "low"
