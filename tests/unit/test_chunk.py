import itertools

import pytest

from corpora.document import Document
from rag.chunk import Chunk, HierarchicalChunker, split_sections

# -- split_sections ---------------------------------------------------------------------------


def _paths(text, title="Guide"):
    return [(s.heading_path, text[s.start : s.end]) for s in split_sections(text, title)]


def test_heading_paths_nest_and_pop():
    text = "# Guide\nIntro.\n## A\nbody a\n### A1\nbody a1\n## B\nbody b\n"
    assert [p for p, _ in _paths(text)] == ["Guide", "A", "A > A1", "B"]


def test_section_span_starts_at_its_heading_and_ends_at_next():
    text = "# Guide\nIntro.\n## A\nbody a\n## B\nbody b"
    assert [body for _, body in _paths(text)] == ["# Guide\nIntro.\n", "## A\nbody a\n", "## B\nbody b"]


def test_text_before_first_heading_kept_under_title():
    text = "Preamble line.\n## A\nbody"
    secs = split_sections(text, "My Title")
    assert secs[0].heading_path == "My Title"
    assert (secs[0].start, secs[0].end) == (0, len("Preamble line.\n"))
    assert secs[1].heading_path == "A"


def test_document_without_headings_is_one_section():
    text = "Just text.\nMore text."
    secs = split_sections(text, "T")
    assert len(secs) == 1
    assert (secs[0].heading_path, secs[0].start, secs[0].end) == ("T", 0, len(text))


def test_top_level_title_not_repeated_in_paths():
    text = "# Guide\n## Dosing\n### Renal\nreduce dose"
    assert [p for p, _ in _paths(text, "Guide")] == ["Dosing > Renal"]


def test_other_top_level_heading_is_part_of_the_path():
    text = "# Note 2025\n## Plan\nstart drug"
    assert [p for p, _ in _paths(text, "Different title")] == ["Note 2025 > Plan"]


def test_empty_sections_and_empty_text_skipped():
    assert split_sections("", "T") == []
    assert split_sections("# T\n", "T") == []
    assert [p for p, _ in _paths("# T\n## Empty\n## Full\nyes", "T")] == ["Full"]


def test_closing_hashes_and_missing_space():
    text = "## Dosing ##\nbody\n#NotAHeading\nmore"
    secs = split_sections(text, "T")
    assert [s.heading_path for s in secs] == ["Dosing"]
    assert secs[0].end == len(text)


# -- HierarchicalChunker -------------------------------------------------------------------------

_SENT = "Sentence {i} covers heart failure therapy."  # 6 whitespace tokens


def _doc(doc_id="doc", n_long=30):
    long_body = " ".join(_SENT.format(i=i) for i in range(n_long))
    text = (
        "# Guide\nPreamble before any section.\n\n"
        "## Short\nA short section. It has two sentences.\n\n"
        f"## Long\n{long_body}\n\n"
        "## Tail\nEnd text here."
    )
    return Document(doc_id, text, "Guide", "guideline", "guide.md", meta={"year": "2024"})


@pytest.fixture
def chunker(ws):
    return HierarchicalChunker(ws, parent_max_tokens=40, child_tokens=12, child_overlap=4)


@pytest.fixture
def chunked(chunker):
    doc = _doc()
    parents, children = chunker.chunk(doc)
    return doc, parents, children


def test_parent_and_child_ids_are_sequential(chunked):
    _, parents, children = chunked
    assert [p.chunk_id for p in parents] == [f"doc#p{i}" for i in range(len(parents))]
    for p in parents:
        own = [c for c in children if c.parent_id == p.chunk_id]
        assert [c.chunk_id for c in own] == [f"{p.chunk_id}.c{j}" for j in range(len(own))]
    assert children[0].chunk_id == "doc#p0.c0"


def test_spans_index_the_document_text(chunked):
    doc, parents, children = chunked
    for c in [*parents, *children]:
        assert c.text == doc.text[c.start : c.end]
        assert c.text == c.text.strip() and c.text


def test_children_lie_inside_their_parent(chunked):
    _, parents, children = chunked
    by_id = {p.chunk_id: p for p in parents}
    for c in children:
        p = by_id[c.parent_id]
        assert p.start <= c.start < c.end <= p.end
        assert c.section == p.section


def test_parent_child_ids_list_exactly_its_children(chunked):
    _, parents, children = chunked
    for p in parents:
        assert p.child_ids == [c.chunk_id for c in children if c.parent_id == p.chunk_id]
        assert p.child_ids, p.chunk_id
    assert sum(len(p.child_ids) for p in parents) == len(children)


