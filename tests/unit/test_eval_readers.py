"""MCQ readers on our own tiny fixtures: every format, 0/1-based cop, one-line errors with line numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval.mcq.readers import fewshot_pool, read_bench, read_medmcqa, read_mirage, read_mmlu, read_mmlu_file
from rag.errors import InputError

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "mcq"


def test_medmcqa_cop_detected_1_based_and_0_based_agree() -> None:
    one = read_medmcqa(FIX / "medmcqa_1based.jsonl")
    zero = read_medmcqa(FIX / "medmcqa_0based.jsonl")
    assert one.notes["cop_base"] == 1 and zero.notes["cop_base"] == 0
    assert [it.answer for it in one.items] == [1, 2, 3, 0] == [it.answer for it in zero.items]
    first = one.items[0]
    assert first.id == "t-001" and first.subject == "Physiology"
    assert first.options == ("Liver", "Pancreas", "Spleen", "Kidney") and first.options[first.answer] == "Pancreas"


def test_medmcqa_explicit_flag_and_ambiguity(write) -> None:
    assert read_medmcqa(FIX / "medmcqa_1based.jsonl", cop_base="1").items[3].answer == 0
    with pytest.raises(InputError, match=r"medmcqa_1based.jsonl:3: 'cop' is 4, impossible with --cop-base 0"):
        read_medmcqa(FIX / "medmcqa_1based.jsonl", cop_base="0")
    rows = [json.loads(x) for x in (FIX / "medmcqa_1based.jsonl").read_text().splitlines()[:2]]  # cop 2, 3 only
    p = write("amb.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(InputError, match=r"cannot tell whether 'cop' is 0- or 1-based.*--cop-base"):
        read_medmcqa(p)
    assert read_medmcqa(p, cop_base="0").items[0].answer == 2  # the flag settles it


@pytest.mark.parametrize(("line2", "message"), [
    ('{"question": "Q?", "opa": "a"', r"bad.jsonl:2: not valid JSON"),
    ('{"question": "Q?", "opa": "a", "opb": "b", "opc": "c", "opd": "d", "cop": "x"}', r"bad.jsonl:2: field 'cop'"),
    ('{"question": "Q?", "opa": "a", "opb": "b", "opc": "c", "opd": "d", "cop": -1}', r"bad.jsonl:2: .*unlabelled"),
    ('{"question": "Q?", "opa": "a", "opb": "", "opc": "c", "opd": "d", "cop": 1}', r"bad.jsonl:2: field 'opb'"),
    ('["not", "an", "object"]', r"bad.jsonl:2: expected a JSON object"),
])
def test_medmcqa_malformed_row_names_the_line(write, line2: str, message: str) -> None:
    good = (FIX / "medmcqa_1based.jsonl").read_text().splitlines()[0]
    p = write("bad.jsonl", f"{good}\n{line2}\n")
    with pytest.raises(InputError, match=message) as e:
        read_medmcqa(p, cop_base="1")
    assert "\n" not in str(e.value)


def test_mmlu_folder_reads_medical_subjects_only() -> None:
    ds = read_mmlu(FIX / "mmlu" / "val")
    assert ds.notes["subjects"] == ["anatomy", "clinical_knowledge"]  # astronomy is not a medical subject
    assert [it.id for it in ds.items][:2] == ["anatomy/0", "anatomy/1"]
    heart = ds.items[1]
    assert heart.question == "The heart has how many chambers, in humans?" and heart.options[heart.answer] == "Four"
    assert read_bench("mmlu", FIX / "mmlu" / "val", ["astronomy"]).items[0].subject == "astronomy"
    with pytest.raises(InputError, match=r"no CSV for subject.*genetics"):
        read_mmlu(FIX / "mmlu" / "val", ["genetics"])


def test_mmlu_malformed_rows(write) -> None:
    p = write("x_val.csv", "Q one?,a,b,c,d,A\nQ two?,a,b,c,E\n")
    with pytest.raises(InputError, match=r"x_val.csv:2: expected 6 columns"):
        read_mmlu_file(p)
    p = write("y_val.csv", "question,A,B,C,D,answer\n")
    with pytest.raises(InputError, match=r"y_val.csv:1: answer must be A, B, C or D.*header"):
        read_mmlu_file(p)


def test_medqa_and_mirage() -> None:
    medqa = read_bench("medqa", FIX / "medqa.jsonl")
    assert len(medqa.items[0].options) == 5 and medqa.items[0].answer == 1 and medqa.items[1].answer == 0
    mirage = read_mirage(FIX / "mirage_benchmark.json")
    assert [it.id for it in mirage.items] == ["medqa/0001", "pubmedqa/111", "pubmedqa/112"]
    assert mirage.items[1].options == ("yes", "no", "maybe") and mirage.items[2].answer == 1
    assert [it.subject for it in read_bench("mirage", FIX / "mirage_benchmark.json", ["medqa"]).items] == ["medqa"]
    with pytest.raises(InputError, match="no dataset bioasq"):
        read_mirage(FIX / "mirage_benchmark.json", ["bioasq"])


def test_missing_files_and_fewshot(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="benchmark file not found"):
        read_bench("medmcqa", tmp_path / "nope.jsonl")
    with pytest.raises(InputError, match="MMLU path not found"):
        read_bench("mmlu", tmp_path / "nope")
    pool, files = fewshot_pool("mmlu", FIX / "mmlu" / "val", None, ["anatomy"])
    assert [it.question for it in pool["anatomy"]] == ["The kneecap is also called the:", "The lungs sit in the:"]
    assert files == [FIX / "mmlu" / "dev" / "anatomy_dev.csv"]
    with pytest.raises(InputError, match="pass --fewshot FILE"):
        fewshot_pool("medmcqa", FIX / "medmcqa_1based.jsonl", None, [])
