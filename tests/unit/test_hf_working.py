"""The checks of a generator's points working (eval hf-risk), against the trained narratives and targets."""

from __future__ import annotations

import random

import pytest

from corpora.heart_failure import HFRecord
from eval.hf_working import case_prompt, check_reply
from finetune import hf_cases


def _records(n: int, seed: int = 0) -> list[HFRecord]:
    rng = random.Random(seed)
    return [HFRecord(patient_id=f"HF{i:03d}", age=float(rng.choice([45, 58, 60.667, 66, 72, 77, 85])),
                     anaemia=rng.random() < 0.4, creatinine_phosphokinase=float(rng.randint(30, 3000)),
                     diabetes=rng.random() < 0.4, ejection_fraction=float(rng.choice([15, 20, 25, 30, 38, 45, 60])),
                     high_blood_pressure=rng.random() < 0.4, platelets=float(rng.randint(100, 500) * 1000),
                     serum_creatinine=rng.choice([0.7, 1.18, 1.3, 1.5, 1.83, 2.1, 2.5, 3.2, 9.4]),
                     serum_sodium=float(rng.randint(125, 146)), male=rng.random() < 0.6, smoking=rng.random() < 0.3)
            for i in range(n)]


def _cases(with_points: bool = False) -> list:
    out = []
    for r in _records(60):
        rng = random.Random(r.patient_id)
        for user, target, missing in hf_cases.variants(r, rng, complete=2, with_missing=1):
            case = user.rsplit("\n\n", 1)[0]
            out.append((case, target, hf_cases.risk_points(r, frozenset(missing))) if with_points else (case, target))
    return out


def test_the_case_reader_scores_every_narrative_phrasing_as_the_rule_does() -> None:
    """Units (mg/dL, µmol/L), orders, negations, missing measurements: the text alone gives the rule's points."""
    from eval.hf_working import case_factors

    for case, _target, points in _cases(with_points=True):
        assert sum(case_factors(case).values()) == points, case


def test_every_training_target_passes_its_own_checks() -> None:
    """The targets are right by construction, over every narrative phrasing (units, negations, order)."""
    for case, target in _cases():
        a = check_reply(target, case)
        assert a.checked, (case, target, a.problems)
        assert a.total == a.rule_total and all(f.ok for f in a.factors)


@pytest.mark.parametrize("spoil,problem", [
    (lambda t: t.replace("Total: ", "Total: 1"), "does not add up"),
    (lambda t: t.replace("Risk points: ", "Risk points: diabetes +2; ") if "diabetes" not in t else
     t.replace("diabetes +2", "diabetes +5"), "diabetes"),
    (lambda t: t.replace("Risk category: ", "Risk category: x") if "Provisional" not in t else t.replace(
        "Provisional risk category: ", "Provisional risk category: x"), "no risk category"),
])
def test_spoiled_replies_are_flagged(spoil, problem: str) -> None:
    flagged = 0
    for case, target in _cases()[:40]:
        a = check_reply(spoil(target), case)
        flagged += any(problem in p for p in a.problems)
        assert not a.checked or spoil(target) == target
    assert flagged >= 30


def test_invented_values_and_negated_history_are_flagged() -> None:
    case = ("A 72-year-old woman with heart failure. No diabetes or anaemia; non-smoker. "
            "LVEF 30% on echo. Labs: serum creatinine 133 µmol/L, sodium 138 mEq/L.")
    good = ("Risk points: age 72 years +4; reduced LVEF (30%) +3; mildly raised serum creatinine (1.5 mg/dL), "
            "indicating renal dysfunction +2.\nTotal: 9 points (low below 6, intermediate 6-11, high 12 or more).\n"
            "Risk category: intermediate.")
    assert check_reply(good, case).checked, check_reply(good, case).problems  # 1.5 mg/dL is the 133 µmol/L
    invented = good.replace("reduced LVEF (30%) +3", "severely reduced LVEF (20%) +6").replace("Total: 9", "Total: 12")
    a = check_reply(invented.replace("intermediate.", "high."), case)
    assert any("not in the case" in p for p in a.problems)
    negated = good.replace("+2.\n", "+2; diabetes +2; current smoking +1.\n").replace("Total: 9", "Total: 12")
    a = check_reply(negated.replace("intermediate.", "high."), case)
    assert sum("not in the case" in p for p in a.problems) == 2 and a.adds_up


def test_left_out_factors_and_a_wrong_phenotype_are_flagged() -> None:
    case = ("A 72-year-old man with chronic heart failure. History of diabetes; no hypertension or anaemia; current "
            "smoker. LVEF 25% on echo. Labs: serum creatinine 1.9 mg/dL, sodium 133 mEq/L.")
    # What the tuned 0.5B model replied to this case (its arithmetic and lookups fail too).
    reply = ("Risk points: age 72 years +4; diabetes +2; current smoking +1; male sex +1.\nTotal: 8 points (low below "
             "6, intermediate 6-11, high 12 or more).\nRisk category: intermediate.\nPreserved ejection fraction "
             "(HFpEF range).")
    a = check_reply(reply, case)
    assert a.adds_up and all(f.ok for f in a.factors), "each written factor is right ..."
    left_out = [p for p in a.problems if "leaves it out" in p]
    assert len(left_out) == 3, a.problems  # ... but LVEF, creatinine and sodium are missing
    assert any("preserved" in p for p in a.problems)
    assert a.rule_total == 4 + 2 + 1 + 1 + 5 + 4 + 2 and a.to_dict()["rule_category"] == "high"


def test_the_trained_prompt_states_the_rule() -> None:
    case, _target = _cases()[0]
    messages = case_prompt(case)
    assert messages[0]["content"].endswith(hf_cases.rule_text()) and case in messages[1]["content"]
