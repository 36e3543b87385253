"""End to end on a tiny random Qwen2: run folders, the condition matrix (LoRA adapter, retrieval), the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import app
from eval.mcq.runner import RunSpec, run
from rag.config import load_config
from rag.errors import InputError
from tests.unit.test_eval_scoring import WORDS

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "mcq"
MMLU = str(FIX / "mmlu" / "val")
MEDMCQA = str(FIX / "medmcqa_1based.jsonl")


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.fakes import build_tiny_qwen2

    words = WORDS + "Which organ produces insulin Liver Pancreas Spleen Kidney Vitamin".split()
    return build_tiny_qwen2(tmp_path_factory.mktemp("tiny-run"), words)


@pytest.fixture(scope="module")
def tiny_adapter(tiny_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_folder))
    # init_lora_weights=False: a random (non-identity) adapter, so tuned scores differ from base.
    peft = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    out = tmp_path_factory.mktemp("tiny-adapter")
    peft.save_pretrained(str(out))
    return out


def _cfg(tiny_folder: Path, *extra: str) -> Any:
    return load_config(overrides=[f"generator.model={tiny_folder}", *extra])


def test_single_run_writes_every_artifact(tiny_folder: Path, tmp_path: Path) -> None:
    spec = RunSpec("mmlu", MMLU, str(tmp_path / "run"), k_shot=2, batch_size=2)
    run(_cfg(tiny_folder), spec, say=lambda m: None)
    out = tmp_path / "run"
    preds = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 5 and set(preds[0]) >= {"id", "subject", "gold", "predicted", "probs", "correct",
                                                  "retrieved"}
    assert preds[2]["gold"] == "D" and abs(sum(preds[0]["probs"].values()) - 1) < 1e-4
    s = json.loads((out / "summary.json").read_text())
    assert s["n"] == 5 and s["correct"] == sum(p["correct"] for p in preds)
    assert set(s["per_subject"]) == {"anatomy", "clinical_knowledge"} and s["ci_method"] == "wilson"
    assert 0 <= s["ece_15"] <= 1 and 0 <= s["brier"] <= 2 and s["questions_per_s"] > 0
    assert s["prompt"]["k_shot"] == 2 and len(s["prompt"]["hash"]) == 16 and s["prompt"]["chat_template"] is False
    assert "The kneecap is also called the:" in s["prompt"]["example"]  # dev exemplars for anatomy
    assert s["model"]["id"] == str(tiny_folder) and s["adapter"] is None and s["index"] is None
    assert s["data"]["sha256"] and "commit" in s["git"]
    assert (out / "reliability.png").stat().st_size > 0 and "accuracy" in (out / "report.md").read_text()
    with pytest.raises(InputError, match="already holds a run"):
        run(_cfg(tiny_folder), spec, say=lambda m: None)


def test_matrix_with_adapter_and_retrieval(tiny_folder: Path, tiny_adapter: Path, hash_index: Any,
                                           tmp_path: Path) -> None:
    from rag import Assistant
    from tests.fakes import HashEmbedder

    root, _ = hash_index
    cfg = _cfg(tiny_folder, f"index.dir={root}", "index.auto_build_demo=false")
    spec = RunSpec("medmcqa", MEDMCQA, str(tmp_path / "m"), conditions=["base", "tuned", "base+rag", "tuned+rag"],
                   adapter=str(tiny_adapter), rag_k=2, batch_size=3)
    said: list[str] = []
    results = run(cfg, spec, say=said.append, assistant=Assistant(cfg, embedder=HashEmbedder()))
    assert [r.name for r in results] == ["base", "base+rag", "tuned", "tuned+rag"]
    out = tmp_path / "m"
    base = [json.loads(x) for x in (out / "base" / "predictions.jsonl").read_text().splitlines()]
    tuned = [json.loads(x) for x in (out / "tuned" / "predictions.jsonl").read_text().splitlines()]
    rag = [json.loads(x) for x in (out / "base-rag" / "predictions.jsonl").read_text().splitlines()]
    assert base[0]["probs"] != tuned[0]["probs"]  # the adapter changed the model
    assert all(p["retrieved"] for p in rag) and not any(p["retrieved"] for p in base)
    s = json.loads((out / "tuned-rag" / "summary.json").read_text())
    assert s["adapter"]["path"] == str(tiny_adapter.resolve()) and s["index"]["top_k"] == 2
    assert "Context:\n[1] " in s["prompt"]["example"] and s["prompt"]["template"]["rag"] is True
    matrix = json.loads((out / "matrix.json").read_text())
    assert set(matrix["comparisons"]) == {"tuned vs base", "base+rag vs base", "tuned+rag vs base"}
    assert matrix["comparisons"]["tuned vs base"]["n_common"] == 4
    assert (out / "accuracy.png").exists() and "| base+rag |" in (out / "report.md").read_text()


def test_matrix_skips_tuned_without_adapter(tiny_folder: Path, tmp_path: Path) -> None:
    spec = RunSpec("medmcqa", MEDMCQA, str(tmp_path / "m"), conditions=["base", "tuned"], skip_missing_adapter=True)
    said: list[str] = []
    assert [r.name for r in run(_cfg(tiny_folder), spec, say=said.append)] == ["base"]
    assert any("skipping tuned" in m and "--adapter" in m for m in said)
    spec = RunSpec("medmcqa", MEDMCQA, str(tmp_path / "t"), conditions=["tuned"])
    with pytest.raises(InputError, match="needs a LoRA adapter: pass --adapter DIR"):
        run(_cfg(tiny_folder), spec)


def test_generate_scorer_reports_parse_failures(tiny_folder: Path, tmp_path: Path) -> None:
    spec = RunSpec("medmcqa", MEDMCQA, str(tmp_path / "g"), scorer="generate", max_new_tokens=2, limit=2, seed=3)
    [res] = run(_cfg(tiny_folder), spec, say=lambda m: None)
    s = res.summary
    assert s["n"] == 2 and isinstance(s["parse_failures"], int) and s["ece_15"] is None and s["brier"] is None


# -- CLI ---------------------------------------------------------------------------------------
def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = app.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(("argv", "message"), [
    (["--bench", "medmcqa", "--data", "/nonexistent/dev.jsonl"], "error: benchmark file not found: /nonexistent"),
    (["--bench", "mmlu", "--data", "/nonexistent/val"], "error: MMLU path not found"),
    (["--bench", "medmcqa", "--data", MEDMCQA, "--conditions", "tuned"], "needs a LoRA adapter"),
    (["--bench", "medmcqa", "--data", MEDMCQA, "--conditions", "best"], "unknown condition(s) best"),
    (["--bench", "medmcqa", "--data", MEDMCQA, "--adapter", "/nonexistent"], "has no adapter_config.json"),
    (["--bench", "medmcqa", "--data", MEDMCQA, "--batch-size", "0"], "--batch-size must be at least 1"),
    (["--bench", "medmcqa", "--data", MEDMCQA, "--matrix", "--conditions", "base"], "--matrix or --conditions"),
    (["--bench", "medmcqa", "--data", MEDMCQA, "--k-shot", "1"], "pass --fewshot FILE"),
])
def test_cli_usage_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str], message: str) -> None:
    code, _, err = _cli(capsys, "eval", "mcq", *argv, "--output", str(tmp_path / "o"), "-q")
    assert code == 2 and message in err and err.count("\n") == 1


def test_cli_malformed_row_names_line(capsys: pytest.CaptureFixture[str], write: Any, tmp_path: Path) -> None:
    good = Path(MEDMCQA).read_text().splitlines()
    bad = write("dev.jsonl", "\n".join([good[0], good[1], '{"question": "Q", "cop": 1']) + "\n")
    code, _, err = _cli(capsys, "eval", "mcq", "--bench", "medmcqa", "--data", str(bad), "--output",
                        str(tmp_path / "o"))
    assert code == 2 and err == f"error: {bad}:3: not valid JSON (Expecting ',' delimiter)\n"
    csv = write("val/anatomy_val.csv", "Q1,a,b,c,d,A\nQ2,a,b,c,d\n")
    code, _, err = _cli(capsys, "eval", "mcq", "--bench", "mmlu", "--data", str(csv.parent), "--output",
                        str(tmp_path / "o"))
    assert code == 2 and f"{csv}:2: expected 6 columns" in err and err.count("\n") == 1


def test_cli_run_and_compare(capsys: pytest.CaptureFixture[str], tiny_folder: Path, tmp_path: Path) -> None:
    common = ["eval", "mcq", "--bench", "medmcqa", "--data", MEDMCQA, "--set", f"generator.model={tiny_folder}"]
    code, out, _ = _cli(capsys, *common, "--output", str(tmp_path / "a"))
    assert code == 0 and "base: accuracy" in out
    code, out, _ = _cli(capsys, *common, "--output", str(tmp_path / "b"), "--chat-template", "--json", "-q")
    assert code == 0 and json.loads(out)[0]["prompt"]["chat_template"] is True
    code, out, _ = _cli(capsys, "eval", "compare", str(tmp_path / "a"), str(tmp_path / "b"))
    assert code == 0 and "paired questions: 4" in out and "McNemar exact test" in out
    code, out, _ = _cli(capsys, "eval", "compare", str(tmp_path / "a"), str(tmp_path / "b" / "predictions.jsonl"),
                        "--json")
    assert code == 0 and json.loads(out)["mcnemar"]["p_value_exact"] <= 1
    code, _, err = _cli(capsys, "eval", "compare", str(tmp_path / "a"), str(tmp_path / "nope"))
    assert code == 2 and "no predictions.jsonl at" in err


def test_global_options_before_the_subcommand_are_kept() -> None:
    args = app._parser().parse_args(["--config", "c.yaml", "--set", "a=1", "eval", "mcq", "--set", "b=2",
                                     "--bench", "mmlu", "--data", "d", "--output", "o"])
    assert args.config == "c.yaml"
    args = app._parser().parse_args(["query", "q", "--config", "x.yaml", "-q"])
    assert args.config == "x.yaml" and args.quiet


def test_a_broken_predictions_file_is_a_one_line_error_naming_the_line_and_the_fix(tmp_path):
    from eval.mcq.report import load_run

    f = tmp_path / "predictions.jsonl"
    for text, msg in [('{"id": 1, "gold": "A"}\n', "not a prediction record (no 'correct' field)"),
                      ('{"id": 1\n', "not valid JSON"), ("[1]\n", "expected a JSON object")]:
        f.write_text(text)
        with pytest.raises(InputError) as e:
            load_run(tmp_path)
        assert f"{f}:1: {msg}" in str(e.value) and "app.py eval mcq" in str(e.value)
    f.write_text('{"id": 1, "gold": "A", "correct": true}\n\n')
    assert load_run(tmp_path)[1] == [{"id": "1", "gold": "A", "correct": True}]
