"""The risk command's pipeline: extraction -> the committed model -> explanation, checks, sources, CLI."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from rag.errors import InputError
from rag.hf_model import RiskModel
from rag.risk import (
    assess,
    check_explanation,
    cite_guidelines,
    explain,
    explanation_prompt,
    generator_explanation,
    guidance_factors,
)

CASE = "72M HFrEF, EF 20%. PMH: T2DM, HTN. Ex-smoker. Na 131, Cr 2.1 mg/dL, Hb 11.8, Plt 210, CK 250."


@pytest.fixture(scope="module")
def model() -> RiskModel:
    return RiskModel.load()


def test_the_computation_uses_what_the_text_says(model: RiskModel) -> None:
    r = assess(CASE, model)
    assert r.inputs["ejection_fraction"] == 20 and r.inputs["male"] == 1 and r.inputs["smoking"] == 0
    assert r.inputs["anaemia"] == 1 and r.inputs["serum_creatinine"] == 2.1
    assert r.prediction.probability == pytest.approx(model.predict(r.inputs).probability)
    assert not r.missing and r.prediction.range is None
    assert any("former smoker" in n for n in r.notes)
    assert r.prediction.category == "high"


def test_missing_inputs_are_named_with_why_and_a_range(model: RiskModel) -> None:
    r = assess("80 yo woman, LVEF 30-35%, diabetic.", model)
    names = [m.input for m in r.missing]
    assert "serum_creatinine" in names and "serum_sodium" in names
    assert all(m.why for m in r.missing)
    assert r.bands == {"ejection_fraction": (30.0, 35.0)}
    lo, hi = r.prediction.range  # type: ignore[misc]
    assert lo < r.prediction.probability < hi
    text = explain(r)
    assert "between" in text and "serum creatinine" in text


@pytest.mark.parametrize("case,needle", [
    ("", "empty"), ("x" * 9000, "limit"), ("72M, LVEF 250%, Cr 1.2", "plausible range"),
    ("The clinic ran on time and the patient wants travel advice.", "no heart-failure data"),
    ("Na 0. Cr 1.5.", "plausible range"),
])
def test_bad_input_is_an_input_error(model: RiskModel, case: str, needle: str) -> None:
    with pytest.raises(InputError, match=needle):
        assess(case, model)


def test_the_template_passes_its_own_checks_on_every_labelled_case(model: RiskModel) -> None:
    """By construction: every factor, direction, number and the category in the template are the computation's."""
    from eval.hf_extraction import read_cases

    checked = 0
    for row in read_cases("all"):
        try:
            r = assess(row["text"], model)
        except InputError:
            continue
        r.explanation = explain(r)
        assert check_explanation(r.explanation, r) == [], (row["id"], r.explanation)
        checked += 1
    assert checked >= 110


@pytest.mark.parametrize("reply,problem", [
    ("Risk 80% (high). LVEF 20% raises the risk.", "number"),
    ("The risk is low. LVEF 20% raises the risk.", "category"),
    ("High risk. LVEF 20% lowers the risk.", "lowers"),
    ("High risk. Reduced LVEF (20%) lowers her risk.", "lowers"),
    ("High risk. The risk of death is high in the male sex.", "male sex raises"),
    ("High risk. Factors: female sex, LVEF 20%.", "the case has male sex"),
    ("High risk. Factors: LVEF 20%, no diabetes.", "the case has diabetes"),
    ("High risk. The patient is 64 years old.", "64"),
    ("High risk, driven by the NYHA class and a raised BNP. The platelet count raises it.", "platelet"),
])
def test_a_generator_explanation_that_fails_a_check_falls_back(model: RiskModel, reply: str, problem: str) -> None:
    r = assess("72M, EF 20%, Cr 2.1 mg/dL, Na 131, T2DM, HTN, current smoker, Hb 11.8, CK 250", model)
    r.prediction.contributions = [c for c in r.prediction.contributions if c.input != "platelets"]
    generator_explanation(r, lambda messages: reply)
    assert r.explained_by == "template" and r.explanation == explain(r)
    assert any(problem in p for p in r.generator_problems), r.generator_problems


