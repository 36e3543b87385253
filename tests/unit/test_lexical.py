"""rag.lexical: the BM25 index built from token ids in one array scores exactly as bm25s from token lists."""

from __future__ import annotations

import numpy as np
import pytest

from rag.lexical import build_bm25, import_bm25s, index_bm25, tokenize_corpus
from rag.text import tokenize

PASSAGES = [
    "Beta-blockers reduce mortality in heart failure with reduced ejection fraction.",
    "ACE inhibitors or ARBs are first-line in hypertension with chronic kidney disease.",
    "Community-acquired pneumonia: amoxicillin for outpatients without comorbidities.",
    "",  # a passage with no tokens: bm25s keeps its row, it never scores
    "Sepsis bundle: lactate, blood cultures before antibiotics, 30 mL/kg crystalloid for hypotension.",
    "Heart failure heart failure: loop diuretics relieve congestion; they do not change mortality.",
    "Metformin is first-line for type 2 diabetes unless eGFR is below 30.",
] * 3 + [f"rare term zq{i}x with heart failure follow up visit {i}" for i in range(40)]

QUERIES = ["heart failure mortality", "first-line hypertension kidney", "antibiotics before cultures",
           "zq7x", "nothing matches xylophone", "failure failure failure"]


@pytest.mark.parametrize("batch_tokens", [1, 7, 1 << 20])  # batches that split passages, and one batch
def test_token_ids_index_scores_exactly_as_token_lists(batch_tokens):
    ref = import_bm25s().BM25()
    ref.index([tokenize(p) for p in PASSAGES], show_progress=False)
    ids, vocab = tokenize_corpus(PASSAGES, batch_tokens=batch_tokens)
    assert len(ids) == len(PASSAGES) and ids.flat.dtype == np.int32
    assert [[t for t in doc] for doc in ids] == [[vocab[t] for t in tokenize(p)] for p in PASSAGES]
    assert ids[5] == [vocab[t] for t in tokenize(PASSAGES[5])]
    got = index_bm25(ids, vocab)
    assert got.scores["num_docs"] == ref.scores["num_docs"] == len(PASSAGES)
    for q in QUERIES:
        toks = tokenize(q)
        assert np.array_equal(got.get_scores(toks), ref.get_scores(toks)), q
    assert got.get_scores(tokenize("heart failure mortality"))[0] > 0


def test_build_bm25_reads_a_generator_once_and_saves_like_bm25s(tmp_path):
    bm25 = build_bm25(p for p in PASSAGES)
    bm25.save(str(tmp_path / "bm25"), show_progress=False)
    loaded = import_bm25s().BM25.load(str(tmp_path / "bm25"), mmap=False, show_progress=False)
    toks = tokenize("heart failure mortality")
    assert np.array_equal(loaded.get_scores(toks), bm25.get_scores(toks))
