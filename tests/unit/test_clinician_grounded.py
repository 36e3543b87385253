"""Part grounded_clinician: clinicians' questions on guideline sections, target = the answering sentences."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from corpora.document import Document
from finetune.clinician_grounded import (
    ClinicianQuestion,
    answer_sentences,
    cite,
    clinician_examples,
    read_questions,
    sentence_key,
)
from rag.errors import InputError
from rag.text import split_sentences

# Guideline-like text written for the test. The answering sentence of each sits in the middle of its section.
GUIDES = {
    "g-gout": ("Gout flare management",
               "## Acute flare\nGout flares are painful and often start at night. Joint aspiration confirms the "
               "diagnosis when it is uncertain. Colchicine at a low dose is recommended within 12 hours of flare "
               "onset. Rest and ice help with the pain. Follow-up is advised after the flare settles."),
    "g-asthma": ("Asthma in adults",
                 "## Reliever therapy\nAsthma is a chronic airway disease. Symptoms vary over time. As-needed "
                 "low-dose budesonide-formoterol is the preferred reliever in adults. Inhaler technique should be "
                 "checked at every visit."),
    "g-anemia": ("Iron deficiency anemia",
                 "## Treatment\nIron deficiency is common. Oral iron every other day is suggested as first-line "
                 "replacement. Intravenous iron is reserved for intolerance or malabsorption. Haemoglobin is "
                 "rechecked after four weeks."),
    "g-hidden": ("Gout in kidney disease",
                 "## Flares\nColchicine doses are reduced in kidney disease. Gout flares also need rest."),
}


def _sents(doc_id: str) -> list[str]:
    return split_sentences(GUIDES[doc_id][1])  # the heading line is sentence 0, as in the index's parent chunk


def _spec(rows: list[dict[str, object]], path: Path) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def _row(qid: str, doc_id: str, question: str, idx: list[int], keys: list[str] | None = None) -> dict[str, object]:
    sents = _sents(doc_id)
    return {"id": qid, "passage": f"{doc_id}#p0", "question": question, "style": "shorthand", "sentences": idx,
            "keys": keys if keys is not None else [sentence_key(sents[i]) for i in idx]}


@pytest.fixture(scope="module")
def assistant(tmp_path_factory: pytest.TempPathFactory):
    from rag import Assistant
    from rag.config import load_config
    from rag.update import build_index
    from tests.fakes import HashEmbedder

    root = tmp_path_factory.mktemp("clinician-index")
    cfg = load_config(overrides=[f"index.dir={root}", "index.auto_build_demo=false"])
    docs = [Document(doc_id=d, text=text, title=title, kind="guideline", source=f"{d}.md")
            for d, (title, text) in GUIDES.items()]
    build_index(docs, HashEmbedder(), root, cfg.chunking.model_dump())
    return Assistant(cfg, embedder=HashEmbedder())


def test_target_is_the_answering_sentences_cited_where_the_section_is_shown(assistant, tmp_path: Path) -> None:
    spec = _spec([_row("gc-1", "g-gout", "gout flare, started 6h ago - colchicine ok? how soon?", [3]),
                  _row("gc-2", "g-asthma", "adult asthma, which reliever?", [3]),
                  _row("gc-3", "g-anemia", "IDA - oral iron daily or alternate days? when IV?", [2, 3])],
                 tmp_path / "q.jsonl")
    stats: Counter[str] = Counter()
    out = clinician_examples(read_questions(spec), assistant, lambda t: len(t.split()), 400, 3, {"g-hidden"}, stats)
    assert stats["grounded_clinician.answer"] == 3 and len(out) == 3
    for ex, (doc, idx) in zip(out, [("g-gout", [3]), ("g-asthma", [3]), ("g-anemia", [2, 3])], strict=True):
        n = ex["meta"]["gold_n"]
        assert ex["completion"][0]["content"] == cite([_sents(doc)[i] for i in idx], n)
        assert f"[{n}]" in ex["completion"][0]["content"] and ex["meta"]["source_doc_ids"][n - 1] == doc
        # Distractors come from other documents, never from a hidden one.
        others = [d for i, d in enumerate(ex["meta"]["source_doc_ids"], 1) if i != n]
        assert doc not in others and "g-hidden" not in others
        assert ex["part"] == "grounded_clinician" and ex["group"] == f"ngc:{doc}"
        assert ex["prompt"][-1]["role"] == "user"


def test_a_changed_passage_or_missing_one_is_skipped_not_trained_on(assistant, tmp_path: Path) -> None:
    spec = _spec([_row("gc-1", "g-gout", "colchicine timing in a flare?", [3], keys=["0000000000"]),
                  {**_row("gc-2", "g-gout", "colchicine timing?", [3]), "passage": "g-gout#p7"},
                  _row("gc-3", "g-asthma", "reliever?", [3])], tmp_path / "q.jsonl")
    stats: Counter[str] = Counter()
    out = clinician_examples(read_questions(spec), assistant, lambda t: len(t.split()), 400, 3, set(), stats)
    assert [e["id"] for e in out] == ["gc-gc-3"]
    assert stats["grounded_clinician.skipped.passage_changed"] == 1
    assert stats["grounded_clinician.skipped.passage_not_indexed"] == 1


def test_an_answer_the_source_budget_cuts_off_is_skipped(assistant, tmp_path: Path) -> None:
    spec = _spec([_row("gc-1", "g-gout", "follow-up after a gout flare?", [5])], tmp_path / "q.jsonl")
    stats: Counter[str] = Counter()
    # Counting characters as tokens, a 100-token budget cuts the section (or drops it) before its last sentence.
    assert clinician_examples(read_questions(spec), assistant, len, 100, 3, set(), stats) == []
    assert stats["grounded_clinician.skipped.answer_trimmed"] == 1


def test_cite_puts_the_marker_before_the_stop_and_drops_list_markers() -> None:
    assert cite(["- Colchicine is recommended.", "Rest helps"], 2) == "Colchicine is recommended [2]. Rest helps [2]."


def test_answer_sentences_checks_numbers_and_hashes() -> None:
    from rag.chunk import Chunk

    text = "One two three. Colchicine within 12 hours. Four five six."
    parent = Chunk("d#p0", "d", "parent", text, 0, len(text), "s", "t", "guideline", "d.md")
    q = ClinicianQuestion("a", "d#p0", "q?", "direct", (1,), (sentence_key("Colchicine  within 12 hours."),))
    assert answer_sentences(q, parent) == ["Colchicine within 12 hours."]
    assert answer_sentences(ClinicianQuestion("a", "d#p0", "q?", "direct", (9,), ("x",)), parent) is None
    assert q.doc_id == "d"


def test_malformed_spec_lines_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        read_questions(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a"\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"bad.jsonl:1: not valid JSON"):
        read_questions(bad)
    bad.write_text(json.dumps({"id": "a", "passage": "d#p0", "question": "q", "style": "x", "sentences": [1],
                               "keys": []}) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match="differ in length"):
        read_questions(bad)
    bad.write_text(json.dumps({"id": "a", "question": "q"}) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match="not a clinician question"):
        read_questions(bad)


def test_the_committed_question_file_is_well_formed() -> None:
    qs = read_questions(Path(__file__).resolve().parents[2] / "finetune" / "questions" / "clinician_grounded.jsonl")
    assert len(qs) >= 100 and len({q.id for q in qs}) == len(qs)
    assert {q.style for q in qs} == {"shorthand", "vignette", "direct", "yesno"}
    assert all(q.doc_id.startswith("ngc-") and 1 <= len(q.sentences) <= 3 for q in qs)
