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
disagreement is visible rather than silently corrected. A factor the model left out is not
detected (that would need a parser of free-text case descriptions).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from finetune import hf_cases
from rag.errors import InputError

MAX_CASE_CHARS = 8000  # a case description, not a record dump: the prompt must fit the model's window

_NUM = r"(\d+(?:\.\d+)?)"
_NEGATION = re.compile(r"\b(no|not|without|denies|non|never)\b", re.I)
_FLAT_TERMS = {"anaemia": ("anaemia", "anemia"), "diabetes": ("diabetes", "diabetic"),
               "current smoking": ("smok",), "male sex": ("male", "man", "gentleman")}


@dataclass
class FactorCheck:
    text: str
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

    @property
    def rule_total(self) -> int:
        """The rule's points for the factors the reply names (not a full re-assessment of the case)."""
        return sum(f.rule_points or 0 for f in self.factors if f.value_in_case)

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
            if m and not _NEGATION.search(clause[:m.start()]):
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
        return FactorCheck(text, points, f.points if f else 0, _has_number(v, case))
    if m := re.search(rf"age {_NUM}", t):
        f = hf_cases.age_points(float(m.group(1)))
        return FactorCheck(text, points, f.points if f else 0, _has_number(m.group(1), case))
    if m := re.search(rf"creatinine \({_NUM} mg/dl\)", t):
        f = hf_cases.creatinine_points(float(m.group(1)))
        seen = _has_number(m.group(1), case) or _has_number(hf_cases.creatinine_umol(float(m.group(1))), case)
        return FactorCheck(text, points, f.points if f else 0, seen)
    if m := re.search(rf"sodium {_NUM}", t):
        low = float(m.group(1)) < hf_cases.HYPONATRAEMIA_BELOW
        return FactorCheck(text, points, hf_cases.FLAT_POINTS["hyponatraemia"] if low else 0,
                           _has_number(m.group(1), case))
    for name, terms in _FLAT_TERMS.items():
        if any(x in t for x in (name, *terms)):
            return FactorCheck(text, points, hf_cases.FLAT_POINTS[name], _mentioned(terms, case))
    return FactorCheck(text, points, None, False)


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
    return out


def case_prompt(case: str) -> list[dict[str, str]]:
    """The trained prompt: the rule in the system message, the case and a question as the user's."""
    from finetune.data import HF_SYSTEM

    return [{"role": "system", "content": HF_SYSTEM},
            {"role": "user", "content": f"{case.strip()}\n\n{hf_cases.QUESTIONS[0]}"}]


def validate_case(case: str) -> str:
    case = case.strip()
    if not case:
        raise InputError("the case description is empty; pass the text, or --file PATH")
    if len(case) > MAX_CASE_CHARS:
        raise InputError(f"the case description has {len(case)} characters (limit {MAX_CASE_CHARS}); give a "
                         "summary of the case, not the whole record")
    return case


def assess(generator: Any, case: str, max_new_tokens: int = 200) -> RiskAssessment:
    case = validate_case(case)
    reply = generator.generate(case_prompt(case), max_new_tokens).text
    out = check_reply(reply, case)
    out.generator, out.adapter = generator.model_id, generator.adapter
    return out
