"""The heart-failure points rule and the reading of a stated risk category (shared by the layers).

The rule gives points for the measurements of the UCI heart-failure records in the direction and
rough weight of published heart-failure risk models (MAGGIC: age, LVEF, creatinine, male sex,
diabetes, smoking; the Seattle HF model: hyponatraemia, anaemia), with thresholds fixed here, not
fitted to the data. The training targets (``finetune/hf_cases.py``) are derived from it, the
``eval hf-risk`` evaluation and the generator-working checks read replies with it, and the ``risk``
command compares the validated model with it. It lives in the runtime package so that the runtime
never imports the training code (issue 17); ``finetune`` and ``eval`` import it from here.

Follow-up ``time`` and the outcome are never inputs.
"""

from __future__ import annotations

import re
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

# The rule's tables. The prompt states them (rule_text), so the model applies a written rule
# instead of having to infer it from a few hundred examples.
EF_BANDS = ((20, 7, "severely reduced"), (25, 6, "severely reduced"), (30, 5, "markedly reduced"),
            (35, 3, "reduced"), (40, 2, "reduced"))  # (LVEF below %, points, word)
AGE_BANDS = ((80, 6), (75, 5), (70, 4), (65, 3), (60, 2), (55, 1))  # (age at least, points)
# (creatinine at least mg/dL, the same in µmol/L as narratives print it, points, word). The µmol/L
# column is the mg/dL threshold x 88.4 rounded as the narrative rounds, so both units give the
# same points for every record (tested on the UCI data).
CREATININE_BANDS = ((2.8, 248, 6, "severely raised"), (2.4, 212, 5, "markedly raised"), (1.9, 168, 4, "raised"),
                    (1.7, 150, 3, "raised"), (1.5, 133, 2, "mildly raised"), (1.3, 115, 1, "mildly raised"))
HYPONATRAEMIA_BELOW = 135
FLAT_POINTS = {"hyponatraemia": 2, "diabetes": 2, "anaemia": 1, "current smoking": 1, "male sex": 1}


@dataclass(frozen=True)
class Factor:
    points: int
    text: str


def ef_points(ef: float) -> Factor | None:
    for below, pts, word in EF_BANDS:
        if ef < below:
            return Factor(pts, f"{word} LVEF ({ef:g}%)")
    return None


def age_points(age: float) -> Factor | None:
    for lo, pts in AGE_BANDS:
        if age >= lo:
            return Factor(pts, f"age {age:g} years")
    return None


# The first rule (format "category_first", the committed adapter's data) banded creatinine in
# µmol/L; the stated rule of format "working" bands it in mg/dL so that both units of a narrative
# score alike. They differ only just below each threshold (e.g. 1.25-1.29 mg/dL).
CREATININE_BANDS_V1 = ((250, 6, "severely raised"), (210, 5, "markedly raised"), (170, 4, "raised"),
                       (150, 3, "raised"), (130, 2, "mildly raised"), (110, 1, "mildly raised"))
FORMATS = ("category_first", "working")


def creatinine_points(cr: float, fmt: str = "working") -> Factor | None:
    if fmt == "category_first":
        bands = [(cr * 88.4 >= umol, pts, word) for umol, pts, word in CREATININE_BANDS_V1]
    else:
        bands = [(cr >= lo, pts, word) for lo, _umol, pts, word in CREATININE_BANDS]
    for reached, pts, word in bands:
        if reached:
            return Factor(pts, f"{word} serum creatinine ({cr:g} mg/dL), indicating renal dysfunction")
    return None


def risk_factors(r: HFRecord, missing: frozenset[str] = frozenset(), fmt: str = "working") -> list[Factor]:
    """The factors (with points) the rule finds, skipping measurements that are missing."""
    flat = FLAT_POINTS
    out: list[Factor | None] = [
        None if "ejection_fraction" in missing else ef_points(r.ejection_fraction),
        None if "age" in missing else age_points(r.age),
        None if "serum_creatinine" in missing else creatinine_points(r.serum_creatinine, fmt),
        Factor(flat["hyponatraemia"], f"hyponatraemia (sodium {r.serum_sodium:g} mEq/L)")
        if "serum_sodium" not in missing and r.serum_sodium < HYPONATRAEMIA_BELOW else None,
        Factor(flat["anaemia"], "anaemia") if r.anaemia else None,
        Factor(flat["diabetes"], "diabetes") if r.diabetes else None,
        Factor(flat["current smoking"], "current smoking") if r.smoking else None,
        Factor(flat["male sex"], "male sex") if r.male else None,
    ]
    return sorted((f for f in out if f is not None), key=lambda f: -f.points)


def rule_text() -> str:
    """The points rule in words, generated from the tables above (the system prompt states it)."""
    ef, lo = [], 0
    for below, pts, _ in EF_BANDS:
        ef.append(f"below {below}% +{pts}" if lo == 0 else f"{lo}-{below - 1}% +{pts}")
        lo = below
    age, hi = [], 0
    for lo, pts in AGE_BANDS:
        age.append(f"{lo}+ +{pts}" if hi == 0 else f"{lo}-{hi - 1} +{pts}")
        hi = lo
    cr = ", ".join(f"{mg:g}+ mg/dL ({um}+ µmol/L) +{pts}" for mg, um, pts, _ in CREATININE_BANDS)
    flat = "; ".join(f"{k} +{v}" for k, v in FLAT_POINTS.items()).replace(
        "hyponatraemia", f"sodium below {HYPONATRAEMIA_BELOW} mEq/L")
    return (f"Risk rule (add the points): LVEF {', '.join(ef)}; age {', '.join(age)}; serum creatinine {cr}; "
            f"{flat}. Total below {INTERMEDIATE_AT} low, {INTERMEDIATE_AT}-{HIGH_AT - 1} intermediate, "
            f"{HIGH_AT} or more high.")


