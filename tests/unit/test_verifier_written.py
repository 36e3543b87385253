"""Answerability pairs from LLM-written clinician questions (finetune/verifier_written.py); no model is loaded."""

from __future__ import annotations

import random
from collections import Counter

from corpora.document import Document
from finetune.verifier_written import Item, askable, items, keep, pairs

LONG = ("In adults with chronic kidney disease, an ACE inhibitor or angiotensin receptor blocker is recommended when "
        "albuminuria is present, and serum potassium and creatinine should be checked within two weeks of starting "
        "or increasing the dose, because both can rise early after the drug is begun in most adult patients.")
OTHER = ("Adults older than forty years should be offered intraocular pressure measurement every two years when a "
         "family history of glaucoma is reported, since early treatment slows loss of the visual field over time "
         "and the test itself is quick, cheap and painless for nearly every patient who is offered it.")
ABOUT = ("The working group searched the literature and this guideline was reviewed by the panel, whose members "
         "declared their funding and disclosures; the evidence review is summarised in the table of the column "
         "below, with the search dates and the full bibliography listed at the end of the document for readers.")


def _doc(doc_id: str, parts: list[str]) -> Document:
    return Document(doc_id=doc_id, title=doc_id, kind="guideline", source=f"/g/{doc_id}", text="\n\n".join(parts))


def _passages(d: Document) -> list[str]:
    return d.text.split("\n\n")


def test_only_long_guidance_passages_are_asked_about():
    assert askable(LONG)
    assert not askable(ABOUT)  # about the guideline itself, not about care
    assert not askable("ACE inhibitors are recommended in albuminuria.")  # too short
    chosen, every = items([_doc("ckd", [LONG, ABOUT]), _doc("gl", [OTHER])], _passages, random.Random(0), per_doc=6)
    assert [it.passage for it in chosen] == [LONG, OTHER]
    assert len(every) == 3


def test_a_written_question_is_kept_only_when_usable():
    assert keep("CKD with albuminuria on a new ACEi - when to recheck K and creatinine?", LONG)
    assert not keep("When to recheck potassium", LONG)  # not a question
    assert not keep("Should I offer this service?", LONG)  # points at the passage, names nothing
    assert not keep("Which statin for a smoker with angina and high cholesterol?", LONG)  # nothing of the passage
    assert not keep("CKD?", LONG)  # too short
    assert not keep("CKD albuminuria ACEi?\nAnother line?", LONG)


def test_each_kept_question_pairs_its_passage_with_negatives_from_elsewhere():
    docs = [_doc("ckd", [LONG, "Statins are recommended for adults with chronic kidney disease not on dialysis "
                               "aged fifty years or more, whatever their cholesterol, to lower cardiovascular risk "
                               "in the years that follow, and the dose need not be reduced for kidney function."]),
            _doc("gl", [OTHER])]
    chosen = [Item("ckd#0", "ckd", LONG)]
    every = [(d.doc_id, p) for d in docs for p in _passages(d)]
    stats: Counter[str] = Counter()
    out = pairs([{"pid": "ckd#0", "q": "CKD with albuminuria on a new ACEi - when to recheck K and creatinine?"},
                 {"pid": "ckd#0", "q": "Should I offer this service?"},
                 {"pid": "unknown#1", "q": "Glaucoma screening interval?"}], chosen, every, random.Random(0), stats)
    assert stats == Counter({"kept": 1, "dropped": 1})
    pos = [p for p in out if p.label == 1]
    assert len(pos) == 1 and pos[0].text_b == LONG and pos[0].text_a.startswith("question: ")
    negs = [p for p in out if p.label == 0]
    assert {p.kind for p in negs} == {"written_bm25", "written_same_doc"}
    assert all(p.text_b != LONG for p in negs)
    assert next(p for p in negs if p.kind == "written_bm25").text_b == OTHER  # another document's passage
