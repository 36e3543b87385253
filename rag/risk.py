"""Heart-failure risk of a case description: extract, compute with the validated model, then explain.

1. :func:`rag.hf_extract.extract` reads the inputs from the text, each with its span; an impossible
   value (an LVEF of 250%) or a text with no heart-failure data is an input error.
2. :class:`rag.hf_model.RiskModel` (fitted and validated by ``app.py train risk``) gives the
   probability with its interval, the category, each input's contribution, and the range over
   plausible values of the inputs the text does not give.
3. :func:`explain` writes the explanation from the computed contributions (largest first) with a
   template, so every factor, direction and number in it is the computation's by construction. A
   generator may write it instead (:func:`generator_explanation`): every factor, direction, number and
   category it states is checked against the computation, and any failed check falls back to the
   template (the failures are kept in the report).
4. For each modifiable factor that is present (an LVEF of 40% or less, creatinine above 1.3 mg/dL,
   sodium below 135, anaemia, diabetes, hypertension, current smoking) or raises the risk, the
   guideline passages the index returns for it are cited with ``[n]`` (a passage that does not name
   the factor is not cited).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rag.errors import InputError
from rag.hf_extract import LABELS, Extraction, extract
from rag.hf_model import NAMES, WHY_IT_MATTERS, Prediction, RiskModel
from rag.hf_rule import stated_category
from rag.negation import CUE_PATTERN

MAX_CASE_CHARS = 8000  # a case description, not a record dump
NOTICE = ("Not a medical device: research and demonstration software. The estimate comes from a model fitted on "
          "one small cohort; verify against the patient's record and clinical judgement.")
UNIT_TEXT = {"age": " years", "ejection_fraction": "%", "serum_creatinine": " mg/dL", "serum_sodium": " mmol/L",
             "creatinine_phosphokinase": " U/L", "platelets": "/µL"}
# Modifiable factors: what to ask the index, and a word the cited passage must contain to be cited.
GUIDANCE = {
    "ejection_fraction": ("drug classes that reduce mortality in heart failure with reduced ejection fraction (HFrEF)",
                          r"HFrEF|reduced ejection fraction"),
    "serum_creatinine": ("heart failure with chronic kidney disease: renal function and RAAS inhibitor dosing",
                         r"kidney|renal|creatinine|eGFR"),
    "serum_sodium": ("hyponatraemia in heart failure: fluid restriction and diuretics",
                     r"hyponatr|\bsodium\b(?![- ]glucose)"),
    "anaemia": ("iron deficiency and anaemia in heart failure: intravenous iron", r"\biron\b|ana?emi"),
    "diabetes": ("type 2 diabetes with heart failure: SGLT2 inhibitors", r"diabet|SGLT2"),
    "high_blood_pressure": ("hypertension treatment and blood pressure targets", r"blood pressure|hypertens"),
    "smoking": ("smoking cessation advice", r"smok|tobacco"),
}
MIN_STATED = 0.10  # |log-odds| below this is "small" in the text (it stays in the table)


@dataclass
class MissingInput:
    input: str
    why: str


@dataclass
class Source:
    n: int
    factor: str
    doc_id: str
    chunk_id: str
    title: str
    section: str
    source: str
    start: int
    end: int
    text: str


@dataclass
class RiskReport:
    case: str
    extraction: Extraction
    inputs: dict[str, float]
    bands: dict[str, tuple[float, float]]
    prediction: Prediction
    missing: list[MissingInput]
    notes: list[str]
    outside_cohort: list[str]
    explanation: str = ""
    explained_by: str = "template"  # or "generator"
    generator_problems: list[str] = field(default_factory=list)  # why the generator's text was not used
    sources: list[Source] = field(default_factory=list)
    cohort: str = ""
    model: dict[str, Any] = field(default_factory=dict)
    timings_ms: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        p = self.prediction
        return {
            "probability": round(p.probability, 4), "interval95": [round(x, 4) for x in p.interval],
            "category": p.category,
            "range_over_missing": [round(x, 4) for x in p.range] if p.range else None,
            "range_categories": list(p.range_categories) if p.range_categories else None,
            "contributions": [{"input": c.input, "value": c.value, "log_odds": round(c.log_odds, 4),
                               "log_odds_interval95": [round(c.low, 4), round(c.high, 4)],
                               "odds_ratio": round(c.odds_ratio, 3), "direction": c.direction,
                               "direction_certain": c.certain} for c in p.contributions],
            "intercept": round(p.intercept, 4),
            "missing": [{"input": m.input, "why": m.why} for m in self.missing],
            "inputs": self.inputs, "ranges": {k: list(v) for k, v in self.bands.items()},
            "extracted": self.extraction.to_dict(), "notes": self.notes, "outside_cohort": self.outside_cohort,
            "explanation": self.explanation, "explained_by": self.explained_by,
            "generator_problems": self.generator_problems,
            "sources": [s.__dict__ for s in self.sources], "cohort": self.cohort, "model": self.model,
            "notice": NOTICE, "timings_ms": {k: round(v, 1) for k, v in self.timings_ms.items()},
        }


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
    return case


def model_inputs(ex: Extraction) -> tuple[dict[str, float], dict[str, tuple[float, float]], list[str]]:
    """The model's inputs from what was read: (values, inputs known as a range, notes)."""
    inputs: dict[str, float] = {}
    bands: dict[str, tuple[float, float]] = {}
    notes: list[str] = []
    for name in ("age", "ejection_fraction", "serum_creatinine", "serum_sodium", "creatinine_phosphokinase",
                 "platelets"):
        v = ex.values.get(name)
        if v is None:
            continue
        if v.low is not None and v.high is not None and v.low != v.high:
            bands[name] = (v.low, v.high)
        else:
            inputs[name] = float(v.value)
    for name in ("anaemia", "diabetes", "high_blood_pressure"):
        if name in ex.values:
            inputs[name] = float(bool(ex.values[name].value))
    if "sex" in ex.values:
        inputs["male"] = float(ex.values["sex"].value == "male")
    if "smoking" in ex.values:
        inputs["smoking"] = float(ex.values["smoking"].value == "current")
        if ex.values["smoking"].value == "former":
            notes.append("a former smoker counts as not currently smoking (the cohort recorded current smoking only)")
    if "haemoglobin" in ex.values and "anaemia" not in ex.values:
        notes.append(f"haemoglobin {ex.values['haemoglobin'].value:g} g/dL is anaemia for a man (< 13) but not for a "
                     "woman (< 12), and the sex is not given: anaemia is treated as missing")
    for c in ex.conflicts:
        notes.append(f"{LABELS[c.name]} is written twice with different values ('{c.text}' at chars "
                     f"{c.start}-{c.end}); the first is used")
    return inputs, bands, notes


