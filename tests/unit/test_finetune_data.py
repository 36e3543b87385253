"""Fine-tuning data: no leakage between splits or from held-out questions, no outcome in HF inputs."""

from __future__ import annotations

import csv
import json
import random
import re
from pathlib import Path

import pytest

from corpora.heart_failure import HFRecord
from finetune import data, hf_cases
from rag.generate import ABSTAIN_TOKEN, SYSTEM_PROMPT

TOPICS = ["asthma", "gout", "anemia", "glaucoma", "psoriasis", "migraine", "scabies", "rickets", "tinnitus",
          "vertigo", "eczema", "shingles"]
QTYPES = {"information": "What is (are) {t} ?", "symptoms": "What are the symptoms of {t} ?",
          "treatment": "What are the treatments for {t} ?"}


def _answer(topic: str, qtype: str) -> str:
    # Text written for the test; distinct per (topic, qtype) so duplicates are deliberate below.
    return (f"{topic.title()} {qtype} overview. People with {topic} are advised to see a clinician about {qtype}. "
            f"The usual {qtype} plan for {topic} depends on severity and age. Follow-up visits check how well "
            f"the {qtype} plan works.")


def write_medquad(root: Path) -> None:
    folder = root / "1_TestSource_QA"
    folder.mkdir(parents=True)
    for i, topic in enumerate(TOPICS):
        pairs = []
        for j, (qtype, q) in enumerate(QTYPES.items(), start=1):
            answer = _answer(topic, qtype)
            if topic == "rickets" and qtype == "symptoms":
                answer = _answer("asthma", "symptoms")  # a verbatim duplicate of a held-out answer
            pairs.append(f'<QAPair pid="{j}"><Question qid="{i:04d}-{j}" qtype="{qtype}">{q.format(t=topic)}'
                         f"</Question><Answer>{answer}</Answer></QAPair>")
        (folder / f"{i:07d}.xml").write_text(
            f'<?xml version="1.0"?><Document id="{i:07d}" source="Test" url="https://example.org/{topic}">'
            f"<Focus>{topic}</Focus><QAPairs>{''.join(pairs)}</QAPairs></Document>", encoding="utf-8")


def write_wikidoc(path: Path) -> None:
    rows = [{"instruction": "Answer this question truthfully", "input": f"What causes {t} flares?",
             "output": f"Flares of {t} are triggered by several factors, which differ between people."}
            for t in TOPICS]
    rows.append({"instruction": "x", "input": "What are the symptoms of asthma?",  # held-out question repeated
                 "output": "Wheeze and breathlessness."})
    path.write_text(json.dumps(rows), encoding="utf-8")


def write_hf(path: Path, n: int = 40) -> None:
    rng = random.Random(0)
    cols = ["age", "anaemia", "creatinine_phosphokinase", "diabetes", "ejection_fraction", "high_blood_pressure",
            "platelets", "serum_creatinine", "serum_sodium", "sex", "smoking", "time", "DEATH_EVENT"]
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for _ in range(n):
            w.writerow([rng.randint(40, 95), rng.randint(0, 1), rng.randint(30, 3000), rng.randint(0, 1),
                        rng.choice([15, 20, 25, 30, 38, 45, 60]), rng.randint(0, 1), rng.randint(100, 500) * 1000,
                        round(rng.uniform(0.6, 3.5), 1), rng.randint(125, 146), rng.randint(0, 1), rng.randint(0, 1),
                        7777, rng.randint(0, 1)])


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> data.Inputs:
    root = tmp_path_factory.mktemp("ft-data")
    write_medquad(root / "medquad")
    write_wikidoc(root / "wikidoc.json")
    write_hf(root / "hf.csv")
    return data.Inputs(root / "medquad", root / "wikidoc.json", root / "hf.csv")


HELD = {"medquad-1-0000000-2", "medquad-1-0000000-1", "medquad-1-0000000-3"}  # every asthma pair


def count(text: str) -> int:
    return len(text.split())


@pytest.fixture(scope="module")
def built(inputs: data.Inputs, tmp_path_factory: pytest.TempPathFactory):
    from corpora import load_sources
    from rag import Assistant
    from rag.config import load_config
    from rag.update import build_index
    from tests.fakes import HashEmbedder

    root = tmp_path_factory.mktemp("ft-index")
    cfg = load_config(overrides=[f"index.dir={root}", "index.auto_build_demo=false"])
    docs = load_sources([f"medquad:{inputs.medquad}", f"wikidoc:{inputs.wikidoc}",
                         f"uci-heart-failure:{inputs.heart_failure}"]).documents
    build_index(docs, HashEmbedder(), root, cfg.chunking.model_dump())
    assistant = Assistant(cfg, embedder=HashEmbedder())
    opts = data.DataOptions(seed=3, val_fraction=0.2, grounded_questions=100, withheld_share=0.4)
    return data.build(inputs, HELD, opts, assistant, count)


