import numpy as np
import pytest

from rag.retrieve import Fused, auto_merge, rrf_fuse

# -- rrf_fuse ----------------------------------------------------------------------------------


def test_exact_score_matches_hand_computation():
    fused = rrf_fuse(
        {"dense": [("a", 0.9), ("b", 0.8)], "bm25": [("x", 7.0), ("y", 6.0), ("a", 5.0)]},
        {"dense": 1.0, "bm25": 1.0},
        rrf_k=60,
    )
    a = next(f for f in fused if f.chunk_id == "a")
    assert a.score == pytest.approx(1 / (60 + 1) + 1 / (60 + 3), rel=1e-12)
    assert a.ranks == {"dense": 1, "bm25": 3}
    assert a.raw == {"dense": 0.9, "bm25": 5.0}
    assert fused[0].chunk_id == "a"


def test_weights_are_applied_and_change_the_ranking():
    rankings = {"dense": [("a", 0.9), ("b", 0.8)], "bm25": [("b", 3.0), ("a", 2.0)]}
    by_dense = rrf_fuse(rankings, {"dense": 2.0, "bm25": 1.0})
    by_bm25 = rrf_fuse(rankings, {"dense": 1.0, "bm25": 2.0})
    assert [f.chunk_id for f in by_dense] == ["a", "b"]
    assert [f.chunk_id for f in by_bm25] == ["b", "a"]
    assert by_dense[0].score == pytest.approx(2 / 61 + 1 / 62)


def test_zero_weight_retriever_contributes_nothing():
    fused = rrf_fuse({"dense": [("a", 0.9)], "bm25": [("b", 1.0)]}, {"dense": 1.0, "bm25": 0.0})
    assert [f.chunk_id for f in fused] == ["a", "b"]
    assert fused[1].score == 0.0 and fused[1].ranks == {"bm25": 1}


def test_missing_weight_defaults_to_one():
    fused = rrf_fuse({"other": [("a", 1.0)]}, {}, rrf_k=10)
    assert fused[0].score == pytest.approx(1 / 11)


def test_deduplicates_by_id_across_retrievers():
    fused = rrf_fuse({"dense": [("a", 0.9), ("b", 0.5)], "bm25": [("a", 2.0), ("c", 1.0)]}, {})
    ids = [f.chunk_id for f in fused]
    assert sorted(ids) == ["a", "b", "c"] and len(ids) == len(set(ids))


def test_same_id_twice_in_one_retriever_counts_once_at_best_rank():
    fused = rrf_fuse({"dense": [("a", 0.9), ("b", 0.8), ("a", 0.1)]}, {}, rrf_k=60)
    a = next(f for f in fused if f.chunk_id == "a")
    assert a.score == pytest.approx(1 / 61, rel=1e-12)
    assert a.ranks == {"dense": 1} and a.raw == {"dense": 0.9}
    assert len(fused) == 2


def test_same_text_different_ids_are_not_merged():
    # Fusion is by id: two chunks that happen to carry identical text stay separate.
    fused = rrf_fuse({"dense": [("doc1#p0.c0", 0.9), ("doc2#p0.c0", 0.9)]}, {})
    assert [f.chunk_id for f in fused] == ["doc1#p0.c0", "doc2#p0.c0"]


def test_ties_broken_by_best_single_rank_then_id():
    # rrf_k=1: z = 1/2 (dense rank 1); n = 1/2 (bm25 rank 1); a = 1/4 + 1/4 = 1/2 (rank 3 twice).
    rankings = {"dense": [("z", 0.9), ("m", 0.8), ("a", 0.7)], "bm25": [("n", 3.0), ("o", 2.0), ("a", 1.0)]}
    fused = rrf_fuse(rankings, {}, rrf_k=1)
    assert [f.score for f in fused[:3]] == [0.5, 0.5, 0.5]
    assert [f.chunk_id for f in fused] == ["n", "z", "a", "m", "o"]


def test_fusion_is_deterministic_under_input_order():
    r1 = {"dense": [("a", 0.9), ("c", 0.8)], "bm25": [("c", 3.0), ("a", 2.0)]}
    r2 = {"bm25": [("c", 3.0), ("a", 2.0)], "dense": [("a", 0.9), ("c", 0.8)]}
    assert [f.chunk_id for f in rrf_fuse(r1, {})] == [f.chunk_id for f in rrf_fuse(r2, {})] == ["a", "c"]


def test_empty_rankings():
    assert rrf_fuse({}, {}) == []
    assert rrf_fuse({"dense": [], "bm25": []}, {"dense": 1.0}) == []


# -- auto_merge --------------------------------------------------------------------------------


@pytest.fixture
def corpus(make_chunk):
    """P1 has four children, P2 two, P3 one; 'lone' has no parent."""
    parents = {
        "P1": make_chunk("P1", level="parent", child_ids=["P1.c0", "P1.c1", "P1.c2", "P1.c3"]),
        "P2": make_chunk("P2", level="parent", child_ids=["P2.c0", "P2.c1"]),
        "P3": make_chunk("P3", level="parent", child_ids=["P3.c0"]),
    }
    children = {cid: make_chunk(cid, parent_id=p.chunk_id) for p in parents.values() for cid in p.child_ids}
    children["lone"] = make_chunk("lone")
    return children, parents


def _f(cid, score):
    return Fused(cid, score)


