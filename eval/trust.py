"""The trust evaluation: abstention, strict correctness, calibration and the cost of the checks.

``run`` asks one part (dev or test) of the fixed trust set (eval/trust_set.py) through the whole
assistant and keeps one record per question: every signal, every sentence with its verifier
probability, cosine and check verdicts, and a strict score. Questions are generated when their
best answerability reaches ``floor`` (a low gate, so that any stricter gate can be replayed from
the records without generating again).

``fit`` (dev only) fits the confidence calibration (logistic regression over the signals, on the
questions the pipeline answered: label = strictly right) and chooses the answerability gate and
the abstention threshold: the most right answers with at least 95% of out-of-corpus questions
abstained. ``report`` replays the chosen settings on a part and writes the figures (reliability
diagram, risk-coverage curve) and the summary; on test it is reported, never fitted.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from corpora.heart_failure import read_records
from corpora.report import LoadReport
from eval import key_facts, trust_labels
from eval.grounded import share
from eval.mcq import stats
from eval.patient_records import expected, states_value
from rag.answer import Answer
from rag.assistant import MODEL_FOUND_NOTHING, NOTHING_SUPPORTED
from rag.cite import announces_only, numbers_in, record_fact, repeats, unanswered_measures, verbatim_in
from rag.confidence import answerability_logit, check_map, combine, monotone_map
from rag.config import ConfidenceConfig
from rag.coverage import share_found
from rag.errors import InputError
from rag.subject import other_variant
from rag.text import tokenize

log = logging.getLogger(__name__)

_LEGACY = ConfidenceConfig.model_validate({})  # the hand-set weights, for the uncalibrated comparison
FEATURES = ("answerability", "support_prob", "support", "retrieval", "agreement", "generation")
# Candidate signal sets for the answer calibration, chosen with the regularisation by cross-validated
# log loss on the dev answers. With ~100 answered dev questions six weights are noisy: the v2 fit
# (all six, C=1) was compressed on test (ECE 0.125) although it looked calibrated on dev (in-sample).
FEATURE_SETS: tuple[tuple[str, ...], ...] = (
    FEATURES,
    # the answer read as a whole (rag.verifier.Verifier.answers): supported sentences that miss the question
    (*FEATURES, "answer_answerability"),
    (*FEATURES, "answer_answerability", "second_try"),  # generator.second_try: the answer saw one source
    ("answer_answerability", "answerability", "support_prob", "support", "generation"),
    ("answer_answerability", "support", "generation"),
    ("answerability", "support_prob", "retrieval"),
    ("answerability", "support_prob", "support", "generation"),
    ("answerability", "support_prob"),
    ("support_prob", "support"),
)
GATE_FEATURES = ("answerability_logit", "retrieval", "agreement")
OUT_OF_CORPUS = ("topic_removed", "non_medical", "demo_out_of_corpus")


# -- asking and strict scoring -------------------------------------------------------------------------
def _shown_text(c: Any, parents: dict[str, Any] | None) -> str:
    """The text the generator was shown for a source: its parent section when merged, else the passage."""
    parent = parents.get(c.parent_id) if parents is not None and c.merged and c.parent_id else None
    return str(parent.text) if parent is not None else str(c.text)


def record(q: dict[str, Any], a: Answer, parents: dict[str, Any] | None = None) -> dict[str, Any]:
    """One question's record: the answer as the pipeline gave it, with everything replay needs
    (``parents``: the index's parent sections, so the scorer can read what each source showed).

    After a second try (generator.second_try) the record is the first answer's, with the second under
    ``second_try`` (its own sources, sentences and signals): replay decides whether it would have run."""
    if a.first_try is not None:
        row = record(q, a.first_try, parents)
        return {**row, "second_try": record({}, dataclasses.replace(a, first_try=None), parents)}
    by_n = {c.n: c for c in a.citations}
    return {
        **q, "abstained": a.abstained, "reason": a.abstain_reason, "answer": a.answer, "draft": a.draft,
        "generated": a.generated, "confidence": a.confidence, "signals": a.confidence_signals,
        "timings_ms": a.timings_ms,
        "sources": [{"n": c.n, "doc_id": c.doc_id, "patient_id": c.patient_id, "answerability": c.answerability,
                     "title": c.title, "section": c.section, "text": _shown_text(c, parents)} for c in a.citations],
        "sentences": [{"text": s.text, "citations": s.citations, "supported": s.supported, "prob": s.support_score,
                       "cosine": s.cosine, "attributed": s.attributed, "checks": s.checks, "cut_off": s.cut_off,
                       "cited_docs": sorted({by_n[n].doc_id for n in s.citations if n in by_n}),
                       "cited_patients": sorted({str(by_n[n].patient_id) for n in s.citations
                                                 if n in by_n and by_n[n].patient_id})} for s in a.sentences],
    }


@functools.cache
def _annotated_required() -> dict[str, list[list[str]]]:
    """The demo questions' fact groups by id, for records written before the groups existed."""
    path = Path(__file__).parent / "questions" / "demo_answerable.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {r["id"]: r.get("required", []) for r in rows}


def _states_with_sources(row: dict[str, Any], required: list[list[str]], sentences: list[dict[str, Any]]) -> bool:
    """Every required group is stated by a sentence AND by the text of a gold source that sentence cites.

    Citing the right guideline is not enough: the cited section must say it (a threshold cited to the
    definition section is not sourced). Records written before source texts were kept are checked per
    document only.
    """
    gold = set(row["gold"])
    sources = {s["n"]: s for s in row.get("sources", [])}
    if not any(gold & set(s["cited_docs"]) for s in sentences):
        return False
    for group in required:
        if not any(key_facts.states(alt, s["text"]) and _cited_text_states(alt, s, sources, gold)
                   for s in sentences if gold & set(s["cited_docs"]) for alt in group):
            return False
    return True


def _cited_text_states(fact: str, sentence: dict[str, Any], sources: dict[int, dict[str, Any]], gold: set[str]) -> bool:
    texts = [sources[n].get("text") for n in sentence["citations"] if n in sources and sources[n]["doc_id"] in gold]
    if not texts or any(t is None for t in texts):
        return True  # no source text recorded (an older run): the document-level check above decides
    return any(key_facts.states(fact, str(t)) for t in texts)


def right_if_answered(row: dict[str, Any], shown: list[dict[str, Any]], records: dict[str, Any]) -> dict[str, bool]:
    """Strict verdicts for an answer made of the ``shown`` (supported) sentences."""
    text = " ".join(s["text"] for s in shown)
    model = [s for s in shown if not s["attributed"]]
    suite = row["suite"]
    if not row["answerable"]:
        return {"right": False, "model_cited": False}
    if suite in ("medquad", "demo_answerable"):
        gold = set(row["gold"])
        if suite == "medquad":
            return {"right": any(gold & set(s["cited_docs"]) for s in shown),
                    "model_cited": any(gold & set(s["cited_docs"]) for s in model)}
        # Every required fact group stated, in sentences that cite a gold document (a fact cited to
        # another source is not sourced). Rows without groups: every non-yes/no key fact is required.
        required = row.get("required") or _annotated_required().get(row["id"]) or \
            [[f] for f in row.get("key_facts") or [] if f.lower() not in ("yes", "no")]
        return {"right": _states_with_sources(row, required, shown),
                "model_cited": _states_with_sources(row, required, model)}
    if suite == "patient":
        pid = row["patient_id"]
        value = expected(records[pid], row["fact"])
        states = states_value(text, value, row["fact"])
        cites = any(pid in s["cited_patients"] for s in shown)
        cites_model = any(pid in s["cited_patients"] for s in model)
        return {"right": states and cites, "model_cited": states and cites_model}
    raise ValueError(f"unknown suite {suite}")


def run(assistants: dict[str, Any], qs: list[dict[str, Any]], hf_csv: Path, batch_size: int = 8,
        on_answer: Callable[[int, int], None] | None = None, journal: Path | None = None
        ) -> list[dict[str, Any]]:
    """Ask every question through its suite's assistant (``demo`` for the demo suites, else ``trust``).

    With ``journal``, each record is appended there as soon as it is made, and the questions already
    in it are not asked again: a killed run (hours of generation on a CPU) resumes where it stopped.
    """
    records = {r.patient_id: r for r in read_records(hf_csv, LoadReport(fmt="uci-heart-failure"))}
    earlier = {r["id"]: r for r in load_rows(journal)} if journal is not None and journal.exists() else {}
    if journal is not None and journal.exists() and not journal.read_bytes().endswith(b"\n"):
        write_rows(list(earlier.values()), journal)  # drop a cut-off last record before appending after it
    rows: list[dict[str, Any] | None] = [earlier.get(q["id"]) for q in qs]
    done = [sum(r is not None for r in rows)]
    for name, assistant in assistants.items():
        idx = [i for i, q in enumerate(qs) if ("demo" if q["suite"].startswith("demo_") else "trust") == name
               and rows[i] is None]
        if not idx:
            continue

        def tick(k: int, a: Answer, idx: list[int] = idx, assistant: Any = assistant) -> None:
            row = record(qs[idx[k]], a, assistant.index.parents)
            rows[idx[k]] = row
            if journal is not None:
                with journal.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
            done[0] += 1
            if on_answer is not None:
                on_answer(done[0], len(qs))

        assistant.ask_many([qs[i]["question"] for i in idx], batch_size=batch_size, on_answer=tick,
                           patient_ids=[qs[i].get("patient_id") for i in idx])
    out = [r for r in rows if r is not None]
    for r in out:
        r["score"] = right_if_answered(r, [s for s in r["sentences"] if s["supported"]], records) \
            if not r["abstained"] else {"right": not r["answerable"], "model_cited": False}
    return out


# -- replay: the same records under other settings ------------------------------------------------------
def gate_value(row: dict[str, Any], calib: dict[str, Any] | None) -> float:
    """What the gate compares with its threshold: the gate model's probability, else raw answerability."""
    sig = dict(row["signals"])
    if "answerability" not in sig:
        return 1.0
    sig["answerability_logit"] = answerability_logit(sig["answerability"])
    if calib and calib.get("gate"):
        return probability(calib["gate"], sig)
    return float(sig["answerability"])


def replay(row: dict[str, Any], gate: float, abstain_below: float, calib: dict[str, Any] | None,
           records: dict[str, Any], support: str = "verifier", support_min: float = 0.5,
           cosine_min: float = 0.45, record_rules: bool = False, support_cosine: float | None = None,
           second_try: bool = True, statement_checks: bool = False, verbatim: bool = False,
           record_polarity: bool = False, verbatim_recite: bool = False,
           subject_variant: bool = False, recite_supported: bool = False,
           verbatim_strict: bool = False, unseen_terms: bool = False, novel_terms: bool = False,
           subject_min: float | None = None) -> dict[str, Any]:
    """Would the pipeline answer this question under these settings, and would it be right?

    Only what the records hold can change: the answerability gate (questions below the run's floor
    were never generated, so gates below that floor cannot be replayed), which sentences count as
    supported (verifier probability or cosine, the number and record checks), the record-line rules,
    and the confidence threshold. Attribution is kept as the run made it.
    """
    sig = row["signals"]
    if not row["generated"] or "generation" not in sig:
        # Never generated: abstained before generation (floor gate, weak retrieval, nothing retrieved).
        return {"answered": False, "right": not row["answerable"], "confidence": 0.0, "model_cited": False}
    if gate_value(row, calib) < gate:
        return {"answered": False, "right": not row["answerable"], "confidence": 0.0, "model_cited": False}
    if subject_variant and _other_variant(row["question"], tuple(str(s.get("title") or "") for s in row["sources"])):
        # verifier.subject_variant: the shown sources are about another variant of the subject (before generating)
        return {"answered": False, "right": not row["answerable"], "confidence": 0.0, "model_cited": False}
    kw: dict[str, Any] = {"support": support, "support_min": support_min, "cosine_min": cosine_min,
                          "record_rules": record_rules, "support_cosine": support_cosine,
                          "statement_checks": statement_checks, "verbatim": verbatim,
                          "record_polarity": record_polarity, "verbatim_recite": verbatim_recite,
                          "recite_supported": recite_supported, "verbatim_strict": verbatim_strict,
                          "unseen_terms": unseen_terms, "novel_terms": novel_terms, "subject_min": subject_min}
    first = _replay_answer(row, abstain_below, calib, records, **kw)
    second = row.get("second_try")
    if first.get("withheld") in (MODEL_FOUND_NOTHING, NOTHING_SUPPORTED) and second is not None and second_try:
        # The pipeline would have tried again with the best source alone (generator.second_try): that answer.
        # A first answer the recorded run showed (so it never tried again) but these settings withhold has
        # no second try on record: it stays withheld (a conservative replay).
        out = _replay_answer({**row, **second}, abstain_below, calib, records, **kw)
        return {**out, "second_try": True}
    return first


def _replay_answer(row: dict[str, Any], abstain_below: float, calib: dict[str, Any] | None,
                   records: dict[str, Any], support: str = "verifier", support_min: float = 0.5,
                   cosine_min: float = 0.45, record_rules: bool = False, support_cosine: float | None = None,
                   statement_checks: bool = False, verbatim: bool = False,
                   record_polarity: bool = False, verbatim_recite: bool = False,
                   recite_supported: bool = False, verbatim_strict: bool = False,
                   unseen_terms: bool = False, novel_terms: bool = False, subject_min: float | None = None
                   ) -> dict[str, Any]:
    """One generated answer (a first or a second try) past the gate, under these settings; ``withheld``
    says why it would not be shown."""
    sig = row["signals"]
    if row["reason"] == MODEL_FOUND_NOTHING:
        return {"answered": False, "right": not row["answerable"], "confidence": 0.0, "model_cited": False,
                "withheld": MODEL_FOUND_NOTHING}
    if unseen_terms and any(s["checks"].get("unseen_terms") is False for s in row["sentences"]):
        # verifier.unseen_terms: a sentence restates a question word no indexed passage holds; the whole answer is
        # withheld, with no second try (the sources are about something else)
        return {"answered": False, "right": not row["answerable"], "confidence": 0.0, "model_cited": False,
                "withheld": "unseen terms"}
    shown = []
    texts = {src["n"]: str(src.get("text") or "") for src in row.get("sources", [])} \
        if verbatim or verbatim_recite or recite_supported else {}
    again = repeats([s["text"] for s in row["sentences"]]) if statement_checks else []
    polarity = record_polarity or record_rules  # the product checks a record's yes/no lines only then
    for k, s in enumerate(row["sentences"]):
        if statement_checks and (again[k] or announces_only(s["text"])):
            continue  # verifier.statement_checks: announces content it does not state, or says it twice
        ch = s["checks"]
        ok = bool(s["citations"]) and ch.get("numbers") is not False and ch.get("cites_record") is not False
        score, bar = (s["prob"], support_min) if support == "verifier" else (s["cosine"] or 0.0, cosine_min)
        rescued = support == "verifier" and support_cosine is not None and (s["cosine"] or 0.0) >= support_cosine
        # verifier.verbatim_support: copied from the text of a source it cites (as recorded for the run)
        copied = verbatim and any(_copied(s["text"], texts.get(n, ""), verbatim_strict) for n in s["citations"])
        ok = ok and (score >= bar or rescued or copied)
        if record_polarity and not record_rules and _contradicts_record(s, row):
            ok = False  # verifier.record_polarity: "no anaemia" cited to a record saying "Anaemia: yes"
        if record_rules and ch.get("record_rules") is False:
            ok = False
        if novel_terms and ch.get("novel_terms") is False:
            ok = False  # verifier.novel_terms: a word no indexed passage contains and the question does not
        if not ok and verbatim_recite and s["citations"]:
            # verifier.verbatim_recite: copied from a source it does not cite
            s = _recited(s, row, texts, polarity, verbatim_strict) or s
            ok = bool(s.get("recited"))
        if ok and recite_supported and s["citations"] and not any(_copied(s["text"], texts.get(n, ""), verbatim_strict)
                                                                  for n in s["citations"]):
            # verifier.recite_supported: accepted as cited, but copied from another source and from none it cites
            s = _recited(s, row, texts, polarity, verbatim_strict) or s
        if ok:
            shown.append(s)
    n = len(row["sentences"])
    signals = dict(sig)
    signals["support"] = len(shown) / n if n else 0.0
    if "subject_terms" in row and shown:
        # how much of what was asked the shown answer names (alone, and with the sources it cites)
        signals["subject_named"] = _named(row["subject_terms"], tuple(s["text"] for s in shown))
        signals["subject_cited"] = subject_share(row, shown)
    if record_rules and row.get("patient_id") and unanswered_measures(row["question"], [s["text"] for s in shown]):
        shown = []
    if not shown:
        return {"answered": False, "right": not row["answerable"], "confidence": 0.0, "model_cited": False,
                "withheld": NOTHING_SUPPORTED}
    if subject_min is not None and subject_share(row, shown) < subject_min:
        # subject_min (a replay-only study, seventeenth session; not a product setting): the shown sentences and
        # the sources they cite name too little of what the question asks
        return {"answered": False, "right": not row["answerable"], "confidence": 0.0, "model_cited": False,
                "withheld": "subject"}
    conf = probability(calib, signals) if calib and "features" in calib else combine(signals, _LEGACY)
    # a monotone map changes the shown probability, not the operating point (rag.confidence.decision_score)
    if (probability(calib, signals, mapped=False) if calib and calib.get("monotone") else conf) < abstain_below:
        return {"answered": False, "right": not row["answerable"], "confidence": conf, "model_cited": False,
                "withheld": "confidence"}
    verdict = trust_labels.override(row, shown, right_if_answered(row, shown, records))
    return {"answered": True, "right": verdict["right"], "model_cited": verdict["model_cited"], "confidence": conf,
            "sentences": n, "shown": len(shown), "labelled": verdict.get("labelled", False), "signals": signals,
            "shown_sentences": shown}


def subject_share(row: dict[str, Any], shown: list[dict[str, Any]]) -> float:
    """:func:`rag.coverage.named_share` of the question's indexed words (``subject_terms``, recorded by
    :func:`eval.trust_jobs.add_unseen_terms`) over the shown sentences and the text of the sources they cite."""
    texts = {src["n"]: str(src.get("text") or "") for src in row.get("sources", [])}
    cited = sorted({n for s in shown for n in s["citations"]})
    return _named(row.get("subject_terms") or {},
                  tuple(s["text"] for s in shown) + tuple(texts.get(n, "") for n in cited))


@functools.lru_cache(maxsize=200_000)
def _tokens(text: str) -> frozenset[str]:
    """A text's BM25 tokens, once per text: a fit replays every record thousands of times."""
    return frozenset(tokenize(text))


def _named(weights: dict[str, float], texts: tuple[str, ...]) -> float:
    """:func:`rag.coverage.named_share` with each text tokenized once per process."""
    return share_found(weights, frozenset().union(*(_tokens(t) for t in texts)))


def _recited(sentence: dict[str, Any], row: dict[str, Any], texts: dict[int, str],
             polarity: bool = False, strict: bool = False) -> dict[str, Any] | None:
    """The sentence re-cited to the retrieved source it is copied from (:func:`rag.cite.verbatim_in`), as
    ``check_support(verbatim_recite=True)`` would: not a source it cites; the numbers must appear there (the
    question's own are exempt), a sentence about the patient must land on a patient record, and (``polarity``:
    ``verifier.record_polarity`` or ``confidence.record_rules`` on, as in the product) a yes/no condition must
    not contradict that record. Sources in retrieval order (the rows keep no per-source cosine)."""
    by_n = {src["n"]: src for src in row.get("sources", [])}
    exempt = numbers_in(row["question"])
    for n, src in by_n.items():
        if n in sentence["citations"] or not _copied(sentence["text"], texts.get(n, ""), strict):
            continue
        if not numbers_in(sentence["text"]) - exempt <= numbers_in(texts.get(n, "")):
            continue
        pid = src.get("patient_id")
        if sentence["checks"].get("cites_record") is not None and not pid:
            continue  # about the patient: only a record can support it
        if polarity and pid and record_fact(sentence["text"], texts.get(n, "").splitlines()) is False:
            continue
        return {**sentence, "citations": [n], "cited_docs": [src["doc_id"]],
                "cited_patients": [str(pid)] if pid else [], "attributed": True, "recited": True}
    return None


def _contradicts_record(sentence: dict[str, Any], row: dict[str, Any]) -> bool:
    """The sentence's yes/no condition disagrees with a line of a patient record it cites (as recorded)."""
    lines = [line for src in row.get("sources", []) if src.get("patient_id") and src["n"] in sentence["citations"]
             for line in str(src.get("text") or "").splitlines()]
    return bool(lines) and record_fact(sentence["text"], lines) is False


@functools.lru_cache(maxsize=100_000)
def _other_variant(question: str, titles: tuple[str, ...]) -> str | None:
    """:func:`rag.subject.other_variant`, once per row: a fit replays every record thousands of times."""
    return other_variant(question, titles)


@functools.lru_cache(maxsize=500_000)
def _copied(sentence: str, passage: str, strict: bool = False) -> bool:
    """:func:`rag.cite.verbatim_in`, once per pair: a fit replays every record thousands of times.
    ``strict``: ``verifier.verbatim_strict`` (no word the passage lacks outside the copied runs)."""
    return verbatim_in(sentence, passage, new_words=not strict)


def probability(calib: dict[str, Any], signals: dict[str, float], mapped: bool = True) -> float:
    """As :meth:`rag.confidence.Calibration.probability` on a calibration file's dict, through its monotone map
    unless ``mapped`` is false (:meth:`~rag.confidence.Calibration.score`: what the threshold is compared with)."""
    z = calib["intercept"] + sum(c * float(signals.get(f, 0.0)) for f, c in zip(calib["features"], calib["coef"],
                                                                                 strict=True))
    p = 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))
    return monotone_map(p, *check_map(calib["monotone"])) if mapped and calib.get("monotone") else p


