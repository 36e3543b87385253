"""Readers for the real corpora, on small fixtures we wrote in each format (tests/fixtures/corpora)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from corpora import detect_format, load_sources, parse_source
from corpora.heart_failure import ef_category
from corpora.mtsamples import render_note
from rag.errors import SourceError

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "corpora"


def _by_id(report):
    return {d.doc_id: d for d in report.documents}


# -- MedQuAD --------------------------------------------------------------------------------------


def test_medquad_one_document_per_answered_pair():
    report = load_sources([FIX / "medquad"])
    docs = _by_id(report)
    assert set(docs) == {"medquad-1-0000001_1-1", "medquad-1-0000001_1-2", "medquad-6-0000003-1"}
    d = docs["medquad-1-0000001_1-2"]
    assert d.kind == "reference" and d.title == "Frobosis"
    assert d.text == "## Treatment\n\nTreatment of Frobosis is rest & warm tea; no drug is approved."
    assert d.meta["question"] == "What are the treatments for Frobosis ?"
    assert (d.meta["qtype"], d.meta["source_name"], d.meta["url"]) == ("treatment", "TestSource",
                                                                        "https://example.org/frobosis")
    # The question is metadata only: an index containing it would make retrieval evaluation trivial.
    assert "What are the treatments" not in d.text


def test_medquad_counts_unanswered_pairs_and_reads_old_layout():
    report = load_sources([FIX / "medquad"])
    assert report.stats["medquad.qa_pairs"] == 6
    assert report.stats["medquad.pairs_without_answer"] == 3
    assert report.stats["medquad.variant_layout_doc"] == 1
    old = _by_id(report)["medquad-6-0000003-1"]
    assert old.title == "Wobble palsy" and "teacups tremble" in old.text and old.meta["source_name"] == "OldLayout"


def test_medquad_malformed_xml_is_reported_and_skipped(tmp_path):
    root = tmp_path / "medquad"
    shutil.copytree(FIX / "medquad", root)
    (root / "1_TestSource_QA" / "0000009.xml.bad").rename(root / "1_TestSource_QA" / "0000009.xml")
    with pytest.raises(SourceError, match=r"0000009\.xml: malformed XML"):
        load_sources([root])
    report = load_sources([root], strict=False)
    assert len(report.documents) == 3
    assert len(report.skipped) == 1 and report.skipped[0][0].endswith("0000009.xml")
    assert "malformed XML" in report.skipped[0][1]


# -- guidelines -----------------------------------------------------------------------------------


def test_ngc_sections_and_mojibake_repair():
    report = load_sources([FIX / "ngc.jsonl"])
    d = _by_id(report)["ngc-t1"]
    assert d.kind == "guideline" and d.meta["developers"] == "Test Society"
    assert "Clinicians’ judgement applies to Zorbex™ use." in d.text
    assert "â" not in d.text
    assert report.stats["ngc.mojibake_repaired"] == 1
    assert "## Major Recommendations" in d.text


def test_ngc_bad_line_reported_with_line_number(tmp_path):
    p = tmp_path / "g.jsonl"
    good = (FIX / "ngc.jsonl").read_text(encoding="utf-8").splitlines()
    p.write_text("\n".join([good[0], "{not json", '{"ngc_id": "x", "title": ""}', good[1]]) + "\n", encoding="utf-8")
    with pytest.raises(SourceError, match=r"g\.jsonl:2: not valid JSON"):
        load_sources([f"ngc:{p}"])
    report = load_sources([f"ngc:{p}"], strict=False)
    assert [d.doc_id for d in report.documents] == ["ngc-t1", "ngc-t2"]
    assert [s[0].rsplit(":", 1)[1] for s in report.skipped] == ["2", "3"]
    assert "missing title, text" in report.skipped[1][1]


def test_uspstf_record_rendered_with_sections():
    (d,) = load_sources([FIX / "uspstf.jsonl"]).documents
    assert d.doc_id == "uspstf-7" and d.title.startswith("USPSTF: Zorbic fever")
    assert "## Recommendation (grade B)" in d.text and "Age range: 40 to 75 years." in d.text
    assert "## Service and frequency\n\nevery 3 years" in d.text


def test_folder_reads_html_with_headings_and_txt():
    docs = _by_id(load_sources([FIX / "folder"]))
    html = docs["zorbic-html"]
    assert html.title == "Zorbic fever pathway"
    assert "## Admission" in html.text and "- Admit if the tongue is purple & fever exceeds 39 °C." in html.text
    assert "var x" not in html.text and "color:red" not in html.text and "Menu" not in html.text
    assert docs["plain-txt"].text.startswith("# Note")


def _write_pdf(path: Path, text: str) -> None:
    """A one-page PDF with a text layer (hand-assembled: no PDF writer dependency needed)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
            b"/Resources << /Font << /F1 5 0 R >> >> >>",
            b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objs, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    path.write_bytes(bytes(out))


def test_pdf_text_layer_and_broken_pdf(tmp_path):
    (tmp_path / "d").mkdir()
    _write_pdf(tmp_path / "d" / "pathway.pdf", "Give fluids early")
    (d,) = load_sources([tmp_path / "d"]).documents
    assert "Give fluids early" in d.text and d.kind == "guideline" and d.meta["pages"] == 1
    (tmp_path / "d" / "broken.pdf").write_bytes(b"%PDF-1.4\nnot really a pdf")
    with pytest.raises(SourceError, match=r"broken\.pdf"):
        load_sources([tmp_path / "d"])
    report = load_sources([tmp_path / "d"], strict=False)
    assert len(report.documents) == 1 and report.skipped[0][0].endswith("broken.pdf")


