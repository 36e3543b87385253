import math

import pytest

from rag.confidence import agreement, combine, generation_probability, label, retrieval_strength
from rag.config import ConfidenceConfig


@pytest.mark.parametrize(
    ("cos", "expected"),
    [(0.1, 0.0), (0.2, 0.0), (0.35, 0.5), (0.5, 1.0), (0.9, 1.0), (-1.0, 0.0)],
)
def test_retrieval_strength_maps_and_clips(cos, expected):
    assert retrieval_strength(cos, floor=0.2, ceiling=0.5) == pytest.approx(expected)


@pytest.mark.parametrize(("floor", "ceiling"), [(0.5, 0.5), (0.6, 0.5)])
def test_retrieval_strength_rejects_bad_scale(floor, ceiling):
    with pytest.raises(ValueError, match="sim_ceiling"):
        retrieval_strength(0.4, floor, ceiling)


def test_agreement_share_of_dense_parents_in_bm25():
    assert agreement(["a", "b", "c", "d"], ["b", "d", "x"]) == 0.5
    assert agreement(["a", "b"], ["a", "b"]) == 1.0
    assert agreement(["a"], ["z"]) == 0.0


def test_agreement_deduplicates_and_uses_top_k():
    # Dense parents a, a, b -> {a, b}; 'a' is BM25's 6th distinct parent, outside k=5.
    assert agreement(["a", "a", "b"], ["b", "q", "r", "s", "t", "a"]) == 0.5
    assert agreement(["a", "a", "b"], ["b", "q", "r", "s", "t", "a"], k=6) == 1.0
    # Only the first k distinct dense parents are judged.
    assert agreement(["x1", "x2", "b"], ["b"], k=2) == 0.0


def test_agreement_empty():
    assert agreement([], ["a"]) == 0.0
    assert agreement(["a"], []) == 0.0


def test_generation_probability_is_geometric_mean():
    assert generation_probability([0.25, 1.0]) == pytest.approx(0.5)
    assert generation_probability([0.9, 0.9, 0.9]) == pytest.approx(0.9)
    assert generation_probability([0.5, 0.8]) == pytest.approx(math.sqrt(0.4))


def test_generation_probability_edge_cases():
    assert generation_probability([]) == 0.0
    assert 0.0 < generation_probability([0.0, 1.0]) < 1e-5  # zero clamped, no math error


@pytest.fixture
def cfg():
    return ConfidenceConfig(
        w_retrieval=0.4, w_agreement=0.1, w_generation=0.2, w_support=0.3, high=0.7, medium=0.5
    )


def test_combine_weighted_mean_of_all_signals(cfg):
    signals = {"retrieval": 1.0, "agreement": 0.0, "generation": 0.5, "support": 1.0}
    assert combine(signals, cfg) == pytest.approx(0.4 + 0.1 + 0.3)


def test_combine_renormalises_over_available_signals(cfg):
    # No generation signals (--no-generate): weights 0.4 and 0.1 renormalised to 0.8/0.2.
    assert combine({"retrieval": 1.0, "agreement": 0.0}, cfg) == pytest.approx(0.8)
    assert combine({"retrieval": 0.5}, cfg) == pytest.approx(0.5)


def test_combine_ignores_zero_weights_and_unknown_signals():
    cfg = ConfidenceConfig(w_retrieval=1.0, w_agreement=0.0, w_generation=0.0, w_support=0.0)
    assert combine({"retrieval": 0.6, "agreement": 0.0, "bogus": 1.0}, cfg) == pytest.approx(0.6)
    assert combine({"agreement": 1.0}, cfg) == 0.0


def test_combine_no_signals(cfg):
    assert combine({}, cfg) == 0.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [(1.0, "high"), (0.7, "high"), (0.6999, "medium"), (0.5, "medium"), (0.4999, "low"), (0.0, "low")],
)
def test_label_boundaries_inclusive(cfg, value, expected):
    assert label(value, cfg) == expected
