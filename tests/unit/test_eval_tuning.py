"""The base-vs-tuned measurements: category parsing, AUROC, the regression baseline, grounded shares."""

from __future__ import annotations

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
])
def test_parse_category(text: str, cat: str | None) -> None:
    assert parse_category(text) == cat


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
    assert states_value("Yes, the record lists diabetes [1].", True)
    assert states_value("No, the record states no diabetes [1].", False)
    assert not states_value("The record does not list diabetes [1].", True)


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
    assert grounded._mcnemar_p(0, 10) < 0.01
