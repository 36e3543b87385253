import pytest

from corpora import KINDS, Document, LoadReport, content_hash, load_sources
from corpora.markdown import parse_front_matter, read_markdown
from rag.errors import InputError, SourceError

GUIDE = """---
doc_id: g-hf
title: Heart failure summary
Kind: guideline
year: 2023
guideline: ESC 2023
notice: demo summary, not clinical advice
---
# Heart failure

## Treatment
Start an SGLT2 inhibitor.
"""

NOTE = """---
kind: ehr
patient_id: P007
date: 2026-01-01
---
# Progress note
Potassium 5.9 mmol/L.
"""


# -- front matter -----------------------------------------------------------------------------


def test_front_matter_parsed_lowercased_and_removed_from_body():
    meta, body = parse_front_matter(GUIDE, "x.md")
    assert meta["doc_id"] == "g-hf" and meta["kind"] == "guideline" and meta["year"] == "2023"
    assert body.startswith("# Heart failure")


def test_no_front_matter_returns_raw():
    assert parse_front_matter("# Title\nbody", "x.md") == ({}, "# Title\nbody")


def test_front_matter_comments_blank_lines_and_colons_in_values():
    meta, body = parse_front_matter("---\n# a comment\n\ntitle: HF: an update\n---\nbody", "x.md")
    assert meta == {"title": "HF: an update"} and body == "body"


def test_front_matter_crlf():
    meta, body = parse_front_matter("---\r\ntitle: CR\r\n---\r\nbody\r\n", "x.md")
    assert meta == {"title": "CR"} and body == "body\r\n"


def test_malformed_front_matter_line_named_with_line_number():
    with pytest.raises(SourceError, match=r"x\.md:3: .*not 'key: value'"):
        parse_front_matter("---\ntitle: ok\njust some words\n---\nbody", "x.md")


# -- read_markdown / load_sources: a good file ----------------------------------------------------


def test_reads_guideline_with_meta(write, tmp_path):
    write("g/hf.md", GUIDE)
    report = load_sources([tmp_path / "g"])
    assert isinstance(report, LoadReport) and report.skipped == []
    (doc,) = report.documents
    assert (doc.doc_id, doc.title, doc.kind, doc.source, doc.patient_id) == (
        "g-hf",
        "Heart failure summary",
        "guideline",
        "hf.md",
        None,
    )
    assert doc.meta == {
        "year": "2023",
        "guideline": "ESC 2023",
        "notice": "demo summary, not clinical advice",
        "collection": "g",
    }
    assert doc.text.startswith("# Heart failure") and doc.text.endswith("Start an SGLT2 inhibitor.")
    assert doc.version == content_hash(doc.text, doc.title, doc.kind, "")


def test_reads_ehr_note(write, tmp_path):
    write("ehr/P007/note.md", NOTE)
    (doc,) = load_sources([tmp_path / "ehr"]).documents
    assert doc.kind == "ehr" and doc.patient_id == "P007"
    assert doc.doc_id == "p007-note-md" and doc.source == "P007/note.md"
    assert doc.title == "Progress note"  # from the first heading
    assert "patient_id" not in doc.meta and "kind" not in doc.meta


def test_defaults_without_front_matter(write, tmp_path):
    write("docs/Sub Dir/My Notes.txt", "Plain text without a heading.\n# Later heading\n")
    (doc,) = load_sources([tmp_path / "docs"]).documents
    assert doc.kind == "guideline"
    assert doc.doc_id == "sub-dir-my-notes-txt"
    assert doc.title == "My Notes"  # first non-empty line is not a heading -> file stem
    assert doc.meta == {"collection": "docs"}


def test_single_file_source(write):
    p = write("one/file.markdown", "# T\nbody")
    (doc,) = load_sources([p]).documents
    assert doc.source == "file.markdown" and doc.doc_id == "file-markdown"


def test_version_changes_with_content(write, tmp_path):
    p = write("d/a.md", "# T\nbody one")
    v1 = load_sources([tmp_path / "d"]).documents[0].version
    p.write_text("# T\nbody two", encoding="utf-8")
    assert load_sources([tmp_path / "d"]).documents[0].version != v1


def test_only_supported_visible_files_read_in_sorted_order(write, tmp_path):
    write("d/b.md", "# B\nb")
    write("d/a.txt", "# A\na")
    write("d/README.md", "# Readme\nnot a document")
    write("d/.hidden.md", "# Hidden\nh")
    write("d/data.json", "{}")
    write("d/c.MD", "# C\nc")
    ids = [d.doc_id for d in load_sources([tmp_path / "d"]).documents]
    assert ids == ["a-txt", "b-md", "c-md"]


# -- kind ------------------------------------------------------------------------------------------


def test_kind_argument_overrides_front_matter(write, tmp_path):
    write("d/a.md", "---\nkind: guideline\n---\n# A\nbody")
    write("d/b.md", "# B\nbody")
    docs = load_sources([tmp_path / "d"], kind="reference").documents
    assert {d.kind for d in docs} == {"reference"}


def test_kind_ehr_argument_still_needs_patient_id(write, tmp_path):
    write("d/a.md", "# A\nbody")
    with pytest.raises(SourceError, match="patient_id"):
        load_sources([tmp_path / "d"], kind="ehr")


