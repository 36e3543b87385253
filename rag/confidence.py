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

import bisect
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

from rag.config import ConfidenceConfig
from rag.errors import ConfigError


def monotone_map(p: float, xs: Sequence[float], ys: Sequence[float]) -> float:
    """``p`` through a non-decreasing piecewise-linear map (knots ``xs`` -> ``ys``; flat beyond the end knots): the
    isotonic step fitted on answers a logistic score was not fitted on, when the score ranks answers well but its
    probabilities have the wrong shape (docs/TRUST.md, "A monotone map")."""
    if p <= xs[0]:
        return float(ys[0])
    if p >= xs[-1]:
        return float(ys[-1])
    i = bisect.bisect_right(xs, p)
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    return float(y0 + (y1 - y0) * (p - x0) / (x1 - x0)) if x1 > x0 else float(y1)


def check_map(d: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """A calibration's ``monotone`` knots, checked: one length, x increasing, y non-decreasing and in [0, 1]."""
    xs, ys = tuple(float(x) for x in d["x"]), tuple(float(y) for y in d["y"])
    if not xs or len(xs) != len(ys):
        raise ValueError("monotone x and y must be non-empty and of one length")
    if any(b <= a for a, b in pairwise(xs)) or any(b < a for a, b in pairwise(ys)):
        raise ValueError("monotone x must increase and y must not decrease")
    if not all(0.0 <= y <= 1.0 for y in ys):
        raise ValueError("monotone y must lie in [0, 1]")
    return xs, ys


@dataclass(frozen=True)
class Calibration:
    """``P(correct) = sigmoid(intercept + sum(coef_i * signal_i))``, fitted on a development split, then through
    ``curve`` (a monotone map, :func:`monotone_map`) when the file has one."""

    features: tuple[str, ...]
    coef: tuple[float, ...]
    intercept: float
    meta: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    curve: tuple[tuple[float, ...], tuple[float, ...]] | None = None

    def usable(self, signals: Mapping[str, float]) -> bool:
        return all(f in signals for f in self.features)

    def score(self, signals: Mapping[str, float]) -> float:
        """The logistic probability before the map: what ``confidence.abstain_below`` is compared with."""
        z = self.intercept + sum(c * signals[f] for f, c in zip(self.features, self.coef, strict=True))
        return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))

    def probability(self, signals: Mapping[str, float]) -> float:
        p = self.score(signals)
        return monotone_map(p, *self.curve) if self.curve else p

    def to_dict(self) -> dict[str, Any]:
        d = {"features": list(self.features), "coef": list(self.coef), "intercept": self.intercept, **self.meta}
        if self.curve:
            d["monotone"] = {**d.get("monotone", {}), "x": list(self.curve[0]), "y": list(self.curve[1])}
        return d


def answerability_logit(p: float) -> float:
    """The verifier's answerability on the log-odds scale (its probabilities bunch near 0 and 1)."""
    q = min(max(p, 1e-4), 1 - 1e-4)
    return math.log(q / (1 - q))


def _model(d: dict[str, Any]) -> Calibration:
    feats, coef = tuple(d["features"]), tuple(float(c) for c in d["coef"])
    if len(feats) != len(coef):
        raise ValueError("features and coef differ in length")
    meta = {k: v for k, v in d.items() if k not in ("features", "coef", "intercept", "gate")}
    curve = check_map(d["monotone"]) if d.get("monotone") is not None else None
    return Calibration(feats, coef, float(d["intercept"]), meta, curve)


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


def decision_score(signals: Mapping[str, float], cfg: ConfidenceConfig, calibration: Calibration | None = None
                   ) -> float:
    """What ``confidence.abstain_below`` is compared with: :func:`combine`, except that a calibration's monotone map
    is left out. The map changes the probability shown, not the operating point, which was chosen on dev with the
    logistic probability (docs/TRUST.md, "A monotone map")."""
    if calibration is not None and calibration.curve and calibration.usable(signals):
        return calibration.score(signals)
    return combine(signals, cfg, calibration)


def label(confidence: float, cfg: ConfidenceConfig) -> str:
    if confidence >= cfg.high:
        return "high"
    if confidence >= cfg.medium:
        return "medium"
    return "low"
