"""Accuracy uncertainty, calibration and paired tests against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from eval.mcq import stats


def test_standard_error_and_wilson_interval() -> None:
    a = stats.accuracy([True, True, True, False])
    assert (a.n, a.correct, a.accuracy) == (4, 3, 0.75)
    assert a.se == pytest.approx(math.sqrt(0.75 * 0.25 / 4))  # 0.2165
    # Wilson 95% for 3/4, by hand: centre (0.75 + 1.92/4) / (1 + 3.84/4), half-width z*sqrt(...)/(...)
    assert a.ci95 == pytest.approx((0.3006418, 0.9544127), abs=1e-6)
    lo, hi = stats.accuracy([True] * 10).ci95
    assert hi == pytest.approx(1.0) and hi <= 1.0 and lo == pytest.approx(10 / (10 + stats.Z95**2))  # n / (n + z^2)
    assert math.isnan(stats.accuracy([]).accuracy)


def test_ece_15_bins_by_hand() -> None:
    # 0.95 -> bin 14 (acc 0.5, conf 0.95), 0.35 -> bin 5 (acc 0, conf 0.35):
    # ECE = 2/4 * 0.45 + 2/4 * 0.35 = 0.4
    conf = [0.95, 0.95, 0.35, 0.35]
    ok = [True, False, False, False]
    assert stats.ece(conf, ok, 15) == pytest.approx(0.4)
    bins = stats.reliability(conf, ok, 15)
    assert len(bins) == 15 and [b.n for b in bins if b.n] == [2, 2]
    assert bins[14].accuracy == 0.5 and bins[5].confidence == pytest.approx(0.35)
    # Bins are (lo, hi]: exactly 1/15 falls in the first bin, just above it in the second.
    assert [b.n for b in stats.reliability([1 / 15, 1 / 15 + 1e-9], [True, True], 15)][:2] == [1, 1]
    assert stats.ece([0.8] * 5, [True, True, True, True, False]) == pytest.approx(0.0)


def test_brier_multiclass_by_hand() -> None:
    p = np.array([[0.7, 0.1, 0.1, 0.1], [0.25, 0.25, 0.25, 0.25]])
    # (0.3^2 + 3 * 0.1^2) = 0.12 and (3 * 0.0625 + 0.75^2) = 0.75 -> mean 0.435
    assert stats.brier(p, [0, 2]) == pytest.approx(0.435)


def test_mcnemar_exact_on_a_constructed_table() -> None:
    # both correct 3, only A 1, only B 6, neither 2
    a = [True] * 3 + [True] * 1 + [False] * 6 + [False] * 2
    b = [True] * 3 + [False] * 1 + [True] * 6 + [False] * 2
    m = stats.mcnemar_exact(a, b)
    assert (m.both, m.only_a, m.only_b, m.neither) == (3, 1, 6, 2)
    assert m.p_value == pytest.approx(2 * (1 + 7) / 2**7)  # 0.125
    assert stats.mcnemar_p(0, 5) == pytest.approx(2 / 32)
    assert stats.mcnemar_p(0, 0) == 1.0 and stats.mcnemar_p(4, 4) == 1.0


def test_paired_bootstrap() -> None:
    assert stats.paired_bootstrap([True, False] * 5, [True, False] * 5) == (0.0, 0.0, 0.0)
    assert stats.paired_bootstrap([False] * 8, [True] * 8) == (1.0, 1.0, 1.0)
    d, lo, hi = stats.paired_bootstrap([True] * 50 + [False] * 50, [True] * 70 + [False] * 30, 2000, seed=1)
    assert d == pytest.approx(0.2) and 0.1 < lo < 0.2 < hi < 0.3
    assert stats.paired_bootstrap([True] * 50 + [False] * 50, [True] * 70 + [False] * 30, 2000, seed=1) == (d, lo, hi)
