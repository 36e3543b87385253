"""HybridRetriever with abbreviation expansion and a reranker, on the demo corpus (hash embedder: no model)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from rag.retrieve import HybridRetriever
from tests.fakes import HashEmbedder


def _retriever(index, **kw) -> HybridRetriever:
    return HybridRetriever(index, HashEmbedder(), 30, 30, 60, 1.0, 1.0, 0.5, 5, fusion="wsum", merge_score="max", **kw)


def test_expansion_lets_bm25_match_the_spelled_out_form(hash_index):
    _, index = hash_index
    allowed = np.ones(len(index.children), dtype=bool)
    plain = _retriever(index)
    expanded = _retriever(index, expand_abbreviations=True)
    assert plain._bm25("AFib", allowed, 30) == []  # the guidelines spell it out
    qv = expanded.embedder.encode_queries([expanded.dense_query("AFib")])[0]
    hits = expanded.search("AFib", qv, allowed=allowed).bm25
    texts = [index.children[index.child_pos[c]].text.lower() for c, _ in hits[:5]]
    assert any("atrial fibrillation" in t for t in texts)
    assert expanded.dense_query("AFib") == "AFib (atrial fibrillation)"


def test_reranker_reorders_the_fused_head_and_is_timed(hash_index):
    _, index = hash_index
    allowed = np.ones(len(index.children), dtype=bool)
    seen: list[int] = []

    def scorer(question: str, passages: Sequence[str]) -> np.ndarray:
        seen.append(len(passages))
        return np.array([1.0 if "potassium" in p.lower() else 0.0 for p in passages])

    base = _retriever(index)
    rr = _retriever(index, reranker=scorer, rerank_top_n=20)
    q = "heart failure treatment"
    qv = base.embedder.encode_queries([q])[0]
    before = base.search(q, qv, allowed=allowed)
    after = rr.search(q, qv, allowed=allowed)
    assert seen == [min(20, len(before.fused))]
    head = [f for f in before.fused[:20]]
    if not any("potassium" in index.children[index.child_pos[f.chunk_id]].context_text().lower() for f in head):
        pytest.skip("no potassium passage in the fused head of the demo corpus")
    top = index.children[index.child_pos[after.fused[0].chunk_id]].context_text().lower()
    assert "potassium" in top
    assert "rerank" in after.timings_ms and after.fused[0].raw["rerank"] == 1.0
    assert sorted(f.chunk_id for f in after.fused) == sorted(f.chunk_id for f in before.fused)


def test_rerank_without_the_verifier_is_a_config_error():
    from rag import Assistant
    from rag.config import load_config
    from rag.errors import ConfigError

    cfg = load_config(None, ["verifier.enabled=false", "retrieval.rerank=true", "index.auto_build_demo=false"])
    with pytest.raises(ConfigError, match=r"retrieval\.rerank needs the verifier"):
        Assistant(cfg).retriever()


def test_new_switches_default_off():
    from rag.config import load_config

    r = load_config().retrieval
    assert (r.rerank, r.expand_abbreviations, r.rerank_top_n) == (False, False, 20)