# -- fitting on dev -------------------------------------------------------------------------------------
def fit_gate(rows: list[dict[str, Any]], features: Sequence[str] = GATE_FEATURES) -> dict[str, Any]:
    """P(the shown sources answer the question) from the pre-generation signals: label = answerable or not."""
    from sklearn.linear_model import LogisticRegression

    xs, ys = [], []
    for r in rows:
        sig = dict(r["signals"])
        if "answerability" not in sig:
            continue
        sig["answerability_logit"] = answerability_logit(sig["answerability"])
        xs.append([float(sig.get(f, 0.0)) for f in features])
        ys.append(int(r["answerable"]))
    model = LogisticRegression(C=1.0, max_iter=1000).fit(np.array(xs), np.array(ys))
    return {"features": list(features), "coef": [round(float(c), 6) for c in model.coef_[0]],
            "intercept": round(float(model.intercept_[0]), 6), "fitted_on": {"questions": len(ys),
                                                                              "answerable": int(sum(ys))}}


def _answered(rows: list[dict[str, Any]], records: dict[str, Any], gate: float, gate_model: dict[str, Any] | None,
              support_cosine: float | None, support_min: float, options: dict[str, Any] | None
              ) -> list[tuple[dict[str, float], bool]]:
    """(signals, strictly right) of each row answered at ``gate`` with no confidence threshold: what fits see."""
    out = []
    for r in rows:
        v = replay(r, gate, 0.0, {"gate": gate_model} if gate_model else None, records,
                   support_cosine=support_cosine, support_min=support_min, **(options or {}))
        if v["answered"]:
            out.append((v["signals"], bool(v["right"])))
    return out


