"""Read a heart-failure risk model's inputs from a free-text case description, each with its span.

What it reads (the UCI heart-failure variables and haemoglobin): age, sex, LVEF (``%``; a range
such as "30-35%" is kept as a range and its midpoint), serum creatinine (mg/dL; µmol/L converted,
/88.4), sodium (mmol/L = mEq/L), CPK (U/L, the dataset's "mcg/L"), platelets (per µL; ``x10^9/L``,
``k/uL`` and a bare count under 2,000 are thousands), haemoglobin (g/dL; g/L converted), anaemia,
diabetes, hypertension and smoking (current / former / never), as clinicians write them: labels and
abbreviations (EF, LVEF, Cr, sCr, creat, Na, CK/CPK, Plt, Hb/Hgb, T2DM, DM2, NIDDM, HTN), shorthand
("72M", "F/59", "81 yo"), "Key: value" lines and ``|`` tables, the conditions with their negations
("no diabetes", "denies DM", "not diabetic", "non-smoker", "DM: no", "HTN -") and smoking history
("ex-smoker", "quit smoking 2015", "gave up smoking" are former; "current smoker, advised to quit"
is current).

Rules, not a library: the negation part follows ConText (a trigger before a term, a scope ending at a
clause end or a terminating word, ``family history`` as another experiencer), which medspaCy
implements; the numeric part (labels, units, conversions, ranges) is what medspaCy does not do, and
the two together are a few hundred lines with no model to load. Measured on our labelled set
(``eval/hf_cases``, BENCHMARKS.md).

**No value is invented**: every value comes from a span of the text (``Value.start``/``end``), whose
number is the written one; a unit the text does not write is inferred only where the magnitude
decides it (creatinine >= 20 is µmol/L) and the inference is noted. A value outside the plausible
range (an LVEF of 250%, a sodium of 0) is an input error (:attr:`Extraction.problems`), not a value.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from rag.negation import NEGATION

NUMERIC = ("age", "ejection_fraction", "serum_creatinine", "serum_sodium", "creatinine_phosphokinase", "platelets",
           "haemoglobin")
CONDITIONS = ("anaemia", "diabetes", "high_blood_pressure")
VARIABLES = ("age", "sex", *NUMERIC[1:], *CONDITIONS, "smoking")
LABELS = {"age": "age", "sex": "sex", "ejection_fraction": "LVEF", "serum_creatinine": "creatinine",
          "serum_sodium": "sodium", "creatinine_phosphokinase": "CPK", "platelets": "platelets",
          "haemoglobin": "haemoglobin", "anaemia": "anaemia", "diabetes": "diabetes",
          "high_blood_pressure": "hypertension", "smoking": "smoking"}
UNITS = {"age": "years", "ejection_fraction": "%", "serum_creatinine": "mg/dL", "serum_sodium": "mmol/L",
         "creatinine_phosphokinase": "U/L", "platelets": "/µL", "haemoglobin": "g/dL"}
# Plausible values (after conversion): outside them the text has an input error, not a patient.
PLAUSIBLE = {"age": (1, 120), "ejection_fraction": (1, 95), "serum_creatinine": (0.1, 30), "serum_sodium": (90, 200),
             "creatinine_phosphokinase": (1, 100_000), "platelets": (1_000, 2_000_000), "haemoglobin": (2, 25)}
ANAEMIA_BELOW = {"male": 13.0, "female": 12.0}  # WHO haemoglobin thresholds, g/dL


@dataclass(frozen=True)
class Value:
    """One input read from the text: the value in the model's unit and where it was written."""

    name: str
    value: float | bool | str
    start: int
    end: int
    text: str  # the case text at [start, end): the evidence
    low: float | None = None  # a written range ("30-35%") or an undetermined band
    high: float | None = None
    note: str = ""  # a conversion or inference ("168 µmol/L = 1.90 mg/dL")

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "value": self.value, "span": [self.start, self.end], "text": self.text}
        if self.low is not None:
            d["range"] = [self.low, self.high]
        if self.note:
            d["note"] = self.note
        return d


@dataclass(frozen=True)
class Problem:
    """An impossible written value: the variable, its span and why."""

    name: str
    start: int
    end: int
    message: str