def test_parent_replaces_children_at_threshold(corpus):
    children, parents = corpus
    fused = [_f("P1.c0", 0.05), _f("P2.c0", 0.04), _f("P1.c1", 0.03), _f("lone", 0.02)]
    units = auto_merge(fused, children, parents, threshold=0.5, top_k=10)  # P1: 2/4 = 0.5
    assert [(u.chunk.chunk_id, u.merged) for u in units] == [("P1", True), ("P2.c0", False), ("lone", False)]
    assert units[0].score == pytest.approx(0.05)  # default "max": the best child's score
    assert [h.chunk_id for h in units[0].hits] == ["P1.c0", "P1.c1"]
    assert [h.chunk_id for h in units[1].hits] == ["P2.c0"]


@pytest.mark.parametrize(("how", "score", "first"), [("max", 0.05, "P1"), ("mean", 0.04, "P2.c0"),
                                                      ("sum", 0.08, "P1")])
def test_merge_score_variants(corpus, how, score, first):
    children, parents = corpus
    fused = [_f("P1.c0", 0.05), _f("P2.c0", 0.045), _f("P1.c1", 0.03)]
    units = auto_merge(fused, children, parents, threshold=0.5, top_k=10, score=how)
    assert next(u for u in units if u.merged).score == pytest.approx(score)
    assert units[0].chunk.chunk_id == first


def test_sum_lets_weak_siblings_outrank_a_strong_hit(corpus):
    children, parents = corpus
    # P1's two weak children sum to 0.06 and beat P2's strong single hit (0.05) only under "sum"
    fused = [_f("P2.c0", 0.05), _f("P1.c0", 0.03), _f("P1.c1", 0.03)]
    assert auto_merge(fused, children, parents, 0.5, 10, "sum")[0].chunk.chunk_id == "P1"
    assert auto_merge(fused, children, parents, 0.5, 10, "max")[0].chunk.chunk_id == "P2.c0"


def test_no_merge_below_threshold(corpus):
    children, parents = corpus
    fused = [_f("P1.c0", 0.05), _f("P2.c0", 0.04), _f("P1.c1", 0.03)]
    units = auto_merge(fused, children, parents, threshold=0.6, top_k=10)  # 0.5 < 0.6
    assert [(u.chunk.chunk_id, u.merged) for u in units] == [
        ("P1.c0", False),
        ("P2.c0", False),
        ("P1.c1", False),
    ]
    assert [u.score for u in units] == [0.05, 0.04, 0.03]


def test_merged_parent_outranks_a_stronger_single_hit(corpus):
    children, parents = corpus
    fused = [_f("P1.c0", 0.05), _f("P2.c0", 0.04), _f("P2.c1", 0.035)]
    units = auto_merge(fused, children, parents, threshold=1.0, top_k=10, score="sum")
    assert [u.chunk.chunk_id for u in units] == ["P2", "P1.c0"]
    assert units[0].score == pytest.approx(0.075)


def test_parent_with_a_single_hit_never_merges(corpus):
    children, parents = corpus
    # P3 has one child, so one hit is a share of 1.0, still not a merge.
    units = auto_merge([_f("P3.c0", 0.05)], children, parents, threshold=0.1, top_k=10)
    assert [(u.chunk.chunk_id, u.merged) for u in units] == [("P3.c0", False)]


def test_merged_parent_appears_once(corpus):
    children, parents = corpus
    fused = [_f("P1.c0", 0.05), _f("P1.c1", 0.04), _f("P1.c2", 0.03), _f("P1.c3", 0.02)]
    units = auto_merge(fused, children, parents, threshold=0.5, top_k=10)
    assert len(units) == 1 and units[0].chunk.chunk_id == "P1"
    assert units[0].score == pytest.approx(0.05)  # the best child (merge score "max")
    assert len(units[0].hits) == 4


def test_top_k_respected(corpus):
    children, parents = corpus
    fused = [_f("P1.c0", 0.05), _f("P2.c0", 0.04), _f("P3.c0", 0.03), _f("lone", 0.02)]
    units = auto_merge(fused, children, parents, threshold=0.5, top_k=2)
    assert [u.chunk.chunk_id for u in units] == ["P1.c0", "P2.c0"]


def test_parent_missing_from_mapping_keeps_children(corpus):
    children, _parents = corpus
    fused = [_f("P2.c0", 0.05), _f("P2.c1", 0.04)]
    units = auto_merge(fused, children, {}, threshold=0.5, top_k=10)
    assert [(u.chunk.chunk_id, u.merged) for u in units] == [("P2.c0", False), ("P2.c1", False)]


def test_empty_fused():
    assert auto_merge([], {}, {}, threshold=0.5, top_k=5) == []


def test_bm25_top_ranks_the_best_positive_scores_in_scope_with_ties_by_row():
    from rag.retrieve import bm25_top

    rng = np.random.default_rng(0)
    scores = np.where(rng.random(5000) < 0.3, rng.integers(1, 20, 5000), 0).astype(np.float32)  # many ties
    allowed = rng.random(5000) < 0.7
    for k in (1, 10, 30, 5000):
        got = bm25_top(scores, allowed, k)
        masked = np.where(allowed & (scores > 0), scores, -np.inf)
        want = sorted(np.flatnonzero(np.isfinite(masked)), key=lambda i: (-masked[i], i))[:k]
        assert got.tolist() == want
    assert bm25_top(scores, allowed, 0).size == 0
    assert bm25_top(np.zeros(10, np.float32), np.ones(10, bool), 5).size == 0  # no term matched: nothing