def test_held_out_questions_never_enter(built) -> None:
    examples, card = built
    for e in examples:
        assert e.meta.get("doc_id") not in HELD
        assert not set(e.meta.get("source_doc_ids", [])) & HELD, "held-out pages are not even distractors"
        text = json.dumps(e.prompt + e.completion)
        assert "symptoms of asthma" not in text.lower()
    stats = card["stats"]
    assert stats["closed_book.medquad.excluded.held_out_doc"] == 3
    assert stats["closed_book.medquad.excluded.held_out_answer_duplicate"] == 1  # rickets/symptoms
    assert stats["closed_book.wikidoc.excluded.held_out_question_duplicate"] == 1


def test_splits_are_by_group(built) -> None:
    examples, _ = built
    side: dict[str, set[str]] = {}
    for e in examples:
        side.setdefault(e.group, set()).add(e.split)
    assert all(len(s) == 1 for s in side.values()), "a group (XML file, patient) sits on one side only"
    assert {e.split for e in examples if e.part == "closed_book"} == {"train", "val"}
    hf = [e for e in examples if e.part == "hf_risk"]
    assert {e.split for e in hf} == {"train", "val", "test"}


def test_grounded_examples_use_the_runtime_prompt(built) -> None:
    examples, _ = built
    gr = [e for e in examples if e.part == "grounded"]
    answers = [e for e in gr if not e.meta["withheld"]]
    withheld = [e for e in gr if e.meta["withheld"]]
    assert answers and withheld
    for e in gr:
        assert e.prompt[0] == {"role": "system", "content": SYSTEM_PROMPT}
        assert e.prompt[-1]["content"].startswith("Sources:\n\n<source id=\"1\">")
        assert 3 <= e.meta["n_sources"] <= 5 or e.meta["withheld"]
    for e in answers:
        n = e.meta["gold_n"]
        assert e.meta["source_doc_ids"][n - 1] == e.meta["doc_id"]
        target = e.completion[0]["content"]
        cited = set(re.findall(r"\[(\d+)\]", target))
        assert cited == {str(n)}, target
        gold_text = e.prompt[-1]["content"].split(f'<source id="{n}">', 1)[1].split("</source>", 1)[0]
        for sentence in re.split(r"(?<=[.!]) ", target):
            plain = re.sub(r" \[\d+\]", "", sentence)
            assert plain in gold_text, "every cited sentence is the gold source's own text"
    for e in withheld:
        assert e.completion[0]["content"] == ABSTAIN_TOKEN
        assert e.meta["doc_id"] not in e.meta["source_doc_ids"]


def test_patient_record_examples_state_the_asked_value_cited(built) -> None:
    examples, _card = built
    ehr = [e for e in examples if e.part == "grounded_ehr"]
    answers = [e for e in ehr if not e.meta["withheld"]]
    withheld = [e for e in ehr if e.meta["withheld"]]
    assert len(answers) >= 20 and withheld
    hf_split = {e.group: e.split for e in examples if e.part == "hf_risk"}
    for e in ehr:
        pid = e.meta["patient_id"]
        user = e.prompt[-1]["content"]
        assert e.prompt[0] == {"role": "system", "content": SYSTEM_PROMPT}
        assert f"The question is about patient {pid}." in user, "the runtime --patient prompt"
        assert set(re.findall(r"\(patient (HF\d+)\)", user)) <= {pid}, "no other patient's record"
        assert e.split == hf_split[e.group], "a patient's record questions share the patient's split"
    for e in answers:
        n, pid = e.meta["gold_n"], e.meta["patient_id"]
        target = e.completion[0]["content"]
        assert set(re.findall(r"\[(\d+)\]", target)) == {str(n)}, target
        block = e.prompt[-1]["content"].split(f'<source id="{n}">', 1)[1].split("</source>", 1)[0]
        assert f"(patient {pid})" in block
        numbers = set(re.findall(r"\d[\d,.]*\d|\d", re.sub(r"\[\d+\]|HF\d+", "", target)))
        assert numbers <= set(re.findall(r"\d[\d,.]*\d|\d", block)), f"every number is the record's: {target}"
    for e in withheld:
        assert e.completion[0]["content"] == ABSTAIN_TOKEN
    assert {e.meta["fact"] for e in answers} >= {"ejection_fraction", "serum_creatinine"}


