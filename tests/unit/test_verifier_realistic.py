"""Answerability pairs from the hand-written realistic questions (finetune/verifier_realistic.py)."""

from __future__ import annotations

from corpora.document import Document
from finetune.verifier_realistic import build, starting_point, trust_foci
from rag.config import VerifierConfig


def _doc(doc_id: str, focus: str, text: str) -> Document:
    return Document(doc_id=doc_id, title=focus, kind="reference", source=f"/d/medquad/{doc_id}.xml#1", text=text,
                    meta={"focus": focus})


def _passages(d: Document) -> list[str]:
    return [f"{d.title} — {part}" for part in d.text.split("|")]


DOCS = [
    _doc("a", "Gout", "Gout is arthritis from urate crystals.|Acute gout flares are treated with colchicine."),
    _doc("a2", "Gout", "Gout attacks the big toe first in many people."),
    _doc("b", "Pseudogout", "Pseudogout comes from calcium pyrophosphate crystals in the knee."),
    _doc("c", "Anaemia", "Iron deficiency anaemia makes people tired and pale."),
    _doc("d", "Asthma", "Asthma flares are treated with inhaled salbutamol."),
]


def test_positive_is_the_chosen_gold_passage_and_negatives_are_other_subjects():
    q = {"question": "big toe swollen overnight, crystals? what treats a flare", "gold": ["a"], "style": "vignette",
         "source": "medquad", "split": "dev"}
    pairs, stats = build([q], DOCS, _passages, lambda question, ps: len(ps) - 1, set(), negatives=2)
    pos = [p for p in pairs if p.label == 1]
    assert len(pos) == 1 and "colchicine" in pos[0].text_b and pos[0].kind == "vignette/pos"
    neg = [p for p in pairs if p.label == 0]
    assert len(neg) == 2 and stats["bm25"] == 2
    # never another page of the asked focus (it may answer too), never the gold page
    assert not any("big toe first" in p.text_b or "urate" in p.text_b for p in neg)
    assert all(p.task == "answerable" and p.source == "realistic-medquad" for p in pairs)


def test_questions_about_a_trust_split_focus_are_left_out():
    q = {"question": "what is gout", "gold": ["a"], "style": "lay", "source": "medquad", "split": "dev"}
    missing = {"question": "what is lupus", "gold": ["zz"], "style": "lay", "source": "medquad", "split": "dev"}
    pairs, stats = build([q, missing], DOCS, _passages, lambda question, ps: 0, {"gout"})
    assert pairs == [] and stats["skipped.trust_focus"] == 1 and stats["skipped.gold_not_in_corpus"] == 1
    trust = {p: {"medquad": [], "topic_removed": []} for p in ("dev", "test")}
    trust["test"]["topic_removed"] = ["b"]
    assert trust_foci(DOCS, trust) == {"pseudogout"}


def test_an_answerability_only_adapter_continues_on_its_own_encoder():
    cfg = VerifierConfig(model="bundle:small", answerability_adapter="adapters/big-answerable",
                         answerability_model="bundle:big")
    # the config's answerability adapter: its own base
    assert starting_point(cfg, None) == ("adapters/big-answerable", "bundle:big")
    # an adapter named by hand: verifier.model, or the encoder named with it
    assert starting_point(cfg, "adapters/other") == ("adapters/other", "bundle:small")
    assert starting_point(cfg, "adapters/other", "bundle:big") == ("adapters/other", "bundle:big")
    small = VerifierConfig(model="bundle:small")
    assert starting_point(small, None) == (str(small.adapter), "bundle:small")
