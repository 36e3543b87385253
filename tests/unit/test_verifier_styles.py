"""Question styles for the verifier's training pairs, passages cut like the index, and draft replay."""

from __future__ import annotations

import random
import re

from corpora.document import Document
from eval.trust_jobs import ReplayGenerator
from finetune.verifier_data import body, chunk_passages, detail_pairs
from finetune.verifier_styles import (
    abbreviate,
    attribute_lead,
    detail_question,
    focus_of,
    idf_table,
    overlap,
    qtype_of,
    restyle,
    swap_term,
    vignette,
)


def test_focus_of_free_questions():
    assert focus_of("What to expect if I have Necrotising enterocolitis  (Outlook/Prognosis)?") == \
        "Necrotising enterocolitis"
    assert focus_of("What are the symptoms of Anal cancer?") == "Anal cancer"
    assert focus_of("Who is at highest risk for Yaws ?") == "Yaws"


def test_restyle_keeps_the_subject_and_the_need():
    rng = random.Random(3)
    for _ in range(30):
        q = restyle("What are the treatments for Gout ?", "Gout", "treatment", rng)
        assert "gout" in q.lower()
        assert q != "What are the treatments for Gout ?"
    # A type we have no wording for is left as it is (never rewritten into another need).
    assert restyle("What research is being done for Gout ?", "Gout", "research", rng) == \
        "What research is being done for Gout ?"
    # A subject that cannot be told apart from the wording: unchanged.
    long_q = "How do I know whether the pain in my left side after eating fatty food is serious?"
    assert restyle(long_q, long_q, "", rng) == long_q
    assert qtype_of("How is it treated?") == "treatment"


def test_abbreviate_uses_clinicians_short_forms():
    assert abbreviate("Heart failure with atrial fibrillation", random.Random(0), p=1.0) == "HF with AF"
    assert abbreviate("Heart failure", random.Random(0), p=0.0) == "Heart failure"


def test_detail_question_asks_for_the_number_without_giving_it():
    text = ("In adults with hypertension, a blood pressure target below 130/80 mmHg is recommended. "
            "Home blood pressure monitoring is recommended to confirm the diagnosis.")
    idf = idf_table([text, "Hypertension is common.", "Diabetes targets vary."])
    rng = random.Random(1)
    made = [detail_question("In adults with hypertension, a blood pressure target below 130/80 mmHg is recommended.",
                            "Hypertension guideline", idf, rng) for _ in range(10)]
    assert all(m is not None for m in made)
    for q, kws in made:  # type: ignore[misc]
        assert "130" not in q and "80" not in q
        assert "Hypertension" in kws or "hypertension" in kws  # the guideline's subject is named
    # Sentences about the guideline itself are not asked about.
    assert detail_question("The panel reviewed the literature search for this guideline.", "Hypertension guideline",
                           idf, rng) is None
    assert overlap(["blood", "target"], text) == 1.0 and overlap(["insulin"], text) == 0.0


def _tokenize(text: str) -> list[str]:
    return text.split()


def test_chunk_passages_look_like_the_index_and_detail_pairs_are_labelled():
    doc = Document(doc_id="g1", title="Hypertension guideline", kind="guideline", source="g1.md",
                   text="## Major Recommendations\n\n" + " ".join(
                       f"Recommendation {i}: in adults with hypertension, start drug {i} when the target is missed."
                       for i in range(12)) + "\n\n## Methods\n\nThe panel searched the literature.")
    other = Document(doc_id="g2", title="Diabetes guideline", kind="guideline", source="g2.md",
                     text="## Major Recommendations\n\nMetformin should be started at diagnosis in type 2 diabetes "
                          "unless contraindicated. An HbA1c goal below 7% is recommended for most adults.")
    passages_of = chunk_passages(_tokenize, 120, 40, 5)
    ps = passages_of(doc)
    assert ps[0].startswith("Hypertension guideline — Major Recommendations\n## Major Recommendations")
    assert body(ps[0]).startswith("Recommendation 0")
    pairs = list(detail_pairs([doc, other], passages_of, random.Random(0), per_doc=3, source="test"))
    pos = [p for p in pairs if p.task == "answerable" and p.label == 1]
    assert pos and all(p.kind == "detail" for p in pos)
    assert not any("Methods" in p.text_b.split("\n", 1)[0] for p in pos)  # methods sections are not asked about