def test_a_consistent_generator_explanation_is_kept(model: RiskModel) -> None:
    r = assess(CASE, model)
    p = r.prediction
    ef = next(c for c in p.contributions if c.input == "ejection_fraction")
    reply = (f"The estimated risk is {100 * p.probability:.0f}%, which is high risk. The reduced LVEF of 20% raises "
             f"it most (odds x{ef.odds_ratio:.2f}), and a raised creatinine adds to the risk.")
    generator_explanation(r, lambda messages: reply)
    assert r.explained_by == "generator" and r.generator_problems == [] and r.explanation == reply
    assert "20%" in explanation_prompt(r)[1]["content"]


def test_guideline_passages_are_cited_only_when_they_name_the_factor(model: RiskModel) -> None:
    r = assess(CASE, model)
    factors = guidance_factors(r)
    assert factors[0] == "ejection_fraction" and "age" not in factors  # age is not modifiable

    def chunk(cid: str, title: str, text: str) -> SimpleNamespace:
        return SimpleNamespace(chunk_id=cid, doc_id=cid, title=title, section="s", source="x.md", start=0,
                               end=len(text), text=text, kind="guideline")

    passages = {"ejection": [chunk("a", "HFrEF therapy", "In HFrEF, an ARNI is recommended.")],
                "kidney": [chunk("z", "Sepsis", "Give antibiotics within an hour."),
                           chunk("b", "CKD management", "Renal function guides RAAS inhibitor dosing.")]}

    def retrieve(query: str) -> list:
        return next((v for k, v in passages.items() if k in query), [chunk("a", "HFrEF therapy", "In HFrEF, an "
                                                                                "ARNI is recommended.")])

    cite_guidelines(r, retrieve)
    by_factor = {s.factor: s for s in r.sources}
    assert by_factor["ejection_fraction"].n == 1 and by_factor["serum_creatinine"].chunk_id == "b"
    assert "z" not in {s.chunk_id for s in r.sources}, "a passage that does not name the factor is not cited"
    text = explain(r)
    assert "[1]" in text and check_explanation(text, r) == []


def test_cli_json_plot_and_errors(tmp_path, capsys) -> None:
    import app

    png = tmp_path / "c.png"
    code = app.main(["risk", CASE, "--no-sources", "--json", "--plot", str(png)])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["category"] == "high" and out["contributions"] and "Not a medical device" in out["notice"]
    assert png.stat().st_size > 1000 and out["extracted"]["values"]["ejection_fraction"]["span"]
    code = app.main(["risk", CASE, "--no-sources"])
    text = capsys.readouterr().out
    assert code == 0 and "HEART-FAILURE RISK" in text and "COHORT" in text and "Not a medical device" in text
    empty = tmp_path / "e.txt"
    empty.write_text("  \n")
    for argv, needle in ((["risk", "--file", str(empty)], "empty"), (["risk", "LVEF 250%"], "plausible"),
                         (["risk", "Lovely weather today."], "no heart-failure data")):
        assert app.main([*argv, "--no-sources"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0]


def test_the_saved_generator_replies_still_fall_back_where_they_fail() -> None:
    """eval/hf_cases/explanations-default.json: the default preset's replies; every shown text is consistent."""
    from eval.bench_risk_explain import rescore
    from rag.config import PROJECT_ROOT

    saved = json.loads((PROJECT_ROOT / "eval" / "hf_cases" / "explanations-default.json").read_text())
    out = rescore(saved, "test")
    assert out["shown_consistent"] == out["cases"] == 8 and out["fallback_rate"] == 0.875


def test_a_present_modifiable_factor_is_cited_even_when_average_for_the_cohort(model: RiskModel) -> None:
    r = assess("68F, EF 30-35%, Na 138, creat 0.9 mg/dL, no DM, no HTN, non-smoker", model)
    ef = next(c for c in r.prediction.contributions if c.input == "ejection_fraction")
    assert ef.log_odds < 0, "32.5% is a little better than the cohort's average: it does not raise the risk"
    assert guidance_factors(r) == ["ejection_fraction"], "an LVEF of 40% or less still calls for HFrEF therapy"