def test_unknown_kind_rejected(write, tmp_path):
    write("d/a.md", "---\nkind: protocol\n---\n# A\nbody")
    with pytest.raises(SourceError, match="kind 'protocol'"):
        load_sources([tmp_path / "d"])


def test_ehr_without_patient_id_rejected(write, tmp_path):
    write("d/a.md", "---\nkind: ehr\n---\n# Note\nbody")
    with pytest.raises(SourceError, match="patient_id"):
        load_sources([tmp_path / "d"])


def test_ehr_with_blank_patient_id_rejected(write, tmp_path):
    write("d/a.md", "---\nkind: ehr\npatient_id:\n---\n# Note\nbody")
    with pytest.raises(SourceError, match="patient_id"):
        load_sources([tmp_path / "d"])


def test_patient_id_on_guideline_rejected(write, tmp_path):
    write("d/a.md", "---\nkind: guideline\npatient_id: P1\n---\n# A\nbody")
    with pytest.raises(SourceError, match="only allowed on kind: ehr"):
        load_sources([tmp_path / "d"])


def test_document_itself_refuses_ehr_without_patient():
    with pytest.raises(ValueError, match="patient_id"):
        Document("d", "t", "T", "ehr", "s")
    with pytest.raises(ValueError, match="kind must be one of"):
        Document("d", "t", "T", "note", "s")  # type: ignore[arg-type]
    assert KINDS == ("guideline", "ehr", "reference")


# -- bad inputs ----------------------------------------------------------------------------------


def test_duplicate_doc_id_rejected_naming_both_files(write, tmp_path):
    write("d/a.md", "---\ndoc_id: same\n---\n# A\na")
    write("d/b.md", "---\ndoc_id: same\n---\n# B\nb")
    with pytest.raises(SourceError, match="duplicate doc_id 'same'") as e:
        load_sources([tmp_path / "d"])
    assert "a.md" in str(e.value) and "b.md" in str(e.value)


def test_duplicate_doc_id_across_sources_rejected_even_when_not_strict(write, tmp_path):
    write("x/a.md", "# A\na")
    write("y/a.md", "# A\na")
    with pytest.raises(SourceError, match="duplicate doc_id 'a-md'"):
        load_sources([tmp_path / "x", tmp_path / "y"], strict=False)


def test_non_utf8_file(write, tmp_path):
    write("d/latin1.md", "# Caf\xe9\nna\xefve".encode("latin-1"))
    with pytest.raises(SourceError, match="not UTF-8"):
        load_sources([tmp_path / "d"])


@pytest.mark.parametrize("content", ["", "   \n\n", "---\ntitle: only front matter\n---\n"])
def test_empty_file(write, tmp_path, content):
    write("d/empty.md", content)
    with pytest.raises(SourceError, match="empty document"):
        load_sources([tmp_path / "d"])


def test_missing_path(tmp_path):
    with pytest.raises(SourceError, match="source not found"):
        load_sources([tmp_path / "nope"])


def test_folder_without_documents(write, tmp_path):
    write("d/notes.json", "{}")
    write("d/README.md", "# About\nnot a document")
    (tmp_path / "empty").mkdir()
    for folder in ("d", "empty"):
        with pytest.raises(SourceError, match=r"no \.md/.*\.pdf documents"):
            load_sources([tmp_path / folder])


def test_source_errors_are_input_errors(tmp_path):
    with pytest.raises(InputError) as e:
        load_sources([tmp_path / "nope"])
    assert e.value.exit_code == 2


def test_non_strict_records_skipped_files_with_reasons(write, tmp_path):
    write("d/a-good.md", "# Good\nbody")
    write("d/b-empty.md", "")
    write("d/c-latin1.md", b"# Caf\xe9\n")
    write("d/d-ehr.md", "---\nkind: ehr\n---\n# Note\nbody")
    report = load_sources([tmp_path / "d"], strict=False)
    assert [d.doc_id for d in report.documents] == ["a-good-md"]
    reasons = dict(report.skipped)
    assert set(reasons) == {str(tmp_path / "d" / n) for n in ("b-empty.md", "c-latin1.md", "d-ehr.md")}
    assert "empty document" in reasons[str(tmp_path / "d" / "b-empty.md")]
    assert "not UTF-8" in reasons[str(tmp_path / "d" / "c-latin1.md")]
    assert "patient_id" in reasons[str(tmp_path / "d" / "d-ehr.md")]


def test_strict_stops_at_first_bad_file(write, tmp_path):
    write("d/a-good.md", "# Good\nbody")
    write("d/b-empty.md", "")
    with pytest.raises(SourceError, match=r"b-empty\.md"):
        load_sources([tmp_path / "d"])


def test_read_markdown_direct(write, tmp_path):
    p = write("root/sub/n.md", NOTE)
    doc = read_markdown(p, tmp_path / "root")
    assert doc.source == "sub/n.md" and doc.patient_id == "P007"
    assert read_markdown(p, tmp_path / "elsewhere").source == "n.md"


def test_utf8_bom_front_matter_still_parsed(write, tmp_path):
    write("d/note.md", b"\xef\xbb\xbf" + NOTE.encode("utf-8"))
    (doc,) = load_sources([tmp_path / "d"]).documents
    assert doc.kind == "ehr" and doc.patient_id == "P007"