def assess(case: str, model: RiskModel) -> RiskReport:
    """Extraction and the model; no index, no generator (see :func:`explain`, :func:`cite_guidelines`)."""
    t = time.perf_counter()
    case = validate_case(case)
    ex = extract(case)
    if ex.problems:
        p = ex.problems[0]
        more = f" (and {len(ex.problems) - 1} more)" if len(ex.problems) > 1 else ""
        raise InputError(f"{p.message}{more}: correct the case text")
    inputs, bands, notes = model_inputs(ex)
    if not set(inputs) - {"male"} and not bands:
        raise InputError("no heart-failure data found in the case description: give at least one of age, LVEF, "
                         "creatinine, sodium, CPK, platelets, anaemia/haemoglobin, diabetes, hypertension or smoking")
    pred = model.predict(inputs, bands)
    missing = [MissingInput(m, WHY_IT_MATTERS[m]) for m in pred.missing]
    card = model.card
    report = RiskReport(case, ex, inputs, bands, pred, missing, notes, model.outside_cohort(inputs),
                        cohort=f"{card['data']['cohort']}; outcome {card['data']['outcome']}",
                        model={"name": card.get("name"), "path": str(model.path) if model.path else None,
                               "auroc": card["validation"]["metrics"]["auroc"], "date": card.get("date")})
    report.timings_ms["extract_and_model"] = (time.perf_counter() - t) * 1000
    return report


# -- explanation -------------------------------------------------------------------------------------
def _pct(p: float) -> str:
    return f"{100 * p:.0f}%"


def _value_text(name: str, value: float, bands: dict[str, tuple[float, float]]) -> str:
    if name in bands:
        lo, hi = bands[name]
        return f"{NAMES[name]} {lo:g}-{hi:g}{UNIT_TEXT.get(name, '')}"
    if name in UNIT_TEXT:
        shown = f"{value:,.0f}" if name == "platelets" else f"{value:g}"
        return f"{NAMES[name]} {shown}{UNIT_TEXT[name]}"
    if name == "male":
        return "male sex" if value else "female sex"
    return NAMES[name] if value else f"no {NAMES[name]}"