# -- EHR ------------------------------------------------------------------------------------------


def test_mtsamples_dedup_sections_and_patient_ids():
    report = load_sources([FIX / "mtsamples.csv"])
    docs = _by_id(report)
    assert set(docs) == {"mts-1", "mts-4"}
    d = docs["mts-1"]
    assert d.kind == "ehr" and d.patient_id == "MTS1" and d.meta["specialties"] == ["Cardiology", "General Medicine"]
    assert d.text.startswith("## Subjective\n\nA 60-year-old man")
    assert "## Medications\n\nLisinopril 10 mg daily." in d.text and "## Plan\n\nReview in 3 months." in d.text
    assert report.stats["mtsamples.duplicate_transcriptions"] == 1
    assert report.stats["mtsamples.empty_transcriptions"] == 1


def test_render_note_keeps_inline_subheaders():
    out = render_note("PHYSICAL EXAMINATION:,  HEENT: Normal.  LUNGS: Clear.,IMPRESSION: , Well.")
    assert out == "## Physical examination\n\nHEENT: Normal. LUNGS: Clear.\n\n## Impression\n\nWell."


def test_mtsamples_wrong_header(tmp_path):
    p = tmp_path / "notes.csv"
    p.write_text("id,text\n1,hello\n", encoding="utf-8")
    with pytest.raises(SourceError, match="missing column"):
        load_sources([f"mtsamples:{p}"])


def test_heart_failure_records_without_outcome():
    report = load_sources([FIX / "heart_failure.csv"], strict=False)
    docs = {d.patient_id: d for d in report.documents}
    assert set(docs) == {"HF001", "HF002"}  # row 3 is bad; ids follow data rows, so HF003 is absent
    t = docs["HF001"].text
    assert "Left ventricular ejection fraction: 25% (normal 50-70%); reduced ejection fraction" in t
    assert "Serum creatinine: 1.5 mg/dL (reference 0.7-1.3 mg/dL; high)" in t
    assert "Serum sodium: 132 mEq/L (reference 135-145 mEq/L; low)" in t
    assert "Sex: male" in t and "Diabetes: yes" in t
    for leak in ("time", "follow", "death", "died", "DEATH"):
        assert leak not in t.lower() if leak.islower() else leak not in t
    assert "Platelets: 310,000 per microlitre" in docs["HF002"].text and "female" in docs["HF002"].text
    assert report.skipped == [(f"{FIX / 'heart_failure.csv'}:4",
                               "column creatinine_phosphokinase: 'abc' is not a number")]
    with pytest.raises(SourceError, match=r"heart_failure\.csv:4: column creatinine_phosphokinase"):
        load_sources([FIX / "heart_failure.csv"])


@pytest.mark.parametrize(("ef", "label"), [(40, "HFrEF"), (41, "HFmrEF"), (49, "HFmrEF"), (50, "HFpEF")])
def test_ef_category_boundaries(ef, label):
    assert label in ef_category(ef)


def test_heart_failure_implausible_value(tmp_path):
    p = tmp_path / "hf.csv"
    lines = (FIX / "heart_failure.csv").read_text(encoding="utf-8").splitlines()[:2]
    p.write_text("\n".join([*lines, lines[1].replace(",0,30,1", ",7,30,1")]) + "\n", encoding="utf-8")
    report = load_sources([p], strict=False)
    assert len(report.documents) == 1 and "smoking: expected 0 or 1" in report.skipped[0][1]


# -- WikiDoc --------------------------------------------------------------------------------------


def test_wikidoc_dedup_empty_and_bad_items():
    report = load_sources([FIX / "wikidoc.json"], strict=False)
    (d,) = report.documents
    assert d.title == "What are the symptoms of zorbic fever?" and d.kind == "reference"
    assert report.stats == {"wikidoc.duplicate_pairs": 1, "wikidoc.empty_answers": 1}
    assert report.skipped[0][0].endswith("wikidoc.json[3]")


def test_wikidoc_not_json(tmp_path):
    p = tmp_path / "w.json"
    p.write_text("[{", encoding="utf-8")
    with pytest.raises(SourceError, match="not valid JSON"):
        load_sources([p])


# -- dispatch -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "fmt"), [("medquad", "medquad"), ("ngc.jsonl", "ngc"), ("uspstf.jsonl", "uspstf"),
                                           ("mtsamples.csv", "mtsamples"), ("heart_failure.csv", "uci-heart-failure"),
                                           ("wikidoc.json", "wikidoc"), ("folder", "files")])
def test_detect_format(name, fmt):
    assert detect_format(FIX / name) == fmt


def test_unknown_format_asks_for_prefix(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(SourceError, match="name the format explicitly"):
        load_sources([p])


def test_parse_source_prefix():
    assert parse_source("medquad:/d/m") == ("medquad", Path("/d/m"))
    assert parse_source("C:/x") == (None, Path("C:/x"))
    assert parse_source("notaformat:/x") == (None, Path("notaformat:/x"))


def test_kind_override_rejected_for_fixed_formats():
    with pytest.raises(SourceError, match="kind 'reference'"):
        load_sources([FIX / "medquad"], kind="guideline")


def test_everything_together_has_unique_ids_and_collections():
    report = load_sources([FIX / n for n in ("medquad", "ngc.jsonl", "uspstf.jsonl", "mtsamples.csv", "wikidoc.json",
                                             "folder")], strict=False)
    colls = {d.meta["collection"] for d in report.documents}
    assert colls == {"medquad", "ngc", "uspstf", "mtsamples", "wikidoc", "folder"}