@dataclass
class Extraction:
    text: str
    values: dict[str, Value] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    conflicts: list[Value] = field(default_factory=list)  # later mentions that disagree with the one taken

    def get(self, name: str) -> Any:
        v = self.values.get(name)
        return None if v is None else v.value

    def to_dict(self) -> dict[str, Any]:
        return {"values": {k: v.to_dict() for k, v in self.values.items()},
                "problems": [{"name": p.name, "span": [p.start, p.end], "message": p.message} for p in self.problems],
                "conflicts": [v.to_dict() for v in self.conflicts]}


# -- numbers ---------------------------------------------------------------------------------------
_NUM = r"(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)"
_RANGE = _NUM + r"(?:\s*(?:-|–|—|to)\s*" + _NUM + r")?"
# What may stand between a label and its number: "EF of", "sodium was", "Na+ =", "creatinine level of".
_GAP = (r"(?:\s*(?:[:=~≈(]|(?<=\w)\+|\b(?:is|was|were|of|at|level|levels|count|concentration|approx\.?|"
        r"approximately|about|around|roughly|estimated|measured|now|today)\b))*\s*")
_MICRO = r"(?:µ|μ|u|mc|micro)"


@dataclass(frozen=True)
class _Measure:
    name: str
    label: str  # regex
    unit: str  # regex of the units, each alternative a group-free pattern
    convert: Callable[[float, str], tuple[float, str]]  # (value, written unit) -> (value in model unit, note)
    unit_required: bool = False


def _no_conversion(v: float, unit: str) -> tuple[float, str]:
    return v, ""


def _creatinine(v: float, unit: str) -> tuple[float, str]:
    if re.fullmatch(_MICRO + r"mol/l", unit, re.I) or (not unit and v >= 20):
        note = f"{v:g} µmol/L = {v / 88.4:.2f} mg/dL" + ("" if unit else " (no unit written; read as µmol/L, >= 20)")
        return round(v / 88.4, 2), note
    return v, "" if unit else "no unit written; read as mg/dL (< 20)"


def _platelets(v: float, unit: str) -> tuple[float, str]:
    per_ul = re.fullmatch(r"(?:/|per\s*)(?:" + _MICRO + r"l|mm3|mm³|microlitre|microliter)", unit, re.I)
    if per_ul or (not unit and v >= 2000):
        return v, ""
    return v * 1000, f"{v:g} x10^9/L = {v * 1000:,.0f}/µL" + ("" if unit else " (no unit written; a count under "
                                                                              "2,000 is thousands per µL)")


def _haemoglobin(v: float, unit: str) -> tuple[float, str]:
    if unit.lower() == "g/l" or (not unit and v > 30):
        return round(v / 10, 2), f"{v:g} g/L = {v / 10:g} g/dL" + ("" if unit else " (no unit written; > 30 is g/L)")
    return v, ""


_MEASURES = (
    _Measure("ejection_fraction", r"(?i:(?:left\s+ventricular|LV)\s+ejection\s+fraction|ejection\s+fraction|"
             r"heart\s+(?:is\s+)?pump(?:s|ing))|\b(?:LV\s?EF|EF)\b",
             r"%|percent|per\s+cent", _no_conversion),
    _Measure("serum_creatinine", r"(?i:\b(?:serum\s+|plasma\s+)?creat(?:inine)?\b(?!\s*(?:phospho|kinase|clearance)))"
             r"|\b(?:s|S)?Cr\b(?!\s*Cl)", r"mg/dl|" + _MICRO + r"mol/l", _creatinine),
    _Measure("serum_sodium", r"(?i:\b(?:serum\s+|plasma\s+)?sodium\b)|\bNa\b\+?", r"mmol/l|meq/l", _no_conversion),
    _Measure("creatinine_phosphokinase", r"(?i:\bcreatin(?:in)?e?\s+(?:phospho)?kinase\b|\bCPK\b)|\bCK\b(?!-)",
             r"i?u/l|units/l|" + _MICRO + r"?g/l", _no_conversion),
    _Measure("platelets", r"(?i:\bplatelets?(?:\s+count)?\b|\bplts?\b)",
             r"(?:x|×|\*)\s*10\s*(?:\^\s*9|⁹|e9)\s*/\s*l|(?:x|×)\s*10\s*(?:\^\s*3|³)\s*/\s*" + _MICRO + r"l|"
             r"k\s*/\s*" + _MICRO + r"l|k\b|g/l|(?:/|per\s*)(?:" + _MICRO + r"l|mm3|mm³|microlitre|microliter)",
             _platelets),
    _Measure("haemoglobin", r"(?i:\bha?emoglobin\b|\bhgb\b|\bhb\b(?!\s*a1c))", r"g/dl|g/l", _haemoglobin),
)


