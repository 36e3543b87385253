"""Questions about one patient's record, through the full assistant: the value, cited, or abstain.

The questions are the ``grounded_ehr`` examples of the held-out heart-failure patients
(``test.jsonl``: split by patient, never trained on), asked with ``--patient`` through the
whole product (patient-scoped retrieval, generation, citation support check, confidence).
The expected value comes from the UCI record itself, not from the training target:

- **answerable** (the record holds it): does the answer state the value (the number, or the
  right yes/no for a comorbidity)? does a supported sentence cite that patient's record? a
  *correct* answer is both, without abstaining;
- **not in the record** (potassium, medications ...): does the assistant abstain?

The value check is strict (:func:`states_value`): a number must appear as that number (135 is
not 1350, 13.5 or HF135), and a yes/no answer must name the condition in a clause whose polarity
is the record's; "The serum sodium is 134 mEq/L [1]" states nothing about diabetes. A citation
of the record is counted two ways as well: by a marker the generator wrote (``cites_record_model``)
or only by the pipeline's post-hoc attribution (``cites_record_attributed``, the generator gave
no marker or a wrong one). ``correct`` accepts either; ``correct_model_cited`` only the first.

Each answer goes to ``answers.jsonl``; ``summary.json`` has the shares with 95% Wilson intervals.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from corpora.heart_failure import HFRecord, format_number, read_records
from corpora.report import LoadReport
from eval.grounded import cell, share
from finetune.data import read_examples
from rag.answer import Answer
from rag.cite import strip_markers
from rag.errors import InputError
from rag.negation import NEGATION
from rag.text import split_sentences

BOOLEAN = {"diabetes", "high_blood_pressure", "anaemia", "smoking"}
# How an answer names each yes/no condition. Kept apart from the support check's patterns
# (rag.cite.CONDITIONS) on purpose: the scorer must not share the rule it is scoring.
CONDITION_TERMS: dict[str, re.Pattern[str]] = {fact: re.compile(rx, re.I) for fact, rx in {
    "diabetes": r"\bdiabet(?:es|ic)\b",
    "high_blood_pressure": r"\bhigh blood pressure\b|\bhypertensi(?:on|ve)\b",
    "anaemia": r"\bana?emi(?:a|c)\b",
    "smoking": r"\b(?:non-?)?smok(?:e|ed|er|ers|es|ing)\b",
}.items()}
# A negation in the clause before the condition ("no diabetes", "does not smoke", "denies smoking": the shared
# cues of rag.negation), or right after it ("Diabetes: no", "hypertension is absent", "anaemia is not recorded").
_NEGATED_AFTER = re.compile(r"^\W*(?:(?:is|was|are|were|has been)\s+)?(?:not|no|none|absent|negative)\b", re.I)
# A clause ends at , ; or a conjunction: "does not smoke and has diabetes" states diabetes.
_CLAUSE_END = re.compile(r"[,;]|\b(?:and|but|whereas|although|though|however|while)\b", re.I)
# A number as a whole token: not part of an id (HF135), a longer number (1350) or a decimal (13.5).
_NUMBER = re.compile(r"(?<![\w.,])(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?![\d]|[.,]\d)")


def expected(r: HFRecord, fact: str) -> str | bool:
    """The record's value for ``fact``: a number as the record writes it, or a yes/no."""
    if fact in BOOLEAN:
        return bool(getattr(r, fact))
    if fact == "platelets":
        return f"{round(r.platelets):,}"
    return format_number(float(getattr(r, fact)))


def condition_polarities(text: str, fact: str) -> list[bool]:
    """What each clause of ``text`` that names the yes/no condition ``fact`` says: True (has it),
    False (negated in that clause); questions ("whether the patient has diabetes") say nothing."""
    rx = CONDITION_TERMS[fact]
    out = []
    for sentence in split_sentences(strip_markers(text)):
        for m in rx.finditer(sentence):
            start = max((e.end() for e in _CLAUSE_END.finditer(sentence, 0, m.start())), default=0)
            nxt = _CLAUSE_END.search(sentence, m.end())
            before, after = sentence[start:m.start()], sentence[m.end():nxt.start() if nxt else len(sentence)]
            if re.search(r"\bwhether\b", before, re.I) or "?" in sentence:
                continue
            negated = (m.group(0).lower().startswith("non") or bool(NEGATION.search(before))
                       or bool(_NEGATED_AFTER.search(after)))
            out.append(not negated)
    return out


def states_value(text: str, value: str | bool, fact: str | None = None) -> bool:
    """Whether ``text`` states ``value`` (citation markers do not count as numbers).

    A number: one of the answer's numbers equals it (commas as thousands separators only). A
    yes/no value of condition ``fact``: the answer names the condition, and every clause that
    names it has the record's polarity; an answer that does not name it states nothing.
    """
    plain = strip_markers(text)
    if isinstance(value, bool):
        if fact not in CONDITION_TERMS:
            raise ValueError(f"a yes/no value needs its condition, one of {sorted(CONDITION_TERMS)}; got {fact!r}")
        said = condition_polarities(plain, fact)
        return bool(said) and all(x == value for x in said)
    want = float(value.replace(",", ""))
    return any(float(n.replace(",", "")) == want for n in _NUMBER.findall(plain))


