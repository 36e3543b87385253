from collections import Counter

import pytest

from corpora import load_sources
from rag.config import PROJECT_ROOT

DEMO = PROJECT_ROOT / "corpora" / "demo"


@pytest.fixture(scope="module")
def docs():
    return load_sources([DEMO / "guidelines", DEMO / "ehr"]).documents


def test_demo_loads_strictly_without_skips():
    report = load_sources([DEMO / "guidelines", DEMO / "ehr"])
    assert report.skipped == []


def test_doc_ids_unique(docs):
    ids = [d.doc_id for d in docs]
    assert len(ids) == len(set(ids))


def test_guidelines(docs):
    guides = [d for d in docs if d.kind == "guideline"]
    assert len(guides) >= 25
    for d in guides:
        assert d.patient_id is None, d.doc_id
        assert d.meta.get("guideline"), d.doc_id
        assert d.meta.get("year", "").isdigit(), d.doc_id
        assert "not clinical advice" in d.meta.get("notice", "").lower(), d.doc_id
        assert d.text.strip() and d.title


def test_ehr_notes_per_patient(docs):
    ehr = [d for d in docs if d.kind == "ehr"]
    per_patient = Counter(d.patient_id for d in ehr)
    for pid in ("P001", "P002", "P003", "P004"):
        assert per_patient[pid] >= 3, pid
    for d in ehr:
        # Every note lives in its patient's folder: a mislabelled note would leak across patients.
        assert d.source.split("/")[0] == d.patient_id, d.doc_id
    assert {d.kind for d in docs} <= {"guideline", "ehr"}