def risk_points(r: HFRecord, missing: frozenset[str] = frozenset(), fmt: str = "working") -> int:
    return sum(f.points for f in risk_factors(r, missing, fmt))


def category_of(points: int) -> str:
    return "high" if points >= HIGH_AT else "intermediate" if points >= INTERMEDIATE_AT else "low"


def risk_category(r: HFRecord, missing: frozenset[str] = frozenset(), fmt: str = "working") -> str:
    return category_of(risk_points(r, missing, fmt))


@dataclass(frozen=True)
class Working:
    """What a reply in the target format wrote: each factor's points, the total, the category."""

    points: tuple[int, ...]
    total: int | None
    category: str | None

    @property
    def adds_up(self) -> bool:
        """The written points sum to the written total, and the total gives the written category."""
        return (self.total is not None and self.category is not None and sum(self.points) == self.total
                and category_of(self.total) == self.category)


_POINTS_LINE = re.compile(r"risk points:(.*)", re.I)
_TOTAL = re.compile(r"total:\s*(\d+)\s*points?", re.I)

# The category is read only where the reply states it *as the risk category*. Reading the first
# category word anywhere took "high blood pressure", "low ejection fraction" or the legend
# "(low below 6, ...)" for a category, and flattered replies that never stated one (issue 12).
_WORD = r"(low|intermediate|moderate|high)"
# What may follow a stated category: the clause ends, or a word that cannot make it a measurement
# ("risk: high blood pressure" and "risk: low ejection fraction" are not categories).
_STATED_END = (r"(?=\**\s*(?:$|[.,;:!?()\n]|[-–—]\s|-?\s*risk\b|(?:category|overall|given|because|due|based|as|"
               r"for|with|in|on|and|but|since|owing|according|by|under|per|if|until)\b))")
# "Risk category: high", "Provisional risk category: intermediate", "Risk: high", "the risk is **moderate**".
_LABELLED = re.compile(r"\brisk(?:\s+(?:category|level|group|class|tier))?\s*(?:is|was|would be|:|=)?\s*"
                       r"(?:considered\s+)?\**\s*" + _WORD + _STATED_END, re.I)
# "high risk", "low-risk", "is at intermediate risk"; a range ("intermediate-to-high risk") names two.
_QUALIFIED = re.compile(r"(?:\b" + _WORD + r"(?:\s*[-–/]\s*|\s*-?\s*\b(?:to|or)\b\s*-?\s*))?\b" + _WORD +
                        r"[-\s]+risk\b(?!\s*-?\s*(?:factors?|features?|markers?)\b)", re.I)
# "not high risk", "not at high risk", "rather than low risk": the category is denied, not stated.
_DENIED = re.compile(r"(?:\bnot|\bno|\bnever|n't|\brather than|\binstead of|\bnor)\s+"
                     r"(?:(?:at|a|an|the|in|of|be|considered)\s+){0,3}$", re.I)


def _category(word: str) -> str:
    word = word.lower()
    return "intermediate" if word == "moderate" else word


def stated_category(text: str) -> str | None:
    """The risk category ``text`` states, or None when it states none or states conflicting ones.

    A labelled statement ("Risk category: high", "Risk: high", "the risk is moderate") is read
    first; else a qualified "high risk" / "is at low risk" phrase that is not denied ("not at high
    risk"). Category words about anything else ("high blood pressure", "low ejection fraction",
    "high creatinine", "high-risk features", the thresholds legend) are not read. "moderate" is
    intermediate. Two different categories (two labels, or a range such as "intermediate-to-high
    risk") are no statement: the caller counts the reply as unparsed.
    """
    labelled = {_category(m.group(1)) for m in _LABELLED.finditer(text)}
    if labelled:
        return labelled.pop() if len(labelled) == 1 else None
    qualified: set[str] = set()
    for m in _QUALIFIED.finditer(text):
        if _DENIED.search(text[:m.start()]):
            continue
        qualified.update(_category(w) for w in m.groups() if w)
    return qualified.pop() if len(qualified) == 1 else None


def read_working(reply: str) -> Working:
    """Parse a reply's working (missing parts are None/empty); the format is ``finetune.hf_cases.working``."""
    line = _POINTS_LINE.search(reply)
    points = tuple(int(x) for x in re.findall(r"\+\s*(\d+)", line.group(1))) if line else ()
    total = _TOTAL.search(reply)
    return Working(points, int(total.group(1)) if total else None, stated_category(reply))


def creatinine_umol(mg_dl: float) -> str:
    """Serum creatinine in µmol/L as narratives print it (the rule's µmol/L column assumes this rounding)."""
    return f"{mg_dl * 88.4:.0f}"
