"""Heart-failure risk assessment of a case description, with the generator's working checked.

The adapter is trained (finetune/hf_cases.py) to answer a case description under a stated
points rule: each factor with its points, the total, then the category. A small model's
arithmetic and lookups fail in ways that read fluently, so the reply is checked before it is
shown as an assessment:

- the working adds up: the points sum to the total and the total gives the category;
- each factor's points are the rule's for the value the factor names;
- each value a factor names is in the case description (no invented measurement), and a
  yes/no factor (diabetes, anaemia, smoking) is not one the description negates.

A failed check makes the assessment low confidence, shown first; the category stays the
model's, and the rule's total over the factors the model named is shown beside it, so a
disagreement is visible rather than silently corrected. The rule's measurements are also
read from the case text (:func:`case_factors`, patterns for the usual ways of writing them), so a
factor the reply leaves out is flagged and the rule's own total for the case is shown beside the
model's; a measurement written in a form the patterns do not read goes unchecked.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from finetune import hf_cases
from rag.cite import NEGATION
from rag.errors import InputError

MAX_CASE_CHARS = 8000  # a case description, not a record dump: the prompt must fit the model's window

_NUM = r"(\d+(?:\.\d+)?)"
_FLAT_TERMS = {"anaemia": ("anaemia", "anemia"), "diabetes": ("diabetes", "diabetic"),
               "current smoking": ("smok",), "male sex": ("male", "man", "gentleman")}


@dataclass
class FactorCheck:
    text: str
    kind: str | None  # the rule's factor it is (ejection_fraction, age, ..., "diabetes"), None if none
    points: int
    rule_points: int | None  # None: not a factor of the rule
    value_in_case: bool

    @property
    def ok(self) -> bool:
        return self.rule_points == self.points and self.value_in_case


@dataclass
class RiskAssessment:
    reply: str
    category: str | None
    total: int | None
    factors: list[FactorCheck] = field(default_factory=list)
    adds_up: bool = False
    problems: list[str] = field(default_factory=list)
    generator: str = ""
    adapter: str | None = None

    @property
    def checked(self) -> bool:
        return not self.problems

    case_points: dict[str, int] = field(default_factory=dict)  # the rule's factors read from the case text

    @property
    def rule_total(self) -> int:
        """The rule applied to what the case text states (as far as :func:`case_factors` reads it)."""
        return sum(self.case_points.values())

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(checked=self.checked, rule_total=self.rule_total,
                 rule_category=hf_cases.category_of(self.rule_total))
        return d


def _clauses(text: str) -> list[str]:
    return [c for c in re.split(r"[.;:\n]", text) if c.strip()]


def _mentioned(terms: tuple[str, ...], case: str) -> bool:
    """Some clause of the case names a term without a negation before it ("no diabetes", "non-smoker")."""
    for clause in _clauses(case):
        for t in terms:
            m = re.search(rf"\b{t}", clause, re.I)
            if m and not NEGATION.search(clause[:m.start()]):
                return True
    return False


def _has_number(value: str, case: str) -> bool:
    return re.search(rf"(?<![\d.]){re.escape(value)}(?![\d])", case) is not None


def check_factor(text: str, points: int, case: str) -> FactorCheck:
    """The rule's points for one written factor, and whether its value is in the case."""
    t = text.lower()
    if m := re.search(rf"lvef \({_NUM}%\)|ejection fraction \({_NUM}%\)", t):
        v = m.group(1) or m.group(2)
        f = hf_cases.ef_points(float(v))
        return FactorCheck(text, "ejection_fraction", points, f.points if f else 0, _has_number(v, case))
    if m := re.search(rf"age {_NUM}", t):
        f = hf_cases.age_points(float(m.group(1)))
        return FactorCheck(text, "age", points, f.points if f else 0, _has_number(m.group(1), case))
    if m := re.search(rf"creatinine \({_NUM} mg/dl\)", t):
        f = hf_cases.creatinine_points(float(m.group(1)))
        seen = _has_number(m.group(1), case) or _has_number(hf_cases.creatinine_umol(float(m.group(1))), case)
        return FactorCheck(text, "serum_creatinine", points, f.points if f else 0, seen)
    if m := re.search(rf"sodium {_NUM}", t):
        low = float(m.group(1)) < hf_cases.HYPONATRAEMIA_BELOW
        return FactorCheck(text, "serum_sodium", points, hf_cases.FLAT_POINTS["hyponatraemia"] if low else 0,
                           _has_number(m.group(1), case))
    for name, terms in _FLAT_TERMS.items():
        if any(x in t for x in (name, *terms)):
            return FactorCheck(text, name, points, hf_cases.FLAT_POINTS[name], _mentioned(terms, case))
    return FactorCheck(text, None, points, None, False)