def record_citations(a: Answer, patient_id: str) -> tuple[bool, bool]:
    """Whether a supported sentence cites the patient's record (by a marker the generator wrote,
    by the pipeline's attribution)."""
    by_n = {c.n: c for c in a.citations}
    found = {s.attributed for s in a.sentences if s.supported
             for n in s.citations if n in by_n and by_n[n].patient_id == patient_id}
    return False in found, True in found


def cites_record(a: Answer, patient_id: str) -> bool:
    """A supported sentence cites the patient's record, by any citation."""
    return any(record_citations(a, patient_id))


def cites_record_model(a: Answer, patient_id: str) -> bool:
    """A supported sentence cites the record with a marker the generator wrote (not attributed)."""
    return record_citations(a, patient_id)[0]


def questions(data_dir: Path, limit: int | None = None) -> list[dict[str, Any]]:
    rows = [r for r in read_examples(data_dir / "test.jsonl") if r["part"] == "grounded_ehr"]
    if not rows:
        raise InputError(f"{data_dir}/test.jsonl has no patient-record questions; rebuild with "
                         "`python app.py --config configs/full.yaml train data`")
    out = [{"id": r["id"], "patient_id": r["meta"]["patient_id"], "fact": r["meta"]["fact"],
            "question": r["prompt"][-1]["content"].rsplit("Question: ", 1)[1].strip()} for r in rows]
    return out[:limit] if limit else out


def evaluate(assistant: Any, qs: list[dict[str, Any]], csv_path: Path, out_dir: Path, batch_size: int = 8,
             progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    records = {r.patient_id: r for r in read_records(csv_path, LoadReport(fmt="uci-heart-failure"))}
    done = 0

    def tick(_i: int, _a: Answer) -> None:
        nonlocal done
        done += 1
        if progress:
            progress(done, len(qs))

    answers = assistant.ask_many([q["question"] for q in qs], batch_size=batch_size, on_answer=tick,
                                 patient_ids=[q["patient_id"] for q in qs])
    rows = []
    for q, a in zip(qs, answers, strict=True):
        row: dict[str, Any] = {**q, "answer": a.answer, "draft": a.draft, "abstained": a.abstained,
                               "confidence": a.confidence, "confidence_label": a.confidence_label}
        if q["fact"] is not None:
            value = expected(records[q["patient_id"]], q["fact"])
            by_model, by_attribution = record_citations(a, q["patient_id"]) if not a.abstained else (False, False)
            row |= {"expected": value,
                    "states_value": not a.abstained and states_value(a.answer, value, q["fact"]),
                    "cites_record": by_model or by_attribution, "cites_record_model": by_model,
                    # only through the pipeline's attribution: the generator's own markers missed the record
                    "cites_record_attributed": by_attribution and not by_model}
            row["correct"] = row["states_value"] and row["cites_record"]
            row["correct_model_cited"] = row["states_value"] and row["cites_record_model"]
        rows.append(row)
    ans = [r for r in rows if r["fact"] is not None]
    unans = [r for r in rows if r["fact"] is None]

    def of(xs: list[dict[str, Any]], key: str) -> dict[str, Any]:
        return share(sum(bool(x[key]) for x in xs), len(xs))

    summary = {
        "questions": len(rows), "patients": len({r["patient_id"] for r in rows}),
        "answerable": {"correct": of(ans, "correct"), "correct_model_cited": of(ans, "correct_model_cited"),
                       "states_value": of(ans, "states_value"), "cites_record": of(ans, "cites_record"),
                       "cites_record_model": of(ans, "cites_record_model"),
                       "cites_record_attributed": of(ans, "cites_record_attributed"),
                       "abstained": of(ans, "abstained")},
        "not_in_record": {"abstained": of(unans, "abstained")},
        "model": {"generator": answers[0].models.get("generator") if answers else None,
                  "adapter": answers[0].models.get("adapter") if answers else None},
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "answers.jsonl").open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    return summary


def markdown(summaries: dict[str, dict[str, Any]]) -> str:
    """One row per run (base, tuned, ...)."""
    lines = ["| run | correct (value + cites the record) | correct, the generator's own marker | states the value | "
             "cites the record | by the generator's marker | only by attribution | abstains, answerable | "
             "abstains, not in record |", "|---|---|---|---|---|---|---|---|---|"]
    keys = ("correct", "correct_model_cited", "states_value", "cites_record", "cites_record_model",
            "cites_record_attributed", "abstained")
    for name, s in summaries.items():
        a = s["answerable"]
        cells = [cell(a[k]) if k in a else "-" for k in keys]  # summaries written before the split lack some
        lines.append(f"| {name} | {' | '.join(cells)} | {cell(s['not_in_record']['abstained'])} |")
    return "\n".join(lines) + "\n"