def factor_phrase(report: RiskReport, c: Any, cite: dict[str, list[int]]) -> str:
    what = _value_text(c.input, c.value, report.bands)
    marks = "".join(f"[{n}]" for n in cite.get(c.input, []))
    doubt = "" if c.certain else "; direction uncertain in this cohort"
    return f"{what} {c.direction} it (odds x{c.odds_ratio:.2f}{doubt}){marks}"


def explain(report: RiskReport) -> str:
    """The template explanation: every statement is read off the computation."""
    p = report.prediction
    cite: dict[str, list[int]] = {}
    for s in report.sources:
        cite.setdefault(s.factor, []).append(s.n)
    lines = [f"Estimated risk of death during follow-up (as in the cohort, median 115 days): {_pct(p.probability)} "
             f"(95% CI {_pct(p.interval[0])}-{_pct(p.interval[1])}), category {p.category}."]
    if p.range and round(100 * p.range[0]) == round(100 * p.range[1]):
        what = ", ".join([*(NAMES[m.input] for m in report.missing), *(NAMES[k] for k in report.bands)])
        lines.append(f"The inputs not given exactly ({what}) do not change this estimate at this precision.")
    elif p.range:
        lo, hi = p.range
        what = ", ".join(NAMES[m.input] for m in report.missing) or ""
        ranged = ", ".join(NAMES[k] for k in report.bands)
        over = "; ".join(x for x in (f"missing: {what}" if what else "", f"written as a range: {ranged}"
                                     if ranged else "") if x)
        cats = p.range_categories or (p.category, p.category)
        span = cats[0] if cats[0] == cats[1] else f"{cats[0]} to {cats[1]}"
        lines.append(f"Over plausible values of the inputs not given exactly ({over}) the risk lies between "
                     f"{_pct(lo)} and {_pct(hi)} ({span}); the estimate above sets missing inputs to the cohort "
                     "average.")
    stated = [c for c in p.contributions if abs(c.log_odds) >= MIN_STATED]
    small = [c for c in p.contributions if abs(c.log_odds) < MIN_STATED]
    if stated:
        lines.append("Compared with the cohort's average patient, largest first: "
                     + "; ".join(factor_phrase(report, c, cite) for c in stated) + ".")
    if small:
        lines.append("Small contributions (odds changed by less than 10%): "
                     + ", ".join(_value_text(c.input, c.value, report.bands)
                                 + "".join(f"[{n}]" for n in cite.get(c.input, [])) for c in small) + ".")
    return "\n".join(lines)


# -- the generator's explanation, checked ---------------------------------------------------------------
EXPLAIN_SYSTEM = ("You explain a heart-failure risk estimate computed by a validated statistical model. Use only the "
                  "facts given. Write 2-3 sentences for a clinician: the risk and its category, then the factors that "
                  "raise or lower it, largest first. Do not add factors, numbers or advice that are not given.")


def explanation_prompt(report: RiskReport) -> list[dict[str, str]]:
    p = report.prediction
    facts = [f"Risk: {_pct(p.probability)} (95% CI {_pct(p.interval[0])}-{_pct(p.interval[1])}), category "
             f"{p.category}."]
    for c in p.contributions:
        if abs(c.log_odds) >= MIN_STATED:
            facts.append(f"- {_value_text(c.input, c.value, report.bands)}: {c.direction} the risk "
                         f"(odds x{c.odds_ratio:.2f})")
    if report.missing:
        facts.append("Missing: " + ", ".join(NAMES[m.input] for m in report.missing))
    return [{"role": "system", "content": EXPLAIN_SYSTEM}, {"role": "user", "content": "\n".join(facts)}]


_FACTOR_WORDS = {
    "age": r"\bage\b|years? old|elderly", "ejection_fraction": r"\bLVEF\b|\bEF\b|ejection fraction",
    "serum_creatinine": r"creatinine|renal|kidney", "serum_sodium": r"sodium|hyponatr",
    "creatinine_phosphokinase": r"\bCPK\b|\bCK\b|phosphokinase|creatine kinase", "platelets": r"platelet",
    "anaemia": r"ana?emi|haemoglobin|hemoglobin", "diabetes": r"diabet",
    "high_blood_pressure": r"hypertens|blood pressure",
    "male": r"\bmale\b|\bsex\b|\bmen\b|\bman\b|female|woman", "smoking": r"smok",
}
# A direction is a verb or comparative about the risk ("raises it", "increases the risk", "higher odds");
# "reduced LVEF" or "raised creatinine" describe the value, not the direction of its effect.
_OBJ = r"\s+(?:it|(?:the\s+|her\s+|his\s+|their\s+|this\s+patient's\s+)?(?:risk|odds|mortality))\b"
_RISK_IS = r"\brisk\b(?:\s+of\s+[\w-]+)?\s+(?:is|was)\s+"
_UP = (rf"\b(?:rais|increas|worsen|elevat|driv)\w*{_OBJ}|\bhigh(?:er)?\s+(?:risk|odds)\b|\badds?\s+to{_OBJ}|"
       rf"\bcontribut\w*\s+to\s+(?:a\s+)?(?:higher|increased)|{_RISK_IS}(?:high|higher|increased|raised)\b")