def test_levels_and_metadata_copied(chunked):
    _, parents, children = chunked
    assert {p.level for p in parents} == {"parent"} and {c.level for c in children} == {"child"}
    for c in [*parents, *children]:
        assert (c.doc_id, c.title, c.kind, c.source, c.patient_id) == (
            "doc",
            "Guide",
            "guideline",
            "guide.md",
            None,
        )
    assert all(p.parent_id is None for p in parents)


def test_long_section_split_into_several_parents_within_budget(chunked, ws):
    _, parents, _ = chunked
    long_parents = [p for p in parents if p.section == "Long"]
    assert len(long_parents) >= 4  # 30 sentences x 6 tokens, at most 40 tokens each
    assert all(len(ws(p.text)) <= 40 for p in parents)
    # Split parents of one section do not overlap and keep document order.
    for a, b in itertools.pairwise(long_parents):
        assert a.end <= b.start


def test_short_sections_stay_one_parent(chunked):
    doc, parents, _ = chunked
    short = [p for p in parents if p.section == "Short"]
    assert len(short) == 1
    assert short[0].text == "## Short\nA short section. It has two sentences."
    assert parents[0].section == "Guide" and parents[0].text.startswith("# Guide")
    assert parents[-1].section == "Tail" and parents[-1].end == len(doc.text)


def test_children_respect_child_size(chunked, ws):
    _, _, children = chunked
    assert all(len(ws(c.text)) <= 12 for c in children)


def test_consecutive_children_overlap_when_overlap_positive(ws):
    text = "## Sec\n" + " ".join(f"Fact {i} here." for i in range(30))
    doc = Document("d", text, "T", "guideline", "t.md")
    _, with_overlap = HierarchicalChunker(ws, 200, 16, 6).chunk(doc)
    _, without = HierarchicalChunker(ws, 200, 16, 0).chunk(doc)
    assert len(with_overlap) > 2
    assert all(b.start < a.end for a, b in itertools.pairwise(with_overlap))
    assert all(b.start >= a.end for a, b in itertools.pairwise(without))
    assert len(with_overlap) > len(without)


def test_every_word_of_a_section_reaches_a_child(ws):
    text = "## Sec\n" + " ".join(f"w{i}" for i in range(100))
    doc = Document("d", text, "T", "guideline", "t.md")
    _, children = HierarchicalChunker(ws, 40, 16, 6).chunk(doc)
    covered = {w for c in children for w in c.text.split()}
    assert covered == set(text.split())


def test_chunking_is_deterministic(ws):
    a = HierarchicalChunker(ws, 40, 12, 4).chunk(_doc())
    b = HierarchicalChunker(ws, 40, 12, 4).chunk(_doc())
    assert [c.to_dict() for c in a[0] + a[1]] == [c.to_dict() for c in b[0] + b[1]]


def test_ids_use_the_doc_id_and_ehr_patient(chunker):
    doc = Document("ehr-p1-note", "## Plan\nStart furosemide.", "Note", "ehr", "p1.md", patient_id="P001")
    parents, children = chunker.chunk(doc)
    assert [p.chunk_id for p in parents] == ["ehr-p1-note#p0"]
    assert [c.chunk_id for c in children] == ["ehr-p1-note#p0.c0"]
    assert {c.patient_id for c in parents + children} == {"P001"}


def test_document_with_only_headings_gives_no_chunks(chunker):
    parents, children = chunker.chunk(Document("d", "# T\n## A\n", "T", "guideline", "t.md"))
    assert parents == [] and children == []


def test_split_parent_located_after_previous_piece(ws):
    text = (
        "## Medications\n- Lisinopril 20 mg once daily\n- Metoprolol 50 mg once daily\n"
        "- Furosemide 40 mg once daily\n- Metformin 1000 mg twice daily"
    )
    doc = Document("d", text, "T", "guideline", "t.md")
    parents, _ = HierarchicalChunker(ws, 25, 8, 0).chunk(doc)
    assert len(parents) >= 2
    for a, b in itertools.pairwise(parents):
        assert a.end <= b.start, (a.start, a.end, b.start, b.end)
    assert parents[-1].end == len(text)


# -- Chunk -------------------------------------------------------------------------------------


def test_context_text_adds_title_and_distinct_section():
    c = Chunk("d#p0.c0", "d", "child", "body", 0, 4, "Dosing", "Guide", "guideline", "g.md")
    assert c.context_text() == "Guide — Dosing\nbody"
    c2 = Chunk("d#p0.c0", "d", "child", "body", 0, 4, "Guide", "Guide", "guideline", "g.md")
    assert c2.context_text() == "Guide\nbody"


def test_chunk_dict_round_trip():
    c = Chunk(
        "d#p0", "d", "parent", "body", 0, 4, "S", "T", "ehr", "g.md", patient_id="P1", child_ids=["d#p0.c0"]
    )
    assert Chunk.from_dict(c.to_dict()) == c
