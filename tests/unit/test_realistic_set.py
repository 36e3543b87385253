"""The realistic retrieval question set (eval/questions/realistic_retrieval.jsonl) and the dev choice rule."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from eval.realistic_retrieval import QUESTIONS, choose, load_realistic, summarise

ROOT = Path(__file__).resolve().parents[2]


def _rows() -> list[dict]:
    return [json.loads(line) for line in (ROOT / QUESTIONS).read_text(encoding="utf-8").splitlines() if line.strip()]


def _page(doc_id: str) -> str:
    # medquad-<source>-<file>-<n>: the page is everything but the question number
    return doc_id.rsplit("-", 1)[0] if doc_id.startswith("medquad-") else doc_id


def test_set_is_large_enough_and_well_formed():
    rows = _rows()
    assert len(rows) >= 300
    assert len({r["id"] for r in rows}) == len(rows)
    assert len({r["question"] for r in rows}) == len(rows)
    assert set(Counter(r["style"] for r in rows)) == {"lay", "shorthand", "multipart", "vignette"}
    for r in rows:
        assert r["split"] in ("dev", "test") and r["gold"]
        assert all(re.fullmatch(r"medquad-\d+-[0-9_]+-\d+|ngc-\d+", d) for d in r["gold"]), r["id"]
    splits = Counter(r["split"] for r in rows)
    assert 0.4 < splits["dev"] / len(rows) < 0.6


def test_no_gold_document_or_page_in_both_splits():
    rows = _rows()
    pages = {part: {_page(d) for r in rows if r["split"] == part for d in r["gold"]} for part in ("dev", "test")}
    assert not pages["dev"] & pages["test"]


def test_loader_tags_sources_and_rejects_a_missing_part(tmp_path):
    qs = load_realistic(ROOT / QUESTIONS, "test")
    assert all("realistic" in q.tags for q in qs)
    assert any("ngc" in q.tags for q in qs) and any("realistic:shorthand" in q.tags for q in qs)
    empty = tmp_path / "q.jsonl"
    empty.write_text("", encoding="utf-8")
    from rag.errors import InputError

    with pytest.raises(InputError, match="no 'dev' questions"):
        load_realistic(empty, "dev")


def _summary(real: dict[str, float], mq: dict[str, float]) -> dict:
    from eval.realistic_retrieval import Q

    qs = [Q(str(i), "", set(), {"realistic"}) for i in range(10)] + \
         [Q(f"m{i}", "", set(), {"medquad-split"}) for i in range(10)]
    per = {}
    for name in real:
        hits_r, hits_m = round(real[name] * 10), round(mq[name] * 10)
        per[name] = [{"recall@1": float(i < hits_r), "ndcg@10": 0.5, "mrr@10": 0.5} for i in range(10)] + \
                    [{"recall@1": float(i < hits_m), "ndcg@10": 0.5, "mrr@10": 0.5} for i in range(10)]
    return {"sets": {"realistic": summarise(per, qs, "realistic", 50), "medquad-split": summarise(per, qs,
                                                                                                 "medquad-split", 50)}}


def test_choice_never_picks_a_variant_below_the_best_single_retriever_on_either_dev_set():
    s = _summary({"bm25": 0.5, "dense": 0.7, "a": 0.9, "b": 0.8, "c": 0.6},
                 {"bm25": 0.4, "dense": 0.6, "a": 0.5, "b": 0.7, "c": 0.9})
    text = choose(s)
    assert text.rstrip().endswith("Chosen: b")  # a is best on realistic but below dense on MedQuAD