_MALE = re.compile(r"\b(?:man|male|gentleman|mr)\b", re.I)
_CASE_READERS = {
    "ejection_fraction": re.compile(rf"(?:LVEF|ejection fraction)\D{{0,12}}?{_NUM}\s*%", re.I),
    "age": re.compile(rf"{_NUM}[- ]years?[- ]old|\baged? {_NUM}", re.I),
    "serum_creatinine": re.compile(rf"creatinine\D{{0,12}}?{_NUM}\s*(mg/dl|µmol/l|umol/l|micromol/l)", re.I),
    "serum_sodium": re.compile(rf"sodium\D{{0,12}}?{_NUM}", re.I),
}


def case_factors(case: str) -> dict[str, int]:
    """The rule's points for what the case text states, read with the patterns above (the first
    value of each measurement; a measurement the text does not state in a form they read is absent)."""
    out: dict[str, int] = {}
    for kind, rx in _CASE_READERS.items():
        m = rx.search(case)
        if not m:
            continue
        v = float(next(g for g in m.groups()[:2] if g is not None))
        if kind == "ejection_fraction":
            f = hf_cases.ef_points(v)
        elif kind == "age":
            f = hf_cases.age_points(v)
        elif kind == "serum_creatinine":
            mg = v if m.group(2).lower() == "mg/dl" else v / 88.4
            f = hf_cases.creatinine_points(round(mg, 2))
        else:
            low = v < hf_cases.HYPONATRAEMIA_BELOW
            f = hf_cases.Factor(hf_cases.FLAT_POINTS["hyponatraemia"], "") if low else None
        out[kind] = f.points if f else 0
    for name, terms in _FLAT_TERMS.items():
        # Sex is a whole word ("man", not "management"); the conditions may be negated ("no diabetes").
        present = bool(_MALE.search(case)) if name == "male sex" else _mentioned(terms, case)
        out[name] = hf_cases.FLAT_POINTS[name] if present else 0
    return out