_DOWN = (rf"\b(?:lower|decreas|reduc)\w*{_OBJ}|\blow(?:er)?\s+(?:risk|odds)\b|\bprotect|"
         rf"{_RISK_IS}(?:low|lower|reduced|decreased)\b")
# How a yes/no input is stated in a clause: 1 (has it), 0 (does not), or None (not said).
# A negation cue (or "former"/"ex-" for smoking) at most two words before the term.
_NEGATED = rf"(?:{CUE_PATTERN}|\b(?:former|ex)\b)-?\s*(?:\w+[\s-]+){{0,2}}?"
_STATED_AS = {
    "anaemia": r"ana?emi\w*", "diabetes": r"diabet\w*", "high_blood_pressure": r"hypertensi\w*|high blood pressure",
    "smoking": r"(?:current\s+)?smok\w*",
}


def _stated_value(k: str, clause: str) -> float | None:
    if k == "male":
        if re.search(r"\b(?:female|woman|women)\b", clause, re.I):
            return 0.0
        return 1.0 if re.search(r"\b(?:male|man|men)\b", clause, re.I) else None
    term = _STATED_AS.get(k)
    m = re.search(term, clause, re.I) if term else None
    if m is None:
        return None
    return 0.0 if re.search(_NEGATED + r"$", clause[:m.start()], re.I) else 1.0


def check_explanation(text: str, report: RiskReport) -> list[str]:
    """Problems with a generated explanation: a factor not in the computation, a wrong direction, a number
    that is not one the computation gave, a category that is not the computed one."""
    p = report.prediction
    problems: list[str] = []
    by_input = {c.input: c for c in p.contributions}
    missing = {m.input for m in report.missing}
    for sentence in re.split(r"(?<=[.!?])\s+|\n", text):
        says_missing = re.search(r"missing|not given|unknown|absent|not recorded|not available", sentence, re.I)
        for clause in re.split(r"(?<=;)\s+|,\s+(?:and\s+)?|\band\b|\bwhile\b|\bbut\b|\b(?:al)?though\b|\bwhereas\b",
                               sentence):
            problems += _check_clause(clause, by_input, missing, bool(says_missing))
    allowed = _allowed_numbers(report)
    for m in re.finditer(r"(?<![\w.])\d+(?:[.,]\d+)?", text):
        x = float(m.group(0).replace(",", ""))
        if not any(abs(x - a) <= 0.5 + 1e-9 for a in allowed):
            problems.append(f"states {m.group(0)}, a number the computation does not give")
    cat = stated_category(text)
    if cat is not None and cat != p.category:
        problems.append(f"states the category {cat}; the computed category is {p.category}")
    if cat is None and not re.search(p.category, text, re.I):
        problems.append("does not state the computed category")
    return problems


def _check_clause(clause: str, by_input: dict[str, Any], missing: set[str], says_missing: bool) -> list[str]:
    problems = []
    named = [k for k, rx in _FACTOR_WORDS.items() if re.search(rx, clause, re.I)]
    for k in named:
        c = by_input.get(k)
        if c is None:
            if k not in missing or not says_missing:
                problems.append(f"names {NAMES[k]}, which the computation has no value for")
            continue
        said = _stated_value(k, clause)
        if said is not None and said != c.value:
            problems.append(f"says '{clause.strip()}'; the case has {_value_text(k, c.value, {})}")
        if len(named) == 1:  # a direction word belongs to the one factor its clause names
            up, down = re.search(_UP, clause, re.I), re.search(_DOWN, clause, re.I)
            if (up and not down and c.log_odds < 0) or (down and not up and c.log_odds > 0):
                problems.append(f"says {NAMES[k]} {'raises' if up else 'lowers'} the risk; it {c.direction} it")
    return problems


