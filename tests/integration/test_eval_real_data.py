"""The MCQ readers on the real files in ../shared/data, and a few questions through the real 0.5B model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import app
from eval.mcq.readers import MMLU_MEDICAL, fewshot_pool, read_medmcqa, read_mmlu

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
MEDMCQA = DATA / "medmcqa" / "dev_sample.jsonl"
MMLU_VAL = DATA / "mmlu_medical" / "val"


def _need(path: Path) -> None:
    if not path.exists():
        pytest.skip(f"{path} is absent (the real benchmark data lives in ../shared/data)")


def test_medmcqa_dev_sample_is_1_based() -> None:
    _need(MEDMCQA)
    ds = read_medmcqa(MEDMCQA)
    assert len(ds.items) == 500 and ds.notes["cop_base"] == 1
    assert {it.answer for it in ds.items} == {0, 1, 2, 3} and all(len(it.options) == 4 for it in ds.items)


def test_mmlu_medical_val_and_dev() -> None:
    _need(MMLU_VAL)
    ds = read_mmlu(MMLU_VAL)
    assert len(ds.items) == 123 and ds.notes["subjects"] == list(MMLU_MEDICAL)
    pool, _ = fewshot_pool("mmlu", MMLU_VAL, None, list(MMLU_MEDICAL))
    assert all(len(v) == 5 for v in pool.values())


def test_real_model_on_a_few_questions(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from rag.config import load_config
    from tests.integration.conftest import _require

    _need(MMLU_VAL)
    _require(load_config().generator.model)
    code = app.main(["eval", "mcq", "--bench", "mmlu", "--data", str(MMLU_VAL), "--k-shot", "5", "--limit", "6",
                     "--output", str(tmp_path / "r"), "-q"])
    assert code == 0
    s = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert s["n"] == 6 and s["model"]["id"] == "Qwen/Qwen2.5-Coder-0.5B-Instruct" and s["prompt"]["k_shot"] == 5
