"""Answerability pairs written from an index's own guideline sections (finetune/verifier_index.py)."""

from __future__ import annotations

import random
from collections import Counter

from corpora.document import Document
from finetune.verifier_data import body
from finetune.verifier_index import cross_pairs, index_pairs, section_key


def _doc(doc_id: str, title: str, sections: dict[str, str]) -> Document:
    text = "\n\n".join(f"## {h}\n{t}" for h, t in sections.items())
    return Document(doc_id=doc_id, title=title, kind="guideline", source=f"/g/{doc_id}.md", text=text)


def _passages(d: Document) -> list[str]:
    return [f"{d.title} — {part.split(chr(10), 1)[0][3:]}\n{part.split(chr(10), 1)[1]}"
            for part in d.text.split("\n\n")]


DOCS = [
    _doc("hk", "Hyperkalaemia management", {
        "Emergency treatment": "Intravenous calcium gluconate is recommended within minutes when hyperkalaemia "
                               "shows ECG changes such as peaked T waves or a broad QRS complex.",
        "Chronic management": "Potassium binders such as patiromer should be considered to allow continued "
                              "renin-angiotensin inhibitor therapy in chronic kidney disease patients."}),
    _doc("af", "Atrial fibrillation anticoagulation", {
        "Stroke risk": "Oral anticoagulation is recommended for men with a CHA2DS2-VASc score of 2 or more "
                       "because annual stroke risk exceeds the bleeding risk.",
        "Bleeding": "Uncontrolled hypertension should be treated before anticoagulation is started in elderly "
                    "patients with atrial fibrillation and high bleeding scores."}),
]
OUTSIDE = [_doc("gl", "Glaucoma screening", {
    "Recommendation": "Adults older than 40 years should be offered intraocular pressure measurement every "
                      "two years when a family history of glaucoma is reported by the patient."})]


def test_each_question_pairs_its_own_passage_with_negatives_that_do_not_hold_it():
    stats: Counter[str] = Counter()
    parts = index_pairs(DOCS, _passages, random.Random(3), per_passage=1, vignette_share=0.0, heldout_share=0.0,
                        stats=stats)
    assert parts["heldout"] == []
    pos = [p for p in parts["train"] if p.label == 1]
    assert pos and all(p.task == "answerable" and p.source == "index" and p.kind == "detail" for p in pos)
    assert all(p.text_a.startswith("question: ") for p in parts["train"])
    # a question's negatives never are the passage it was written from
    for p in pos:
        negs = [n for n in parts["train"] if n.text_a == p.text_a and n.label == 0]
        assert all(n.text_b != p.text_b for n in negs)
        # the other-guideline negative comes from another document
        assert all(n.text_b.split(" — ")[0] != p.text_b.split(" — ")[0] for n in negs if n.kind == "bm25")
    # numbers are what is asked: never in the question
    assert not any(ch.isdigit() for p in pos for ch in p.text_a.removeprefix("question: "))


def test_held_out_sections_are_never_trained_on():
    parts = index_pairs(DOCS, _passages, random.Random(3), per_passage=2, vignette_share=0.5, heldout_share=0.5,
                        stats=Counter())
    held = {p.text_b for p in parts["heldout"] if p.label == 1}
    trained = {p.text_b for p in parts["train"] if p.label == 1}
    assert not held & trained
    keys = {section_key(d, p) for d in DOCS for p in _passages(d)}
    assert len(keys) == 4 and all(body(p) for d in DOCS for p in _passages(d))


def test_outside_questions_are_negatives_against_the_index():
    stats: Counter[str] = Counter()
    pairs = list(cross_pairs(OUTSIDE, DOCS, _passages, random.Random(0), per_doc=1, vignette_share=0.0,
                             stats=stats))
    assert len(pairs) == stats["outside"] == 1
    p = pairs[0]
    assert p.label == 0 and p.kind == "outside" and p.text_b in {x for d in DOCS for x in _passages(d)}


def test_bad_sources_are_one_line_and_exit_2(capsys, tmp_path):
    from finetune.verifier_index import cli

    assert cli(["--sources", str(tmp_path / "nowhere"), "--pairs-only", "--work", str(tmp_path / "w")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    records = tmp_path / "notes"
    records.mkdir()
    (records / "n.md").write_text("---\ndoc_id: p1-n\nkind: ehr\npatient_id: P1\n---\n# Note\nEF 40%.\n")
    assert cli(["--sources", str(records), "--pairs-only", "--work", str(tmp_path / "w")]) == 2
    assert "no guideline documents" in capsys.readouterr().err