def _allowed_numbers(report: RiskReport) -> list[float]:
    p = report.prediction
    nums = [100 * p.probability, 100 * p.interval[0], 100 * p.interval[1], 95.0]
    if p.range:
        nums += [100 * p.range[0], 100 * p.range[1]]
    for c in p.contributions:
        nums += [c.value, c.odds_ratio, round(c.odds_ratio, 2)]
    for lo, hi in report.bands.values():
        nums += [lo, hi]
    nums += [float(x) for x in re.findall(r"\d+(?:\.\d+)?", report.case)]
    # the fixed wording: "95% CI", "median 115 days", "less than 10%"; small counts ("2-3 factors")
    return [*nums, 115.0, 10.0, 1.0, 2.0, 3.0]


def generator_explanation(report: RiskReport, generate: Callable[[list[dict[str, str]]], str]) -> None:
    """Ask the generator for the explanation; keep it only if every check passes, else the template."""
    text = generate(explanation_prompt(report)).strip()
    problems = check_explanation(text, report) if text else ["empty reply"]
    if problems:
        report.generator_problems = problems
        report.explained_by = "template"
        report.explanation = explain(report)
    else:
        report.explained_by = "generator"
        report.explanation = text


# -- guideline passages for modifiable factors ------------------------------------------------------------
# A modifiable factor is present when it is abnormal, whatever its weight against this cohort's average
# (an LVEF of 32% is average in a cohort of reduced-EF patients, and still calls for HFrEF therapy).
PRESENT = {"ejection_fraction": lambda v: v <= 40, "serum_creatinine": lambda v: v > 1.3,
           "serum_sodium": lambda v: v < 135, "anaemia": bool, "diabetes": bool, "high_blood_pressure": bool,
           "smoking": bool}


def guidance_factors(report: RiskReport) -> list[str]:
    """Modifiable factors that are present or raise the risk, largest contribution first."""
    return [c.input for c in report.prediction.contributions
            if c.input in GUIDANCE and (c.log_odds >= MIN_STATED or PRESENT[c.input](c.value))]


def cite_guidelines(report: RiskReport, retrieve: Callable[[str], list[Any]], per_factor: int = 1) -> None:
    """Number the passages the index returns for each modifiable factor; a passage must name the factor.

    ``retrieve(query)`` returns passages (child chunks), best first. A passage is cited only if its text
    names the factor (a title alone does not count); a document's opening passage (its section is the
    title) is taken only when no other passage qualifies.
    """
    seen: dict[str, int] = {}
    for factor in guidance_factors(report):
        query, must = GUIDANCE[factor]
        found = [ch for ch in retrieve(query) if ch.kind == "guideline" and re.search(must, ch.text, re.I)]
        found.sort(key=lambda ch: ch.section == ch.title)  # stable: the opening passages last
        for ch in found[:per_factor]:
            n = seen.get(ch.chunk_id)
            if n is None:
                n = seen[ch.chunk_id] = len(seen) + 1
            report.sources.append(Source(n, factor, ch.doc_id, ch.chunk_id, ch.title, ch.section, ch.source,
                                         ch.start, ch.end, ch.text))


def index_retriever(assistant: Any, top_k: int = 3) -> Callable[[str], list[Any]]:
    """``retrieve(query)`` over the assistant's index: each retrieved unit's passages, its hits first."""
    def retrieve(query: str) -> list[Any]:
        idx = assistant.index
        out: list[Any] = []
        for u in assistant.retrieve(query, top_k=top_k).units:
            ids = [h.chunk_id for h in u.hits] + [c for c in u.chunk.child_ids if c not in {h.chunk_id for h in u.hits}]
            out += [idx.children[idx.child_pos[c]] for c in ids if c in idx.child_pos]
        return out

    return retrieve


def plot_contributions(report: RiskReport, path: Any) -> None:
    """A bar chart of the contributions (log-odds against the cohort's average patient)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cs = list(reversed(report.prediction.contributions))
    labels = [_value_text(c.input, c.value, report.bands) for c in cs]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(cs) + 1.6))
    err = [[c.log_odds - c.low for c in cs], [c.high - c.log_odds for c in cs]]
    colours = ["#c0392b" if c.log_odds > 0 else "#2471a3" for c in cs]
    ax.barh(labels, [c.log_odds for c in cs], xerr=err, color=colours, capsize=2)
    ax.axvline(0, color="black", lw=0.8)
    p = report.prediction
    ax.set_xlabel("log-odds against the cohort's average patient (95% bootstrap interval)")
    ax.set_title(f"Heart-failure risk {_pct(p.probability)} ({p.category}); not a medical device", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
