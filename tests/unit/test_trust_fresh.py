"""eval/trust_fresh.py: fresh question files read as trust records, a switch replayed off and on."""

from __future__ import annotations

import json

import pytest

from eval import trust_fresh


def _row(qid: str, answerable: bool, flagged: bool) -> dict:
    sentence = {"text": "Glaucoma is treated with metformin [1].", "citations": [1], "supported": True,
                "prob": 0.9, "cosine": 0.7, "attributed": False, "cited_docs": ["g"], "cited_patients": [],
                "checks": {"numbers": True, **({"unseen_terms": False} if flagged else {})}}
    return {"suite": "demo_answerable" if answerable else "demo_out_of_corpus", "id": qid, "question": "q",
            "answerable": answerable, "gold": ["g"], "required": [["metformin"]], "generated": True,
            "reason": None, "confidence": 0.5, "sources": [{"n": 1, "doc_id": "g", "text": "metformin"}],
            "signals": {"answerability": 0.9, "retrieval": 0.5, "agreement": 0.5, "generation": 0.8,
                        "support_prob": 0.9},
            "sentences": [sentence]}


def test_question_files_become_demo_records(tmp_path):
    ooc = tmp_path / "ooc.jsonl"
    ooc.write_text(json.dumps({"id": "go-1", "question": "Glaucoma?", "template": "first_line"}) + "\n\n")
    ans = tmp_path / "ans.jsonl"
    ans.write_text(json.dumps({"id": "ga-1", "question": "T2D?", "gold_doc_ids": ["d"], "required": [["x"]]}) + "\n")
    qs = trust_fresh.questions([ooc, ans])
    assert [(q["suite"], q["answerable"], q["gold"]) for q in qs] == [
        ("demo_out_of_corpus", False, []), ("demo_answerable", True, ["d"])]
    with pytest.raises(ValueError, match="repeat"):
        trust_fresh.questions([ooc, ooc])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "no id"}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:1"):
        trust_fresh.questions([bad])


def test_compare_replays_the_switch_off_and_on_at_each_point():
    rows = [_row("go-1", False, True), _row("go-2", False, False), _row("ga-1", True, False)]
    settings = {"gate": 0.5, "abstain_below": 0.0, "calibration": None, "floor": 0.05, "unseen_terms": False}
    table = trust_fresh.compare(rows, settings, "unseen_terms")
    off, on = table[0], table[1]
    assert (off["ooc_shown"], on["ooc_shown"]) == (2, 1)  # the flagged out-of-corpus answer is withheld
    assert off["right"] == on["right"] == 1 and len(table) == 6