def test_replay_generator_reuses_drafts_and_generates_the_rest():
    rows = [{"question": "EF?", "patient_id": "HF001", "generated": True, "draft": "EF is 30% [1].",
             "signals": {"generation": 0.8}, "timings_ms": {"new_tokens": 4, "prompt_tokens": 50}},
            {"question": "EF?", "patient_id": "HF002", "generated": True, "draft": "EF is 45% [1].",
             "signals": {"generation": 0.7}, "timings_ms": {"new_tokens": 4}}]

    class Real:
        calls = 0

        def generate_batch(self, batch, max_new_tokens):
            from rag.generate import Generation

            Real.calls += len(batch)
            return [Generation("fresh", [0.5], 1, 1, 0.0, 0.0) for _ in batch]

    gen = ReplayGenerator(rows, Real)
    out = gen.generate_batch([[{"role": "user", "content": "Record of patient HF002 ... Question: EF?"}],
                              [{"role": "user", "content": "Question: BNP?"}]], 100)
    assert out[0].text == "EF is 45% [1]." and abs(out[0].token_probs[0] - 0.7) < 1e-9
    assert out[1].text == "fresh" and Real.calls == 1 and gen.replayed == 1 and gen.generated == 1


def test_vignette_puts_a_case_before_the_unchanged_question():
    rng = random.Random(3)
    for _ in range(30):
        q = vignette("HFrEF GDMT classes?", rng)
        assert q.endswith("HFrEF GDMT classes?") and len(q) > len("HFrEF GDMT classes?") + 10
        assert q[0].isupper() or q[0].isdigit()
    lay = vignette("can I keep taking it?", random.Random(0), lay=True)
    assert lay.endswith("Can I keep taking it?") and re.search(r"\b(my|I)\b", lay, re.I)


def test_swap_term_replaces_a_sibling_the_passage_never_mentions():
    passage = "Start an ACE inhibitor or a beta-blocker in adults with heart failure."
    for seed in range(20):
        out = swap_term("Start an ACE inhibitor in adults with heart failure.", passage, random.Random(seed))
        assert out is not None and out != "Start an ACE inhibitor in adults with heart failure."
        # The replacement is never a term the passage states (that would still be supported).
        assert "beta-blocker in adults" not in out
    assert swap_term("Rest and fluids help.", "Rest and fluids help.", random.Random(0)) is None
    # Capitalised at the start of a sentence, a hyphenated word is not split.
    out = swap_term("Metformin is first-line.", "Metformin is first-line.", random.Random(1))
    assert out is not None and out[0].isupper()


def test_attribute_lead_keeps_the_statement_and_its_case():
    rng = random.Random(0)
    outs = {attribute_lead("HbA1c should be measured twice a year.", rng) for _ in range(20)}
    assert all("HbA1c should be measured twice a year" in o for o in outs)
    assert any(o != "HbA1c should be measured twice a year." for o in outs)
    assert any("the ECG should be read" in attribute_lead("The ECG should be read.", random.Random(s))
               for s in range(10))
    leads = ("The guideline recommends that ", "According to the guideline, ", "Guidance: ",
             "The source states that ", "It is recommended that ")
    assert attribute_lead("Read the ECG within 10 minutes (class I).", random.Random(2)) in {
        "Read the ECG within 10 minutes.", *(lead + "read the ECG within 10 minutes (class I)." for lead in leads)}


def test_abbreviate_prefers_the_longest_form():
    assert abbreviate("acute decompensated heart failure", random.Random(0), p=1.0) == "ADHF"
    assert abbreviate("heart failure with reduced ejection fraction", random.Random(0), p=1.0) == "HFrEF"
