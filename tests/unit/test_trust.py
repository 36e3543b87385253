"""The trust layer's pure parts: verifier training pairs, replay of settings, fitting, calibration error."""

from __future__ import annotations

import random

import numpy as np
import pytest

from eval import trust
from finetune.verifier_data import change_number, change_unit, flip_negation, swap_subject, windows
from rag.verifier import answerability_text, support_text


def test_perturbations_change_what_the_claim_says():
    rng = random.Random(0)
    s = "Start spironolactone 25 mg daily when potassium is below 5.0 mEq/L."
    for _ in range(20):
        alt = change_number(s, rng, avoid=s)
        assert alt and alt != s
        assert set(trust_numbers(alt)) != set(trust_numbers(s))
    assert change_number("No numbers here.", rng) is None
    assert change_unit(s, rng) in ("Start spironolactone 25 g daily when potassium is below 5.0 mEq/L.",
                                   "Start spironolactone 25 mg daily when potassium is below 5.0 mg/dL.")
    assert flip_negation("Digoxin is not a first-line drug.") == "Digoxin is a first-line drug."
    assert flip_negation("Digoxin is a first-line drug.") == "Digoxin is not a first-line drug."
    swapped = "Psoriasis is treated with colchicine."
    assert swap_subject("Gout is treated with colchicine.", "gout", "Psoriasis") == swapped
    assert swap_subject("It is treated with colchicine.", "gout", "Psoriasis") == swapped


def trust_numbers(text: str) -> list[str]:
    import re

    return re.findall(r"\d+(?:\.\d+)?", text)


def test_windows_are_sentence_aligned_with_their_header():
    text = " ".join(f"Sentence number {i} says something about the topic." for i in range(30))
    ws = windows(text, "Topic — Treatment", words=40)
    assert len(ws) > 3 and all(w.startswith("Topic — Treatment\n") for w in ws)
    assert all(w.rstrip().endswith(".") for w in ws)


def test_inputs_say_which_question_is_asked():
    assert answerability_text(" What is HFrEF? ") == "question: What is HFrEF?"
    assert support_text("Q?", "Claim.") == "question: Q?\nclaim: Claim."


def _row(suite: str, answerable: bool, answerability: float, prob: float, right_doc: bool = True,
         generated: bool = True) -> dict:
    return {"suite": suite, "answerable": answerable, "question": "q", "gold": ["g"], "generated": generated,
            "reason": None, "confidence": 0.5,
            "signals": {"answerability": answerability, "retrieval": 0.5, "agreement": 0.5, "generation": 0.8,
                        "support_prob": prob},
            "sentences": [{"text": "A [1].", "citations": [1], "supported": prob >= 0.5, "prob": prob, "cosine": 0.6,
                           "attributed": False, "checks": {"numbers": True},
                           "cited_docs": ["g" if right_doc else "x"], "cited_patients": []}]}


def test_replay_applies_the_gate_the_support_bar_and_the_threshold():
    row = _row("medquad", True, 0.6, 0.9)
    assert trust.replay(row, 0.5, 0.0, None, {})["answered"]
    assert trust.replay(row, 0.7, 0.0, None, {}) == {"answered": False, "right": False, "confidence": 0.0,
                                                     "model_cited": False}
    assert not trust.replay(_row("medquad", True, 0.6, 0.3), 0.5, 0.0, None, {})["answered"]
    ooc = _row("topic_removed", False, 0.6, 0.9)
    assert trust.replay(ooc, 0.5, 0.0, None, {})["right"] is False  # answered out of corpus: wrong
    assert trust.replay(ooc, 0.7, 0.0, None, {})["right"] is True  # abstained: right
    assert not trust.replay(_row("medquad", True, 0.6, 0.9, right_doc=False), 0.5, 0.0, None, {})["right"]


def test_choose_keeps_out_of_corpus_abstention_at_95_percent():
    rng = random.Random(1)
    rows = [_row("medquad", True, rng.uniform(0.4, 1.0), rng.uniform(0.5, 1.0)) for _ in range(60)]
    rows += [_row("topic_removed", False, rng.uniform(0.0, 0.5), rng.uniform(0.0, 1.0)) for _ in range(60)]
    rows += [_row("medquad", True, 0.9, 0.9, right_doc=False) for _ in range(20)]
    calib = trust.fit_calibration(rows, {}, gate=0.05)
    chosen = trust.choose(rows, {}, calib, floor=0.05)
    s = trust.summary(rows, {**chosen, "calibration": calib, "floor": 0.05}, {})
    assert s["out_of_corpus"]["abstained"]["share"] >= 0.95
    assert s["answerable"]["right"]["k"] >= 50


def test_choose_breaks_ties_towards_the_stricter_setting_and_rechoose_keeps_the_coefficients():
    # Every answerable question is right and passes any gate and threshold up to 0.6; the out-of-corpus ones
    # sit low. Settings from the floor up to 0.6 answer the same right questions: the tie goes to the
    # strictest (the most that can be withheld without losing a right answer), not the most lenient.
    rows = [_row("medquad", True, 0.9, 0.95) for _ in range(30)]
    rows += [_row("topic_removed", False, 0.02, 0.95) for _ in range(30)]
    calib = {"features": ["support_prob"], "coef": [0.0], "intercept": 0.41, "gate": None}  # every answer ~0.6
    chosen = trust.choose(rows, {}, calib, 0.05, cosines=(None, 0.8), support_mins=(0.5, 0.7))
    assert chosen["gate"] == 0.9 and chosen["support_cosine"] is None and chosen["support_min"] == 0.7
    assert chosen["abstain_below"] == 0.6
    assert chosen == trust._choose_by_replay(rows, {}, calib, 0.05, cosines=(None, 0.8), support_mins=(0.5, 0.7))
    again = trust.rechoose(dict(calib, answerable_min=0.05, abstain_below=0.0), rows, {}, 0.05)
    assert again["coef"] == calib["coef"] and again["intercept"] == calib["intercept"]
    assert again["answerable_min"] == 0.9 and again["abstain_below"] == 0.6


def test_ece_is_zero_when_confidence_matches_frequency_and_large_when_not():
    conf = [0.8] * 10
    assert trust.ece(conf, [True] * 8 + [False] * 2) == pytest.approx(0.0)
    assert trust.ece(conf, [False] * 10) == pytest.approx(0.8)
    lo, hi = trust.ece_interval(np.array(conf), np.array([True] * 8 + [False] * 2), n_boot=200)
    assert 0.0 <= lo <= hi <= 0.8


def test_cosine_rescue_accepts_a_near_verbatim_sentence_the_verifier_rejects():
    from rag.cite import check_support

    e = np.zeros((1, 4), dtype=np.float32)
    e[0, 0] = 1.0
    low = [{1: np.array([0.1], dtype=np.float32)}]  # the verifier says no
    kw = {"scores": low, "source_texts": {1: ["Ferritin below 100 ng/mL defines iron deficiency."]}}
    s = "Ferritin below 100 ng/mL defines iron deficiency [1]."
    assert not check_support(s, e, {1: e}, 0.5, **kw)[0].supported
    out = check_support(s, e, {1: e}, 0.5, cosine_min=0.9, **kw)[0]
    assert out.supported and out.checks["rescued_by_cosine"] is True
    # The number check still applies to a rescued sentence.
    assert not check_support("Ferritin below 300 ng/mL defines iron deficiency [1].", e, {1: e}, 0.5, cosine_min=0.9,
                             **kw)[0].supported


def test_gate_model_replays_like_the_runtime():
    import math

    from rag.confidence import _model, answerability_logit

    gate = {"features": ["answerability_logit", "retrieval", "agreement"], "coef": [0.5, 2.0, 1.0], "intercept": -1.0}
    row = _row("medquad", True, 0.3, 0.9)
    sig = dict(row["signals"], answerability_logit=answerability_logit(0.3))
    want = 1 / (1 + math.exp(-(-1.0 + 0.5 * math.log(0.3 / 0.7) + 2.0 * 0.5 + 1.0 * 0.5)))
    assert trust.gate_value(row, {"gate": gate}) == pytest.approx(want)
    assert _model(gate).probability(sig) == pytest.approx(want)
    assert trust.gate_value(row, None) == pytest.approx(0.3)