def fit_calibration(rows: list[dict[str, Any]], records: dict[str, Any], gate: float,
                    features: Sequence[str] | None = None, gate_model: dict[str, Any] | None = None,
                    support_cosine: float | None = None, support_min: float = 0.5,
                    options: dict[str, Any] | None = None,
                    extra_sets: Sequence[tuple[str, ...]] = ()) -> dict[str, Any]:
    """Logistic regression of strict rightness on the signals, over the questions answered at ``gate``.

    ``features=None`` chooses the signal set among :data:`FEATURE_SETS` (and ``extra_sets``) together with the
    regularisation, by repeated 5-fold cross-validated log loss on these answers (a proper score:
    the choice rewards calibration and discrimination, never in-sample fit)."""
    answered = _answered(rows, records, gate, gate_model, support_cosine, support_min, options)
    return fit_answers(answered, features, extra_sets)


def fit_answers(answered: Sequence[tuple[dict[str, float], bool]], features: Sequence[str] | None = None,
                extra_sets: Sequence[tuple[str, ...]] = ()) -> dict[str, Any]:
    """:func:`fit_calibration` on answers already replayed: (signals, strictly right) pairs, from rows or from
    kept outcomes' signals (:func:`eval.trust_kept.replay`)."""
    from sklearn.linear_model import LogisticRegression

    # A canonical order: the cross-validation folds (and so the chosen signals and C) must not depend on whether
    # the answers came from a run's records, kept outcomes or both, in whatever order those were read.
    answered = sorted(answered, key=lambda a: (json.dumps(a[0], sort_keys=True), bool(a[1])))
    sigs, ys = [sig for sig, _ in answered], [int(right) for _, right in answered]
    if len(set(ys)) < 2:
        raise ValueError(f"cannot fit a calibration: {len(ys)} answered dev questions, all with one label")
    y = np.array(ys)
    candidates = [tuple(features)] if features is not None else [*FEATURE_SETS, *extra_sets]
    scored = []
    for feats in candidates:
        x = np.array([[float(sig.get(f, 0.0)) for f in feats] for sig in sigs])
        c, score = _choose_c(x, y)
        scored.append((score, -len(feats), feats, c, x))
    score, _, feats, c, x = max(scored, key=lambda t: (t[0], t[1]))
    model = LogisticRegression(C=c, max_iter=1000).fit(x, y)
    return {"features": list(feats), "coef": [round(float(v), 6) for v in model.coef_[0]],
            "intercept": round(float(model.intercept_[0]), 6), "C": c,
            "cv_log_loss": round(-score, 4) if np.isfinite(score) else None,
            "fitted_on": {"answered": len(ys), "right": int(sum(ys))}}


