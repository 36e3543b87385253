"""Checks of a generator's heart-failure points working (``eval hf-risk``; the seed's approach).

The ``risk`` command no longer asks the generator for the working: it computes the risk with a
validated model (``rag/risk.py``). This module stays to measure the generator that states a category.

The adapter is trained (finetune/hf_cases.py) to answer a case description under a stated
points rule: each factor with its points, the total, then the category. A small model's
arithmetic and lookups fail in ways that read fluently, so :func:`check_reply` checks a reply:

- the working adds up: the points sum to the total and the total gives the category;
- each factor's points are the rule's for the value the factor names;
- each value a factor names is in the case description (no invented measurement), and a
  yes/no factor (diabetes, anaemia, smoking) is not one the description negates;
- no factor the case states is left out: the rule's measurements are read from the case text by
  the ``risk`` command's extraction (:func:`case_factors`).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from rag import hf_rule as hf_cases
from rag.hf_extract import extract
from rag.negation import NEGATION

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


def case_factors(case: str) -> dict[str, int]:
    """The rule's points for what the case text states, read by the ``risk`` command's extraction
    (:func:`rag.hf_extract.extract`; a measurement the text does not state is absent)."""
    ex = extract(case)
    out: dict[str, int] = {}
    readers = {"ejection_fraction": hf_cases.ef_points, "age": hf_cases.age_points,
               "serum_creatinine": lambda v: hf_cases.creatinine_points(round(v, 2))}
    for kind, points in readers.items():
        v = ex.get(kind)
        if v is not None:
            f = points(float(v))
            out[kind] = f.points if f else 0
    if ex.get("serum_sodium") is not None:
        low = float(ex.get("serum_sodium")) < hf_cases.HYPONATRAEMIA_BELOW
        out["serum_sodium"] = hf_cases.FLAT_POINTS["hyponatraemia"] if low else 0
    present = {"anaemia": ex.get("anaemia") is True, "diabetes": ex.get("diabetes") is True,
               "current smoking": ex.get("smoking") == "current", "male sex": ex.get("sex") == "male"}
    for name, yes in present.items():
        out[name] = hf_cases.FLAT_POINTS[name] if yes else 0
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
    ef = extract(case).get("ejection_fraction")
    if re.search(r"preserved ejection fraction", reply, re.I) and ef is not None and float(ef) < 50:
        out.problems.append(f"the reply calls the ejection fraction preserved; the case gives {float(ef):g}%")
    return out


def case_prompt(case: str) -> list[dict[str, str]]:
    """The trained prompt: the rule in the system message, the case and a question as the user's."""
    from finetune.data import HF_SYSTEM_WORKING
    from finetune.hf_cases import QUESTIONS

    return [{"role": "system", "content": HF_SYSTEM_WORKING},
            {"role": "user", "content": f"{case.strip()}\n\n{QUESTIONS[0]}"}]
