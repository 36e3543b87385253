"""The embedder's training triplets: held-out exclusion, negatives of another page, and the retrieval metric."""

from __future__ import annotations

import numpy as np

from corpora.document import Document
from finetune.embedder import retrieval_metrics
from finetune.embedder_data import EmbedderDataOptions, build_from, split_files

QTYPES = [("information", "What is (are) {f} ?", "## Information\n\n{f} is a condition of the {organ}. It is "
           "described by doctors as rare and affects the {organ} in adults and children alike."),
          ("causes", "What causes {f} ?", "## Causes\n\n{f} is caused by changes in a gene that acts in the "
           "{organ}; infections and toxins are other causes named by specialists."),
          ("treatment", "What are the treatments for {f} ?", "## Treatment\n\n{f} is treated with medicines "
           "for the {organ}, surgery in severe cases, and follow-up visits with a specialist.")]
ORGANS = ["liver", "kidney", "heart", "lung", "skin", "brain", "bone", "eye", "ear", "blood", "spleen", "colon"]


def medquad_docs() -> list[Document]:
    docs = []
    for i, organ in enumerate(ORGANS):
        focus = f"Condition{i} syndrome"
        for j, (qtype, q, text) in enumerate(QTYPES):
            docs.append(Document(f"medquad-1-{i:04d}-{j + 1}", text.format(f=focus, organ=organ), focus, "reference",
                                 f"1_Test_QA/{i:04d}.xml#{j + 1}",
                                 meta={"collection": "medquad", "focus": focus, "qtype": qtype,
                                       "question": q.format(f=focus)}))
    # Another page (another file) on the same condition as a held-out page: must be excluded too.
    docs.append(Document("medquad-2-0099-1", "## Information\n\nCondition0 syndrome again, from another source, "
                         "described in other words for patients.", "Condition0 syndrome", "reference",
                         "2_Other_QA/0099.xml#1", meta={"collection": "medquad", "focus": "Condition0 syndrome",
                                                        "qtype": "information",
                                                        "question": "What is (are) Condition0 syndrome ?"}))
    # Another condition whose answer is word for word a held-out page's (MedQuAD repeats boilerplate answers).
    held_text = QTYPES[2][2].format(f="Condition1 syndrome", organ="kidney")
    docs.append(Document("medquad-2-0100-1", held_text, "Other disease", "reference", "2_Other_QA/0100.xml#1",
                         meta={"collection": "medquad", "focus": "Other disease", "qtype": "treatment",
                               "question": "What are the treatments for Other disease ?"}))
    return docs


SPLIT = {"files": {"test": ["1_Test_QA/0000.xml"], "dev": ["1_Test_QA/0001.xml"]},
         "test": [{"doc_id": "medquad-1-0000-1", "file": "1_Test_QA/0000.xml"}],
         "dev": [{"doc_id": "medquad-1-0001-2", "file": "1_Test_QA/0001.xml"}]}


def test_split_files_and_same_focus_pages_never_reach_training() -> None:
    assert split_files(SPLIT) == {"1_Test_QA/0000.xml", "1_Test_QA/0001.xml"}
    parts, card = build_from(medquad_docs(), [], SPLIT, EmbedderDataOptions(heldout_share=0.0, styled_share=0.0))
    train_ids = {t.doc_id for t in parts["train"]}
    # Whole files of the split are out (all three pages of each), not only the questions listed.
    assert not any(d.startswith(("medquad-1-0000-", "medquad-1-0001-")) for d in train_ids)
    assert "medquad-2-0099-1" not in train_ids  # same focus as a held-out file
    assert "medquad-2-0100-1" not in train_ids  # same answer text as a held-out page
    assert card["stats"]["medquad.retrieval_split"] == 6
    assert card["stats"]["medquad.same_focus_as_split"] == 1
    assert card["stats"]["medquad.same_answer_as_split"] == 1
    texts = " ".join(f"{t.query} {t.positive} {t.negative}" for t in parts["train"])
    assert "Condition0 " not in texts and "Condition1 " not in texts
    assert len(parts["train"]) == 30  # the 10 other conditions x 3 questions


def test_negatives_are_other_pages_and_heldout_share_is_apart() -> None:
    parts, _ = build_from(medquad_docs(), [], SPLIT, EmbedderDataOptions(heldout_share=0.3, styled_share=0.0))
    assert parts["heldout"], "a 30% share of 10 files should hold some out"
    train_ids = {t.doc_id for t in parts["train"]}
    assert not train_ids & {t.doc_id for t in parts["heldout"]}
    for t in parts["train"] + parts["heldout"]:
        assert t.negative != t.positive
        assert t.negative_kind in {"sibling", "bm25"}
        if t.negative_kind == "bm25":  # BM25 negatives come from another condition
            assert t.query.split("Condition", 1)[1].split()[0] not in t.negative


def test_retrieval_metrics_ranks() -> None:
    q = np.eye(3, dtype=np.float32)
    p = np.array([[1, 0, 0], [0.6, 0.8, 0], [0.9, 0, 0.1]], dtype=np.float32)
    m = retrieval_metrics(q, p, [0, 1, 1])
    # q0, q1: gold first; q2: gold p1 (0.0) below p2 (0.1), tied with p0 (ties count for the gold) -> second.
    assert m["recall@1"] == round(2 / 3 * 100, 1)
    assert m["mrr@10"] == round((1 + 1 + 1 / 2) / 3 * 100, 1)


def test_a_trained_folder_carries_its_own_spec(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    import pytest

    from rag.errors import ModelNotAvailableError
    from rag.models import FOLDER_SPEC_FILE, folder_embedder_spec

    assert folder_embedder_spec(tmp_path, "x") is None
    (tmp_path / FOLDER_SPEC_FILE).write_text(json.dumps({"pooling": "cls", "max_length": 128, "sim_floor": 0.2}))
    spec = folder_embedder_spec(tmp_path, "cds/minilm-medical@abc")
    assert spec is not None and spec.model_id == "cds/minilm-medical@abc"
    assert (spec.pooling, spec.max_length, spec.sim_floor, spec.query_prefix) == ("cls", 128, 0.2, "")
    (tmp_path / FOLDER_SPEC_FILE).write_text("{not json")
    with pytest.raises(ModelNotAvailableError):
        folder_embedder_spec(tmp_path, "x")