def test_calibration_chooses_its_signals_by_cross_validated_log_loss():
    rng = random.Random(4)
    rows = []
    for _ in range(120):
        p = rng.uniform(0.5, 1.0)
        row = _row("medquad", True, 0.8, p, right_doc=rng.random() < (p - 0.5) * 2)  # right iff support is high
        row["signals"]["generation"] = rng.uniform(0.0, 1.0)  # noise
        rows.append(row)
    calib = trust.fit_calibration(rows, {}, gate=0.05)
    assert "support_prob" in calib["features"] and calib["cv_log_loss"] < 0.69
    # A fixed set is fitted as given.
    fixed = trust.fit_calibration(rows, {}, gate=0.05, features=("generation",))
    assert fixed["features"] == ["generation"]
    base = {**calib, "gate": None}
    probs = [trust.replay(r, 0.05, 0.0, base, {})["confidence"] for r in rows]
    assert max(probs) - min(probs) > 0.3  # not collapsed to the base rate


def test_a_persons_verdict_replaces_the_scorer_only_for_the_answer_it_judged(tmp_path):
    from eval import trust_labels
    from rag.errors import InputError

    row = dict(_row("medquad", True, 0.9, 0.9), id="m1", abstained=False)
    settings = {"gate": 0.0, "abstain_below": 0.0, "calibration": None}
    assert trust.outcomes([row], settings, {})[0]["right"]  # the lenient scorer: gold page cited
    shown = [s for s in row["sentences"] if s["supported"]]
    path = tmp_path / "labels.jsonl"
    import json

    path.write_text(json.dumps({"id": "m1", "right": False, "sha1": trust_labels.answer_sha1(shown),
                                "why": "template only"}) + '\n{"id": "other", "right": true, "sha1": "0"}\n')
    counts = trust_labels.attach([row], trust_labels.load([path]))
    assert counts == {"labelled": 1, "match_recorded_answer": 1, "unknown_ids": 1}
    out = trust.outcomes([row], settings, {})[0]
    assert out["right"] is False and out["model_cited"] is False and out["labelled"]
    assert trust.summary([row], settings, {})["answered"]["verdicts_by_a_person"] == 1
    # Another answer (a sentence edited) is not the one judged: the automatic verdict stands.
    row["sentences"][0]["text"] = "B [1]."
    out = trust.outcomes([row], settings, {})[0]
    assert out["right"] is True and not out["labelled"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "m1", "right": "no"}\n')
    with pytest.raises(InputError, match=r"bad\.jsonl:1"):
        trust_labels.load([bad])
    with pytest.raises(InputError, match="not found"):
        trust_labels.load([tmp_path / "missing.jsonl"])


def test_statement_checks_replay_on_recorded_sentences():
    row = _row("medquad", True, 0.9, 0.9)
    lead = dict(row["sentences"][0], text="X provides the following list of signs [1].")
    row["sentences"] = [lead, dict(lead)]
    assert trust.replay(row, 0.1, 0.0, None, {})["answered"]
    held = trust.replay(row, 0.1, 0.0, None, {}, statement_checks=True)
    assert not held["answered"] and held["withheld"] == "no answer sentence is supported by a cited source"
    row["sentences"] = [row["sentences"][0], dict(lead, text="Signs include short stature [1]."),
                        dict(lead, text="Signs include short stature [1].")]
    kept = trust.replay(row, 0.1, 0.0, None, {}, statement_checks=True)
    assert kept["answered"] and kept["shown"] == 1 and kept["sentences"] == 3


def test_verbatim_support_replays_against_the_recorded_source_text():
    row = _row("medquad", True, 0.9, 0.05)
    copy = "Salt intake in CKD should be kept below 2 g per day [1]."
    row["sentences"][0]["text"] = copy
    row["sources"] = [{"n": 1, "doc_id": "g", "text": "## Diet\nSalt intake in CKD should be kept below 2 g per day."}]
    assert not trust.replay(row, 0.1, 0.0, None, {})["answered"]
    assert trust.replay(row, 0.1, 0.0, None, {}, verbatim=True)["answered"]
    row["sources"][0]["text"] = "## Diet\nProtein intake of 0.8 g/kg per day is suggested."
    assert not trust.replay(row, 0.1, 0.0, None, {}, verbatim=True)["answered"]


def test_strict_copies_replay_against_the_recorded_source_text():
    row = _row("medquad", True, 0.9, 0.05)
    row["sentences"][0]["text"] = "Salt intake in HFrEF should be kept below 2 g per day [1]."
    row["sources"] = [{"n": 1, "doc_id": "g", "text": "## Diet\nSalt intake in CKD should be kept below 2 g per day."}]
    assert trust.replay(row, 0.1, 0.0, None, {}, verbatim=True)["answered"]  # 10 of 11 words in order
    assert not trust.replay(row, 0.1, 0.0, None, {}, verbatim=True, verbatim_strict=True)["answered"]


def test_record_polarity_replays_against_the_recorded_record_text():
    row = _row("medquad", True, 0.9, 0.9)  # the scorer does not matter here: whether it is answered does
    row["sentences"][0]["text"] = "No, the record of this patient states they have no anaemia [1]."
    row["sources"] = [{"n": 1, "doc_id": "uci-hf-HF049", "patient_id": "HF049",
                       "text": "## Comorbidities\n- Anaemia (reduced red cells or haemoglobin): yes\n- Diabetes: no"}]
    assert trust.replay(row, 0.1, 0.0, None, {})["answered"]
    held = trust.replay(row, 0.1, 0.0, None, {}, record_polarity=True)
    assert not held["answered"]
    row["sources"][0]["text"] = "## Comorbidities\n- Anaemia (reduced red cells or haemoglobin): no"
    assert trust.replay(row, 0.1, 0.0, None, {}, record_polarity=True)["answered"]
    row["sources"][0]["patient_id"] = None  # a guideline's line is not the patient's record
    row["sources"][0]["text"] = "- Anaemia: yes"
    assert trust.replay(row, 0.1, 0.0, None, {}, record_polarity=True)["answered"]


def test_verbatim_recite_replays_a_copy_under_the_wrong_marker():
    row = _row("medquad", True, 0.9, 0.05, right_doc=False)
    row["sentences"][0].update(text="Salt intake in CKD should be kept below 2 g per day [1].", cited_docs=["x"])
    row["sources"] = [{"n": 1, "doc_id": "x", "text": "## Iron\nIron is given when ferritin is low."},
                      {"n": 2, "doc_id": "g", "text": "## Diet\nSalt intake in CKD should be kept below 2 g per day."}]
    assert not trust.replay(row, 0.1, 0.0, None, {}, verbatim=True)["answered"]
    on = trust.replay(row, 0.1, 0.0, None, {}, verbatim=True, verbatim_recite=True)
    assert on["answered"] and on["right"] and not on["model_cited"]  # right, but by the pipeline's citation
    row["sources"][1]["text"] = "## Diet\nSalt intake in CKD should be kept below 5 g per day."
    assert not trust.replay(row, 0.1, 0.0, None, {}, verbatim=True, verbatim_recite=True)["answered"]


def test_verbatim_recite_replay_checks_record_polarity_only_when_the_product_does():
    row = _row("medquad", True, 0.9, 0.05, right_doc=False)  # the scorer does not matter: whether it is answered
    copy = "The patient has no history of diabetes and takes no insulin"
    row["sentences"][0].update(text=f"{copy} [1].", cited_docs=["x"])
    row["sources"] = [{"n": 1, "doc_id": "x", "text": "## Iron\nIron is given when ferritin is low."},
                      {"n": 2, "doc_id": "uci-hf-HF049", "patient_id": "HF049",
                       "text": f"## History\n{copy}.\n- Diabetes: yes"}]
    # Copied from the record, which also says "yes": the product re-cites it unless polarity checks are on.
    assert trust.replay(row, 0.1, 0.0, None, {}, verbatim=True, verbatim_recite=True)["answered"]
    held = trust.replay(row, 0.1, 0.0, None, {}, verbatim=True, verbatim_recite=True, record_polarity=True)
    assert not held["answered"]


def test_subject_variant_replays_on_the_recorded_source_titles():
    row = _row("topic_removed", False, 0.9, 0.9)
    row["question"] = "What are the symptoms of Aicardi-Goutieres syndrome type 4 ?"
    row["sources"] = [{"n": 1, "doc_id": "g", "title": "Aicardi-Goutieres syndrome type 1", "text": "Signs."}]
    assert trust.replay(row, 0.1, 0.0, None, {})["answered"]
    held = trust.replay(row, 0.1, 0.0, None, {}, subject_variant=True)
    assert not held["answered"] and held["right"]  # out of corpus and abstained: right
    row["sources"].append({"n": 2, "doc_id": "h", "title": "Aicardi-Goutieres syndrome type 4", "text": "Signs."})
    assert trust.replay(row, 0.1, 0.0, None, {}, subject_variant=True)["answered"]


