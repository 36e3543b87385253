"""Accuracy with uncertainty, calibration and paired tests. Plain functions over arrays.

Definitions (also written into each report):
- standard error: sqrt(p (1 - p) / n), the binomial SE (MIRAGE reports the same);
- 95% interval: Wilson score interval (stays inside [0, 1] for small n or extreme p);
- ECE: 15 equal-width bins (lo, hi] of the top-option probability; sum over bins of
  (bin size / n) * |accuracy - mean confidence|;
- Brier: multi-class, mean over questions of sum_k (p_k - y_k)^2 (0 is perfect, 2 the worst);
- McNemar: exact two-sided binomial test on the discordant pairs b, c;
- paired bootstrap: resample questions with replacement, percentile interval of the accuracy difference.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Z95 = 1.959963984540054


@dataclass(frozen=True)
class Accuracy:
    n: int
    correct: int
    accuracy: float
    se: float
    ci95: tuple[float, float]


def accuracy(correct: Sequence[bool] | np.ndarray) -> Accuracy:
    c = np.asarray(correct, dtype=bool)
    n = int(c.size)
    if n == 0:
        return Accuracy(0, 0, float("nan"), float("nan"), (float("nan"), float("nan")))
    k = int(c.sum())
    p = k / n
    return Accuracy(n, k, p, math.sqrt(p * (1 - p) / n), wilson(k, n))


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Bin:
    lo: float
    hi: float
    n: int
    confidence: float
    accuracy: float


def reliability(confidence: Sequence[float] | np.ndarray, correct: Sequence[bool] | np.ndarray,
                bins: int = 15) -> list[Bin]:
    """Equal-width bins (lo, hi] of confidence; the first bin also holds exactly 0."""
    conf = np.asarray(confidence, dtype=float)
    ok = np.asarray(correct, dtype=float)
    idx = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)
    out = []
    for b in range(bins):
        m = idx == b
        n = int(m.sum())
        out.append(Bin(b / bins, (b + 1) / bins, n, float(conf[m].mean()) if n else float("nan"),
                       float(ok[m].mean()) if n else float("nan")))
    return out


def ece(confidence: Sequence[float] | np.ndarray, correct: Sequence[bool] | np.ndarray, bins: int = 15) -> float:
    n = len(confidence)
    if n == 0:
        return float("nan")
    return float(sum(b.n / n * abs(b.accuracy - b.confidence) for b in reliability(confidence, correct, bins)
                     if b.n))


def brier(probs: np.ndarray, gold: Sequence[int] | np.ndarray) -> float:
    """Multi-class Brier score; ``probs`` is (n, options), rows summing to 1."""
    p = np.asarray(probs, dtype=float)
    if p.size == 0:
        return float("nan")
    y = np.zeros_like(p)
    y[np.arange(len(p)), np.asarray(gold, dtype=int)] = 1.0
    return float(((p - y) ** 2).sum(axis=1).mean())


@dataclass(frozen=True)
class McNemar:
    both: int  # a and b correct
    only_a: int  # b in the usual table: a correct, b wrong
    only_b: int  # c: a wrong, b correct
    neither: int
    p_value: float


def mcnemar_exact(a_correct: Sequence[bool] | np.ndarray, b_correct: Sequence[bool] | np.ndarray) -> McNemar:
    a = np.asarray(a_correct, dtype=bool)
    b = np.asarray(b_correct, dtype=bool)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    return McNemar(int((a & b).sum()), only_a, only_b, int((~a & ~b).sum()), mcnemar_p(only_a, only_b))


def mcnemar_p(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value: 2 * P(X <= min(b, c)), X ~ Binomial(b + c, 1/2), capped at 1."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2**n)


def paired_bootstrap(a_correct: Sequence[bool] | np.ndarray, b_correct: Sequence[bool] | np.ndarray,
                     n_boot: int = 10_000, seed: int = 0) -> tuple[float, float, float]:
    """(accuracy of b - accuracy of a, 2.5th and 97.5th percentile of the resampled difference)."""
    a = np.asarray(a_correct, dtype=float)
    b = np.asarray(b_correct, dtype=float)
    if a.shape != b.shape or a.size == 0:
        raise ValueError("paired bootstrap needs two equal-length, non-empty outcome vectors")
    d = b - a
    rng = np.random.default_rng(seed)
    diffs = np.empty(n_boot)
    for start in range(0, n_boot, 1000):  # chunks keep memory flat for large n
        m = min(1000, n_boot - start)
        diffs[start:start + m] = d[rng.integers(0, d.size, size=(m, d.size))].mean(axis=1)
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return float(d.mean()), float(lo), float(hi)
