"""Confidence: a calibrated probability that the answer is right, or (uncalibrated) a weighted mean.

With a calibration file (``confidence.calibration``, fitted by ``app.py eval trust fit`` on the
trust dev split and reported on its test split), confidence is a logistic model over the signals
below plus the verifier's: ``answerability`` (best probability that a retrieved passage answers the
question) and ``support_prob`` (mean over answer sentences of the best support probability from a
cited passage). Without one, it is the documented weighted mean of four signals, each in [0, 1]:

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

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag.config import ConfidenceConfig
from rag.errors import ConfigError


@dataclass(frozen=True)
class Calibration:
    """``P(correct) = sigmoid(intercept + sum(coef_i * signal_i))``, fitted on a development split."""

    features: tuple[str, ...]
    coef: tuple[float, ...]
    intercept: float
    meta: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def usable(self, signals: Mapping[str, float]) -> bool:
        return all(f in signals for f in self.features)

    def probability(self, signals: Mapping[str, float]) -> float:
        z = self.intercept + sum(c * signals[f] for f, c in zip(self.features, self.coef, strict=True))
        return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))

    def to_dict(self) -> dict[str, Any]:
        return {"features": list(self.features), "coef": list(self.coef), "intercept": self.intercept, **self.meta}


def answerability_logit(p: float) -> float:
    """The verifier's answerability on the log-odds scale (its probabilities bunch near 0 and 1)."""
    q = min(max(p, 1e-4), 1 - 1e-4)
    return math.log(q / (1 - q))


def _model(d: dict[str, Any]) -> Calibration:
    feats, coef = tuple(d["features"]), tuple(float(c) for c in d["coef"])
    if len(feats) != len(coef):
        raise ValueError("features and coef differ in length")
    meta = {k: v for k, v in d.items() if k not in ("features", "coef", "intercept", "gate")}
    return Calibration(feats, coef, float(d["intercept"]), meta)


def load_calibration(path: Path) -> Calibration:
    """The answer calibration; its ``gate`` (if any) is a second model, P(the sources answer), in ``meta``."""
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        cal = _model(d)
        if d.get("gate") is not None:
            cal.meta["gate"] = _model(d["gate"])
        return cal
    except FileNotFoundError:
        raise ConfigError(f"confidence.calibration file {path} not found; fit one with `python app.py eval trust "
                          "fit` or set confidence.calibration=null") from None
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"confidence.calibration file {path} is not a calibration ({e}); refit it with "
                          "`python app.py eval trust fit`") from None


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


def combine(signals: Mapping[str, float], cfg: ConfidenceConfig, calibration: Calibration | None = None) -> float:
    """The calibrated probability when a calibration is given and every signal it needs is present."""
    if calibration is not None and calibration.usable(signals):
        return calibration.probability(signals)
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
