"""Heart-failure case narratives and their rule-based risk assessments (training part 3).

The risk label is **derived from the patient's measurements by a fixed points rule, never
from the outcome**. The points follow the direction and rough weight of the predictors in
published heart-failure risk models (MAGGIC: age, LVEF, creatinine, male sex, diabetes,
smoking; the Seattle HF model: hyponatraemia, anaemia), restricted to the variables the UCI
records have. The thresholds are fixed here, not fitted to the data: the model learns a
transparent clinical rule, and the evaluation asks whether the categories it states separate
the patients who died (``DEATH_EVENT``, read only by the evaluation) as well as a logistic
regression fitted on the same features.

Follow-up ``time`` is never used: it is tied to the outcome. Targets never state an outcome.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from corpora.heart_failure import HFRecord

CATEGORIES = ("low", "intermediate", "high")
# Measurements a variant may lack; each with why it matters (said in the target).
KEY_MEASUREMENTS: dict[str, str] = {
    "ejection_fraction": "left ventricular ejection fraction (it defines the heart-failure phenotype, "
                         "HFrEF/HFmrEF/HFpEF, and is one of the strongest prognostic markers)",
    "serum_creatinine": "serum creatinine (renal dysfunction is one of the strongest predictors of adverse "
                        "outcome in heart failure and guides diuretic and RAAS-inhibitor dosing)",
    "serum_sodium": "serum sodium (hyponatraemia marks neurohormonal activation and worse prognosis)",
    "age": "age (risk rises steeply with age in every heart-failure risk model)",
}
HIGH_AT, INTERMEDIATE_AT = 12, 6  # points; fixed thresholds (see module docstring)


@dataclass(frozen=True)
class Factor:
    points: int
    text: str


def _ef_points(ef: float) -> Factor | None:
    if ef < 20:
        return Factor(7, f"severely reduced LVEF ({ef:g}%)")
    if ef < 25:
        return Factor(6, f"severely reduced LVEF ({ef:g}%)")
    if ef < 30:
        return Factor(5, f"markedly reduced LVEF ({ef:g}%)")
    if ef < 35:
        return Factor(3, f"reduced LVEF ({ef:g}%)")
    if ef < 40:
        return Factor(2, f"reduced LVEF ({ef:g}%)")
    return None


def _age_points(age: float) -> Factor | None:
    for lo, pts in ((80, 6), (75, 5), (70, 4), (65, 3), (60, 2), (55, 1)):
        if age >= lo:
            return Factor(pts, f"age {age:g} years")
    return None


def _creatinine_points(cr: float) -> Factor | None:
    umol = cr * 88.4
    for lo, pts, word in ((250, 6, "severely raised"), (210, 5, "markedly raised"), (170, 4, "raised"),
                          (150, 3, "raised"), (130, 2, "mildly raised"), (110, 1, "mildly raised")):
        if umol >= lo:
            return Factor(pts, f"{word} serum creatinine ({cr:g} mg/dL), indicating renal dysfunction")
    return None


def risk_factors(r: HFRecord, missing: frozenset[str] = frozenset()) -> list[Factor]:
    """The factors (with points) the rule finds, skipping measurements that are missing."""
    out: list[Factor | None] = [
        None if "ejection_fraction" in missing else _ef_points(r.ejection_fraction),
        None if "age" in missing else _age_points(r.age),
        None if "serum_creatinine" in missing else _creatinine_points(r.serum_creatinine),
        Factor(2, f"hyponatraemia (sodium {r.serum_sodium:g} mEq/L)")
        if "serum_sodium" not in missing and r.serum_sodium < 135 else None,
        Factor(1, "anaemia") if r.anaemia else None,
        Factor(2, "diabetes") if r.diabetes else None,
        Factor(1, "current smoking") if r.smoking else None,
        Factor(1, "male sex") if r.male else None,
    ]
    return sorted((f for f in out if f is not None), key=lambda f: -f.points)


def risk_points(r: HFRecord, missing: frozenset[str] = frozenset()) -> int:
    return sum(f.points for f in risk_factors(r, missing))


def risk_category(r: HFRecord, missing: frozenset[str] = frozenset()) -> str:
    pts = risk_points(r, missing)
    return "high" if pts >= HIGH_AT else "intermediate" if pts >= INTERMEDIATE_AT else "low"


# -- narratives ----------------------------------------------------------------------------------
def _sex(r: HFRecord, rng: random.Random) -> str:
    return rng.choice(["man", "male patient"]) if r.male else rng.choice(["woman", "female patient"])


def _creatinine(v: float, rng: random.Random) -> str:
    if rng.random() < 0.3:
        return f"serum creatinine {v * 88.4:.0f} µmol/L"
    return f"serum creatinine {v:g} mg/dL"


def _platelets(v: float, rng: random.Random) -> str:
    if rng.random() < 0.5:
        return f"platelets {v / 1000:.0f} ×10^9/L"
    return f"platelet count {round(v):,}/µL"


def _history(r: HFRecord, rng: random.Random) -> str:
    has = [n for n, v in (("diabetes", r.diabetes), ("hypertension", r.high_blood_pressure),
                          ("anaemia", r.anaemia)) if v]
    lacks = [n for n, v in (("diabetes", r.diabetes), ("hypertension", r.high_blood_pressure),
                            ("anaemia", r.anaemia)) if not v]
    parts = []
    if has:
        parts.append("history of " + ", ".join(has))
    if lacks:
        parts.append(rng.choice(["no ", "no known "]) + " or ".join(lacks))
    parts.append("current smoker" if r.smoking else rng.choice(["non-smoker", "does not smoke"]))
    return "; ".join(parts)


def narrative(r: HFRecord, rng: random.Random, missing: frozenset[str] = frozenset()) -> str:
    """A varied clinical case description of one record; ``missing`` measurements are left out."""
    age = "" if "age" in missing else f"{r.age:g}-year-old "
    opener = rng.choice([
        f"A {age}{_sex(r, rng)} with chronic heart failure is seen in clinic.",
        f"Case: {age}{_sex(r, rng)} followed for heart failure.",
        f"We review a {age}{_sex(r, rng)} admitted with decompensated heart failure, now stable.",
        f"Referral: {age}{_sex(r, rng)}, known heart failure, for risk stratification.",
    ])
    if not age:
        opener += " " + rng.choice(["Age is not recorded.", "Date of birth not available."])
    labs = [f"CPK {r.creatinine_phosphokinase:g} mcg/L", _platelets(r.platelets, rng)]
    if "serum_creatinine" not in missing:
        labs.append(_creatinine(r.serum_creatinine, rng))
    if "serum_sodium" not in missing:
        labs.append(f"sodium {r.serum_sodium:g} mEq/L")
    rng.shuffle(labs)
    echo = ("No echocardiogram result is available yet." if "ejection_fraction" in missing
            else rng.choice([f"Echocardiography shows an LVEF of {r.ejection_fraction:g}%.",
                             f"Most recent echo: ejection fraction {r.ejection_fraction:g}%.",
                             f"LVEF {r.ejection_fraction:g}% on transthoracic echocardiography."]))
    history = _history(r, rng)
    body = [opener, f"{history[:1].upper()}{history[1:]}.", f"Labs: {', '.join(labs)}.", echo]
    if rng.random() < 0.5:
        body[1:] = rng.sample(body[1:], len(body) - 1)
    return " ".join(body)


QUESTIONS = (
    "Assess this patient's risk and name the factors driving it.",
    "What is this patient's risk category, and why?",
    "Give a risk assessment for this heart-failure patient.",
    "How would you stratify this patient's risk?",
)


def assessment(r: HFRecord, missing: frozenset[str] = frozenset()) -> str:
    """The target: a category and its drivers in clinical terms; names missing data. Never an outcome."""
    cat = risk_category(r, missing)
    factors = risk_factors(r, missing)
    lines = []
    if missing:
        lines.append(f"Provisional risk category: {cat} (incomplete data).")
        for m in sorted(missing):
            lines.append(f"Missing: {KEY_MEASUREMENTS[m]}.")
        lines.append("Obtain the missing measurements before relying on this category; it may be "
                     "underestimated.")
    else:
        lines.append(f"Risk category: {cat}.")
    if factors:
        lines.append("Main factors: " + "; ".join(f.text for f in factors[:4]) + ".")
    else:
        lines.append("Main factors: no major adverse risk marker among the recorded measurements.")
    if "ejection_fraction" not in missing and r.ejection_fraction >= 50:
        lines.append("Preserved ejection fraction (HFpEF range).")
    return "\n".join(lines)


def variants(r: HFRecord, rng: random.Random, complete: int, with_missing: int) -> list[tuple[str, str, list[str]]]:
    """(user message, target, missing measurements) variants of one record."""
    out: list[tuple[str, str, list[str]]] = []
    keys = sorted(KEY_MEASUREMENTS)
    for i in range(complete + with_missing):
        missing = frozenset(rng.sample(keys, rng.choice([1, 1, 2]))) if i >= complete else frozenset()
        user = f"{narrative(r, rng, missing)}\n\n{rng.choice(QUESTIONS)}"
        out.append((user, assessment(r, missing), sorted(missing)))
    return out