def check_reply(reply: str, case: str) -> RiskAssessment:
    """Parse and check a reply in the trained format against the case it answers."""
    w = hf_cases.read_working(reply)
    out = RiskAssessment(reply=reply, category=w.category, total=w.total, adds_up=w.adds_up)
    line = re.search(r"risk points:(.*)", reply, re.I)
    if line:
        for item in line.group(1).split(";"):
            m = re.match(r"\s*(.*?)\s*\+\s*(\d+)\s*\.?\s*$", item)
            if m:
                out.factors.append(check_factor(m.group(1), int(m.group(2)), case))
                continue
            # Factors named without points ("age 80+, male sex") still claim something about the case.
            for part in re.split(r",|\band\b", item):
                f = check_factor(part.strip(" ."), 0, case)
                if f.kind is not None and not f.value_in_case:
                    out.problems.append(f"'{part.strip(' .')}' is named without points and is not in the case "
                                        "description")
    if w.category is None:
        out.problems.append("no risk category in the reply")
    elif not w.adds_up:
        out.problems.append(f"the working does not add up (points {list(w.points)} sum to {sum(w.points)}; "
                            f"stated total {w.total}, category {w.category})")
    for f in out.factors:
        if f.rule_points is None:
            out.problems.append(f"'{f.text}' is not a factor of the rule")
        elif not f.value_in_case:
            out.problems.append(f"'{f.text}' is not in the case description")
        elif f.rule_points != f.points:
            out.problems.append(f"'{f.text}' scores {f.rule_points} under the rule, not {f.points}")
    out.case_points = case_factors(case)
    named = {f.kind for f in out.factors}
    for kind, pts in out.case_points.items():
        if pts and kind not in named:
            out.problems.append(f"the case's {kind.replace('_', ' ')} scores {pts} under the rule but the reply "
                                "leaves it out")
    m = _CASE_READERS["ejection_fraction"].search(case)
    if re.search(r"preserved ejection fraction", reply, re.I) and m and float(m.group(1)) < 50:
        out.problems.append(f"the reply calls the ejection fraction preserved; the case gives {m.group(1)}%")
    return out


def case_prompt(case: str) -> list[dict[str, str]]:
    """The trained prompt: the rule in the system message, the case and a question as the user's."""
    from finetune.data import HF_SYSTEM_WORKING

    return [{"role": "system", "content": HF_SYSTEM_WORKING},
            {"role": "user", "content": f"{case.strip()}\n\n{hf_cases.QUESTIONS[0]}"}]


# Values no patient can have: a case stating one is mistyped, and no score of it means anything.
_PLAUSIBLE = {"ejection_fraction": (1.0, 95.0, "an LVEF of {v:g}%", "an ejection fraction is 1-95%"),
              "age": (0.0, 120.0, "an age of {v:g} years", "an age is 0-120 years"),
              "serum_sodium": (80.0, 200.0, "a sodium of {v:g}", "serum sodium is 80-200 mmol/L")}
_CREATININE_MG_DL = (0.05, 30.0)


def implausible_value(case: str) -> str | None:
    """The first measurement the case states outside what a patient can have, as a message; or None."""
    for kind, (lo, hi, what, fix) in _PLAUSIBLE.items():
        for m in _CASE_READERS[kind].finditer(case):
            v = float(next(g for g in m.groups()[:2] if g is not None))
            if not lo <= v <= hi:
                return f"the case gives {what.format(v=v)}; {fix}: correct the case text"
    for m in _CASE_READERS["serum_creatinine"].finditer(case):
        mg = float(m.group(1)) / (1.0 if m.group(2).lower() == "mg/dl" else 88.4)
        if not _CREATININE_MG_DL[0] <= mg <= _CREATININE_MG_DL[1]:
            return (f"the case gives a creatinine of {m.group(1)} {m.group(2)}; serum creatinine is "
                    "0.05-30 mg/dL (4-2650 µmol/L): correct the case text")
    return None


def validate_case(case: str) -> str:
    case = case.strip()
    if not case:
        raise InputError("the case description is empty; pass the text, or --file PATH")
    if len(case) > MAX_CASE_CHARS:
        raise InputError(f"the case description has {len(case)} characters (limit {MAX_CASE_CHARS}); give a "
                         "summary of the case, not the whole record")
    try:
        case.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError("the case description is not valid UTF-8 text; set the terminal to UTF-8 or use --file "
                         "with a UTF-8 file") from None
    if "\0" in case:
        raise InputError("the case description contains NUL bytes; pass plain text")
    if problem := implausible_value(case):
        raise InputError(problem)
    return case


def assess(generator: Any, case: str, max_new_tokens: int = 200) -> RiskAssessment:
    case = validate_case(case)
    reply = generator.generate(case_prompt(case), max_new_tokens).text
    out = check_reply(reply, case)
    out.generator, out.adapter = generator.model_id, generator.adapter
    return out
