import pytest

from rag.rerank import rerank
from rag.retrieve import Fused


def _fused(*scores: float) -> list[Fused]:
    return [Fused(f"c{i}", s, {"dense": i + 1}) for i, s in enumerate(scores)]


def test_verifier_alone_orders_the_head_and_the_tail_follows():
    fused = _fused(0.9, 0.8, 0.7, 0.1)
    out = rerank(fused, [0.1, 0.9, 0.5], weight=1.0)
    assert [f.chunk_id for f in out] == ["c1", "c2", "c0", "c3"]
    assert out[0].raw["rerank"] == pytest.approx(0.9)
    assert min(f.score for f in out[:3]) > out[3].score  # auto-merge's max keeps this order


def test_weight_zero_keeps_the_fusion_order():
    fused = _fused(0.9, 0.8, 0.7)
    assert [f.chunk_id for f in rerank(fused, [0.0, 0.5, 1.0], weight=0.0)] == ["c0", "c1", "c2"]


def test_mixed_score_is_the_weighted_sum_of_probability_and_normalised_fusion():
    fused = _fused(1.0, 0.5, 0.0)
    out = rerank(fused, [0.0, 0.9, 0.6], weight=0.5)
    # c0: 0.5*0 + 0.5*1 = 0.5; c1: 0.45 + 0.25 = 0.7; c2: 0.3 + 0 = 0.3
    assert [f.chunk_id for f in out] == ["c1", "c0", "c2"]
    assert out[0].score - out[1].score == pytest.approx(0.2)


def test_input_is_not_modified_and_errors_are_clear():
    fused = _fused(0.9, 0.8)
    rerank(fused, [0.2, 0.9], weight=1.0)
    assert [f.score for f in fused] == [0.9, 0.8] and "rerank" not in fused[0].raw
    with pytest.raises(ValueError, match="weight"):
        rerank(fused, [0.5], weight=1.5)
    with pytest.raises(ValueError, match="probabilities"):
        rerank(fused, [0.1, 0.2, 0.3], weight=1.0)
    assert rerank(fused, [], weight=1.0) == fused
