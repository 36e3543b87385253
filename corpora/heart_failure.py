"""UCI "Heart failure clinical records" rendered as one structured EHR record per patient.

Patients are numbered by their data row (``HF001`` is the first), so ids stay stable when a
bad row is skipped. The follow-up ``time`` and ``DEATH_EVENT`` columns are deliberately left
out of the record: follow-up length is tied to the outcome and the outcome is what a model
must never be shown as a fact about the patient.

Reference ranges are typical adult ranges (laboratories differ); they are printed so that a
reader (or the generator) can say whether a value is abnormal without outside knowledge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from corpora.csvutil import iter_csv
from corpora.document import Document
from corpora.report import LoadReport, skip

COLUMNS = ("age", "anaemia", "creatinine_phosphokinase", "diabetes", "ejection_fraction", "high_blood_pressure",
           "platelets", "serum_creatinine", "serum_sodium", "sex", "smoking")
BOOLEANS = ("anaemia", "diabetes", "high_blood_pressure", "smoking", "sex")
# Plausibility bounds: outside them the row is a data error, not a patient.
BOUNDS = {"age": (0, 120), "creatinine_phosphokinase": (0, 100_000), "ejection_fraction": (1, 95),
          "platelets": (1_000, 2_000_000), "serum_creatinine": (0.1, 30), "serum_sodium": (90, 200)}


@dataclass(frozen=True)
class HFRecord:
    patient_id: str
    age: float
    anaemia: bool
    creatinine_phosphokinase: float
    diabetes: bool
    ejection_fraction: float
    high_blood_pressure: bool
    platelets: float
    serum_creatinine: float
    serum_sodium: float
    male: bool
    smoking: bool


def parse_row(row: dict[str, str], patient_id: str) -> HFRecord:
    """Validate one CSV row; raise ValueError naming the bad column."""
    vals: dict[str, float] = {}
    for col in COLUMNS:
        raw = (row.get(col) or "").strip()
        try:
            v = float(raw)
        except ValueError:
            raise ValueError(f"column {col}: {raw!r} is not a number") from None
        if math.isnan(v):
            raise ValueError(f"column {col} is empty (NaN)")
        if col in BOOLEANS and v not in (0.0, 1.0):
            raise ValueError(f"column {col}: expected 0 or 1, got {raw}")
        lo, hi = BOUNDS.get(col, (-math.inf, math.inf))
        if not lo <= v <= hi:
            raise ValueError(f"column {col}: {raw} is outside the plausible range {lo}-{hi}")
        vals[col] = v
    return HFRecord(patient_id=patient_id, age=vals["age"], anaemia=vals["anaemia"] == 1,
                    creatinine_phosphokinase=vals["creatinine_phosphokinase"], diabetes=vals["diabetes"] == 1,
                    ejection_fraction=vals["ejection_fraction"], high_blood_pressure=vals["high_blood_pressure"] == 1,
                    platelets=vals["platelets"], serum_creatinine=vals["serum_creatinine"],
                    serum_sodium=vals["serum_sodium"], male=vals["sex"] == 1, smoking=vals["smoking"] == 1)


def range_flag(v: float, lo: float, hi: float) -> str:
    """The value against the reference range [lo, hi]: "low", "high" or "within range"."""
    return "low" if v < lo else "high" if v > hi else "within range"


def format_number(v: float) -> str:
    """A value as the record writes it: thousands separators, no trailing zeros (1.9, 265,000)."""
    return f"{v:,.2f}".rstrip("0").rstrip(".")


def ef_category(ef: float) -> str:
    """Heart-failure phenotype by LVEF as in the 2022 AHA/ACC/HFSA guideline."""
    if ef <= 40:
        return "reduced ejection fraction (HFrEF range, LVEF 40% or less)"
    if ef < 50:
        return "mildly reduced ejection fraction (HFmrEF range, LVEF 41-49%)"
    return "preserved ejection fraction (HFpEF range, LVEF 50% or more)"


def render_record(r: HFRecord) -> str:
    yes = {True: "yes", False: "no"}
    cr_lo, cr_hi = (0.7, 1.3) if r.male else (0.6, 1.1)
    lines = [
        "## Demographics",
        "",
        f"- Age: {format_number(r.age)} years",
        f"- Sex: {'male' if r.male else 'female'}",
        "",
        "## Comorbidities and risk factors",
        "",
        f"- Anaemia (reduced red cells or haemoglobin): {yes[r.anaemia]}",
        f"- Diabetes: {yes[r.diabetes]}",
        f"- High blood pressure: {yes[r.high_blood_pressure]}",
        f"- Current smoker: {yes[r.smoking]}",
        "",
        "## Laboratory results",
        "",
        f"- Serum creatinine: {format_number(r.serum_creatinine)} mg/dL (reference {cr_lo}-{cr_hi} mg/dL; "
        f"{range_flag(r.serum_creatinine, cr_lo, cr_hi)})",
        f"- Serum sodium: {format_number(r.serum_sodium)} mEq/L (reference 135-145 mEq/L; "
        f"{range_flag(r.serum_sodium, 135, 145)})",
        f"- Creatine phosphokinase (CPK): {format_number(r.creatinine_phosphokinase)} mcg/L (reference 10-120 mcg/L; "
        f"{range_flag(r.creatinine_phosphokinase, 10, 120)})",
        f"- Platelets: {round(r.platelets):,} per microlitre (reference 150,000-450,000; "
        f"{range_flag(r.platelets, 150_000, 450_000)})",
        "",
        "## Echocardiography",
        "",
        f"- Left ventricular ejection fraction: {format_number(r.ejection_fraction)}% (normal 50-70%); "
        f"{ef_category(r.ejection_fraction)}",
    ]
    return "\n".join(lines)


def read_records(path: Path, report: LoadReport, strict: bool = True) -> list[HFRecord]:
    records = []
    for n, (line, row) in enumerate(iter_csv(path, COLUMNS, report, strict), start=1):
        try:
            records.append(parse_row(row, f"HF{n:03d}"))
        except ValueError as e:
            skip(report, f"{path}:{line}", str(e), strict)
    return records


def read_heart_failure(path: Path, strict: bool = True) -> LoadReport:
    report = LoadReport(fmt="uci-heart-failure")
    for r in read_records(path, report, strict):
        report.documents.append(Document(
            doc_id=f"uci-hf-{r.patient_id}", text=render_record(r),
            title=f"Heart failure clinical record {r.patient_id}", kind="ehr",
            source=f"{path.name}#{r.patient_id}", patient_id=r.patient_id,
            meta={"collection": "uci-heart-failure"},
        ))
    return report