def test_unseen_terms_replays_on_the_recorded_sentence_check():
    row = _row("demo_out_of_corpus", False, 0.9, 0.9)
    row["sentences"][0]["checks"]["unseen_terms"] = False  # restates a question word no indexed passage holds
    row["sentences"].append(dict(row["sentences"][0], text="B [1].", checks={"numbers": True}))  # supported
    assert trust.replay(row, 0.1, 0.0, None, {})["answered"]
    held = trust.replay(row, 0.1, 0.0, None, {}, unseen_terms=True)
    assert not held["answered"] and held["right"]
    # The whole answer is withheld, with no second try (the sources are about something else)
    row["second_try"] = {**_row("demo_out_of_corpus", False, 0.9, 0.9), "sources": []}
    assert trust.replay(row, 0.1, 0.0, None, {})["answered"]
    assert not trust.replay(row, 0.1, 0.0, None, {}, unseen_terms=True)["answered"]
    del row["sentences"][0]["checks"]["unseen_terms"]
    assert trust.replay(row, 0.1, 0.0, None, {}, unseen_terms=True)["answered"]
    for s in row["sentences"]:
        s["prob"] = 0.1  # withheld by the claim check alone: the second try is made
    assert trust.replay(row, 0.1, 0.0, None, {}, unseen_terms=True).get("second_try")


def test_outcomes_pass_every_pipeline_switch_to_replay():
    """outcomes (summary, report, keep, holdout) must replay the switches a config runs with, not only replay()."""
    import inspect

    from rag.config import load_config

    assert set(trust.SWITCHES) <= set(inspect.signature(trust.replay).parameters)
    assert set(trust.pipeline_options(load_config())) == set(trust.SWITCHES)
    row = _row("demo_out_of_corpus", False, 0.9, 0.9)
    row["id"] = "q"
    row["sentences"][0]["checks"]["unseen_terms"] = False
    settings = {"gate": 0.1, "abstain_below": 0.0, "calibration": None}
    assert trust.outcomes([row], {**settings, "unseen_terms": False}, {})[0]["answered"]
    assert not trust.outcomes([row], {**settings, "unseen_terms": True}, {})[0]["answered"]


def test_novel_terms_replays_per_sentence():
    row = _row("medquad", True, 0.9, 0.9)
    row["sentences"].append(dict(row["sentences"][0], text="B [1].", checks={"numbers": True, "novel_terms": False}))
    kept = trust.replay(row, 0.1, 0.0, None, {}, novel_terms=True)
    assert kept["answered"] and kept["shown"] == 1 and kept["sentences"] == 2  # only the flagged sentence goes
    row["sentences"][0]["checks"]["novel_terms"] = False
    assert not trust.replay(row, 0.1, 0.0, None, {}, novel_terms=True)["answered"]
    assert trust.replay(row, 0.1, 0.0, None, {})["answered"]


def test_recite_supported_replays_a_supported_copy_of_an_uncited_source():
    row = _row("medquad", True, 0.9, 0.9, right_doc=False)  # supported as cited, to the wrong page
    copy = "Salt intake in CKD should be kept below 2 g per day"
    row["sentences"][0].update(text=f"{copy} [1].", cited_docs=["x"])
    row["sources"] = [{"n": 1, "doc_id": "x", "text": "## Diet\nKeep salt low in kidney disease."},
                      {"n": 2, "doc_id": "g", "text": f"## Diet\n{copy}."}]
    off = trust.replay(row, 0.1, 0.0, None, {}, verbatim=True)
    assert off["answered"] and not off["right"]
    on = trust.replay(row, 0.1, 0.0, None, {}, verbatim=True, recite_supported=True)
    assert on["answered"] and on["right"] and not on["model_cited"]  # right by the pipeline's citation


def test_the_choosing_rules_are_compared_on_held_out_halves():
    from eval import trust_procedure

    rng = random.Random(3)
    rows = [_row("medquad", True, rng.uniform(0.3, 1.0), rng.uniform(0.5, 1.0)) for _ in range(40)]
    rows += [_row("non_medical", False, rng.uniform(0.0, 0.7), 0.9) for _ in range(40)]
    settings = {"calibration": None, "support_cosine": None}
    points, answered, right = trust_procedure.grid(rows, settings, {}, 0.05)
    assert answered.shape == right.shape == (len(points), len(rows))
    summary = trust_procedure.compare(rows, points, answered, right, repeats=4)
    assert set(summary) == set(trust_procedure.RULES)
    for s in summary.values():
        assert s["repeats"] == 4 and 0 <= s["b_ooc_at_least_95"] <= 4
    # each rule's pick meets its own bar on the rows it picked on
    ooc = np.array([not r["answerable"] for r in rows])
    half = np.ones(len(rows), bool)
    for rule, bar in (("exact", 0.95), ("margin", 0.97)):
        i = trust_procedure.pick(rule, answered, right, ooc, half, points)
        assert i is not None and (~answered[i] & ooc).sum() / ooc.sum() >= bar


def test_calibration_procedures_are_measured_on_the_half_they_were_not_fitted_on():
    from eval import trust_calibration

    rng = random.Random(5)
    rows = []
    for _ in range(80):
        p = rng.uniform(0.5, 1.0)
        rows.append(_row("medquad", True, 0.8, p, right_doc=rng.random() < (p - 0.5) * 2))
    rows += [_row("non_medical", False, 0.01, 0.9) for _ in range(20)]
    settings = {"gate": 0.05, "abstain_below": 0.0, "calibration": None, "support_min": 0.5, "support_cosine": None,
                "second_try": True, "statement_checks": False, "verbatim": False, "record_polarity": False,
                "verbatim_recite": False, "subject_variant": False, "recite_supported": False}
    outcome = trust_calibration.answered_at(rows, settings, {})
    assert sum(o["answered"] for o in outcome) == 80  # the 20 below the gate are never answered
    out = trust_calibration.compare(rows, outcome, {}, settings, ["support_prob", "generation"], repeats=2)
    assert set(out) == {"support_prob", "generation", "flat", "chance_ece_if_perfect"}
    assert out["support_prob"]["n"] == 40  # half of the answered rows, per suite
    # the informative signal beats one flat probability in Brier; chance ECE is positive at this size
    assert out["support_prob"]["brier_all"] < out["flat"]["brier_all"]
    assert 0.0 < out["chance_ece_if_perfect"] < 0.3


def test_pooled_calibration_reports_the_ece_a_perfect_confidence_shows_by_chance():
    from eval import trust_ece

    rng = random.Random(6)
    rows = [_row("medquad", True, 0.8, rng.uniform(0.5, 1.0)) for _ in range(60)]
    settings = {"gate": 0.05, "abstain_below": 0.0, "calibration": None}
    c = trust_ece.calibration(*trust_ece.answered_of(rows, settings, {}))
    assert c["questions"] == c["answered"] == 60 and c["accuracy"] == 1.0  # every cited doc is gold here
    assert 0.0 <= c["ece"] <= 1.0 and c["ece_ci95"][0] <= c["ece"] + 1e-9
    # chance ECE shrinks as the number of answers grows
    small, large = trust_ece.chance_ece([0.7] * 50), trust_ece.chance_ece([0.7] * 800)
    assert small > large > 0.0
    assert trust_ece.calibration(3, [], []) == {"questions": 3, "answered": 0}  # a part with no answer: no figure


