"""Lexical coverage signals: does the question name words the sources or the index never use?"""

from __future__ import annotations

import pytest

from rag.coverage import TermStats, lexical_signals, named_share, novel_terms, restates, subject_weights, unseen_terms
from rag.lexical import build_bm25

PASSAGES = [
    "Heart failure with reduced ejection fraction is treated with an ACE inhibitor and a beta blocker.",
    "Atrial fibrillation raises the risk of stroke; anticoagulation lowers it.",
    "Symptoms of heart failure include breathlessness and ankle swelling.",
    "Treatment of hypertension starts with lifestyle changes.",
]


@pytest.fixture(scope="module")
def stats() -> TermStats:
    s = TermStats.from_bm25(build_bm25(PASSAGES))
    assert s is not None
    return s


def test_document_frequencies_come_from_the_index(stats: TermStats) -> None:
    assert stats.n_docs == 4
    assert stats.doc_freq("heart") == 2
    assert stats.doc_freq("stroke") == 1
    assert stats.doc_freq("sarcoidosis") == 0
    # rarer tokens weigh more; a token the index never saw weighs most
    assert stats.idf("sarcoidosis") > stats.idf("stroke") > stats.idf("heart")


def test_a_question_the_sources_cover(stats: TermStats) -> None:
    sig = lexical_signals("What are the symptoms of heart failure?", [PASSAGES[2]], stats)
    assert sig == {"coverage": pytest.approx(1.0), "unseen": 0.0}


def test_the_asked_subject_missing_from_the_index_dominates(stats: TermStats) -> None:
    # "symptoms" is covered, the subject is not: coverage is low because the subject is the rare word
    sig = lexical_signals("What are the symptoms of cardiac sarcoidosis?", [PASSAGES[2]], stats)
    assert sig["unseen"] > 0.5
    assert sig["coverage"] < 0.35
    assert sig["coverage"] + sig["unseen"] <= 1.0 + 1e-9


def test_indexed_but_not_shown_counts_against_coverage_not_unseen(stats: TermStats) -> None:
    sig = lexical_signals("Does anticoagulation lower stroke risk?", [PASSAGES[0]], stats)
    assert sig["unseen"] == 0.0
    assert sig["coverage"] < 0.2
    shown = lexical_signals("Does anticoagulation lower stroke risk?", [PASSAGES[1]], stats)
    assert shown["coverage"] == pytest.approx(1.0)


def test_a_question_of_stopwords_names_nothing(stats: TermStats) -> None:
    assert lexical_signals("what is it?", [PASSAGES[0]], stats) == {"coverage": 1.0, "unseen": 0.0}


def test_no_bm25_scores_gives_no_stats() -> None:
    assert TermStats.from_bm25(object()) is None


def test_unseen_terms_are_the_question_words_no_passage_holds_and_a_sentence_restating_one_is_caught() -> None:
    stats = TermStats.from_bm25(build_bm25(["Metformin is the first-line treatment of type 2 diabetes.",
                                            "The blood pressure target is below 130 mmHg."]))
    assert stats is not None
    terms = unseen_terms("What is the first-line treatment of glaucoma at 145 mmHg?", stats)
    assert terms == frozenset({"glaucoma"})  # "145": numbers are exempt (the number check owns them)
    assert restates("Glaucoma's first-line treatment is metformin [1].", terms)
    assert not restates("Metformin is the first-line treatment [1].", terms)
    assert unseen_terms("What is the first-line treatment of type 2 diabetes?", stats) == frozenset()
    assert not restates("Anything at all.", frozenset())


def test_novel_terms_are_sentence_words_neither_the_index_nor_the_question_has() -> None:
    stats = TermStats.from_bm25(build_bm25(["CT pulmonary angiography confirms pulmonary embolism.",
                                            "A D-dimer below the cut-off excludes it when probability is low."]))
    assert stats is not None
    q = "How is pulmonary embolism diagnosed?"
    assert novel_terms("Pulmonary embolism is diagnosed by a bronchoscopy [1].", q, stats) == {"bronchoscopy"}
    assert novel_terms("CT pulmonary angiography confirms pulmonary embolism [1].", q, stats) == frozenset()
    # the question's own words and numbers are not the generator's invention; any other new word is
    assert novel_terms("Pulmonary embolism is diagnosed at 24 [1].", q, stats) == frozenset()
    assert novel_terms("Pulmonary embolism is diagnosed within hours [1].", q, stats) == frozenset({"within", "hour"})


def test_the_subject_weights_are_the_indexed_question_words_and_their_named_share(stats: TermStats) -> None:
    weights = subject_weights("What is the first-line drug for atrial fibrillation in 2024 sarcoidosis?", stats)
    assert {"atrial", "fibrillation"} <= set(weights)
    assert "sarcoidosis" not in weights and "2024" not in weights  # unseen words and numbers are other checks' job
    named = named_share(weights, ["Anticoagulation lowers stroke risk in atrial fibrillation [1]."])
    other = named_share(weights, ["An ACE inhibitor and a beta blocker [1]."])
    assert other < named <= 1.0
    assert named_share({}, ["anything"]) == 1.0  # nothing asked that the index holds: nothing to miss
