"""Heart-failure case narratives and their rule-based risk assessments (training part 3).

The risk label is **derived from the patient's measurements by a fixed points rule, never
from the outcome**. The points follow the direction and rough weight of the predictors in
published heart-failure risk models (MAGGIC: age, LVEF, creatinine, male sex, diabetes,
smoking; the Seattle HF model: hyponatraemia, anaemia), restricted to the variables the UCI
records have. The thresholds are fixed in ``rag/hf_rule.py`` (shared with the runtime, which
must not import this training module), not fitted to the data: the model learns a transparent
clinical rule, and the evaluation asks whether the categories it states separate the patients
who died (``DEATH_EVENT``, read only by the evaluation) as well as a logistic regression fitted
on the same features.

Follow-up ``time`` is never used: it is tied to the outcome. Targets never state an outcome.
"""

from __future__ import annotations

import random

from corpora.heart_failure import HFRecord
from rag.hf_rule import (
    AGE_BANDS,
    CATEGORIES,
    CREATININE_BANDS,
    CREATININE_BANDS_V1,
    EF_BANDS,
    FLAT_POINTS,
    FORMATS,
    HIGH_AT,
    HYPONATRAEMIA_BELOW,
    INTERMEDIATE_AT,
    KEY_MEASUREMENTS,
    Factor,
    Working,
    age_points,
    category_of,
    creatinine_points,
    creatinine_umol,
    ef_points,
    read_working,
    risk_category,
    risk_factors,
    risk_points,
    rule_text,
    stated_category,
)

# The rule lives in the runtime (rag.hf_rule) so that the runtime never imports training code; it is
# re-exported here for the training data and its tests.
__all__ = [
    "AGE_BANDS",
    "CATEGORIES",
    "CREATININE_BANDS",
    "CREATININE_BANDS_V1",
    "EF_BANDS",
    "FLAT_POINTS",
    "FORMATS",
    "HIGH_AT",
    "HYPONATRAEMIA_BELOW",
    "INTERMEDIATE_AT",
    "KEY_MEASUREMENTS",
    "QUESTIONS",
    "Factor",
    "Working",
    "age_points",
    "category_of",
    "creatinine_points",
    "creatinine_umol",
    "ef_points",
    "narrative",
    "read_working",
    "risk_category",
    "risk_factors",
    "risk_points",
    "rule_text",
    "stated_category",
    "variants",
]


# -- narratives ----------------------------------------------------------------------------------
def _sex(r: HFRecord, rng: random.Random) -> str:
    return rng.choice(["man", "male patient"]) if r.male else rng.choice(["woman", "female patient"])


def _creatinine(v: float, rng: random.Random) -> str:
    if rng.random() < 0.3:
        return f"serum creatinine {creatinine_umol(v)} µmol/L"
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


def assessment(r: HFRecord, missing: frozenset[str] = frozenset(), fmt: str = "working") -> str:
    """The target in format ``fmt`` (see :data:`FORMATS`)."""
    return (category_first(r, missing) if fmt == "category_first" else working(r, missing))


def category_first(r: HFRecord, missing: frozenset[str] = frozenset()) -> str:
    """The committed adapter's target: the category, then up to four factors. Never an outcome.

    An adapter trained on it (80 examples) stated "low" for every held-out patient (BENCHMARKS.md).
    """
    fmt = "category_first"
    cat = risk_category(r, missing, fmt)
    factors = risk_factors(r, missing, fmt)
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


def working(r: HFRecord, missing: frozenset[str] = frozenset()) -> str:
    """The target: the rule's points, their total, then the category; names missing data. Never an outcome.

    The points come *before* the category on purpose: an adapter trained on "category first"
    collapsed to one category, since a 0.5B model cannot add up nine weighted measurements
    silently before its first token. Writing each factor's points and the total first makes the
    category a threshold on a number just written, shows the clinician the working as a risk
    calculator does, and lets ``eval/hf_working.py`` check it. The system prompt states the rule
    (:func:`rule_text`). An adapter trained on 128 such examples still got the lookups wrong
    (BENCHMARKS.md), so this is format ``working``, not the default.
    """
    cat = risk_category(r, missing)
    factors = risk_factors(r, missing)
    lines = [f"Missing: {KEY_MEASUREMENTS[m]}." for m in sorted(missing)]
    if factors:
        lines.append("Risk points: " + "; ".join(f"{f.text} +{f.points}" for f in factors) + ".")
    else:
        lines.append("Risk points: no adverse risk marker among the recorded measurements.")
    legend = f"low below {INTERMEDIATE_AT}, intermediate {INTERMEDIATE_AT}-{HIGH_AT - 1}, high {HIGH_AT} or more"
    lines.append(f"Total: {sum(f.points for f in factors)} points ({legend}).")
    if missing:
        lines.append(f"Provisional risk category: {cat} (incomplete data). Obtain the missing measurements "
                     "before relying on this category; it may be underestimated.")
    else:
        lines.append(f"Risk category: {cat}.")
    if "ejection_fraction" not in missing and r.ejection_fraction >= 50:
        lines.append("Preserved ejection fraction (HFpEF range).")
    return "\n".join(lines)


def variants(r: HFRecord, rng: random.Random, complete: int, with_missing: int,
             fmt: str = "working") -> list[tuple[str, str, list[str]]]:
    """(user message, target, missing measurements) variants of one record."""
    out: list[tuple[str, str, list[str]]] = []
    keys = sorted(KEY_MEASUREMENTS)
    for i in range(complete + with_missing):
        missing = frozenset(rng.sample(keys, rng.choice([1, 1, 2]))) if i >= complete else frozenset()
        user = f"{narrative(r, rng, missing)}\n\n{rng.choice(QUESTIONS)}"
        out.append((user, assessment(r, missing, fmt), sorted(missing)))
    return out