def test_pooled_calibration_reports_test_alone_when_no_ece_part_is_given(tmp_path, capsys, monkeypatch):
    from eval import trust_ece, trust_jobs, trust_kept

    path = tmp_path / "kept.jsonl"
    rng = random.Random(4)
    trust_kept.merge(path, [{"id": f"q{k}", "answered": True, "confidence": 0.7, "right": rng.random() < 0.7,
                             "fingerprint": "fp"} for k in range(40)])
    # the config's fingerprint and records come from models and data a unit test does not load
    monkeypatch.setattr(trust_jobs, "kept_fingerprint", lambda *a, **k: "fp")
    monkeypatch.setattr(trust_jobs, "load_records", lambda *a, **k: {})
    assert trust_ece.main(["--test-kept", str(path), "--output", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "| test | 40 | 40 |" in out and "| ece | 0 | 0 |" in out and "| pooled | 40 | 40 |" in out


def test_a_missing_trust_part_is_one_line_saying_how_to_add_it(tmp_path):
    from eval import trust_set
    from rag.errors import InputError

    split = {"dev": {}, "test": {}, "index_medquad_files": []}
    with pytest.raises(InputError, match=r"no 'ece' part; add it with `python app.py eval trust split --ece 500`"):
        trust_set.questions(split, "ece", tmp_path)


def _gated(qid: str, suite: str, answerable: bool, answerability: float, coverage: float) -> dict:
    return {"id": qid, "suite": suite, "answerable": answerable,
            "signals": {"answerability": answerability, "retrieval": 0.5, "agreement": 0.5, "coverage": coverage}}


def test_gate_cross_validation_measures_each_feature_set_on_held_out_folds():
    from eval import trust_gate

    rng = random.Random(6)
    # answerability alone cannot tell these apart; coverage can
    rows = [_gated(f"a{i}", "medquad", True, rng.uniform(0.2, 0.9), rng.uniform(0.7, 1.0)) for i in range(60)]
    rows += [_gated(f"o{i}", "topic_removed", False, rng.uniform(0.2, 0.9), rng.uniform(0.0, 0.5))
             for i in range(60)]
    plain = trust_gate.cross_validate(rows, trust.GATE_FEATURES, target=0.95, folds=5)
    lexical = trust_gate.cross_validate(rows, (*trust.GATE_FEATURES, "coverage"), target=0.95, folds=5)
    assert plain["answerable"] == lexical["answerable"] == 60 and plain["ooc"] == 60
    assert lexical["answerable_stopped"] < plain["answerable_stopped"]
    assert lexical["ooc_stopped"] >= 50  # fitted without the fold, the threshold still stops most of it
    gate = trust.fit_gate(rows, (*trust.GATE_FEATURES, "coverage"))
    assert gate["features"][-1] == "coverage" and len(gate["coef"]) == 4


def test_a_gate_signal_the_dev_run_did_not_record_is_refused(tmp_path):
    from rag.errors import InputError

    rows = [_row("medquad", True, 0.8, 0.9), _row("topic_removed", False, 0.1, 0.9)]
    with pytest.raises(InputError, match="coverage"):
        trust.fit_dev(rows, {}, 0.05, tmp_path / "c.json", gate_features=(*trust.GATE_FEATURES, "coverage"))
    assert not (tmp_path / "c.json").exists()


def test_a_dev_fit_records_the_gate_adapter_it_was_fitted_on(tmp_path):
    import json

    rng = random.Random(3)
    rows = [{**_row("medquad", True, rng.uniform(0.4, 1.0), rng.uniform(0.5, 1.0)), "id": f"a{i}"} for i in range(40)]
    rows += [{**_row("topic_removed", False, rng.uniform(0.0, 0.5), rng.uniform(0.0, 1.0)), "id": f"o{i}"}
             for i in range(40)]
    fitted = {"adapter": "adapters/v", "adapter_digest": "0123456789abcdef", "model": "bundle:m"}
    trust.fit_dev(rows, {}, 0.05, tmp_path / "c.json", gate_verifier=fitted)
    assert json.loads((tmp_path / "c.json").read_text())["gate_verifier"] == fitted
    trust.fit_dev(rows, {}, 0.05, tmp_path / "old.json")
    assert "gate_verifier" not in json.loads((tmp_path / "old.json").read_text())


def test_whole_fit_procedures_are_measured_on_the_other_half():
    from eval import trust_holdout

    name, kw = trust_holdout.parse_candidate("lexical=gate:answerability_logit,coverage;set:support_prob,coverage")
    assert name == "lexical" and kw["gate_features"] == ("answerability_logit", "coverage")
    assert kw["extra_sets"] == [("support_prob", "coverage")]
    assert trust_holdout.parse_candidate("standard=")[1]["gate_features"] == trust.GATE_FEATURES
    assert trust_holdout.parse_candidate("o=offset:patient_scoped")[1]["offsets"] == ["patient_scoped"]
    rng = random.Random(7)
    rows = []
    for i in range(60):
        p = rng.uniform(0.5, 1.0)
        rows.append({**_row("medquad", True, rng.uniform(0.5, 1.0), p, right_doc=rng.random() < p), "id": f"a{i}"})
    rows += [{**_row("non_medical", False, rng.uniform(0.0, 0.3), 0.9), "id": f"o{i}"} for i in range(40)]
    from eval import trust_jobs

    masks = trust_jobs.halves(rows, repeats=2)
    assert all(m.sum() == 50 for m in masks)  # half of each suite
    out = trust_holdout.measure(rows, {}, 0.05, {}, kw | {"gate_features": trust.GATE_FEATURES,
                                                          "extra_sets": []}, masks[0])
    assert 0.0 <= out["answerable_abstained"] <= 1.0 and out["ooc_abstained"] >= 0.9
    assert out["gate_features"] == list(trust.GATE_FEATURES)
    assert out["record_answered"] == 0 and out["record_gap"] is None  # no record question among these rows


def test_choosing_from_one_replay_per_support_setting_equals_replaying_every_setting():
    rng = random.Random(8)
    rows = [_row("medquad", True, rng.uniform(0.0, 1.0), rng.uniform(0.3, 1.0), right_doc=rng.random() < 0.7)
            for _ in range(50)]
    rows += [_row("topic_removed", False, rng.uniform(0.0, 0.8), rng.uniform(0.0, 1.0)) for _ in range(40)]
    for r in rows[::3]:  # some first answers withheld with a second try on record
        r["second_try"] = {"signals": dict(r["signals"], support_prob=0.95), "sentences": [
            dict(r["sentences"][0], prob=0.95, supported=True)], "reason": None}
        r["sentences"][0]["prob"] = 0.1
    calib = trust.fit_calibration(rows, {}, gate=0.05)
    calib["gate"] = trust.fit_gate(rows)
    for target in (0.9, 0.97):
        kw = {"min_ooc_abstain": target, "cosines": (None, 0.55, 0.9), "support_mins": (0.5, 0.7)}
        assert trust.choose(rows, {}, calib, 0.05, **kw) == trust._choose_by_replay(rows, {}, calib, 0.05, **kw)


def test_kept_outcomes_hold_ids_and_numbers_only_and_pool_under_one_fingerprint(tmp_path):
    from eval import trust_ece, trust_kept

    rows = [{**_row("medquad", True, 0.8, 0.9), "id": f"q{i}", "question": "What treats X?",
             "answer": "Copied corpus text [1]."} for i in range(4)]
    settings = {"gate": 0.05, "abstain_below": 0.0, "calibration": None}
    kept = trust_kept.outcomes(rows, settings, {}, "fp1")
    assert all(set(k) == {"id", "suite", "answerable", "answered", "confidence", "right", "by_person", "fingerprint",
                          "threshold", "at_zero"} for k in kept)
    assert all(isinstance(v, float) for k in kept for v in k["at_zero"]["signals"].values())  # numbers only
    path = tmp_path / "results" / "trust-ece.jsonl"
    assert trust_kept.merge(path, kept[:3]) == (3, 0)
    assert trust_kept.merge(path, kept[2:]) == (1, 1)  # q2 replaced, q3 added
    assert "Copied" not in path.read_text() and "What treats" not in path.read_text()
    assert trust_kept.kept_ids(path, "fp1") == {"q0", "q1", "q2", "q3"} and trust_kept.kept_ids(path, "fp2") == set()
    trust_kept.merge(path, [dict(kept[0], id="old", fingerprint="fp0", answered=True, confidence=0.1, right=False)])
    n, conf, right = trust_ece.kept_of(path, "fp1")  # another fingerprint's outcome is never pooled
    assert n == 4 and len(conf) == 4 and all(right)
    path.write_text(path.read_text() + "{broken\n")
    from rag.errors import InputError

    with pytest.raises(InputError, match="git checkout"):
        trust_kept.load(path)


def test_the_fingerprint_changes_with_what_decides_an_outcome():
    from eval import trust_kept
    from rag.config import load_config

    cfg = load_config()
    manifest = {"documents": {"d1": {"hash": "a"}}, "embedder": {"model_id": "m"}, "chunking": {"child_tokens": 96},
                "version": "v0001", "created": "today"}
    settings = {"gate": 0.3, "calibration": {"coef": [1.0]}}
    fp = trust_kept.fingerprint(cfg, settings, [manifest])
    # the index's name and date do not matter; its documents, the settings and the config do
    assert trust_kept.fingerprint(cfg, settings, [dict(manifest, version="v0002", created="later")]) == fp
    assert trust_kept.fingerprint(cfg, settings, [dict(manifest, documents={"d1": {"hash": "b"}})]) != fp
    assert trust_kept.fingerprint(cfg, {**settings, "calibration": {"coef": [2.0]}}, [manifest]) != fp
    other = cfg.model_copy(deep=True)
    other.generator.max_new_tokens += 1
    assert trust_kept.fingerprint(other, settings, [manifest]) != fp
    # an option added later, at its old-behaviour value, leaves kept outcomes valid; any other value does not
    assert trust_kept.fingerprint(cfg, {**settings, "verbatim_strict": False}, [manifest]) == fp
    strict = cfg.model_copy(deep=True)
    strict.verifier.verbatim_strict = True
    assert trust_kept.fingerprint(strict, {**settings, "verbatim_strict": True}, [manifest]) != fp
    assert trust_kept.fingerprint(strict, settings, [manifest]) != fp


def test_the_calibrations_gate_record_is_not_part_of_the_fingerprint():
    from eval import trust_kept
    from rag.config import load_config

    cfg = load_config()
    settings = {"gate": 0.3, "calibration": {"coef": [1.0]}}
    fp = trust_kept.fingerprint(cfg, settings, [])
    recorded = {**settings, "calibration": {"coef": [1.0], "gate_verifier": {"adapter_digest": "x"}}}
    assert trust_kept.fingerprint(cfg, recorded, []) == fp
    assert trust_kept.fingerprint(cfg, {**settings, "calibration": {"coef": [2.0]}}, []) != fp


def test_the_fingerprint_reads_an_adapters_weights_not_its_card(tmp_path):
    from eval import trust_kept
    from rag.config import load_config

    adapter = tmp_path / "gate"
    adapter.mkdir()
    (adapter / "adapter_model.safetensors").write_bytes(b"w1")
    (adapter / "README.md").write_text("card")
    cfg = load_config(overrides=[f"verifier.answerability_adapter={adapter}"])
    fp = trust_kept.fingerprint(cfg, {}, [])
    (adapter / "README.md").write_text("card, with the test figures added")
    assert trust_kept.fingerprint(cfg, {}, []) == fp
    (adapter / "adapter_model.safetensors").write_bytes(b"w2")
    assert trust_kept.fingerprint(cfg, {}, []) != fp


def test_an_offset_corrects_one_kind_of_answer_and_leaves_the_others_exactly(tmp_path):
    import json

    rng = random.Random(3)
    rows = []
    for k in range(120):
        p = rng.uniform(0.5, 1.0)
        record = k % 3 == 0
        # Record answers are right far more often than their signals say; the others as the signals say.
        right = rng.random() < (0.9 if record else (p - 0.5) * 2)
        row = _row("medquad", True, 0.8, p, right_doc=right)  # scored by its cited page (no records needed)
        if record:
            row["patient_id"] = str(k)
        rows.append(row)
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    rows = trust.load_rows(path)  # rows recorded before the signal existed get it from their patient id
    assert {r["signals"]["patient_scoped"] for r in rows if r.get("patient_id")} == {1.0}
    assert {r["signals"]["patient_scoped"] for r in rows if not r.get("patient_id")} == {0.0}
    base = trust.fit_calibration(rows, {}, gate=0.05, features=("support_prob",))
    out = trust.fit_offset(base, rows, {}, 0.05, "patient_scoped")
    assert out["features"] == ["support_prob", "patient_scoped"] and out["coef"][-1] > 0.5
    assert out["coef"][:-1] == base["coef"] and out["intercept"] == base["intercept"]
    assert out["offset_fit"]["answers_with_it"] == 40

    def conf(calib: dict, record: bool) -> list[float]:
        kind = [r for r in rows if bool(r.get("patient_id")) == record]
        return [trust.replay(r, 0.05, 0.0, calib, {})["confidence"] for r in kind]

    assert conf(out, False) == conf(base, False)  # bit-identical where the signal is 0
    records = [r for r in rows if r.get("patient_id")]
    share = np.mean([trust.replay(r, 0.05, 0.0, out, {})["right"] for r in records])
    gap = lambda c: abs(float(np.mean(c)) - share)  # noqa: E731
    assert gap(conf(out, True)) < gap(conf(base, True))
    with pytest.raises(ValueError, match="no answered dev question"):
        trust.fit_offset(base, [r for r in rows if not r.get("patient_id")], {}, 0.05, "patient_scoped")


def test_the_ece_part_asks_about_patients_no_other_part_asks_about():
    from eval import trust_set

    split = trust_set.load()
    ece = {q["patient_id"] for q in split["ece"]["patient"]}
    asked = {q["patient_id"] for part in ("dev", "test") for q in split[part]["patient"]}
    assert len(ece) >= 25 and not ece & asked
    assert sum(q["fact"] is not None for q in split["ece"]["patient"]) == len(ece)  # one record question each


def test_a_run_never_drops_earlier_records_of_questions_it_did_not_ask(tmp_path):
    import json

    from eval import trust_jobs

    rows_path, journal = tmp_path / "rows-ece.jsonl", tmp_path / "rows-ece.journal.jsonl"
    write = lambda p, ids: p.write_text("".join(json.dumps({"id": i}) + "\n" for i in ids))  # noqa: E731
    write(rows_path, ["a", "b"])  # an earlier run's records
    write(journal, ["a", "c"])  # an earlier resumed run's journal
    aside = trust_jobs.set_aside(rows_path, journal, {"a"})  # this run asks only "a"
    assert len(aside) == 2 and not rows_path.exists() and not journal.exists()
    assert sorted(json.loads(line)["id"] for p in aside for line in p.read_text().splitlines()) == ["a", "a", "b", "c"]
    write(rows_path, ["a"])
    assert trust_jobs.set_aside(rows_path, journal, {"a", "b"}) == [] and rows_path.exists()  # nothing to lose


def test_the_frontier_finds_the_least_answerable_abstention_each_out_of_corpus_bar_allows():
    from eval import trust_frontier

    # Answerable questions at answerability 0.1 .. 1.0, out-of-corpus ones at 0.0 .. 0.9 (interleaved): to abstain
    # on all 10 out of corpus the gate must pass only 1.0; letting one through (90%) passes 0.9 and 1.0.
    rows = [_row("medquad", True, round(0.1 * (i + 1), 2), 0.9) for i in range(10)]
    rows += [_row("topic_removed", False, round(0.1 * i, 2), 0.9) for i in range(10)]
    rows.append(dict(_row("medquad", True, 0.01, 0.9), generated=False, sentences=[]))  # never generated
    out = trust_frontier.frontier(rows, {"calibration": None, "floor": 0.0, "support_min": 0.5}, {})
    assert out["best"]["0.97"]["out_of_corpus_abstained"] == 1.0
    assert out["best"]["0.97"]["answerable_abstained"] == round(10 / 11, 4)
    assert out["best"]["0.90"]["answerable_abstained"] == round(9 / 11, 4)
    none = out["no_gate_no_threshold"]
    assert none["answerable_abstained"] == round(1 / 11, 4)
    assert none["answerable_reasons"] == {"not generated (below the generation floor)": 1}


def test_a_journal_cut_off_mid_write_loads_without_its_last_record_and_a_bad_line_elsewhere_is_an_error(tmp_path):
    import json

    from rag.errors import InputError

    path = tmp_path / "rows-ece.journal.jsonl"
    whole = json.dumps({"id": "a", "signals": {}}) + "\n"
    path.write_text(whole + '{"id": "b", "sig')  # killed while writing the second record
    assert [r["id"] for r in trust.load_rows(path)] == ["a"]
    # Resuming drops the cut-off record before appending (an append after it would damage both).
    out = trust.run({}, [], _hf_csv(tmp_path), journal=path)
    assert out == [] and [json.loads(line)["id"] for line in path.read_text().splitlines()] == ["a"]
    assert path.read_text().endswith("\n")
    path.write_text('{"id": "b", "sig\n' + whole)  # not a cut-off end: a damaged file
    with pytest.raises(InputError, match="line 1 is not a JSON record"):
        trust.load_rows(path)


def _hf_csv(tmp_path):
    """A one-patient heart-failure CSV (trust.run reads the records it scores against)."""
    from corpora.heart_failure import COLUMNS

    path = tmp_path / "hf.csv"
    row = {"age": 60, "anaemia": 0, "creatinine_phosphokinase": 100, "diabetes": 0, "ejection_fraction": 35,
           "high_blood_pressure": 0, "platelets": 250000, "serum_creatinine": 1.0, "serum_sodium": 137, "sex": 1,
           "smoking": 0, "time": 100, "DEATH_EVENT": 0}
    path.write_text(",".join(COLUMNS) + "\n" + ",".join(str(row.get(c, 0)) for c in COLUMNS) + "\n")
    return path


def test_the_report_takes_latency_only_from_answers_generated_alone(tmp_path):
    def timed(i: int, batch: int, total: float) -> dict:
        t = {"answerability": 100.0, "citation_check": 100.0, "generation": total - 300.0, "total": total}
        return {**_row("medquad", True, 0.9, 0.9), "id": f"m{i}", "sources": [],
                "timings_ms": {**t, "batch_size": batch} if batch else t}

    rows = [timed(0, 0, 2000.0), timed(1, 1, 4000.0), timed(2, 8, 80000.0), timed(3, 8, 90000.0)]
    settings = {"gate": 0.5, "abstain_below": 0.0, "calibration": None, "floor": 0.05, "demo_point": None}
    cost = trust.report(rows, settings, {}, tmp_path, "dev")["cost_ms"]
    assert cost["total"] == {"median": 3000.0, "n": 2} and cost["batched_answers"] == 2
    assert cost["answerability"]["n"] == 4  # the checks run per answer, batched or not
    assert cost["checks_share_of_answer_median"] == pytest.approx(0.075)  # 200/2000 and 200/4000, not 200/85000


def test_the_subject_share_is_a_replayed_signal_and_a_study_bar():
    row = {**_row("medquad", True, 0.9, 0.9), "question": "What treats atrial fibrillation?",
           "subject_terms": {"atrial": 2.0, "fibrillation": 2.0, "treat": 0.5},
           "sources": [{"n": 1, "doc_id": "g", "text": "Atrial fibrillation: anticoagulation."}]}
    row["sentences"][0]["text"] = "Anticoagulation treats it [1]."
    out = trust.replay(row, 0.1, 0.0, None, {})
    assert out["signals"]["subject_named"] == pytest.approx(0.5 / 4.5)  # only "treats" is in the sentence
    assert out["signals"]["subject_cited"] == pytest.approx(1.0)  # the cited source names the rest
    assert trust.replay(row, 0.1, 0.0, None, {}, subject_min=0.9)["answered"]
    row["sources"][0]["text"] = "Hypertension: thiazides."
    held = trust.replay(row, 0.1, 0.0, None, {}, subject_min=0.9)
    assert not held["answered"] and held["withheld"] == "subject"
    assert "subject_named" not in trust.replay(_row("medquad", True, 0.9, 0.9), 0.1, 0.0, None, {})["signals"]


def test_the_report_leaves_out_ablations_the_default_already_runs(tmp_path):
    rows = [{**_row("medquad", True, 0.9, 0.9), "timings_ms": {"total": 10.0}, "id": "m1", "sources": []},
            {**_row("topic_removed", False, 0.1, 0.9), "timings_ms": {"total": 5.0}, "id": "t1", "sources": []}]
    settings = {"gate": 0.5, "abstain_below": 0.0, "calibration": None, "floor": 0.05, "demo_point": None}
    row = "no per-index operating point (index.operating_point)"
    assert row not in trust.report(rows, settings, {}, tmp_path, "dev")["ablations"]
    assert row in trust.report(rows, {**settings, "demo_point": [0.1, 0.2]}, {}, tmp_path, "dev")["ablations"]


def test_fresh_question_files_are_gated_by_the_gate_fitted_on_all_of_dev(tmp_path):
    from eval import trust_gate

    f = tmp_path / "clinician_6.jsonl"
    f.write_text('{"id": "c1", "question": "K+ 5.2 - start spironolactone?", "gold_doc_ids": ["demo-hf"]}\n'
                 '{"id": "c2", "question": "Gout flare: colchicine dose?"}\n', encoding="utf-8")
    qs = trust_gate.fresh_questions(f)
    assert [(q["suite"], q["answerable"]) for q in qs] == [("demo_clinician_6", True), ("demo_clinician_6", False)]
    from rag.confidence import answerability_logit

    def row(qid: str, suite: str, answerable: bool, p: float) -> dict:
        r = _gated(qid, suite, answerable, p, 0.5)
        r["signals"]["answerability_logit"] = answerability_logit(p)
        return r

    rng = random.Random(3)
    dev = [row(f"a{i}", "medquad", True, rng.uniform(0.5, 1.0)) for i in range(40)]
    dev += [row(f"o{i}", "topic_removed", False, rng.uniform(0.0, 0.4)) for i in range(40)]
    fresh = [row("c1", "demo_clinician_6", True, 0.9), row("c2", "demo_clinician_6", False, 0.05),
             row("c3", "demo_clinician_6", True, 0.1)]
    r = trust_gate.fresh_study(dev, fresh, target=0.95)
    assert r["dev"]["ooc_stopped"] >= 38  # the threshold is chosen on dev, at the target
    assert r["fresh"]["ooc_stopped"] == 1 and r["fresh"]["answerable_stopped"] == 1  # c3 is stopped, c1 is not
    # the file mixes answerable and out-of-corpus questions: counted per kind, never summed
    assert r["fresh"]["stopped_by_suite"] == {"demo_clinician_6/answerable": "1/2",
                                              "demo_clinician_6/out_of_corpus": "1/1"}


def test_a_malformed_fresh_question_file_is_one_line(tmp_path):
    from eval import trust_gate
    from rag.errors import InputError

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "c1", "question": \n', encoding="utf-8")
    with pytest.raises(InputError, match="JSON-lines"):
        trust_gate.fresh_questions(bad)
    with pytest.raises(InputError, match="cannot read"):
        trust_gate.fresh_questions(tmp_path / "missing.jsonl")


def test_a_bad_fresh_file_is_one_line_before_any_dev_signal(tmp_path, capsys):
    from eval import trust_gate

    rc = trust_gate.main(["--adapter", "v2=adapters/verifier-minilm", "--cv", "5", "--output", str(tmp_path / "g"),
                          "--fresh", str(tmp_path / "missing.jsonl")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: cannot read question file") and "\n" not in err
    assert not (tmp_path / "g").exists()
    with pytest.raises(SystemExit):
        trust_gate.main(["--adapter", "v2=adapters/verifier-minilm", "--fresh", str(tmp_path / "q.jsonl")])
    assert "--fresh needs --cv" in capsys.readouterr().err


def test_fit_writes_the_calibration_the_preset_reads_unless_told_otherwise():
    from argparse import Namespace

    from eval.cli.trust import _calibration_out
    from rag.config import load_config

    cfg = load_config()
    assert _calibration_out(Namespace(calibration_out=None), cfg) == cfg.confidence.calibration
    assert _calibration_out(Namespace(calibration_out="x.json"), cfg) == "x.json"
    cfg.confidence.calibration = None
    assert _calibration_out(Namespace(calibration_out=None), cfg) == "configs/calibration/default.json"


def test_the_dev_extension_asks_dev_pages_other_questions_only():
    from eval import trust_set
    from rag.errors import InputError

    split = trust_set.load()
    dev = split["dev"]["medquad"]
    first, added = dev[:60], dev[60:]
    assert len(added) == split["dev_medquad_added"] == split["counts"]["dev"]["medquad"] - 60
    assert trust_set.added(split, "dev") == added and trust_set.added({"dev": {"medquad": first}}, "dev") == []
    page = lambda doc_id: doc_id.rsplit("-", 1)[0]  # noqa: E731  (medquad-<source>-<page>-<question>)
    assert {page(i) for i in added} <= {page(i) for i in first}  # no new topic: test and ece topics stay out
    others = {i for part in ("test", "ece") for suite in ("medquad", "topic_removed") for i in split[part][suite]}
    assert not set(dev) & others and len(set(dev)) == len(dev)
    assert max(sum(page(i) == p for i in added) for p in {page(i) for i in added}) <= 5
    with pytest.raises(InputError, match="already has"):
        trust_set.add_page_questions(split, trust_set.Path("/nonexistent"), "dev")  # refused before reading any data
    with pytest.raises(InputError, match="only dev, test and ece"):
        trust_set.add_page_questions(split, trust_set.Path("/nonexistent"), "topic_removed")
    with pytest.raises(InputError, match="no ece part"):
        trust_set.add_page_questions({"dev": split["dev"]}, trust_set.Path("/nonexistent"), "ece")


def test_the_test_extension_asks_test_pages_other_questions_only():
    from eval import trust_set
    from rag.errors import InputError

    split = trust_set.load()
    test = split["test"]["medquad"]
    first, added = test[:60], test[60:]
    assert len(added) == split["test_medquad_added"] == split["counts"]["test"]["medquad"] - 60
    assert trust_set.added(split, "test") == added
    page = lambda doc_id: doc_id.rsplit("-", 1)[0]  # noqa: E731
    assert {page(i) for i in added} <= {page(i) for i in first}  # test's own topics: no dev or ece topic leaks in
    others = {i for part in ("dev", "ece") for suite in ("medquad", "topic_removed") for i in split[part][suite]}
    assert not set(test) & others and len(set(test)) == len(test)
    assert not {page(i) for i in added} & {page(i) for i in others}
    assert max(sum(page(i) == p for i in added) for p in {page(i) for i in added}) <= 5
    with pytest.raises(InputError, match="already has"):
        trust_set.add_page_questions(split, trust_set.Path("/nonexistent"), "test")


def test_the_ece_extension_asks_ece_pages_other_questions_in_both_halves():
    from eval import trust_set

    split = trust_set.load()
    ece = split["ece"]["medquad"]
    n = split["ece_medquad_added"]
    first, added = ece[:len(ece) - n], trust_set.added(split, "ece")
    assert added == ece[len(first):] and len(first) == 488
    page = lambda doc_id: doc_id.rsplit("-", 1)[0]  # noqa: E731
    assert {page(i) for i in added} <= {page(i) for i in first}  # the ece part's own topics only
    others = {i for part in ("dev", "test") for suite in ("medquad", "topic_removed") for i in split[part][suite]}
    assert not set(ece) & others and len(set(ece)) == len(ece)
    first_round = trust_set.added_round(split, "ece", 1)
    assert max(sum(page(i) == p for i in first_round) for p in {page(i) for i in first_round}) <= 2
    halves = {trust_set.ece_half(i) for i in added}
    assert halves == {"fit", "report"}  # fixed by id: a report-half run asks only the new report-half questions
    others_added = set(trust_set.added(split, "dev")) | set(trust_set.added(split, "test"))
    assert trust_set.all_added(split) == set(added) | others_added


def test_a_later_round_takes_the_pages_remaining_questions_and_keeps_the_earlier_ones():
    from eval import trust_set
    from rag.errors import InputError

    split = trust_set.load()
    rounds = trust_set.rounds_of(split, "ece")
    assert rounds == [503, 516] and sum(rounds) == split["ece_medquad_added"]
    first, second = trust_set.added_round(split, "ece", 1), trust_set.added_round(split, "ece", 2)
    assert trust_set.added_round(split, "ece", -1) == second and trust_set.added(split, "ece") == first + second
    assert not set(first) & set(second) and split["ece"]["medquad"][-516:] == second
    page = lambda doc_id: doc_id.rsplit("-", 1)[0]  # noqa: E731
    assert {page(i) for i in second} <= {page(i) for i in split["ece"]["medquad"][:488]}
    with pytest.raises(InputError, match="not a round 3"):
        trust_set.added_round(split, "ece", 3)
    with pytest.raises(InputError, match="do not add up"):
        trust_set.rounds_of({**split, "ece_medquad_rounds": [503]}, "ece")
    with pytest.raises(InputError, match="--again"):
        trust_set.add_page_questions(split, trust_set.Path("/nonexistent"), "ece", 2)
    # a single-round part reads as one round without the rounds key
    one = {k: v for k, v in split.items() if k != "ece_medquad_rounds"}
    one["ece_medquad_added"] = 503
    one["ece"] = {**split["ece"], "medquad": split["ece"]["medquad"][:-516]}
    assert trust_set.rounds_of(one, "ece") == [503] and trust_set.added_round(one, "ece", 1) == first


def test_refitting_the_answers_keeps_the_gate_and_thresholds_and_reads_only_the_new_rows():
    rng = random.Random(5)

    def rows_where(right_if_high: bool) -> list[dict]:
        out = []
        for _ in range(120):
            p = rng.uniform(0.5, 1.0)
            right = rng.random() < ((p - 0.5) * 2 if right_if_high else 0.5)
            out.append(_row("medquad", True, 0.8, p, right_doc=right))
        return out

    old_rows, new_rows = rows_where(False), rows_where(True)
    gate = {"features": ["answerability"], "coef": [1.0], "intercept": 0.0}
    calib = {**trust.fit_calibration(old_rows, {}, gate=0.05, gate_model=gate), "gate": gate,
             "answerable_min": 0.3, "abstain_below": 0.2, "support_cosine": None, "support_min": 0.5,
             "gate_verifier": {"adapter": "a", "adapter_digest": "d", "model": "m"}}
    same = trust.refit_answers(calib, old_rows, {}, gate=0.3)
    assert same["coef"] == calib["coef"] and same["intercept"] == calib["intercept"]  # same rows, same fit
    out = trust.refit_answers(calib, new_rows, {}, gate=0.3)
    kept = ("gate", "answerable_min", "abstain_below", "support_cosine", "support_min", "gate_verifier")
    assert {k: out[k] for k in kept} == {k: calib[k] for k in kept}
    assert "support_prob" in out["features"] and out["fitted_on"]["answered"] == 120
    assert out["cv_log_loss"] < calib["cv_log_loss"]  # the new rows' rightness follows support, the old ones' did not


def test_the_answer_calibration_does_not_depend_on_the_order_the_answers_come_in():
    rng = random.Random(11)
    answered = []
    for _ in range(90):
        a, s = rng.random(), rng.random()
        answered.append(({"answerability": round(a, 4), "support_prob": round(s, 4), "generation": 0.9},
                         rng.random() < 0.3 + 0.5 * a * s))
    fits = [trust.fit_answers(order) for order in (answered, answered[::-1], rng.sample(answered, len(answered)))]
    assert fits[0] == fits[1] == fits[2]  # the same folds, so the same signals, C and coefficients


def test_the_dump_shows_a_judge_the_unjudged_answers_without_confidence_or_verdict(tmp_path):
    from eval import trust_dump, trust_labels

    rows = []
    for k in range(3):
        row = dict(_row("medquad", True, 0.9, 0.9, generated=k < 2), id=f"q{k}", abstained=False,
                   question=f"What is X{k} ?")
        row["sources"] = [{"n": 1, "doc_id": "g", "title": "X page", "text": "X is a disease of the\nknee."},
                          {"n": 2, "doc_id": "other", "title": "Y page", "text": "Y text"}]
        rows.append(row)
    rows[1]["labels"] = [{"id": "q1", "right": True,
                          "sha1": trust_labels.answer_sha1([s for s in rows[1]["sentences"] if s["supported"]])}]
    settings = {"gate": 0.0, "abstain_below": 0.0, "calibration": None}
    todo = trust_dump.unjudged(rows, settings, {})
    assert [r["id"] for r, _ in todo] == ["q0"]  # q1 has a verdict for this answer; q2 abstained
    text = trust_dump.entry(*todo[0])
    sha1 = trust_labels.answer_sha1(todo[0][1]["shown_sentences"])
    assert text.splitlines()[:3] == [f"ID q0 | SHA1 {sha1}", "Q: What is X0 ?", "S [1] : A [1]."]
    assert "GOLD 1 X page | X is a disease of the knee." in text and "Y text" not in text  # uncited non-gold left out
    assert "confidence" not in text.lower() and "0.9" not in text
    paths = trust_dump.write_batches([text] * 5, tmp_path / "d", 2)
    assert [p.name for p in paths] == ["batch-01.txt", "batch-02.txt", "batch-03.txt"]


def test_rescaling_is_platt_scaling_written_back_as_the_same_logistic_model():
    rng = np.random.default_rng(8)
    z = rng.normal(0.0, 1.0, 400)
    y = (rng.random(400) < 1 / (1 + np.exp(-(2.0 * z - 0.5)))).astype(float)  # the true slope 2, intercept -0.5
    a, b = trust.rescale_fit(z, y)
    assert abs(a - 2.0) < 0.5 and abs(b + 0.5) < 0.4
    calib = {"features": ["support_prob"], "coef": [3.0], "intercept": -1.5, "gate": None}
    rows = [_row("medquad", True, 0.9, float(p), right_doc=bool(rng.random() < p)) for p in rng.uniform(0.5, 1.0, 150)]
    out = trust.rescale(calib, rows, {}, gate=0.05)
    k = out["rescaled"]["slope"]
    assert out["coef"] == [round(3.0 * k, 6)] and out["rescaled"]["answers"] == 150
    for r in rows[:5]:  # the product reads the written model: sigmoid(a * z + b) of the original score
        sig = r["signals"]
        p0 = trust.probability(calib, sig)
        z0 = np.log(p0 / (1 - p0))
        expected = 1 / (1 + np.exp(-(k * z0 + out["rescaled"]["intercept"])))
        assert abs(trust.probability(out, sig) - expected) < 1e-5


def test_refits_and_rescaling_need_the_calibration_they_start_from(tmp_path, capsys):
    import app

    for flag in ("--refit-answers", "--rescale", "--rechoose"):
        assert app.main(["eval", "trust", "fit", "--part", "dev", "--output", str(tmp_path), flag]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "needs --onto CALIBRATION.json" in err[0]  # one line, before any rows or model load


def test_the_ece_halves_are_fixed_by_the_id_alone_and_split_the_part(tmp_path):
    import json

    from eval import trust_ece, trust_kept, trust_set

    ids = trust_set.load()["ece"]["medquad"]
    halves = [trust_set.ece_half(i) for i in ids]
    assert halves == [trust_set.ece_half(i) for i in ids]  # no state, no seed: the same id, the same half
    assert set(halves) == {"fit", "report"} and 0.4 < halves.count("fit") / len(ids) < 0.6
    rows = [{**_row("medquad", True, 0.8, 0.9), "id": i} for i in ids[:40]]
    path = tmp_path / "kept.jsonl"
    trust_kept.merge(path, trust_kept.outcomes(rows, {"gate": 0.05, "abstain_below": 0.0, "calibration": None}, {},
                                               "fp"))
    n_all = trust_ece.kept_of(path, "fp")[0]
    n_fit, n_report = trust_ece.kept_of(path, "fp", "fit")[0], trust_ece.kept_of(path, "fp", "report")[0]
    assert n_all == 40 and n_fit + n_report == 40
    assert n_report == sum(trust_set.ece_half(json.loads(line)["id"]) == "report" for line in path.open())


def test_the_comparison_prefers_the_calibration_that_tracks_rightness_and_pairs_the_same_answers():
    from eval import trust_compare

    rng = np.random.default_rng(3)
    rows = []
    for k, p in enumerate(rng.uniform(0.5, 1.0, 200)):
        right = bool(rng.random() < (p - 0.5) * 2)  # rightness follows the support probability
        rows.append(dict(_row("medquad", True, 0.9, float(p), right_doc=right), id=f"q{k}"))
    tracks = {"features": ["support_prob"], "coef": [8.0], "intercept": -6.0, "gate": None}
    flat = {"features": ["support_prob"], "coef": [0.0], "intercept": 2.0, "gate": None}  # 0.88 whatever happens
    settings = lambda c: {"gate": 0.05, "abstain_below": 0.2, "calibration": c, "floor": 0.05}  # noqa: E731
    good = trust_compare.shown(trust.outcomes(rows, settings(tracks), {}))
    bad = trust_compare.shown(trust.outcomes(rows, settings(flat), {}))
    assert bad["answered"] == 200 and good["answered"] < 200  # the tracking one withholds its lowest
    assert good["brier"] < bad["brier"]

    def zero(c: dict) -> list[dict]:
        outs = trust.outcomes(rows, trust.at_threshold_zero(settings(c)), {})
        return [{**o, "id": r["id"]} for r, o in zip(rows, outs, strict=True)]

    p = trust_compare.paired(zero(flat), zero(tracks))
    assert p["answers"] == 200 and p["only_base"] == p["only_candidate"] == 0
    assert abs(p["difference"] - (p["brier_candidate"] - p["brier_base"])) < 1e-3
    assert p["difference_ci95"][1] < 0  # the candidate is better, and the interval says so
    same = trust_compare.paired(zero(flat), zero(flat))
    assert same["difference"] == 0 and same["difference_ci95"] == [0.0, 0.0]


def test_kept_signals_replay_another_calibration_as_the_rows_do(tmp_path):
    """What a fresh machine can do without the run's records: the kept signals give every calibration with the same
    gate the outcomes that replaying the rows under it gives (and no text is kept)."""
    from eval import trust_compare, trust_kept
    from rag.errors import InputError

    rng = np.random.default_rng(4)
    rows = [dict(_row("medquad", True, 0.9, float(p), right_doc=bool(rng.random() < p)), id=f"q{k}",
                 answer="Copied corpus text [1].") for k, p in enumerate(rng.uniform(0.3, 1.0, 60))]
    rows += [dict(_row("topic_removed", False, 0.9, 0.8), id="ooc"), dict(_row("medquad", True, 0.01, 0.9), id="gated")]
    rows += [dict(_row("demo_answerable", True, 0.9, float(p)), id=f"d{k}") for k, p in enumerate((0.55, 0.7, 0.95))]
    a = {"features": ["support_prob"], "coef": [4.0], "intercept": -2.0, "gate": None}
    b = {"features": ["support_prob"], "coef": [8.0], "intercept": -5.0, "gate": None}
    settings = lambda c: {"gate": 0.05, "abstain_below": 0.3, "calibration": c, "floor": 0.05,  # noqa: E731
                          "demo_point": [0.05, 0.6]}
    path = tmp_path / "kept.jsonl"
    trust_kept.merge(path, trust_kept.outcomes(rows, settings(a), {}, "fpA"))
    assert "Copied" not in path.read_text()
    fp, kept = trust_kept.with_signals(path)
    assert fp == "fpA" and len(kept) == len(rows)
    order = {r["id"]: k for k, r in enumerate(rows)}
    kept.sort(key=lambda k: order[k["id"]])  # the file is sorted by id
    for calib in (a, b):
        by_rows = trust.outcomes(rows, settings(calib), {})
        by_kept = trust_kept.replay(kept, calib)
        assert [o["answered"] for o in by_kept] == [o["answered"] for o in by_rows]
        assert [o["right"] for o in by_kept] == [o["right"] for o in by_rows]
        assert np.allclose([o["confidence"] for o in by_kept], [o["confidence"] for o in by_rows], atol=1e-5)
        assert trust_compare.shown(by_kept)["brier"] == trust_compare.shown(by_rows)["brier"]
    at_zero = [o["answered"] for o in trust.outcomes(rows, trust.at_threshold_zero(settings(b)), {})]
    assert [o["answered"] for o in trust_kept.replay(kept, b, zero=True)] == at_zero
    assert sum(at_zero) > sum(o["answered"] for o in trust.outcomes(rows, settings(b), {}))  # the threshold bites
    old = [{k: v for k, v in o.items() if k not in ("at_zero",)} for o in kept]
    with pytest.raises(InputError, match="kept before"):
        trust_kept.replay(old, a)


def test_a_refit_on_kept_signals_is_the_refit_on_the_rows(tmp_path):
    from eval import trust_kept, trust_refit

    rng = np.random.default_rng(6)
    rows = [dict(_row("medquad", True, float(rng.uniform(0.3, 1.0)), float(p), right_doc=bool(rng.random() < p)),
                 id=f"q{k}") for k, p in enumerate(rng.uniform(0.5, 1.0, 120))]
    for r in rows:  # every signal varies: a constant one has no determined coefficient to compare
        r["signals"].update({n: float(rng.uniform(0.2, 1.0)) for n in ("retrieval", "agreement", "generation")})
    onto = {"features": ["support_prob"], "coef": [1.0], "intercept": 0.0, "gate": None, "answerable_min": 0.05,
            "offset_fit": {"feature": "x"}}
    settings = {"gate": 0.05, "abstain_below": 0.4, "calibration": onto, "floor": 0.05}
    path = tmp_path / "kept.jsonl"
    trust_kept.merge(path, trust_kept.outcomes(rows, settings, {}, "fp"))
    _, kept = trust_kept.with_signals(path)
    kept.sort(key=lambda k: int(k["id"][1:]))  # the rows' order: the cross-validation's folds follow the order
    feats = ["support_prob", "generation", "retrieval"]  # fixed: a set choice by CV can flip on float ties
    by_kept = trust_refit.refit(onto, kept, feats)
    by_rows = trust.fit_calibration(rows, {}, gate=0.05, features=feats)
    for key in ("features", "C", "fitted_on"):
        assert by_kept[key] == by_rows[key]
    # the kept signals are rounded to 6 decimals: the same fit to that precision
    assert np.allclose([*by_kept["coef"], by_kept["intercept"]], [*by_rows["coef"], by_rows["intercept"]], atol=1e-3)
    assert by_kept["answerable_min"] == 0.05 and "offset_fit" not in by_kept  # the gate side is kept, the offset not
    with pytest.raises(ValueError, match="cannot fit"):  # no verdict by a person here: nothing left to fit on
        trust_refit.refit(onto, kept, feats, judged_only=True)


def test_one_ece_half_is_asked_only_of_the_ece_part():
    from eval import trust_jobs
    from rag.errors import InputError

    with pytest.raises(InputError, match="ece part only"):  # refused before any model or data loads
        trust_jobs.run_part(None, ".cds/index/trust", "test", trust_jobs.Path("/nonexistent"),
                            trust_jobs.Path("/nonexistent/rows.jsonl"), half="report")


def test_only_the_added_questions_are_asked_when_asked_and_none_added_is_refused(monkeypatch):
    from eval import trust_jobs, trust_set
    from rag.errors import InputError

    split = trust_set.load()
    bare = {k: v for k, v in split.items() if k != "ece_medquad_added"}
    monkeypatch.setattr(trust_set, "load", lambda: bare)
    with pytest.raises(InputError, match="added no question"):
        trust_jobs.run_part(None, ".cds/index/trust", "ece", trust_jobs.Path("/nonexistent"),
                            trust_jobs.Path("/nonexistent/rows.jsonl"), added_only=True)