def fit_offset(calib: dict[str, Any], rows: list[dict[str, Any]], records: dict[str, Any], gate: float,
               feature: str, gate_model: dict[str, Any] | None = None, support_cosine: float | None = None,
               support_min: float = 0.5, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """``calib`` plus one coefficient for ``feature``, fitted on the answered rows with every other coefficient
    frozen (penalised maximum likelihood, the calibration's C). Answers where ``feature`` is 0 keep their
    confidence exactly: it corrects one kind of answer (record answers: ``patient_scoped``) without refitting,
    and so without moving, the others."""
    answered = _answered(rows, records, gate, gate_model, support_cosine, support_min, options)
    p = np.clip([probability(calib, sig) for sig, _ in answered], 1e-9, 1 - 1e-9)
    za = np.log(p / (1 - p))
    xa = np.array([float(sig.get(feature, 0.0)) for sig, _ in answered])
    ya = np.array([float(right) for _, right in answered])
    if not xa.any():
        raise ValueError(f"cannot fit {feature}: no answered dev question has it")
    b, c = 0.0, float(calib.get("C", 1.0))
    for _ in range(50):  # Newton on a concave one-dimensional objective
        q = 1.0 / (1.0 + np.exp(-(za + b * xa)))
        grad = float(np.sum((ya - q) * xa)) - b / c
        hess = -float(np.sum(q * (1 - q) * xa * xa)) - 1.0 / c
        step = grad / hess
        b -= step
        if abs(step) < 1e-10:
            break
    return {**calib, "features": [*calib["features"], feature], "coef": [*calib["coef"], round(b, 6)],
            "offset_fit": {"feature": feature, "answers_with_it": int(xa.astype(bool).sum()),
                           "right_with_it": int(ya[xa.astype(bool)].sum())}}


def _choose_c(x: np.ndarray, y: np.ndarray, grid: Sequence[float] = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0),
              repeats: int = 3) -> tuple[float, float]:
    """The logistic regularisation with the best stratified 5-fold log loss, averaged over ``repeats``
    shuffles (one split of ~100 answers ranks the grid by noise), and that score (negated log loss;
    C=1 and -inf when too few answers to cross-validate)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    folds = min(5, int(min(np.bincount(y, minlength=2))))
    if folds < 2:
        return 1.0, float("-inf")
    splits = [s for r in range(repeats) for s in StratifiedKFold(folds, shuffle=True, random_state=r).split(x, y)]
    scores = {}
    for c in grid:
        losses = []
        for train, test in splits:
            p = LogisticRegression(C=c, max_iter=1000).fit(x[train], y[train]).predict_proba(x[test])[:, 1]
            p = np.clip(p, 1e-6, 1 - 1e-6)
            losses.append(float(-np.mean(y[test] * np.log(p) + (1 - y[test]) * np.log(1 - p))))
        scores[c] = -float(np.mean(losses))
    best = max(grid, key=lambda c: (scores[c], -c))
    return best, scores[best]


def point(row: dict[str, Any], settings: dict[str, Any]) -> tuple[float, float]:
    """The (gate, threshold) a recorded question is replayed at: ``demo_point`` (the config's
    ``index.operating_point``, when it applies to the config's index) for the suites asked on that index, else
    ``gate`` and ``abstain_below``."""
    demo = settings.get("demo_point")
    if demo is not None and str(row["suite"]).startswith("demo_"):
        return float(demo[0]), float(demo[1])
    return settings["gate"], settings["abstain_below"]


def at_threshold_zero(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` with no confidence threshold, on the demo suites' point as well (every generated answer past the
    gate is shown: what a calibration is compared or refitted on)."""
    demo = settings.get("demo_point")
    return {**settings, "abstain_below": 0.0, "demo_point": [float(demo[0]), 0.0] if demo is not None else None}


def outcomes(rows: list[dict[str, Any]], settings: dict[str, Any], records: dict[str, Any]) -> list[dict[str, Any]]:
    return [{**replay(r, *point(r, settings), settings.get("calibration"), records,
                      record_rules=settings.get("record_rules", False), support=settings.get("support", "verifier"),
                      support_min=settings.get("support_min", 0.5), support_cosine=settings.get("support_cosine"),
                      subject_min=settings.get("subject_min"), **switches(settings)),
             "suite": r["suite"], "answerable": r["answerable"]} for r in rows]


def choose(rows: list[dict[str, Any]], records: dict[str, Any], calib: dict[str, Any], floor: float,
           min_ooc_abstain: float = 0.95, cosines: Sequence[float | None] = (None,),
           support_mins: Sequence[float] = (0.5,), options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The gate, abstention threshold, cosine rescue and support bar with the most right answers,
    abstaining on >= 95% out of corpus. Ties go to the stricter setting: the higher gate, threshold and
    support bar, and no cosine rescue before a higher rescue bar before a lower one (among settings with as
    many right answers, the one that shows fewer wrong ones). Until the fifteenth session ties went to the
    lower gate, threshold and rescue bar; the change is measured in BENCHMARKS.md, "Trust", fourteenth session.

    Each support setting is replayed once, with the lowest gate and no threshold: a stricter gate only
    withholds the rows whose gate value is below it, and a threshold only the answers whose confidence is
    below it (both are the replay's first and last steps), so every (gate, threshold) follows from that one
    replay exactly, at 1/700 of the cost of replaying each."""
    gates = [float(g) for g in np.round(np.arange(max(floor, 0.05), 0.951, 0.05), 3)]
    thresholds = np.round(np.arange(0.0, 0.951, 0.025), 3)
    gate_of = np.array([gate_value(r, calib) for r in rows])
    ooc = np.array([not r["answerable"] for r in rows])
    best: tuple[float, ...] | None = None
    chosen: dict[str, Any] = {}
    for cos in cosines:
        for smin in support_mins:
            s = {"gate": gates[0], "abstain_below": 0.0, "calibration": calib, "support_cosine": cos,
                 "support_min": float(smin), **(options or {})}
            out = outcomes(rows, s, records)
            answered = np.array([o["answered"] for o in out])
            right = np.array([bool(o["right"]) for o in out]) & answered
            conf = np.array([float(o["confidence"]) for o in out])
            for gate in gates:
                for ab in thresholds:
                    shown = answered & (gate_of >= gate) & (conf >= ab)
                    if int((~shown & ooc).sum()) / max(int(ooc.sum()), 1) < min_ooc_abstain:
                        continue
                    key = (int((shown & right & ~ooc).sum()), gate, float(ab), cos or 2.0, float(smin))
                    if best is None or key > best:
                        best, chosen = key, {"gate": gate, "abstain_below": float(ab), "support_cosine": cos,
                                             "support_min": float(smin)}
    if not chosen:
        raise ValueError(f"no setting abstains on {min_ooc_abstain:.0%} of dev out-of-corpus questions")
    return chosen


def _choose_by_replay(rows: list[dict[str, Any]], records: dict[str, Any], calib: dict[str, Any], floor: float,
                      min_ooc_abstain: float = 0.95, cosines: Sequence[float | None] = (None,),
                      support_mins: Sequence[float] = (0.5,), options: dict[str, Any] | None = None
                      ) -> dict[str, Any]:
    """:func:`choose` by replaying every setting (the reference its shortcut is tested against)."""
    best: tuple[float, ...] | None = None
    chosen: dict[str, Any] = {}
    for gate, ab, cos, smin in ((g, a, c, m) for g in np.round(np.arange(max(floor, 0.05), 0.951, 0.05), 3)
                                for a in np.round(np.arange(0.0, 0.951, 0.025), 3) for c in cosines
                                for m in support_mins):
        s = {"gate": float(gate), "abstain_below": float(ab), "calibration": calib, "support_cosine": cos,
             "support_min": float(smin), **(options or {})}
        out = outcomes(rows, s, records)
        ooc = [o for o in out if not o["answerable"]]
        ans = [o for o in out if o["answerable"]]
        if sum(not o["answered"] for o in ooc) / max(len(ooc), 1) < min_ooc_abstain:
            continue
        key = (sum(o["right"] for o in ans), float(gate), float(ab), cos or 2.0, float(smin))
        if best is None or key > best:
            best, chosen = key, {"gate": float(gate), "abstain_below": float(ab), "support_cosine": cos,
                                 "support_min": float(smin)}
    if not chosen:
        raise ValueError(f"no setting abstains on {min_ooc_abstain:.0%} of dev out-of-corpus questions")
    return chosen


# -- reporting ------------------------------------------------------------------------------------------
def ece(conf: Any, right: Any, bins: int = 10) -> float:
    """Expected calibration error over equal-width bins (eval/mcq/stats.py), 10 bins here."""
    return stats.ece(conf, right, bins)


def ece_interval(conf: Sequence[float], right: Sequence[bool], n_boot: int = 1000, seed: int = 7
                 ) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    c, y = np.asarray(conf, float), np.asarray(right, bool)
    vals = [ece(c[i], y[i]) for i in (rng.integers(0, len(c), len(c)) for _ in range(n_boot))] if len(c) else [0.0]
    return float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5))


def summary(rows: list[dict[str, Any]], settings: dict[str, Any], records: dict[str, Any]) -> dict[str, Any]:
    out = outcomes(rows, settings, records)
    suites: dict[str, Any] = {}
    for name in sorted({o["suite"] for o in out}):
        xs = [o for o in out if o["suite"] == name]
        ans = [o for o in xs if o["answerable"]]
        un = [o for o in xs if not o["answerable"]]
        suites[name] = {"questions": len(xs),
                        **({"right": share(sum(o["right"] for o in ans), len(ans)),
                            "right_model_cited": share(sum(o["model_cited"] for o in ans), len(ans)),
                            "abstained": share(sum(not o["answered"] for o in ans), len(ans))} if ans else {}),
                        **({"out_of_corpus_abstained": share(sum(not o["answered"] for o in un), len(un))}
                           if un else {})}
    answerable = [o for o in out if o["answerable"]]
    ooc = [o for o in out if not o["answerable"]]
    answered = [o for o in out if o["answered"]]
    conf = [o["confidence"] for o in answered]
    right = [o["right"] for o in answered]
    lo, hi = ece_interval(conf, right)
    sent_total = sum(o.get("sentences", 0) for o in answered)
    sent_shown = sum(o.get("shown", 0) for o in answered)
    return {
        "settings": {k: v for k, v in settings.items() if k != "calibration"},
        "questions": len(out),
        "answerable": {"n": len(answerable), "abstained": share(sum(not o["answered"] for o in answerable),
                                                                 len(answerable)),
                       "right": share(sum(o["right"] for o in answerable), len(answerable)),
                       "right_model_cited": share(sum(o["model_cited"] for o in answerable), len(answerable))},
        "out_of_corpus": {"n": len(ooc), "abstained": share(sum(not o["answered"] for o in ooc), len(ooc)),
                          "by_kind": {k: share(sum(not o["answered"] for o in ooc if o["suite"] == k),
                                               sum(o["suite"] == k for o in ooc))
                                      for k in sorted({o["suite"] for o in ooc})}},
        "answered": {"n": len(answered), "accuracy": share(sum(right), len(answered)),
                     "ece": round(ece(conf, right), 4), "ece_ci95": [round(lo, 4), round(hi, 4)],
                     "brier": round(float(np.mean([(c - r) ** 2 for c, r in zip(conf, right, strict=True)])), 4)
                     if answered else None,
                     "generated_sentences_supported": share(sent_shown, sent_total),
                     # answers whose verdict is a person's (eval/labels), not the automatic scorer's
                     "verdicts_by_a_person": sum(bool(o.get("labelled")) for o in answered),
                     # generator.second_try: answers from the second prompt (the best source alone), and right
                     "second_try": share(sum(bool(o.get("second_try")) for o in answered), len(answered)),
                     "second_try_right": sum(bool(o.get("second_try")) and o["right"] for o in answered)},
        "suites": suites,
    }


def risk_coverage(rows: list[dict[str, Any]], settings: dict[str, Any], records: dict[str, Any]
                  ) -> list[tuple[float, float]]:
    """(share of all questions answered, accuracy of the answered) as the confidence bar rises."""
    s = dict(settings, abstain_below=0.0)
    out = outcomes(rows, s, records)
    answered = sorted([o for o in out if o["answered"]], key=lambda o: -o["confidence"])
    pts = []
    right = 0
    for i, o in enumerate(answered, start=1):
        right += o["right"]
        pts.append((i / len(out), right / i))
    return pts


def plots(rows: list[dict[str, Any]], settings: dict[str, Any], records: dict[str, Any], out_dir: Path,
          title: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = [o for o in outcomes(rows, settings, records) if o["answered"]]
    conf = np.array([o["confidence"] for o in out])
    right = np.array([o["right"] for o in out], float)
    fig, ax = plt.subplots(1, 2, figsize=(10, 4.2))
    filled = [b for b in stats.reliability(conf, right, 10) if b.n]
    xs, ys, ns = [b.confidence for b in filled], [b.accuracy for b in filled], [b.n for b in filled]
    ax[0].plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    ax[0].plot(xs, ys, "o-", label="answered questions")
    for x, y, n in zip(xs, ys, ns, strict=True):
        ax[0].annotate(str(n), (x, y), textcoords="offset points", xytext=(4, -10), fontsize=8)
    ax[0].set(xlabel="confidence", ylabel="share right (strict)", title=f"Reliability ({title}; n per bin)",
              xlim=(0, 1), ylim=(0, 1.02))
    ax[0].legend(loc="upper left")
    pts = risk_coverage(rows, settings, records)
    if pts:
        ax[1].plot([p[0] for p in pts], [p[1] for p in pts])
    ax[1].set(xlabel="coverage (share of all questions answered)", ylabel="accuracy of answered",
              title=f"Risk-coverage ({title})", xlim=(0, 1), ylim=(0, 1.02))
    fig.tight_layout()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"trust-{title}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def load_rows(path: Path) -> list[dict[str, Any]]:
    """A run's records (or its journal). A journal's last line may be cut off by a kill mid-write: that record
    is dropped (its question is asked again on ``--resume``); a bad line anywhere else is an error."""
    with path.open(encoding="utf-8") as f:
        lines = [line for line in f if line.strip()]
    rows = []
    for i, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            if i < len(lines) - 1 or line.endswith("\n"):
                raise InputError(f"{path}: line {i + 1} is not a JSON record ({e.msg}); remove it or run again") from e
            log.warning("%s: the last record was cut off mid-write (a killed run); its question is asked again", path)
    for r in rows:
        if isinstance(r.get("signals"), dict):
            # Recorded before the assistant reported it; the row knows whether a patient was asked about.
            r["signals"].setdefault("patient_scoped", 1.0 if r.get("patient_id") else 0.0)
    return rows


def write_rows(rows: list[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    tmp.replace(path)


# -- jobs (called by `app.py eval trust ...`) ----------------------------------------------------------
ABLATIONS: dict[str, dict[str, Any]] = {
    "no answerability gate (floor only)": {"gate": None, "demo_point": None},
    "no per-index operating point (index.operating_point)": {"demo_point": None},
    "support by embedding cosine (old check)": {"support": "cosine"},
    "support by the verifier alone (no cosine rescue)": {"support_cosine": None},
    "record-line rules on": {"record_rules": True},
    "hand-set confidence weights (uncalibrated)": {"calibration": None},
    "no second try (generator.second_try off)": {"second_try": False},
    "statement checks flipped (verifier.statement_checks)": {"statement_checks": "flip"},
    "verbatim support flipped (verifier.verbatim_support)": {"verbatim": "flip"},
    "record polarity flipped (verifier.record_polarity)": {"record_polarity": "flip"},
    "verbatim re-citing flipped (verifier.verbatim_recite)": {"verbatim_recite": "flip"},
    "subject-variant check flipped (verifier.subject_variant)": {"subject_variant": "flip"},
    "re-citing supported copies flipped (verifier.recite_supported)": {"recite_supported": "flip"},
    "copies with a new word flipped (verifier.verbatim_strict)": {"verbatim_strict": "flip"},
    "unseen question words flipped (verifier.unseen_terms)": {"unseen_terms": "flip"},
    "novel words flipped (verifier.novel_terms)": {"novel_terms": "flip"},
}


def settings_from(config: Any, floor: float) -> dict[str, Any]:
    """The trust settings a config runs with (what the product does), for replay."""
    from rag.config import resolve_path

    calib = None
    if config.confidence.calibration:
        calib = json.loads(resolve_path(config.confidence.calibration).read_text(encoding="utf-8"))
    return {"gate": config.verifier.answerable_min, "abstain_below": config.confidence.abstain_below,
            "demo_point": index_point(config), "calibration": calib, "record_rules": config.confidence.record_rules,
            "support_min": config.verifier.support_min, "support_cosine": config.verifier.support_cosine,
            **pipeline_options(config), "floor": floor}


def index_point(config: Any) -> list[float] | None:
    """The config's ``index.operating_point`` as [gate, threshold] when it applies to the config's index (its
    current version, with the config's calibration), else None: the demo suites were asked on that index."""
    from rag import operating
    from rag.config import resolve_path
    from rag.index import read_manifest

    if not config.index.operating_point:
        return None
    p = operating.load(resolve_path(config.index.operating_point))
    why = p.mismatch_for(read_manifest(resolve_path(config.index.dir))[1], config)
    if why:
        log.warning("index.operating_point %s does not apply to %s (%s): the demo suites replay at the general point",
                    p.path, config.index.dir, why)
        return None
    return [p.answerable_min, p.abstain_below]


# Every pipeline switch :func:`replay` takes, by its replay name: a replay passes all of them (one list, so a new
# switch cannot be left out of one caller).
SWITCHES = ("second_try", "statement_checks", "verbatim", "record_polarity", "verbatim_recite", "subject_variant",
            "recite_supported", "verbatim_strict", "unseen_terms", "novel_terms")


def switches(settings: dict[str, Any]) -> dict[str, Any]:
    """The pipeline switches in ``settings`` (the rest keep :func:`replay`'s defaults)."""
    return {k: settings[k] for k in SWITCHES if k in settings}


def pipeline_options(config: Any) -> dict[str, bool]:
    """The pipeline switches a config runs with, by their replay names (what a fit is fitted under)."""
    v = config.verifier
    return {"second_try": config.generator.second_try, "statement_checks": v.statement_checks,
            "verbatim": v.verbatim_support, "record_polarity": v.record_polarity,
            "verbatim_recite": v.verbatim_recite, "subject_variant": v.subject_variant,
            "recite_supported": v.recite_supported, "verbatim_strict": v.verbatim_strict,
            "unseen_terms": v.unseen_terms, "novel_terms": v.novel_terms}


# The cosine rescue bars and support bars the dev choice considers. The support bar is never below 0.5: below
# it a sentence the verifier judges more likely unsupported than supported would be shown as sourced. (A bar of
# 0.2, chosen on dev for verifier v3, showed demo sentences cited to the wrong section of the right guideline:
# the strict scorer counts citations per document, so dev could not see it.)
COSINES: tuple[float | None, ...] = (None, 0.8, 0.85, 0.9, 0.95)
SUPPORT_MINS: tuple[float, ...] = (0.5, 0.6, 0.7)


def refit_answers(calib: dict[str, Any], rows: list[dict[str, Any]], records: dict[str, Any], gate: float,
                  support_cosine: float | None = None, support_min: float = 0.5,
                  options: dict[str, Any] | None = None, extra_sets: Sequence[tuple[str, ...]] = ()
                  ) -> dict[str, Any]:
    """``calib`` with its answer calibration (signal set, regularisation, coefficients) fitted again on these dev
    rows, as :func:`fit_calibration` chooses it, at ``calib``'s own gate model and operating point; the gate model
    and thresholds are kept. What more dev answers ask for: no question the gate passes changes, only the
    confidence of the answers given (and so which fall under ``abstain_below``)."""
    fitted = fit_calibration(rows, records, gate=gate, gate_model=calib.get("gate"), support_cosine=support_cosine,
                             support_min=support_min, options=options, extra_sets=extra_sets)
    out = {k: v for k, v in calib.items() if k not in ("offset_fit",)}
    return {**out, **fitted}


def rescale_fit(z: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Slope and intercept of P(right) = sigmoid(a * z + b) on logits ``z`` (maximum likelihood, no penalty: two
    parameters, Newton's method)."""
    a, b = 1.0, 0.0
    x = np.column_stack([z, np.ones_like(z)])
    for _ in range(100):
        q = 1.0 / (1.0 + np.exp(-np.clip(a * z + b, -50, 50)))
        grad = x.T @ (y - q)
        hess = -(x.T * (q * (1 - q))) @ x - 1e-9 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        a, b = a - float(step[0]), b - float(step[1])
        if float(np.abs(step).max()) < 1e-10:
            break
    return a, b


def rescale(calib: dict[str, Any], rows: list[dict[str, Any]], records: dict[str, Any], gate: float,
            support_cosine: float | None = None, support_min: float = 0.5, options: dict[str, Any] | None = None
            ) -> dict[str, Any]:
    """``calib`` with its logit rescaled, ``sigmoid(a * z + b)``, by a slope and an intercept fitted on these rows'
    answers (at ``calib``'s own gate model and operating point): Platt scaling of the fitted score, written back as
    the same logistic model (every coefficient times ``a``, the intercept ``a * intercept + b``), so the product reads
    it unchanged. Meant for answers the calibration was not fitted on."""
    answered = _answered(rows, records, gate, calib.get("gate"), support_cosine, support_min, options)
    if len({right for _, right in answered}) < 2:
        raise ValueError(f"cannot rescale: {len(answered)} answers, all with one label")
    p = np.clip([probability(calib, sig) for sig, _ in answered], 1e-9, 1 - 1e-9)
    z = np.log(p / (1 - p))
    y = np.array([float(right) for _, right in answered])
    return rescaled(calib, z, y)


def rescaled(calib: dict[str, Any], z: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """``calib`` rescaled by the slope and intercept fitted on its logits ``z`` of answers right or not (``y``)."""
    a, b = rescale_fit(z, y)
    return {**calib, "coef": [round(c * a, 6) for c in calib["coef"]],
            "intercept": round(calib["intercept"] * a + b, 6),
            "rescaled": {"slope": round(a, 6), "intercept": round(b, 6), "answers": len(y), "right": int(y.sum())}}


def rechoose(calib: dict[str, Any], rows: list[dict[str, Any]], records: dict[str, Any], floor: float,
             options: dict[str, Any] | None = None, min_ooc_abstain: float = 0.97) -> dict[str, Any]:
    """``calib`` with its operating point (gate, threshold, cosine rescue, support bar) chosen again on dev,
    its coefficients and gate model unchanged: what a change to :func:`choose` alone asks for."""
    chosen = choose(rows, records, calib, floor, min_ooc_abstain, cosines=COSINES, support_mins=SUPPORT_MINS,
                    options=options)
    return {**calib, "answerable_min": chosen["gate"], "abstain_below": chosen["abstain_below"],
            "support_cosine": chosen["support_cosine"], "support_min": chosen["support_min"],
            "min_ooc_abstain": min_ooc_abstain}


def fit_dev(rows: list[dict[str, Any]], records: dict[str, Any], floor: float, out: Path,
            options: dict[str, Any] | None = None, min_ooc_abstain: float = 0.97,
            gate_features: Sequence[str] = GATE_FEATURES, extra_sets: Sequence[tuple[str, ...]] = (),
            offsets: Sequence[str] = (), gate_verifier: dict[str, str] | None = None) -> dict[str, Any]:
    """Fit the calibration and choose the gate and abstention threshold on dev; write the calibration file.

    The operating point must abstain on ``min_ooc_abstain`` of dev's out-of-corpus questions: 0.97, a margin
    over the 95% target, since a point chosen exactly at the bar fell below it on held-out halves of dev
    (eval/trust_procedure.py; BENCHMARKS.md, "Trust", tenth session).

    ``options``: the pipeline switches the config runs with (``second_try``, ``statement_checks``).
    ``gate_features``: the gate model's signals; ``extra_sets``: more candidate signal sets for the calibration;
    ``offsets``: signals added afterwards one coefficient each, the others frozen (:func:`fit_offset`).
    ``gate_verifier``: the adapter whose answerability logits the rows hold (``rag.provenance.gate_verifier``),
    recorded so that the assistant refuses the file under another gate adapter."""
    from datetime import UTC, datetime

    missing = sorted({f for f in (*gate_features, *(f for fs in extra_sets for f in fs)) if f != "answerability_logit"}
                     - {k for r in rows for k in r["signals"]} - {"support", "support_prob", "generation",
                                                                  "answer_answerability", "second_try"})
    if missing:
        known = sorted({k for r in rows for k in r["signals"]} | {"answerability_logit"})
        raise InputError(f"no dev record has the signal {', '.join(missing)} (recorded: {', '.join(known)}); "
                         "a signal newer than the run needs `python app.py eval trust run --part dev` again")
    gate = fit_gate(rows, gate_features)
    calib = fit_calibration(rows, records, gate=floor, gate_model=gate, options=options, extra_sets=extra_sets)
    calib["gate"] = gate
    chosen = choose(rows, records, calib, floor, min_ooc_abstain, cosines=COSINES, support_mins=SUPPORT_MINS,
                    options=options)
    # Refit at the chosen gate and support rule: the calibration should describe the answers given.
    calib = fit_calibration(rows, records, gate=chosen["gate"], gate_model=gate,
                            support_cosine=chosen["support_cosine"], support_min=chosen["support_min"],
                            options=options, extra_sets=extra_sets)
    calib["gate"] = gate
    for feature in offsets:
        calib = fit_offset(calib, rows, records, chosen["gate"], feature, gate_model=gate,
                           support_cosine=chosen["support_cosine"], support_min=chosen["support_min"], options=options)
    calib = rechoose(calib, rows, records, floor, options, min_ooc_abstain)
    if gate_verifier:
        calib["gate_verifier"] = gate_verifier
    calib.update({"chosen_on": "trust dev split (eval/splits/trust.json)", "pipeline": options or {},
                  "created": datetime.now(UTC).isoformat(timespec="seconds"),
                  "note": "P(answer strictly right) = sigmoid(intercept + coef . signals); refit with "
                          "`python app.py eval trust fit` when the generator, verifier or retrieval changes"})
    write_calibration(calib, out)
    return calib


def write_calibration(calib: dict[str, Any], out: Path) -> None:
    """Write a calibration file atomically (a killed fit never leaves half a file for the config to load)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(calib, indent=1) + "\n", encoding="utf-8")
    tmp.replace(out)


def report(rows: list[dict[str, Any]], settings: dict[str, Any], records: dict[str, Any], out_dir: Path,
           part: str) -> dict[str, Any]:
    main = summary(rows, settings, records)
    ablations = {}
    for name, change in ABLATIONS.items():
        if all(v != "flip" and settings.get(k) == v for k, v in change.items()):
            continue  # the default already runs this way (e.g. no index.operating_point): the row would repeat it
        s = dict(settings, **change)
        if "calibration" in change and settings.get("calibration"):
            s["calibration"] = {"gate": settings["calibration"].get("gate")}  # same gate, hand-set weights
        if s.get("gate") is None:
            s["gate"] = settings["floor"]
        for key in [k for k, v in change.items() if v == "flip"]:
            s[key] = not settings.get(key, False)
        ablations[name] = summary(rows, s, records)
    # A batched answer's generation and total are its batch's (Assistant.ask_many): they say nothing of one
    # answer's latency, so only answers generated alone give those two and the checks' share (else
    # eval.bench_query, one question at a time, is the measure).
    alone = [r for r in rows if r["timings_ms"].get("batch_size", 1) == 1]
    timing = {k: [r["timings_ms"][k] for r in (alone if k in ("generation", "total") else rows) if k in r["timings_ms"]]
              for k in ("answerability", "citation_check", "generation", "total")}
    main["cost_ms"] = {k: {"median": round(float(np.median(v)), 1), "n": len(v)} for k, v in timing.items() if v}
    main["cost_ms"]["batched_answers"] = len(rows) - len(alone)
    gen = [r for r in alone if "generation" in r["timings_ms"]]
    if gen:
        checks = [r["timings_ms"].get("answerability", 0) + r["timings_ms"].get("citation_check", 0) for r in gen]
        main["cost_ms"]["checks_share_of_answer_median"] = round(float(np.median(
            [c / r["timings_ms"]["total"] for c, r in zip(checks, gen, strict=True)])), 4)
    main["ablations"] = ablations
    plots(rows, settings, records, out_dir, part)
    (out_dir / f"summary-{part}.json").write_text(json.dumps(main, indent=1) + "\n", encoding="utf-8")
    return main


def markdown(s: dict[str, Any]) -> str:
    from eval.grounded import cell

    lines = ["| setting | out of corpus abstained | answerable abstained | answerable right (strict) | "
             "right, model-cited | answered accuracy | ECE (95% CI) | Brier |", "|---|---|---|---|---|---|---|---|"]
    for name, x in [("chosen (product default)", s), *s.get("ablations", {}).items()]:
        a = x["answered"]
        lines.append(f"| {name} | {cell(x['out_of_corpus']['abstained'])} | {cell(x['answerable']['abstained'])} | "
                     f"{cell(x['answerable']['right'])} | {cell(x['answerable']['right_model_cited'])} | "
                     f"{cell(a['accuracy'])} | {a['ece']:.3f} ({a['ece_ci95'][0]:.3f}-{a['ece_ci95'][1]:.3f}) | "
                     f"{a['brier']} |")
    return "\n".join(lines) + "\n"
