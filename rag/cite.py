"""Citation markers: parse ``[n]``, drop markers that point at no source, pair sentences with sources.

Support checking compares each answer sentence with the passages of the sources it cites
(cosine similarity of embeddings); the vectors are passed in, so this module stays pure.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from rag.negation import NEGATION
from rag.text import STOPWORDS, split_sentences

_MARKER = re.compile(r"\[\s*(\d+(?:\s*(?:,|;|-|–)\s*\d+)*)\s*\]")


def _numbers(body: str) -> list[int]:
    out: list[int] = []
    for part in re.split(r"\s*[,;]\s*", body.strip()):
        if re.fullmatch(r"\d+\s*[-–]\s*\d+", part):
            a, b = (int(x) for x in re.split(r"\s*[-–]\s*", part))
            if 0 < b - a < 20:
                out.extend(range(a, b + 1))
                continue
            out.extend([a, b])
        elif part.isdigit():
            out.append(int(part))
    return out


def parse_markers(text: str) -> list[int]:
    """Every source number cited in ``text``, in order of appearance, with repeats."""
    return [n for m in _MARKER.finditer(text) for n in _numbers(m.group(1))]


def clean_markers(text: str, valid: Collection[int]) -> tuple[str, int]:
    """Remove cited numbers that are not in ``valid``; return (text, how many were removed)."""
    removed = 0

    def fix(m: re.Match[str]) -> str:
        nonlocal removed
        nums = _numbers(m.group(1))
        keep = [n for n in dict.fromkeys(nums) if n in valid]
        removed += len([n for n in nums if n not in valid])
        return "".join(f"[{n}]" for n in keep)

    cleaned = _MARKER.sub(fix, text)
    cleaned = re.sub(r"[ \t]+([.,;:])", r"\1", cleaned)
    return re.sub(r"[ \t]{2,}", " ", cleaned).strip(), removed


@dataclass
class SentenceSupport:
    text: str
    citations: list[int]
    supported: bool
    score: float  # best cosine between the sentence and a passage of a cited source
    best: dict[int, int] = field(default_factory=dict)  # cited n -> index of its best-matching passage
    attributed: bool = False  # True when the citation was added by post-hoc attribution, not the model
    # Which checks passed for the citations kept (evaluation reads them to measure each check):
    # numbers (every number in a cited passage), record_rules (the record-line rules; None: not
    # applied), cites_record (a sentence about the patient cites the patient's record).
    checks: dict[str, bool | None] = field(default_factory=dict)
    cosine: float | None = None  # embedding similarity to the best cited passage (the pre-verifier signal)


_NUMBER = re.compile(r"(?<![\w.])\d+(?:[.,]\d+)?")


def numbers_in(text: str) -> set[str]:
    """Numbers stated in ``text`` (doses, thresholds, dates' parts), citation markers excluded."""
    return {n.replace(",", "") for n in _NUMBER.findall(_MARKER.sub(" ", text))}


# Measurements a record states and a sentence may name. A value the record gives only on lines
# naming *other* measurements is not this one's: the tuned generator answered a potassium
# question with "serum potassium 135 mEq/L [1]", the record's sodium line (measured in
# BENCHMARKS.md). Numbers and citation matched, so only the field tells them apart.
MEASURES: dict[str, re.Pattern[str]] = {name: re.compile(rx, re.I) for name, rx in {
    "potassium": r"potassium|\bK\+",
    "sodium": r"sodium|\bNa\+?(?![a-z])",
    "creatinine": r"creatinine(?! phosphokinase)",
    "creatine kinase": r"creatine (?:phospho)?kinase|creatinine phosphokinase|\bCP?K\b",
    "ejection fraction": r"ejection fraction|\bLVEF\b|\bEF\b",
    "platelets": r"platelet",
    "haemoglobin": r"ha?emoglobin(?! A1c)|\bHb\b(?!A1c)",
    "HbA1c": r"\bHbA1c\b|\bA1c\b|glycated",
    "natriuretic peptide": r"\bBNP\b|natriuretic",
    "blood pressure": r"blood pressure|\bBP\b|mmHg",
    "heart rate": r"heart rate|\bHR\b|pulse|beats/min|bpm",
    "eGFR": r"\beGFR\b|glomerular filtration",
    "weight": r"\bweight\b|\bkg\b",
    "age": r"\bage[ds]?\b|years? old|year-old",
}.items()}


def measures_in(text: str) -> set[str]:
    return {name for name, rx in MEASURES.items() if rx.search(text)}


def unanswered_measures(question: str, supported_sentences: list[str]) -> set[str]:
    """Measurements the question asks about that no supported answer sentence mentions.

    The tuned generator answered "What is the CPK of patient HF085?" with the patient's sodium,
    correctly cited: every sentence was supported, but none was about CPK (BENCHMARKS.md).
    """
    asked = measures_in(question)
    if not asked:
        return set()
    said = set().union(*(measures_in(strip_markers(s)) for s in supported_sentences)) if supported_sentences else set()
    return asked - said if not asked & said else set()


def value_of_other_measure(sentence: str, record_lines: list[str], exempt: Collection[str] = ()) -> str | None:
    """A number the sentence states for a measurement it names, which the record gives only on
    lines naming other measurements (e.g. the sodium line quoted as potassium); None if none is.

    Conservative on purpose: a number on any line that names no measurement (a date, a header)
    or names one the sentence names passes.
    """
    named = measures_in(strip_markers(sentence))
    if not named:
        return None
    for num in sorted(numbers_in(sentence) - set(exempt)):
        holding = [measures_in(line) for line in record_lines if num in numbers_in(line)]
        if holding and all(h and not (h & named) for h in holding):
            return num
    return None


# Yes/no facts a record states as "Diabetes: yes" lines. "No, this patient has no diabetes [1]" is
# right, but its embedding is below the similarity threshold of the bare line, so the similarity
# check alone rejected 9 correct yes/no answers (BENCHMARKS.md); the line is read directly instead.
CONDITIONS: dict[str, re.Pattern[str]] = {name: re.compile(rx, re.I) for name, rx in {
    "diabetes": r"diabet",
    "anaemia": r"ana?emi",
    "high blood pressure": r"high blood pressure|hypertensi",
    "smoking": r"smok",
}.items()}
_YES_NO_LINE = re.compile(r"^[\s\-*]*([^:\n]{1,80}):\s*(yes|no)\b", re.I)
# An answer claiming its instructions, restrictions or scope changed was steered by text in the
# question or a source (prompt injection): the code's rules never change at run time.
_RULE_CHANGE = re.compile(
    # "the patient restriction is lifted", "safety rules no longer apply" (not "the fluid restriction is lifted")
    r"\b(?:patient|access|scope|scoping|safety|system|previous|prior|assistant'?s?|your|my|these|all)[ -]"
    r"(?:restrictions?|rules?|instructions?|guardrails?|safeguards?|filters?|limits?|polic(?:y|ies)|scope)\b"
    r"[^.]{0,40}?\b(?:lifted|removed|disabled|overridden|overruled|suspended|bypassed|ignored|waived|no longer "
    r"appl(?:y|ies)|do(?:es)? not apply)\b"
    r"|\b(?:system|admin(?:istrator)?|developer|maintenance) (?:override|mode)\b"
    r"|\bignor(?:e|ing) (?:all |any |the )?(?:previous|prior|above|earlier|system) (?:instructions|rules)\b"
    r"|\b(?:all|every|other) patients'? records\b",
    re.I)


# A sentence that only points at content elsewhere ("X provides the following list of signs", "the table
# below includes ...", "Each of the following carries a class 1 recommendation", a closing colon) states
# nothing a reader can use; its source says the same words, so the support check passes it.
_ANNOUNCES = re.compile(r"\b(?:the following|as follows|listed below|(?:table|list|chart) below|see below|"
                        r"below (?:are|is|lists?|includes?|shows?))\b", re.I)


def announces_only(sentence: str) -> bool:
    """The sentence announces content it does not state (see ``_ANNOUNCES``); content after a colon counts."""
    body = strip_markers(sentence).rstrip(" .")
    if body.endswith(":"):
        return True
    if not _ANNOUNCES.search(body):
        return False
    after = body.split(":", 1)[1] if ":" in body else ""
    return len(after.split()) < 2


_WORDS = re.compile(r"[a-z0-9]+(?:[.,][0-9]+)?")


def verbatim_in(sentence: str, passage: str, min_share: float = 0.9, min_words: int = 6,
                new_words: bool = True) -> bool:
    """The sentence's words (markers removed) appear in this order in ``passage``, covering at least
    ``min_share`` of them: a sentence copied from its source, give or take a word. The claim-support model
    under-accepts such copies (0.02-0.23 on word-for-word guideline sentences, BENCHMARKS.md "Trust"); a
    copy is stated by its source by construction (whether it answers the question is the gate's and the
    calibration's business).

    Without ``new_words`` (``verifier.verbatim_strict``), the words outside the copied runs must be function
    words or words the passage has elsewhere (give or take a final "s"/"es"): "Dystonia is abnormal uncontrolled
    movement ..." copied from "Dyskinesia is abnormal uncontrolled movement ..." swaps in a term the passage never
    names, and is not a copy of it. The last word of a sentence cut off mid-way (:func:`unfinished`) is a fragment,
    not a claim, and is not counted."""
    from difflib import SequenceMatcher

    words = _WORDS.findall(strip_markers(sentence).lower())
    if len(words) < min_words:
        return False
    ref = _WORDS.findall(passage.lower())
    blocks = SequenceMatcher(None, words, ref, autojunk=False).get_matching_blocks()
    if sum(b.size for b in blocks) < min_share * len(words):
        return False
    if new_words:
        return True
    copied = {i for b in blocks for i in range(b.a, b.a + b.size)}
    have = set(ref)
    if unfinished(sentence):
        copied.add(len(words) - 1)
    return all(i in copied or w in STOPWORDS or not _inflections(w).isdisjoint(have) for i, w in enumerate(words))


def _inflections(word: str) -> set[str]:
    """The word with and without a final "s"/"es" (cause, causes): an inflection is not a new term."""
    forms = {word, word + "s", word + "es"}
    for end in ("es", "s"):
        if len(word) > len(end) + 2 and word.endswith(end):
            forms.add(word[: -len(end)])
    return forms


def repeats(sentences: Sequence[str]) -> list[bool]:
    """For each sentence, whether an earlier one says the same words (markers, case and spacing aside)."""
    seen: set[str] = set()
    out = []
    for s in sentences:
        key = re.sub(r"\W+", " ", strip_markers(s).lower()).strip()
        out.append(key in seen)
        seen.add(key)
    return out


_FINAL = re.compile(r"[.!?…][\"'”’)\]]*$")


def unfinished(sentence: str) -> bool:
    """The sentence (markers removed) does not end as a sentence ends: no final ``.``, ``!``, ``?`` or ``…``.
    Meaningful for the last sentence of a generation stopped at its token limit, which is cut mid-clause
    ("Some cases of DPL resolve [1]"); a cut can drop the words that qualify a claim, so it is shown marked."""
    return _FINAL.search(strip_markers(sentence)) is None


def mark_cut(sentence: str) -> str:
    """The sentence as shown when cut off: "…" after its last word, before its trailing markers."""
    tail = re.search(r"(?:\s*\[[^\[\]]*\])*\s*$", sentence)
    cut = tail.start() if tail else len(sentence)
    return sentence[:cut].rstrip(" ,;:-–") + "…" + sentence[cut:]


def claims_rule_change(sentence: str) -> bool:
    """True when a sentence says the assistant's rules or patient scope were lifted or overridden."""
    return _RULE_CHANGE.search(sentence) is not None


def record_fact(sentence: str, record_lines: list[str]) -> bool | None:
    """Whether the yes/no conditions a sentence asserts agree with the record's "X: yes/no" lines.

    True: every condition it names has a record line and all agree; False: one contradicts its
    line ("has diabetes" against "Diabetes: no"); None: it names none, or the record has no line.
    """
    text = strip_markers(sentence)
    verdicts = []
    for rx in CONDITIONS.values():
        m = rx.search(text)
        if not m:
            continue
        line = next((x for x in record_lines if (y := _YES_NO_LINE.match(x)) and rx.search(y.group(1))), None)
        if line is None:
            return None
        clause = re.split(r"[,;:]", text[:m.start()])[-1]
        says_yes = not NEGATION.search(clause)
        verdicts.append(says_yes == (_YES_NO_LINE.match(line).group(2).lower() == "yes"))  # type: ignore[union-attr]
    sex = _SEX_WORD.findall(text)
    if sex:
        sex_line = next((y for x in record_lines if (y := _SEX_LINE.match(x))), None)
        if sex_line is None:
            return None
        recorded = sex_line.group(2).lower()
        verdicts.append(all(("female" if w.lower() in ("female", "woman") else "male") == recorded for w in sex))
    if not verdicts:
        return None
    return all(verdicts)


_SEX_WORD = re.compile(r"\b(male|man|female|woman)\b", re.I)
_SEX_LINE = re.compile(r"^[\s\-*]*(sex):\s*(male|female)\b", re.I)
# A sentence may be verified by the record line alone (at any embedding similarity) only when it
# states one fact and nothing else: short, and no reasoning or advice riding on it.
_MORE_THAN_A_FACT = re.compile(r"\b(?:because|which|so|should|recommend\w*|therefore|indicat\w*|suggest\w*|"
                               r"means?|requires?|needs?|treat\w*|start|stop|increase|decrease)\b", re.I)


def single_fact(sentence: str, max_words: int = 18) -> bool:
    text = strip_markers(sentence)
    return len(text.split()) <= max_words and not _MORE_THAN_A_FACT.search(text)


def record_value(sentence: str, record_lines: list[str], exempt: Collection[str] = ()) -> bool:
    """The sentence names a measurement and every number it states is on a record line naming it
    ("The patient is 60 years old" against "- Age: 60 years")."""
    named = measures_in(strip_markers(sentence))
    nums = numbers_in(sentence) - set(exempt)
    if not named or not nums:
        return False
    return all(any(num in numbers_in(line) and measures_in(line) & named for line in record_lines) for num in nums)


def about_patient(patient_id: str) -> Callable[[str], bool]:
    """Whether a sentence speaks about this patient: "this/the patient", "patient P002" or "P002"."""
    rx = re.compile(rf"\b(?:this|the) patient(?:'s)?\b|\b{re.escape(patient_id)}\b", re.I)
    return lambda sentence: bool(rx.search(sentence))


def check_support(text: str, sentence_vectors: np.ndarray, source_vectors: Mapping[int, np.ndarray],
                  threshold: float, attribute_uncited: bool = False,
                  source_texts: Mapping[int, list[str]] | None = None, exempt_numbers: Collection[str] = (),
                  record_sources: Collection[int] | None = None, about_patient: Callable[[str], bool] | None = None,
                  scores: Sequence[Mapping[int, np.ndarray]] | None = None, record_rules: bool = True,
                  cosine_min: float | None = None, statement_checks: bool = False, verbatim: bool = False,
                  record_polarity: bool = False, verbatim_recite: bool = False,
                  recite_supported: bool = False, verbatim_strict: bool = False) -> list[SentenceSupport]:
    """Judge every sentence of ``text`` against the passages of the sources it cites.

    ``source_vectors[n]`` holds one row per passage of source n (normalised). A sentence
    whose best cited passage is below ``threshold`` is unsupported. With ``attribute_uncited``,
    a sentence left uncited, or whose cited sources do not support it, is re-cited to the best
    source that does support it (same threshold and number check) and marked ``attributed``;
    small generators often state a sourced fact and forget or misnumber the marker.

    With ``source_texts`` (the passages' texts, aligned with ``source_vectors``), every number
    in the sentence must also appear in a cited passage (or in ``exempt_numbers``, e.g. the
    question's own numbers): embedding similarity barely notices a wrong dose or threshold.

    With ``record_sources`` (the numbers of the patient's own records) and ``about_patient``, a
    sentence that speaks about the patient must cite at least one of those records: a guideline's
    range cited as "the HbA1c of this patient" is not the patient's value (measured: both the
    base and the tuned generator did this on 8 of 12 questions the record could not answer).
    Two more checks read the patient's record lines directly: a number stated for a named
    measurement must not be one the record gives only for other measurements
    (:func:`value_of_other_measure`), and a yes/no condition ("has diabetes") must agree with
    the record's "Diabetes: yes/no" line (:func:`record_fact`; sex likewise). A one-fact sentence
    (:func:`single_fact`) whose every claim those lines verify is supported at any similarity:
    "The patient is 60 years old and male" scores 0.41 against "- Age: 60 years / - Sex: male".

    ``scores`` (one mapping per sentence: source n -> a score per passage) replaces the cosine
    similarities, e.g. with the verifier's support probabilities (rag/verifier.py); ``threshold``
    then applies to those, and ``cosine_min`` (if set) also accepts a sentence whose embedding cosine to a
    cited passage reaches it. ``record_rules=False`` turns off the three record-line rules above (the record-citing
    rule stays; ``record_polarity`` keeps the yes/no one): they were written from one dataset's line format.

    ``verbatim``: a sentence copied from the text of a source it cites (:func:`verbatim_in`) is supported
    whatever its score (``checks.verbatim``; the number check still applies). ``verbatim_recite`` and
    ``recite_supported``: re-citing copies (:meth:`_SupportJudge._recite_copied`); ``verbatim_strict``: no new words.

    ``statement_checks``: a sentence that only announces content elsewhere (:func:`announces_only`) or repeats an
    earlier one (:func:`repeats`) is unsupported (``checks.states``, ``checks.repeat``, recorded either way).
    """
    sentences = split_sentences(text)
    if len(sentences) != len(sentence_vectors):
        raise ValueError("one vector per sentence is required")
    if scores is not None and len(scores) != len(sentences):
        raise ValueError("one score mapping per sentence is required")
    judge = _SupportJudge(source_vectors, threshold, source_texts, set(exempt_numbers), record_sources,
                          about_patient, record_rules, cosine_min, scores is not None, verbatim, record_polarity,
                          verbatim_recite, recite_supported, verbatim_strict)
    out = [judge.judge(sent, vec, dict(scores[i]) if scores is not None else None, attribute_uncited)
           for i, (sent, vec) in enumerate(zip(sentences, sentence_vectors, strict=True))]
    for s, again in zip(out, repeats(sentences), strict=True):
        s.checks["states"] = not announces_only(s.text)
        s.checks["repeat"] = again
        if statement_checks and (again or not s.checks["states"]):
            s.supported = False
    return out


@dataclass
class _Judged:
    """One sentence's verdict while it is being made (see :meth:`_SupportJudge.judge`)."""

    cited: list[int]
    best: dict[int, int]
    best_score: float
    supported: bool
    attributed: bool = False
    copied: bool | None = None  # the sentence is verbatim text of a cited source (None: not computed)


class _SupportJudge:
    """The sources of one answer and the rules of :func:`check_support`, applied sentence by sentence."""

    def __init__(self, source_vectors: Mapping[int, np.ndarray], threshold: float,
                 source_texts: Mapping[int, list[str]] | None, exempt: set[str],
                 record_sources: Collection[int] | None, about_patient: Callable[[str], bool] | None,
                 record_rules: bool, cosine_min: float | None, with_scores: bool, verbatim: bool = False,
                 record_polarity: bool = False, recite: bool = False, recite_supported: bool = False,
                 strict: bool = False):
        self.vectors, self.threshold, self.texts, self.exempt = source_vectors, threshold, source_texts, exempt
        self.records = set(record_sources or ())
        self.check_records = record_sources is not None and about_patient is not None
        self.about_patient, self.record_rules, self.cosine_min = about_patient, record_rules, cosine_min
        self.with_scores, self.verbatim, self.recite, self.strict = with_scores, verbatim, recite, strict
        self.recite_supported = recite_supported
        self.polarity = record_rules or record_polarity  # yes/no lines are checked (record_fact)

    # -- the rules ------------------------------------------------------------------------------------
    def lines_of(self, ns: list[int]) -> list[str]:
        """The lines of the cited sources that are the patient's records."""
        if self.texts is None:
            return []
        return [line for n in ns if n in self.records for t in self.texts.get(n, []) for line in t.splitlines()]

    def numbers_ok(self, sent: str, ns: list[int]) -> bool:
        if self.texts is None:
            return True
        found = set().union(*(numbers_in(t) for n in ns for t in self.texts.get(n, [])))
        if not numbers_in(sent) - self.exempt <= found:
            return False
        return not self.record_rules or value_of_other_measure(sent, self.lines_of(ns), self.exempt) is None

    def by_record(self, sent: str, ns: list[int], fact: bool | None) -> bool:
        """A one-fact sentence the cited record's own lines verify, whatever its embedding similarity."""
        if not self.record_rules or not self.records & set(ns) or not single_fact(sent) or fact is False:
            return False
        has_numbers = bool(numbers_in(sent) - self.exempt)
        value = record_value(sent, self.lines_of(ns), self.exempt)
        # Every kind of claim it makes is verified: its numbers on their measurement's lines, its
        # yes/no conditions and sex on theirs; and it makes at least one.
        return bool((value or not has_numbers) and (fact is True or (fact is None and value)))

    def fact(self, sent: str, ns: list[int]) -> bool | None:
        return record_fact(sent, self.lines_of(ns)) if self.records and self.polarity else None

    def copied(self, sent: str, ns: list[int]) -> bool:
        """The sentence is (near-)verbatim text of one of these sources (:func:`verbatim_in`)."""
        return self.texts is not None and any(verbatim_in(sent, "\n".join(self.texts.get(n, [])),
                                                          new_words=not self.strict) for n in ns)

    def nearest(self, vec: np.ndarray, ns: Collection[int]) -> dict[int, int]:
        """Per source, the passage most similar to the sentence (the one that holds it near-verbatim)."""
        return {n: int(np.argmax(self.vectors[n] @ vec)) for n in ns
                if n in self.vectors and self.vectors[n].shape[-1] == vec.shape[-1]}

    # -- one sentence ---------------------------------------------------------------------------------
    def judge(self, sent: str, vec: np.ndarray, scored: dict[int, np.ndarray] | None,
              attribute_uncited: bool) -> SentenceSupport:
        sims = scored if scored is not None else {n: self.vectors[n] @ vec for n in self.vectors}
        cited = list(dict.fromkeys(n for n in parse_markers(sent) if n in self.vectors))
        needs_record = bool(self.check_records and self.about_patient is not None
                            and self.about_patient(strip_markers(sent)))
        # Embedding similarity to each source's best passage, once per sentence (rescue, ranking, audit).
        cos = {n: float(np.max(v @ vec)) for n, v in self.vectors.items() if v.shape[-1] == vec.shape[-1]}
        v, rescued = self._as_cited(sent, vec, sims, cited, cos, needs_record)
        if not v.supported and attribute_uncited:
            v = self._attribute(sent, vec, sims, cos, needs_record) or v
        if v.supported and self.recite_supported and v.cited and v.copied is None:
            v.copied = self.copied(sent, v.cited)  # kept: checks.verbatim reads it below
        if (not v.supported and self.recite) or (v.supported and self.recite_supported and v.cited and not v.copied):
            v = self._recite_copied(sent, vec, sims, cos, v.cited, needs_record) or v
        rec_lines = self.lines_of(v.cited)
        checks: dict[str, bool | None] = {
            "numbers": self.numbers_ok(sent, v.cited) if v.cited else None,
            # The record-line rules' verdict, recorded even when they are off (evaluation measures them).
            "record_rules": (record_fact(sent, rec_lines) is not False
                             and value_of_other_measure(sent, rec_lines, self.exempt) is None) if rec_lines else None,
            "cites_record": bool(self.records & set(v.cited)) if needs_record else None}
        cosine = max((cos[n] for n in v.cited if n in cos), default=None)
        checks["rescued_by_cosine"] = (bool(rescued and v.best_score < self.threshold) if self.cosine_min is not None
                                       else None)
        checks["verbatim"] = (v.copied if v.copied is not None else self.copied(sent, v.cited)) \
            if self.texts is not None and v.cited else None
        return SentenceSupport(sent, v.cited, v.supported, v.best_score, v.best, v.attributed, checks, cosine)

    def _as_cited(self, sent: str, vec: np.ndarray, sims: dict[int, np.ndarray], cited: list[int],
                  cos: dict[int, float], needs_record: bool) -> tuple[_Judged, bool]:
        """The verdict on the sources the sentence cites, and whether the cosine rescue applied."""
        best = {n: int(np.argmax(sims[n])) for n in cited}
        best_score = max((float(sims[n][best[n]]) for n in cited), default=0.0)
        fact = self.fact(sent, cited)
        cos_cited = max((cos[n] for n in cited if n in cos), default=None)
        rescued = self.cosine_min is not None and cos_cited is not None and cos_cited >= self.cosine_min
        if rescued and best_score < self.threshold:
            best = self.nearest(vec, cited)  # supported by near-verbatim similarity: show the passage holding it
        copied = self.copied(sent, cited) if self.verbatim else None
        supported = (bool(cited) and (best_score >= self.threshold or rescued or bool(copied)
                                      or self.by_record(sent, cited, fact))
                     and fact is not False and self.numbers_ok(sent, cited)
                     and (not needs_record or bool(self.records & set(cited))))
        return _Judged(cited, best, best_score, supported, copied=copied), rescued

    def _attribute(self, sent: str, vec: np.ndarray, sims: dict[int, np.ndarray], cos: dict[int, float],
                   needs_record: bool) -> _Judged | None:
        """The best-matching source that actually supports the sentence, if any does.

        This also corrects a marker that points at the wrong source (the sentence is re-cited). A
        patient record whose yes/no line agrees with the sentence supports it at any similarity. With
        scores (the verifier), candidates are ranked by embedding similarity: the source that holds the
        sentence (near-)verbatim is the best evidence, and the verifier alone once put a verbatim HFrEF
        sentence on an HFpEF passage at 0.52 (README sample).
        """
        def rank(n: int) -> float:
            return cos.get(n, -1.0) if self.with_scores else float(np.max(sims[n]))

        for n in sorted(sims, key=lambda n: -rank(n)):
            fact_n = record_fact(sent, self.lines_of([n])) if n in self.records and self.polarity else None
            passes = (float(np.max(sims[n])) >= self.threshold
                      or (self.cosine_min is not None and cos.get(n, -1.0) >= self.cosine_min))
            if fact_n is False or (not passes and not self.by_record(sent, [n], fact_n)):
                continue
            if needs_record and n not in self.records:
                continue
            if self.numbers_ok(sent, [n]):
                best, best_score = {n: int(np.argmax(sims[n]))}, float(np.max(sims[n]))
                if self.with_scores and best_score < self.threshold and cos.get(n, -1.0) >= (self.cosine_min or 2.0):
                    best = self.nearest(vec, [n])  # the passage that holds it
                return _Judged([n], best, best_score, True, attributed=True)
        return None


    def _recite_copied(self, sent: str, vec: np.ndarray, sims: dict[int, np.ndarray], cos: dict[int, float],
                       cited: list[int], needs_record: bool) -> _Judged | None:
        """The uncited source the sentence is copied from (most similar first), if the other checks pass there.

        For a sentence its cited sources do not support (after ``attribute_uncited``) that is (near-)verbatim
        text of another source: the generator copied it and put the wrong number on it. With ``recite_supported``
        also for a *supported* sentence copied from no source it cites (the claim-support model accepts another
        page's text under the asked page's number). The number, record-citing and yes/no checks apply to the
        new source; the result is marked ``attributed``."""
        if self.texts is None:
            return None
        for n in sorted((n for n in sims if n not in cited), key=lambda n: -cos.get(n, -1.0)):
            if not self.copied(sent, [n]):
                continue
            fact_n = self.fact(sent, [n])
            if fact_n is False or (needs_record and n not in self.records) or not self.numbers_ok(sent, [n]):
                continue
            best = self.nearest(vec, [n]) or {n: int(np.argmax(sims[n]))}
            return _Judged([n], best, float(np.max(sims[n])), True, attributed=True, copied=True)
        return None


def strip_markers(text: str) -> str:
    """Sentence text without its markers (what gets embedded for the support check)."""
    text = re.sub(r"\s+", " ", _MARKER.sub("", text))
    return re.sub(r"\s+([.,;:!?])", r"\1", text).strip()