_MEASURE_RX = {m.name: (m, re.compile(rf"(?:{m.label}){_GAP}{_RANGE}(?!\d)(?:\s*(?P<unit>(?i:{m.unit})))?"))
               for m in _MEASURES}


def _num(s: str) -> float:
    return float(s.replace(",", ""))


def _measures(text: str) -> Iterator[tuple[str, float, float | None, float | None, int, int, str]]:
    """(name, value, low, high, start, end, note) of every labelled number, converted to the model's unit."""
    for name, (m, rx) in _MEASURE_RX.items():
        for hit in rx.finditer(text):
            unit = (hit.group("unit") or "").strip()
            a, b = _num(hit.group(1)), (_num(hit.group(2)) if hit.group(2) else None)
            if m.name == "ejection_fraction" and not unit and re.search(r"pump", hit.group(0), re.I):
                continue  # "heart pumps at 30" without a % is not an ejection fraction
            va, note = m.convert(a, unit)
            if b is not None:
                vb, _ = m.convert(b, unit)
                lo, hi = min(va, vb), max(va, vb)
                yield name, round((lo + hi) / 2, 2), lo, hi, hit.start(), hit.end(), (
                    f"range {hit.group(1)}-{hit.group(2)}{unit}: midpoint" + (f"; {note}" if note else ""))
            else:
                yield name, va, None, None, hit.start(), hit.end(), note


# -- age and sex -----------------------------------------------------------------------------------
_AGE_RXS = (
    re.compile(r"\b(\d{1,3}(?:\.\d+)?)\s*-?\s*(?:years?|yrs?|y)\.?\s*-?\s*old\b", re.I),
    re.compile(r"\b(\d{1,3})\s*(?:y/o|y\.o\.|yo|yr?s?\s*old)\b", re.I),
    re.compile(r"(?i:\bage[d]?\b)\s*(?:[:=]|\bof\b)?\s*(\d{1,4})\b(?!\s*(?:%|mg|mmol))"),
    re.compile(r"\b(\d{2,3})\s?([MF])\b"),
    re.compile(r"\b[MF]\s*/\s*(\d{2,3})\b"),
    re.compile(r"\b(\d{2,3})\s*yrs?\s*,\s*[MF]\b"),
    re.compile(r"\b(?:Mr|Mrs|Ms|Miss|Mx)\.?\s+[A-Z][a-z]*,\s*(?:aged\s+)?(\d{2,3})\b"),
    re.compile(r"(?i:\b(?:my\s+(?:father|dad|mother|mum|mom|husband|wife|son|daughter)|he|she|i)\s*(?:,|\bis\b|\bwas\b|"
               r"\bam\b)|\bI'm\b)\s*(\d{2,3})\b(?!\s*(?:%|percent|mg|mmol|kg|cm|/|years?\s+ago))"),
)
_MALE = r"man|male|gentleman|boy|Mr|husband|father|dad|son|brother|grandfather|M"
_FEMALE = r"woman|female|lady|girl|Mrs|Ms|Miss|wife|mother|mum|mom|daughter|sister|grandmother|F"
# "M"/"F" only next to an age ("72M", "F/59"), in a "Sex: F" field or as "yo F".
_SEX_RXS = (
    re.compile(r"\b\d{2,3}\s?(?P<s>[MF])\b"),
    re.compile(r"\b(?P<s>[MF])\s*/\s*\d{2,3}\b"),
    re.compile(r"(?i:\b(?:sex|gender)\b)\s*[:=]?\s*(?P<s>(?i:male|female|man|woman)|[MF])\b"),
    re.compile(r"(?:^|[|;]\s*)(?P<s>[MF])\s*(?=[|;]|$)", re.M),
    re.compile(r"(?i:(?:\b|(?<=\d))(?:y/o|yo|yrs?|years?[- ]old|yr-old)\b),?\s+(?P<s>[MF])\b"),
    re.compile(r"(?i:\b(?P<s>man|male|gentleman|woman|female|lady|Mr|Mrs|Ms|Miss)\b)"),
    re.compile(r"(?i:\bmy\s+(?P<s>father|dad|husband|son|mother|mum|mom|wife|daughter)\b)"),
)
_PRONOUN_RX = re.compile(r"\b(?P<s>he|his|him|she|her|hers)\b", re.I)