def test_heart_failure_inputs_hold_no_outcome_or_follow_up(built) -> None:
    examples, _ = built
    hf = [e for e in examples if e.part == "hf_risk"]
    assert len(hf) == 40 * 3
    outcome = re.compile(r"\b(died|dies|death|deceased|surviv\w*|mortality|fatal|follow-up time|7777)\b", re.I)
    for e in hf:
        user = e.prompt[-1]["content"]
        assert not outcome.search(user), user
        assert "7777" not in user and "DEATH" not in user
        assert not outcome.search(e.completion[0]["content"]), "targets never state an outcome"
        assert e.completion[0]["content"].split(":")[0] in ("Risk category", "Provisional risk category")
        assert e.prompt[0]["content"] == data.HF_SYSTEM, "the committed adapter's format is the default"


@pytest.fixture(scope="module")
def built_working(inputs: data.Inputs):
    """Format "working" (the rule stated, the points written first); no grounded part, so no index."""
    opts = data.DataOptions(seed=3, val_fraction=0.2, grounded_questions=0, ehr_per_patient=0, hf_format="working")
    return data.build(inputs, HELD, opts, None, count)


def test_working_targets_write_points_that_add_up_to_the_category(built_working) -> None:
    examples, card = built_working
    hf = [e for e in examples if e.part == "hf_risk"]
    assert len(hf) == 40 * 3 and card["options"]["hf_format"] == "working"
    for e in hf:
        target = e.completion[0]["content"]
        assert e.prompt[0]["content"] == data.HF_SYSTEM_WORKING
        written = [int(p) for p in re.findall(r" \+(\d+)", target.split("Total:")[0])]
        total = int(re.search(r"Total: (\d+) points", target).group(1))
        assert sum(written) == total == e.meta["points"]
        category_line = next(x for x in target.splitlines() if "isk category:" in x)
        assert target.index("Total:") < target.index(category_line)
        assert f": {e.meta['category']}" in category_line


def test_missing_measurement_variants_name_what_is_missing(built) -> None:
    examples, _ = built
    missing = [e for e in examples if e.part == "hf_risk" and e.meta["missing"]]
    assert len(missing) == 40
    for e in missing:
        target = e.completion[0]["content"]
        for m in e.meta["missing"]:
            assert hf_cases.KEY_MEASUREMENTS[m] in target
        if "ejection_fraction" in e.meta["missing"]:
            assert "LVEF" not in e.prompt[-1]["content"] and "ejection fraction" not in e.prompt[-1]["content"]
        if "serum_sodium" in e.meta["missing"]:
            assert "sodium" not in e.prompt[-1]["content"]


def _rec(**kw: float | bool) -> HFRecord:
    base: dict = dict(patient_id="HF999", age=50.0, anaemia=False, creatinine_phosphokinase=100.0, diabetes=False,
                      ejection_fraction=60.0, high_blood_pressure=False, platelets=250000.0, serum_creatinine=0.9,
                      serum_sodium=140.0, male=False, smoking=False)
    base.update(kw)
    return HFRecord(**base)


def test_risk_rule_is_monotone_and_documented() -> None:
    assert hf_cases.risk_category(_rec()) == "low"
    assert hf_cases.risk_category(_rec(age=82, ejection_fraction=18, serum_creatinine=2.5)) == "high"
    pts = [hf_cases.risk_points(_rec(ejection_fraction=ef)) for ef in (60, 38, 32, 27, 22, 15)]
    assert pts == sorted(pts)
    pts = [hf_cases.risk_points(_rec(serum_creatinine=c)) for c in (0.9, 1.3, 1.6, 2.0, 3.0)]
    assert pts == sorted(pts)
    # A missing measurement contributes nothing: the category can only be underestimated.
    r = _rec(ejection_fraction=15)
    assert hf_cases.risk_points(r, frozenset({"ejection_fraction"})) < hf_cases.risk_points(r)


def test_written_files_and_card(built, tmp_path: Path) -> None:
    examples, card = built
    paths = data.write(examples, card, tmp_path)
    rows = data.read_examples(paths["train"])
    assert rows and all({"prompt", "completion", "part", "split"} <= r.keys() for r in rows)
    assert set(card["token_length_percentiles"]) == {"closed_book", "grounded", "grounded_ehr", "hf_risk"}
    assert "Heart-failure risk labels" in (tmp_path / "CARD.md").read_text()
    assert not list(tmp_path.glob("*.tmp"))
    (tmp_path / "bad.jsonl").write_text('{"prompt": []}\nnot json\n')
    from rag.errors import InputError

    with pytest.raises(InputError, match="not a training example"):
        data.read_examples(tmp_path / "bad.jsonl")


def test_question_normalisation_and_answer_cap() -> None:
    assert data.norm_question("What is (are) Gout ?") == data.norm_question("what is gout")
    long = "First sentence here. " * 100
    capped = data.cap_answer(long, 200)
    assert len(capped) <= 200 and capped.endswith(".")
    assert data.cap_answer("short.", 200) == "short."


