"""The strict key-fact scorer of the demo questions (eval/key_facts.py, eval/trust.py)."""

import json

import pytest

from corpora import load_sources
from eval import key_facts, trust
from rag.config import PROJECT_ROOT

QUESTIONS = PROJECT_ROOT / "eval" / "questions" / "demo_answerable.jsonl"


@pytest.mark.parametrize(("fact", "text"), [
    ("potassium below 5.0", "serum potassium is below 5.0 mmol/L"),
    ("below 5.0", "K+ <5 mmol/L"),
    ("2-14 days", "between 2 and 14 days after the stroke"),
    ("3-5%", "a 5-year risk of 3% to 5%"),
    ("age x 10", "age × 10 µg/L"),
    ("0.70", "FEV1/FVC below 0.7 after a bronchodilator"),
    ("beta-blocker", "a beta blocker"),
    ("eGFR above 30", "eGFR greater than 30 mL/min"),
])
def test_states_accepts_the_same_fact_in_other_words(fact, text):
    assert key_facts.states(fact, text)


@pytest.mark.parametrize(("fact", "text"), [
    ("2 g", "12 g of salt"),
    ("below 5.0", "potassium above 5.0"),
    ("36 hours", "24 hours"),
    ("1.4 mmol/L", "1.8 mmol/L"),
    ("10 minutes", "within 10 or so of the longest possible minutes"),  # too far apart
])
def test_states_rejects_other_facts(fact, text):
    assert not key_facts.states(fact, text)


def _row(required):
    return {"suite": "demo_answerable", "answerable": True, "gold": ["demo-hfref-gdmt"], "required": required}


def _sent(text, docs=("demo-hfref-gdmt",), attributed=False):
    return {"text": text, "cited_docs": list(docs), "attributed": attributed, "citations": [1]}


def test_every_required_group_must_be_stated_not_any_one_fact():
    row = _row([["ARNI"], ["beta-blocker"], ["MRA"], ["SGLT2"]])
    one = [_sent("An ARNI reduces mortality [1].")]
    all_four = [_sent("ARNI, beta-blocker, MRA and SGLT2 inhibitor [1].")]
    assert trust.right_if_answered(row, one, {})["right"] is False
    assert trust.right_if_answered(row, all_four, {})["right"] is True


def test_a_fact_cited_to_another_document_does_not_count():
    row = _row([["36 hours"]])
    shown = [_sent("Wait 36 hours [2].", docs=("demo-hypertension",)), _sent("Switch to an ARNI [1].")]
    assert trust.right_if_answered(row, shown, {})["right"] is False


def test_attributed_citations_are_not_the_models():
    row = _row([["36 hours"]])
    verdict = trust.right_if_answered(row, [_sent("Wait 36 hours [1].", attributed=True)], {})
    assert verdict == {"right": True, "model_cited": False}


def test_every_required_group_is_stated_by_a_gold_document():
    """The annotation itself: some alternative of each group is in the gold documents' text."""
    docs = {d.doc_id: d.text for d in load_sources([PROJECT_ROOT / "corpora" / "demo" / "guidelines"]).documents}
    rows = [json.loads(line) for line in QUESTIONS.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 60
    for r in rows:
        text = " ".join(docs[g] for g in r["gold_doc_ids"])
        assert r["required"], r["id"]
        for group in r["required"]:
            assert any(key_facts.states(alt, text) for alt in group), (r["id"], group)


def test_the_cited_section_must_state_the_fact_not_only_the_right_document():
    row = _row([["36 hours"]])
    row["sources"] = [{"n": 1, "doc_id": "demo-hfref-gdmt", "text": "ARNI is preferred over an ACE inhibitor."},
                      {"n": 2, "doc_id": "demo-hfref-gdmt", "text": "Stop the ACE inhibitor 36 hours before."}]
    wrong_section = [{**_sent("Wait 36 hours [1]."), "citations": [1]}]
    right_section = [{**_sent("Wait 36 hours [2]."), "citations": [2]}]
    assert trust.right_if_answered(row, wrong_section, {})["right"] is False
    assert trust.right_if_answered(row, right_section, {})["right"] is True