def _sex_of(word: str) -> str:
    return "male" if re.fullmatch(_MALE, word, re.I if len(word) > 1 else 0) else "female"


def _read_age(text: str) -> Iterator[tuple[float, int, int]]:
    for rx in _AGE_RXS:
        for m in rx.finditer(text):
            if rx.pattern.startswith(r"\b(\d{2,3})\s?([MF])") and re.search(r"(?:(?i:\btemp\w*)|\bT)\s*:?\s*$",
                                                                               text[:m.start()]):
                continue  # "Temp 98 F" is a temperature
            yield float(m.group(1)), m.start(), m.end()


def _read_sex(text: str) -> tuple[str, int, int] | None:
    hits = [(m.start("s"), m) for rx in _SEX_RXS for m in rx.finditer(text)]
    if hits:
        _, m = min(hits, key=lambda h: h[0])
        return _sex_of(m.group("s")), m.start("s"), m.end("s")
    pron = {("male" if p.group("s").lower() in ("he", "his", "him") else "female"): p
            for p in _PRONOUN_RX.finditer(text)}
    if len(pron) == 1:  # pronouns only when they all agree ("She denies ...")
        (sex, p), = pron.items()
        return sex, p.start("s"), p.end("s")
    return None


# -- conditions: a term, its negation and its experiencer (ConText-style) --------------------------
_TERMS = {
    "diabetes": re.compile(r"(?i:(?<!pre-)(?<!pre)\bdiabet(?:es(?:\s+mellitus)?|ic)\b(?!\s+insipidus))"
                           r"|\b(?:T[12]\s?DM|N?IDDM|DM\s?(?:type\s?)?(?:[12]|II)?)\b"),
    "high_blood_pressure": re.compile(r"(?i:(?<!pulmonary )(?<!portal )(?<!intracranial )\b(?:hypertension|"
                                      r"hypertensive|high\s+blood\s+pressure)\b)|\bHTN\b|\bHBP\b"),
    "anaemia": re.compile(r"(?i:\ban(?:a)?emi(?:a|c)\b)"),
}
# Words that say the condition is absent, written as the term itself.
_ABSENT_WORDS = {"high_blood_pressure": re.compile(r"(?i:\bnormotensive\b)"),
                 "diabetes": re.compile(r"(?i:\bnon-?diabetic\b)"),
                 "anaemia": re.compile(r"(?i:\bnon-?an(?:a)?emic\b)")}
# Where a negation's scope ends (ConText's terminators): a clause end, "but", a new verb after a comma.
_TERMINATOR = re.compile(r"[.;\n|!?](?!\d)|(?i:\b(?:but|however|although|though|except|whereas|apart\s+from|"
                         r"aside\s+from)\b|,\s*(?:has|with|and\s+has|known|on)\b)")
_SMOKE_WORD = re.compile(r"(?i:\bsmok)")
_OTHER_PERSON = re.compile(r"(?i:\bfamily\s+(?:history|hx)\b|\bFHx?\b|\b(?:mother|father|brother|sister|sibling|"
                           r"parent)s?\s+(?:had|has|with|died)\b|\brisk\s+of\b|\bscreen(?:ing)?\s+for\b|\?\s*$)")
# "DM: no", "HTN -", "Diabetes: none", "T2DM: Y", "HTN++", "HTN denied", "DM yes".
_AFTER = re.compile(r"\s*(?:[:=]\s*|-\s*(?=[-+])|\s)?(?P<a>(?i:yes|y|present|positive|no|n|none|absent|negative|neg|"
                    r"nil|denied)\b|\+\+?|-(?!\w))")


