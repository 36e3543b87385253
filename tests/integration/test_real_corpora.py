"""Every reader on the real files in ../shared/data (skipped with the reason when absent).

Counts are those of the datasets' own documentation (shared/data/README.md), so a reader
that silently drops or invents records fails here.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from corpora import detect_format, load_sources
from rag.config import load_config, resolve_path, source_set

pytestmark = pytest.mark.data

DATA = resolve_path(os.environ.get("CDS_DATA_DIR") or "../shared/data")


def _need(rel: str) -> Path:
    p = DATA / rel
    if not p.exists():
        pytest.skip(f"{p} not present (real data lives in ../shared/data or CDS_DATA_DIR)")
    return p


def test_medquad_counts():
    report = load_sources([_need("medquad")])
    # 47,457 pairs in 11,274 files (the README's 47,441 + 16 in the 4 files with the old <doc> layout)
    assert report.stats["medquad.qa_pairs"] == 47_457
    assert len(report.documents) == 16_423 and report.stats["medquad.pairs_without_answer"] == 31_034
    assert not report.skipped
    assert {d.meta["folder"].split("_")[0] for d in report.documents} == {str(i) for i in range(1, 10)}


def test_ngc_and_uspstf():
    ngc = load_sources([_need("guidelines/ngc_usgov_guideline_summaries.jsonl")])
    assert len(ngc.documents) == 106 and ngc.stats["ngc.mojibake_repaired"] > 0
    assert all("â\x80" not in d.text for d in ngc.documents)
    assert all("## Major Recommendations" in d.text for d in ngc.documents)
    us = load_sources([_need("guidelines/uspstf_specific_recommendations_text.jsonl")])
    assert len(us.documents) == 137 and all(d.kind == "guideline" for d in us.documents)


def test_mtsamples_notes():
    report = load_sources([_need("mtsamples/mtsamples.csv")])
    assert report.stats["mtsamples.rows"] == 4_999 and report.stats["mtsamples.empty_transcriptions"] == 33
    assert 2_300 <= len(report.documents) <= 2_400  # "~2,358 unique notes"
    assert len({d.patient_id for d in report.documents}) == len(report.documents)
    assert sum("\n## " in d.text or d.text.startswith("## ") for d in report.documents) > 0.9 * len(report.documents)


def test_heart_failure_records():
    path = _need("heart_failure/heart_failure_clinical_records_dataset.csv")
    assert detect_format(path) == "uci-heart-failure"
    docs = load_sources([path]).documents
    assert [d.patient_id for d in docs[:2]] == ["HF001", "HF002"] and len(docs) == 299
    for d in docs:
        assert "death" not in d.text.lower() and "follow-up" not in d.text.lower()


def test_wikidoc():
    report = load_sources([_need("wikidoc_patient_info/medical_meadow_wikidoc_patient_information.json")])
    assert len(report.documents) + report.stats["wikidoc.duplicate_pairs"] + report.stats.get(
        "wikidoc.empty_answers", 0) == 5_942


def test_full_source_set_resolves_and_loads():
    _need("medquad")
    cfg = load_config("configs/full.yaml")
    sources = source_set(cfg, "full")
    report = load_sources(sources)
    kinds = {d.kind for d in report.documents}
    assert kinds == {"reference", "guideline", "ehr"} and len(report.documents) > 25_000