def test_creatinine_bands_agree_in_both_units_as_narratives_print_them() -> None:
    """A narrative may give creatinine in µmol/L; the rule's µmol/L column must score it as mg/dL does."""
    def band_umol(shown: int) -> int:
        return next((pts for _mg, um, pts, _ in hf_cases.CREATININE_BANDS if shown >= um), 0)

    def band_mg(mg: float) -> int:
        return next((pts for lo, _um, pts, _ in hf_cases.CREATININE_BANDS if mg >= lo), 0)

    for hundredths in range(30, 1000):  # the UCI values have at most two decimals
        mg = hundredths / 100
        assert band_umol(int(hf_cases.creatinine_umol(mg))) == band_mg(mg), mg


def test_the_system_prompt_states_the_rule_the_targets_follow() -> None:
    text = hf_cases.rule_text()
    assert text in data.HF_SYSTEM_WORKING and text not in data.HF_SYSTEM
    first, *rest = hf_cases.EF_BANDS
    assert f"LVEF below {first[0]}% +{first[1]}" in text
    for below, pts, _ in rest:
        assert f"-{below - 1}% +{pts}" in text
    for mg, um, pts, _ in hf_cases.CREATININE_BANDS:
        assert f"{mg:g}+ mg/dL ({um}+ µmol/L) +{pts}" in text
    assert f"{hf_cases.HIGH_AT} or more high" in text


def test_working_parser_reads_every_target_and_catches_bad_arithmetic(built_working) -> None:
    examples, _ = built_working
    for e in (e for e in examples if e.part == "hf_risk"):
        w = hf_cases.read_working(e.completion[0]["content"])
        assert w.adds_up and w.total == e.meta["points"] and w.category == e.meta["category"]
    wrong_sum = "Risk points: age 70 years +4; diabetes +2.\nTotal: 7 points.\nRisk category: intermediate."
    wrong_category = "Risk points: age 70 years +4; diabetes +2.\nTotal: 6 points.\nRisk category: low."
    assert not hf_cases.read_working(wrong_sum).adds_up
    assert not hf_cases.read_working(wrong_category).adds_up
    assert not hf_cases.read_working("Risk category: low.").adds_up, "no working written"


class _Reply:
    def __init__(self, text: str) -> None:
        self.text = text


class _EchoGenerator:
    """Replies with the training target of the prompt it is given (optionally spoiling the total)."""

    model_id, adapter = "echo", None

    def __init__(self, targets: dict[str, str], spoil: bool = False) -> None:
        self.targets, self.spoil = targets, spoil

    def generate_batch(self, prompts: list, max_new_tokens: int) -> list[_Reply]:
        out = [self.targets[p[-1]["content"]] for p in prompts]
        if self.spoil:
            out = [re.sub(r"Total: (\d+)", lambda m: f"Total: {int(m.group(1)) + 1}", t) for t in out]
        return [_Reply(t) for t in out]


def test_hf_risk_eval_scores_the_working(built_working, inputs: data.Inputs, tmp_path: Path) -> None:
    from eval.hf_risk import evaluate, markdown

    examples, card = built_working
    data.write(examples, card, tmp_path / "data")
    targets = {e.prompt[-1]["content"]: e.completion[0]["content"] for e in examples if e.part == "hf_risk"}
    s = evaluate(_EchoGenerator(targets), tmp_path / "data", inputs.heart_failure, tmp_path / "out")
    assert s["patients"] > 0 and s["unparsed"] == 0
    assert s["agreement_with_rule_category"] == 1.0
    assert s["working_adds_up"] == 1.0 and s["total_equals_rule_points"] == 1.0 and s["passes_risk_checks"] == 1.0
    spoiled = evaluate(_EchoGenerator(targets, spoil=True), tmp_path / "data", inputs.heart_failure, tmp_path / "o2")
    assert spoiled["total_equals_rule_points"] == 0.0 and spoiled["working_adds_up"] < 1.0
    assert spoiled["passes_risk_checks"] < 1.0
    assert "| echo |" in markdown({"echo": s})


def test_the_first_rule_is_kept_for_the_committed_format() -> None:
    """category_first data keeps its µmol/L creatinine bands, so `train data` rebuilds the committed adapter's data."""
    r = _rec(serum_creatinine=1.25)  # 110.5 µmol/L: 1 point under the first rule, 0 under the stated mg/dL rule
    assert hf_cases.risk_points(r, fmt="category_first") == 1 and hf_cases.risk_points(r, fmt="working") == 0
    assert hf_cases.assessment(r, fmt="category_first").startswith("Risk category: low.")
    assert hf_cases.assessment(r, fmt="working").startswith("Risk points:")