def _clause_before(text: str, start: int) -> str:
    """The text from the last scope terminator before ``start`` up to it."""
    cut = 0
    for t in _TERMINATOR.finditer(text, max(0, start - 120), start):
        cut = t.end()
    return text[max(cut, start - 120):start]


def _polarity(text: str, m: re.Match[str]) -> bool | None:
    """True: the patient has it; False: negated; None: someone else's, or hypothetical."""
    after = _AFTER.match(text, m.end())
    if after:
        return after.group("a").lower() in ("yes", "y", "present", "positive", "+", "++")
    before = _clause_before(text, m.start())
    if _OTHER_PERSON.search(before) or text[max(0, m.start() - 1):m.start()] == "?":
        return None
    return not _negated(text, m.start(), before)


def _negated(text: str, start: int, before: str) -> bool:
    """A negation trigger governs the term at ``start``. Its scope crosses a comma only in a list
    that ends in "or"/"nor" ("no diabetes, hypertension or anaemia"); in "no diabetes, HTN, non-smoker"
    the HTN is stated, not denied."""
    triggers = list(NEGATION.finditer(before))
    if not triggers:
        return False
    between = before[triggers[-1].end():]
    joined = re.search(r"(?i:\b(?:or|nor|and)\b)|[,/]", between)
    if not joined and any(rx.search(between) for rx in (*_TERMS.values(), _SMOKE_WORD)):
        return False  # "no DM no HTN smoker": the "no" before HTN ends at HTN
    if "," not in between:
        return True
    end = _TERMINATOR.search(text, start)
    rest = text[start - len(between):end.start() if end else len(text)]
    return re.search(r"(?i:\b(?:or|nor)\b)", rest) is not None


def _read_condition(text: str, name: str) -> Iterator[tuple[bool, int, int]]:
    hits = [(m.start(), m.end(), False) for m in _ABSENT_WORDS[name].finditer(text)]
    for m in _TERMS[name].finditer(text):
        if any(s <= m.start() < e for s, e, _ in hits):
            continue
        pol = _polarity(text, m)
        if pol is not None:
            after = _AFTER.match(text, m.end())
            hits.append((m.start(), after.end() if after else m.end(), pol))
    for s, e, pol in sorted(hits):
        yield pol, s, e


# -- smoking -----------------------------------------------------------------------------------------
_SMOKING_FIELD = re.compile(r"(?i:\b(?:smok(?:ing|er)(?:\s+(?:status|history|hx))?|tobacco|tob)\b)(?:\s*(?:[:=]|\s-)\s*"
                            r"(?P<a>(?i:current(?:ly)?|yes|y|active|ex|former|previous|past|quit|stopped|no|n|never|none|"
                            r"nil))|\s+(?P<b>(?i:current|ex|former|never|none|nil)))\b")
_SMOKING = (  # (status, pattern), most specific first
    ("current", re.compile(r"(?i:\b(?:current(?:ly)?|active)\s+(?:smok\w*|tobacco)|\bcontinues\s+to\s+smoke\b|"
                           r"\bstill\s+smok\w*)")),
    ("former", re.compile(r"(?i:\b(?:ex|former|previous|past|prior)[\s-]?smok\w*|\b(?:quit|stopped|gave\s+up|"
                          r"given\s+up)\s+(?:smoking|cigarettes|tobacco)\b|\bused\s+to\s+smoke\b|"
                          r"\bsmoked\b[^.;\n]{0,60}?\b(?:quit|stopped|gave\s+up|ago)\b)")),
    ("never", re.compile(r"(?i:\bnon[\s-]?smok\w*|\bnever(?:\s+a)?\s+smok\w*|\b(?:does\s+not|doesn't|don't|do\s+not|"
                         r"did\s+not|not\s+a)\s+smok\w*|\bdenies\s+(?:smoking|tobacco)\b|\bno\s+(?:smoking|tobacco)\b|"
                         r"(?:i've|has|have)\s+never\s+smoked\b)")),
    ("current", re.compile(r"(?i:\bsmok(?:er|es|ing)\b|\bcigarettes?\b|\bI\s+smoke\b|\bpack[\s-]years?\b)")),
)


