"""Questions about one patient's record, through the full assistant: the value, cited, or abstain.

The questions are the ``grounded_ehr`` examples of the held-out heart-failure patients
(``test.jsonl``: split by patient, never trained on), asked with ``--patient`` through the
whole product (patient-scoped retrieval, generation, citation support check, confidence).
The expected value comes from the UCI record itself, not from the training target:

- **answerable** (the record holds it): does the answer state the value (the number, or the
  right yes/no for a comorbidity)? does a supported sentence cite that patient's record? a
  *correct* answer is both, without abstaining;
- **not in the record** (potassium, medications ...): does the assistant abstain?

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
from rag.errors import InputError

_NEG = re.compile(r"\b(?:no|not|denies|without|negative)\b", re.I)
BOOLEAN = {"diabetes", "high_blood_pressure", "anaemia", "smoking"}


def expected(r: HFRecord, fact: str) -> str | bool:
    """The record's value for ``fact``: a number as the record writes it, or a yes/no."""
    if fact in BOOLEAN:
        return bool(getattr(r, fact))
    if fact == "platelets":
        return f"{round(r.platelets):,}"
    return format_number(float(getattr(r, fact)))


def states_value(text: str, value: str | bool) -> bool:
    """Whether ``text`` (citation markers removed) states ``value``."""
    plain = re.sub(r"\[[\d,\s-]+\]", "", text)
    if isinstance(value, bool):
        return bool(_NEG.search(plain)) != value
    numbers = {n.rstrip(".,") for n in re.findall(r"\d[\d,.]*", plain)}
    return value in numbers or value.replace(",", "") in {n.replace(",", "") for n in numbers}


def cites_record(a: Answer, patient_id: str) -> bool:
    by_n = {c.n: c for c in a.citations}
    return any(by_n[n].patient_id == patient_id for s in a.sentences if s.supported for n in s.citations
               if n in by_n)


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
            row |= {"expected": value, "states_value": not a.abstained and states_value(a.answer, value),
                    "cites_record": not a.abstained and cites_record(a, q["patient_id"])}
            row["correct"] = row["states_value"] and row["cites_record"]
        rows.append(row)
    ans = [r for r in rows if r["fact"] is not None]
    unans = [r for r in rows if r["fact"] is None]

    def of(xs: list[dict[str, Any]], key: str) -> dict[str, Any]:
        return share(sum(bool(x[key]) for x in xs), len(xs))

    summary = {
        "questions": len(rows), "patients": len({r["patient_id"] for r in rows}),
        "answerable": {"correct": of(ans, "correct"), "states_value": of(ans, "states_value"),
                       "cites_record": of(ans, "cites_record"), "abstained": of(ans, "abstained")},
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
    lines = ["| run | correct (value + cites the record) | states the value | cites the record | abstains, "
             "answerable | abstains, not in record |", "|---|---|---|---|---|---|"]
    for name, s in summaries.items():
        a = s["answerable"]
        lines.append(f"| {name} | {cell(a['correct'])} | {cell(a['states_value'])} | {cell(a['cites_record'])} | "
                     f"{cell(a['abstained'])} | {cell(s['not_in_record']['abstained'])} |")
    return "\n".join(lines) + "\n"
