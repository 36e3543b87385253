"""The base-vs-tuned measurements: category parsing, AUROC, the regression baseline, grounded shares."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from eval import grounded
from eval.hf_risk import auroc, logistic_regression, parse_category


@pytest.mark.parametrize("text,cat", [
    ("Risk category: high.\nMain factors: ...", "high"),
    ("Provisional risk category: intermediate (incomplete data).", "intermediate"),
    ("The risk is **moderate** given the LVEF.", "intermediate"),
    ("This patient looks low risk overall.", "low"),
    ("I cannot say.", None),
    ("Risk points: age 70 years +4.\nTotal: 4 points (low below 6, intermediate 6-11, high 12 or more).\n"
     "Risk category: low.", "low"),
    # A reply cut off after the total: the thresholds legend must not be read as the category.
    ("Risk points: x +9.\nTotal: 9 points (low below 6, intermediate 6-11, high 12 or more).", None),
    ("Risk: high.", "high"),
    ("The patient is at high risk given the LVEF.", "high"),
    ("A low-risk patient.", "low"),
    ("Overall this is intermediate risk.", "intermediate"),
    ("Risk category: **High**", "high"),
    # Category words about something else are not a category (issue 12: the first word anywhere was read).
    ("The patient has high blood pressure.", None),
    ("Main risk: high blood pressure and low ejection fraction.", None),
    ("High creatinine and low LVEF.", None),
    ("High-risk features: diabetes, smoking.", None),
    ("The patient is not at high risk.", None),
    # Two categories are no statement.
    ("Intermediate-to-high risk.", None),
    ("Risk category: low. Risk category: high.", None),
    ("Risk category: low; not high risk.", "low"),
])
def test_parse_category(text: str, cat: str | None) -> None:
    assert parse_category(text) == cat


def test_the_risk_command_and_the_eval_read_the_category_alike() -> None:
    from rag.hf_rule import read_working, stated_category

    assert parse_category is stated_category, "one parser, in the lowest layer that holds it (rag.hf_rule)"
    assert read_working("Total: 3 points.\nThe patient has high blood pressure.").category is None
    assert read_working("Total: 3 points.\nRisk category: low.").category == "low"


def test_unparsed_replies_are_wrong_and_never_intermediate() -> None:
    from eval.hf_risk import score_categories

    died = np.array([1, 0, 1, 0])
    rule = ["intermediate", "intermediate", "high", "low"]
    s = score_categories([None, "intermediate", "high", "low"], rule, died)
    assert s["unparsed"] == 1 and s["stated_category_counts"] == {"low": 1, "intermediate": 1, "high": 1,
                                                                  "unparsed": 1}
    assert s["agreement_with_rule_category"] == 0.75, "the unparsed reply is not the rule's intermediate"
    # AUROC over the parsed replies (3 patients), and once with unparsed ranked as the middle.
    assert s["auroc_patients"] == {"stated_category": 3, "stated_category_unparsed_as_intermediate": 4}
    assert s["auroc"]["stated_category"] == 1.0
    assert s["auroc"]["stated_category_unparsed_as_intermediate"] == 0.875
    assert s["death_rate_by_stated_category"]["unparsed"] == 1.0
    none = score_categories([None, None], ["low", "high"], np.array([0, 1]))
    assert none["agreement_with_rule_category"] == 0.0 and none["auroc"]["stated_category"] is None


def test_auroc_counts_ties_half() -> None:
    y = np.array([1, 1, 0, 0])
    assert auroc(np.array([2.0, 2.0, 1.0, 0.0]), y) == 1.0
    assert auroc(np.array([0.0, 0.0, 1.0, 2.0]), y) == 0.0
    assert auroc(np.array([1.0, 1.0, 1.0, 1.0]), y) == 0.5


def test_logistic_regression_separates_a_learnable_signal() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3))
    y = (x[:, 0] + 0.3 * rng.normal(size=300) > 0).astype(float)
    _, predict = logistic_regression(x[:200], y[:200])
    assert auroc(predict(x[200:]), y[200:]) > 0.9


def test_grounded_summary_shares() -> None:
    rows = [
        {"answerable": {"abstained": False, "reason": None, "gold_in_sources": True, "cites_gold": True}},
        {"answerable": {"abstained": True, "reason": "x", "gold_in_sources": True, "cites_gold": False}},
        {"answerable": {"abstained": False, "reason": None, "gold_in_sources": False, "cites_gold": False}},
        {"withheld": {"abstained": True, "reason": "the generator found no answer in the sources",
                      "model_abstained": True}},
        {"withheld": {"abstained": False, "reason": None, "model_abstained": False}},
    ]
    s = grounded.summarize(rows)
    assert s["answerable"]["cites_gold"]["k"] == 1 and s["answerable"]["cites_gold"]["n"] == 3
    assert s["answerable"]["cites_gold_model"]["n"] == 0, "rows written before the split are left out of it"
    assert s["answerable"]["wrong_abstention_when_gold_retrieved"]["share"] == 0.5
    assert s["withheld"]["abstained"]["share"] == 0.5
    assert "| base |" in grounded.markdown({"base": s})


def test_withheld_set_covers_duplicates_siblings_and_topic() -> None:
    q = {"gold": ["a", "a-dup"], "siblings": ["a", "b"], "title": "Gout"}
    assert grounded.withheld_docs(q, {"gout": {"wiki-gout"}}) == {"a", "a-dup", "b", "wiki-gout"}


def test_patient_record_value_checks() -> None:
    from corpora.heart_failure import HFRecord
    from eval.patient_records import expected, states_value

    r = HFRecord(patient_id="HF001", age=65.0, anaemia=False, creatinine_phosphokinase=582.0, diabetes=True,
                 ejection_fraction=20.0, high_blood_pressure=True, platelets=265000.0, serum_creatinine=1.9,
                 serum_sodium=130.0, male=True, smoking=False)
    assert expected(r, "ejection_fraction") == "20" and expected(r, "serum_creatinine") == "1.9"
    assert expected(r, "platelets") == "265,000" and expected(r, "diabetes") is True
    assert states_value("The LVEF of this patient is 20% [1].", "20")
    assert not states_value("The LVEF of this patient is 25% [20].", "20")
    assert not states_value("HFimpEF [4].", "45"), "a citation number is not a value"
    assert states_value("Platelets are 265000 per microlitre [1].", "265,000")
    assert states_value("Serum creatinine is 1.9 mg/dL.", "1.9") and not states_value("It is 1.95 mg/dL.", "1.9")
    assert states_value("Yes, the record lists diabetes [1].", True, "diabetes")
    assert states_value("No, the record states no diabetes [1].", False, "diabetes")
    assert not states_value("The record does not list diabetes [1].", True, "diabetes")


@pytest.mark.parametrize("text,fact,value,stated", [
    # Issue 12: any non-negated answer counted as "yes", and any negation anywhere as "no".
    ("The serum sodium is 134 mEq/L [1].", "diabetes", True, False),
    ("The serum sodium is not recorded as low [1].", "diabetes", False, False),
    ("Yes [1].", "smoking", True, False),
    ("No, the record states no diabetes [1].", "diabetes", True, False),
    ("Diabetes: no [1].", "diabetes", False, True),
    ("Diabetes: yes [1].", "diabetes", True, True),
    ("The patient is diabetic [1].", "diabetes", True, True),
    # Negation is scoped to the clause naming the condition.
    ("The patient does not smoke and has diabetes [1].", "diabetes", True, True),
    ("The patient does not smoke and has diabetes [1].", "smoking", False, True),
    ("The patient has hypertension but no anaemia [1].", "high_blood_pressure", True, True),
    ("The patient has hypertension but no anaemia [1].", "anaemia", False, True),
    ("The patient has no diabetes or hypertension [1].", "high_blood_pressure", False, True),
    ("The patient has diabetes, not high blood pressure [1].", "high_blood_pressure", False, True),
    ("The patient is a non-smoker [1].", "smoking", False, True),
    ("The patient is a non-smoker [1].", "smoking", True, False),
    ("The patient denies smoking [1].", "smoking", False, True),
    ("The patient is anemic [1].", "anaemia", True, True),
    ("The patient is without anaemia [1].", "anaemia", True, False),
    # The question echoed back states nothing; two clauses that disagree are not an answer.
    ("You asked whether the patient has diabetes. The record states no diabetes [1].", "diabetes", False, True),
    ("The patient has diabetes [1]. Diabetes is absent [1].", "diabetes", True, False),
])
def test_yes_no_answers_must_name_the_condition_with_the_records_polarity(text: str, fact: str, value: bool,
                                                                          stated: bool) -> None:
    from eval.patient_records import states_value

    assert states_value(text, value, fact) is stated


@pytest.mark.parametrize("text,stated", [
    ("The serum sodium is 135 mEq/L [1].", True),
    ("The serum sodium is 135mEq/L [1].", True),
    ("The CPK is 1350 mcg/L [1].", False),
    ("The serum creatinine is 13.5 mg/dL [1].", False),
    ("Patient HF135 has a serum sodium of 130 mEq/L [1].", False),
    ("The value is 13,5 [1].", False),
    ("The serum sodium is 130 mEq/L [135].", False),
])
def test_a_number_is_stated_only_as_that_number(text: str, stated: bool) -> None:
    from eval.patient_records import states_value

    assert states_value(text, "135") is stated


def test_a_yes_no_value_needs_its_condition() -> None:
    from eval.patient_records import states_value

    with pytest.raises(ValueError, match="condition"):
        states_value("Yes, diabetes [1].", True)


def _answer(sentences: list[tuple[str, list[int], bool, bool]], citations: dict[int, str | None]) -> Any:
    """An Answer whose sentences are (text, cited numbers, supported, attributed); citations: n -> patient id."""
    from rag.answer import Answer, Citation, SentenceRecord

    cites = [Citation(n=n, doc_id=f"d{n}" if pid is None else f"ehr-{pid}", chunk_id=f"c{n}", title="t", source="s",
                      kind="ehr" if pid else "guideline", patient_id=pid, section="", start=0, end=1, score=1.0,
                      text="x") for n, pid in citations.items()]
    recs = [SentenceRecord(text=t, citations=ns, supported=sup, support_score=0.9, attributed=att)
            for t, ns, sup, att in sentences]
    return Answer(question="q", answer=" ".join(t for t, *_ in sentences), abstained=False, confidence=0.9,
                  confidence_label="high", citations=cites, sentences=recs, index_version="v", models={}, timings_ms={})


def test_record_citations_by_the_generator_and_by_attribution_are_counted_apart() -> None:
    from eval.patient_records import cites_record, cites_record_model, record_citations

    model = _answer([("The LVEF is 20% [1].", [1], True, False)], {1: "HF001", 2: None})
    attributed = _answer([("The LVEF is 20% [1].", [1], True, True)], {1: "HF001"})
    both = _answer([("The LVEF is 20% [1].", [1], True, True), ("Age 65 [1].", [1], True, False)], {1: "HF001"})
    unsupported = _answer([("The LVEF is 20% [1].", [1], False, False)], {1: "HF001"})
    other = _answer([("The LVEF is 20% [2].", [2], True, False)], {1: "HF001", 2: "HF002"})
    assert record_citations(model, "HF001") == (True, False)
    assert record_citations(attributed, "HF001") == (False, True)
    assert record_citations(both, "HF001") == (True, True)
    assert record_citations(unsupported, "HF001") == (False, False)
    assert record_citations(other, "HF001") == (False, False)
    assert cites_record(attributed, "HF001") and not cites_record_model(attributed, "HF001")


def test_patient_record_summary_reports_model_cited_and_attributed(tmp_path, monkeypatch) -> None:
    import json

    from corpora.heart_failure import HFRecord
    from eval import patient_records as pr

    rec = HFRecord(patient_id="HF001", age=65.0, anaemia=False, creatinine_phosphokinase=582.0, diabetes=True,
                   ejection_fraction=20.0, high_blood_pressure=True, platelets=265000.0, serum_creatinine=1.9,
                   serum_sodium=130.0, male=True, smoking=False)
    answers = [
        _answer([("The LVEF of this patient is 20% [1].", [1], True, False)], {1: "HF001"}),  # model-cited
        _answer([("The LVEF of this patient is 20% [1].", [1], True, True)], {1: "HF001"}),  # attributed only
        _answer([("The serum sodium is 130 mEq/L [1].", [1], True, False)], {1: "HF001"}),  # not about diabetes
    ]

    class _Assistant:
        def ask_many(self, questions, batch_size, on_answer, patient_ids):
            return answers

    qs = [{"id": f"q{i}", "patient_id": "HF001", "fact": f, "question": "?"}
          for i, f in enumerate(["ejection_fraction", "ejection_fraction", "diabetes"])]
    monkeypatch.setattr(pr, "read_records", lambda *_a, **_k: [rec])
    s = pr.evaluate(_Assistant(), qs, tmp_path / "hf.csv", tmp_path / "out")
    a = s["answerable"]
    assert a["states_value"]["k"] == 2 and a["cites_record"]["k"] == 3
    assert a["cites_record_model"]["k"] == 2 and a["cites_record_attributed"]["k"] == 1
    assert a["correct"]["k"] == 2 and a["correct_model_cited"]["k"] == 1
    rows = [json.loads(x) for x in (tmp_path / "out" / "answers.jsonl").read_text().splitlines()]
    assert [r["cites_record_attributed"] for r in rows] == [False, True, False]
    table = pr.markdown({"tuned": s})
    assert "only by attribution" in table and {line.count("|") for line in table.splitlines()} == {10}
    old = {"answerable": {k: a[k] for k in ("correct", "states_value", "cites_record", "abstained")},
           "not_in_record": s["not_in_record"]}
    assert "| - |" in pr.markdown({"old": old}), "a summary written before the split still renders"


def test_gold_citations_by_the_generator_and_by_attribution_are_counted_apart(tmp_path) -> None:
    import json
    from types import SimpleNamespace

    answers = [_answer([("Gout is arthritis [1].", [1], True, False)], {1: None}),  # the generator's marker
               _answer([("Gout is arthritis [1].", [1], True, True)], {1: None}),  # added by attribution
               _answer([], {1: None})]  # retrieved, never cited

    class _Assistant:
        index = SimpleNamespace(children=[], version="v")

        def ask_many(self, questions, batch_size, on_answer, withhold=None):
            return answers[:len(questions)]

    qs = [{"doc_id": f"a{i}", "question": "q", "title": "Gout", "gold": ["d1"], "siblings": []} for i in range(3)]
    s = grounded.evaluate(_Assistant(), qs, tmp_path / "run", withheld=set())
    a = s["answerable"]
    assert a["cites_gold"]["k"] == 2 and a["cites_gold_model"]["k"] == 1 and a["cites_gold_attributed"]["k"] == 1
    assert "only by attribution" in grounded.markdown({"tuned": s})
    rows = [json.loads(x) for x in (tmp_path / "run" / "answers.jsonl").read_text().splitlines()]
    assert [r["answerable"]["cites_gold_attributed"] for r in rows] == [False, True, False]
    p = grounded.paired(tmp_path / "run", tmp_path / "run")
    assert p["answerable.cites_gold_model"]["n"] == 3 and p["answerable.cites_gold"]["only_a"] == 0


def test_patient_record_questions_need_the_rebuilt_data(tmp_path) -> None:
    from eval.patient_records import questions
    from rag.errors import InputError

    (tmp_path / "test.jsonl").write_text('{"part": "hf_risk", "prompt": [], "completion": [], "meta": {}}\n')
    with pytest.raises(InputError, match="train data"):
        questions(tmp_path)


def test_paired_comparison_counts_discordant_questions(tmp_path) -> None:
    import json
    from pathlib import Path

    def run(name: str, cites: list[bool], abstains: list[bool]) -> Path:
        d = tmp_path / name
        d.mkdir()
        rows = [{"doc_id": f"a{i}", "answerable": {"cites_gold": c, "abstained": False}} for i, c in enumerate(cites)]
        rows += [{"doc_id": f"w{i}", "withheld": {"abstained": w}} for i, w in enumerate(abstains)]
        (d / "answers.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        return d

    a = run("a", [True, True, False, False], [False, False, False])
    b = run("b", [True, False, True, True], [True, True, True])
    p = grounded.paired(a, b)
    assert p["answerable.cites_gold"] == {"n": 4, "only_a": 1, "only_b": 2, "mcnemar_p": 1.0}
    assert p["withheld.abstained"]["only_b"] == 3 and p["withheld.abstained"]["mcnemar_p"] == 0.25
    assert grounded.mcnemar_p(0, 10) < 0.01  # eval.mcq.stats, the one McNemar