def _read_smoking(text: str) -> Iterator[tuple[str, int, int]]:
    taken: list[tuple[int, int]] = []
    for m in _SMOKING_FIELD.finditer(text):
        a = (m.group("a") or m.group("b")).lower()
        status = ("current" if a in ("current", "currently", "yes", "y", "active") else
                  "former" if a in ("ex", "former", "previous", "past", "quit", "stopped") else "never")
        taken.append((m.start(), m.end()))
        yield status, m.start(), m.end()
    for status, rx in _SMOKING:
        for m in rx.finditer(text):
            if any(s <= m.start() < e or s < m.end() <= e for s, e in taken):
                continue
            if status == "current":
                before = _clause_before(text, m.start())
                if _OTHER_PERSON.search(before):
                    continue
                status_here = "never" if _negated(text, m.start(), before) else "current"
            else:
                status_here = status
            taken.append((m.start(), m.end()))
            yield status_here, m.start(), m.end()


# -- the whole case ----------------------------------------------------------------------------------
def extract(text: str) -> Extraction:
    """Every input the text states, the first mention of each; impossible values as problems."""
    out = Extraction(text)
    found: list[Value] = []
    for age, s, e in _read_age(text):
        found.append(Value("age", age, s, e, text[s:e]))
    sex = _read_sex(text)
    if sex:
        found.append(Value("sex", sex[0], sex[1], sex[2], text[sex[1]:sex[2]]))
    for name, x, lo, hi, s, e, note in _measures(text):
        found.append(Value(name, x, s, e, text[s:e], lo, hi, note))
    for name in CONDITIONS:
        for pol, s, e in _read_condition(text, name):
            found.append(Value(name, pol, s, e, text[s:e]))
    for status, s, e in _read_smoking(text):
        found.append(Value("smoking", status, s, e, text[s:e]))
    for v in sorted(found, key=lambda v: v.start):
        if v.name in PLAUSIBLE:
            lo, hi = PLAUSIBLE[v.name]
            band = (v.low, v.high) if v.low is not None and v.high is not None else (float(v.value),) * 2
            if not (lo <= float(v.value) <= hi and lo <= band[0] <= band[1] <= hi):
                out.problems.append(Problem(v.name, v.start, v.end, f"{LABELS[v.name]} '{v.text}' (chars {v.start}-"
                                            f"{v.end}) is outside the plausible range {lo:g}-{hi:g} {UNITS[v.name]}"))
                continue
        if v.name not in out.values and not any(p.name == v.name for p in out.problems):
            out.values[v.name] = v
        elif v.name in out.values and out.values[v.name].value != v.value:
            out.conflicts.append(v)
    _anaemia_from_haemoglobin(out)
    return out


def _anaemia_from_haemoglobin(out: Extraction) -> None:
    """A written haemoglobin decides anaemia (WHO: < 13 g/dL men, < 12 g/dL women); without the sex, a
    value between the two thresholds is undetermined (a range for the model, not a guess)."""
    hb = out.values.get("haemoglobin")
    if hb is None:
        return
    g = float(hb.value)
    sex = out.get("sex")
    if sex in ANAEMIA_BELOW:
        anaemic: bool | None = g < ANAEMIA_BELOW[sex]
        rule = f"Hb {g:g} g/dL {'<' if anaemic else '>='} {ANAEMIA_BELOW[sex]:g} ({sex})"
    elif g < min(ANAEMIA_BELOW.values()) or g >= max(ANAEMIA_BELOW.values()):
        anaemic = g < min(ANAEMIA_BELOW.values())
        rule = f"Hb {g:g} g/dL, anaemic under either sex's threshold" if anaemic else f"Hb {g:g} g/dL >= 13"
    else:
        anaemic = None
        rule = ""
    stated = out.values.get("anaemia")
    if anaemic is None:
        return
    if stated is not None and stated.value != anaemic:
        out.conflicts.append(stated)
    out.values["anaemia"] = Value("anaemia", anaemic, hb.start, hb.end, hb.text, note=f"from haemoglobin: {rule} "
                                  "(WHO thresholds)")
