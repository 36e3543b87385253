"""Retrieval evaluation: metrics by hand, splits, and an end-to-end run on fixture corpora."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from corpora import load_sources
from eval.metrics import bootstrap_ci, dedupe, mrr_at, ndcg_at, paired_bootstrap_diff, recall_at
from eval.retrieval import build_queries, evaluate
from eval.splits import held_out_doc_ids, load_split, make_split, write_split
from rag.errors import InputError
from rag.retrieve import weighted_score_fusion

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "corpora"


def test_rank_metrics_by_hand():
    ranked = ["a", "b", "c", "d"]
    assert recall_at(ranked, {"c"}, 2) == 0.0 and recall_at(ranked, {"c"}, 3) == 1.0
    assert mrr_at(ranked, {"c"}) == pytest.approx(1 / 3)
    assert mrr_at(ranked, {"z"}) == 0.0
    # one gold at rank 3: DCG = 1/log2(4) = 0.5; IDCG = 1
    assert ndcg_at(ranked, {"c"}) == pytest.approx(0.5)
    # two gold at ranks 1 and 3: (1 + 0.5) / (1 + 1/log2(3))
    assert ndcg_at(ranked, {"a", "c"}) == pytest.approx(1.5 / (1 + 1 / math.log2(3)))
    assert dedupe(["x", "y", "x", "z", "y"]) == ["x", "y", "z"]


def test_bootstrap_intervals():
    lo, hi = bootstrap_ci([1.0] * 50 + [0.0] * 50, n_boot=2000, seed=1)
    assert lo < 0.5 < hi and hi - lo == pytest.approx(0.2, abs=0.06)  # ~ +-1.96*sqrt(.25/100)
    assert bootstrap_ci([0.3] * 10) == pytest.approx((0.3, 0.3))
    d, lo, hi = paired_bootstrap_diff([1, 1, 1, 0], [0, 1, 1, 0], n_boot=500)
    assert d == pytest.approx(0.25) and lo <= d <= hi


def test_weighted_score_fusion_normalises_each_retriever():
    fused = weighted_score_fusion({"dense": [("a", 0.9), ("b", 0.5)], "bm25": [("b", 30.0), ("c", 10.0)]},
                                  {"dense": 1.0, "bm25": 1.0})
    scores = {f.chunk_id: f.score for f in fused}
    assert scores == pytest.approx({"a": 1.0, "b": 1.0, "c": 0.0})
    assert [f.chunk_id for f in fused][:2] == ["a", "b"]  # tie broken by best single rank, then id


def test_split_is_by_file_deterministic_and_ids_only(tmp_path):
    docs = load_sources([FIX / "medquad"]).documents
    s1, s2 = make_split(docs, seed=3, test_questions=1, dev_questions=1), make_split(docs, seed=3, test_questions=1,
                                                                                     dev_questions=1)
    assert s1["test"] == s2["test"] and s1["dev"] == s2["dev"]
    files = {q["file"] for q in s1["test"]} | {q["file"] for q in s1["dev"]}
    assert not ({q["file"] for q in s1["test"]} & {q["file"] for q in s1["dev"]})
    # whole files: both answered Frobosis questions land in the same part
    frob = [p for p in ("test", "dev") if any(q["doc_id"].startswith("medquad-1-0000001_1") for q in s1[p])]
    assert len(frob) == 1 and len([q for q in s1[frob[0]] if q["doc_id"].startswith("medquad-1-")]) == 2
    assert "1_TestSource_QA/0000001_1.xml" in files
    text = json.dumps(s1)
    assert "Frobosis" not in text and "warm tea" not in text
    write_split(s1, tmp_path / "s.json")
    assert held_out_doc_ids(tmp_path / "s.json") == {q["doc_id"] for p in ("test", "dev") for q in s1[p]}
    with pytest.raises(InputError, match="only 3 answered"):
        make_split(docs, test_questions=50)


def test_load_split_errors(tmp_path):
    with pytest.raises(InputError, match="eval split"):
        load_split(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{", encoding="utf-8")
    with pytest.raises(InputError, match="not valid JSON"):
        load_split(tmp_path / "bad.json")


def test_gold_includes_identical_answers(tmp_path):
    docs = load_sources([FIX / "medquad"]).documents
    twin = docs[0].__class__(**{**docs[0].to_dict(), "doc_id": "medquad-x-twin"})
    split = {"test": [{"doc_id": docs[0].doc_id, "qid": "q"}]}
    (q,) = build_queries([*docs, twin], split, "test")
    assert q.gold == {docs[0].doc_id, "medquad-x-twin"} and q.text == docs[0].meta["question"]


def test_evaluate_end_to_end_on_fixture_index(tmp_path):
    from rag import Assistant
    from rag.config import load_config
    from rag.update import build_index
    from tests.fakes import HashEmbedder

    sources = [FIX / "medquad", FIX / "ngc.jsonl", FIX / "wikidoc.json", FIX / "mtsamples.csv"]
    docs = load_sources(sources, strict=False).documents
    cfg = load_config(None, [f"index.dir={tmp_path / 'ix'}", "index.auto_build_demo=false"])
    build_index(docs, HashEmbedder(), tmp_path / "ix", cfg.chunking.model_dump())
    split = make_split(docs, seed=1, test_questions=2, dev_questions=1)
    write_split(split, tmp_path / "split.json")
    assistant = Assistant(cfg, embedder=HashEmbedder(), progress=False)
    summary = evaluate(assistant, FIX / "medquad", tmp_path / "split.json", part="test", n_boot=50,
                       output=tmp_path / "out")
    assert summary["n_queries"] == len(split["test"]) >= 2
    assert set(summary["modes"]) == {"bm25", "dense", "rrf", "wsum", "hybrid+merge"}
    for row in summary["modes"].values():
        assert 0.0 <= row["ndcg@10"]["mean"] <= 1.0 and row["recall@20"]["mean"] >= row["recall@1"]["mean"]
    # the tiny corpus has few documents, so BM25 finds each answer within the top 5
    assert summary["modes"]["bm25"]["recall@5"]["mean"] == 1.0
    lines = (tmp_path / "out" / "per_query.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == summary["n_queries"] and "bm25" in json.loads(lines[0])
    assert "| hybrid+merge |" in (tmp_path / "out" / "table.md").read_text(encoding="utf-8")
    with pytest.raises(InputError, match="unknown mode"):
        evaluate(assistant, FIX / "medquad", tmp_path / "split.json", modes=["magic"])


def test_evaluate_refuses_index_without_medquad(tmp_path, hash_index):
    from rag import Assistant
    from rag.config import load_config
    from tests.fakes import HashEmbedder

    docs = load_sources([FIX / "medquad"]).documents
    write_split(make_split(docs, seed=1, test_questions=1, dev_questions=0), tmp_path / "split.json")
    cfg = load_config(None, [f"index.dir={hash_index[0]}", "index.auto_build_demo=false"])
    with pytest.raises(InputError, match="build the full index"):
        evaluate(Assistant(cfg, embedder=HashEmbedder(), progress=False), FIX / "medquad", tmp_path / "split.json")


def test_evaluator_searches_with_the_configured_expansion():
    """`eval retrieval` must search what `query` searches: BM25 gets the expanded abbreviations when on."""
    from types import SimpleNamespace

    import numpy as np

    from eval.retrieval import RetrievalEvaluator
    from rag.retrieve import HybridRetriever

    seen: list[str] = []

    class Spy:
        index = SimpleNamespace(children=[])
        bm25_query = HybridRetriever.bm25_query
        dense_query = HybridRetriever.dense_query

        def __init__(self, expand: bool) -> None:
            self.expand_abbreviations = expand

        def _dense(self, qv, allowed, k):
            return []

        def _bm25(self, text, allowed, k):
            seen.append(text)
            return []

    for expand in (True, False):
        RetrievalEvaluator(Spy(expand)).candidates(np.zeros(3, np.float32), "AF tx rate vs rhythm?")
    assert "atrial fibrillation" in seen[0] and "treatment" in seen[0]
    assert seen[1] == "AF tx rate vs rhythm?"
    assert "atrial fibrillation" in Spy(True).dense_query("AF tx?")
