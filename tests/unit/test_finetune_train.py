"""LoRA target resolution per architecture, a 2-step CPU training run, resume, adapter round trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("trl")

from finetune.targets import resolve_target_modules, trainable_parameters  # noqa: E402
from rag.errors import InputError  # noqa: E402

H, I_, KV, LAYERS, R = 64, 128, 32, 2, 16


def _tiny(arch: str):
    torch.manual_seed(0)
    common = dict(vocab_size=100, hidden_size=H, intermediate_size=I_, num_hidden_layers=LAYERS,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    if arch == "llama":
        return transformers.LlamaForCausalLM(transformers.LlamaConfig(**common))
    if arch == "qwen2":
        return transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**common))
    return transformers.Phi3ForCausalLM(transformers.Phi3Config(**common, pad_token_id=0))


# (in, out) of each adapted projection, from the architectures' layouts.
SHAPES = {
    "llama": {"q_proj": (H, H), "k_proj": (H, KV), "v_proj": (H, KV), "o_proj": (H, H), "gate_proj": (H, I_),
              "up_proj": (H, I_), "down_proj": (I_, H)},
    "qwen2": {"q_proj": (H, H), "k_proj": (H, KV), "v_proj": (H, KV), "o_proj": (H, H), "gate_proj": (H, I_),
              "up_proj": (H, I_), "down_proj": (I_, H)},
    "phi3": {"qkv_proj": (H, H + 2 * KV), "o_proj": (H, H), "gate_up_proj": (H, 2 * I_), "down_proj": (I_, H)},
}


@pytest.mark.parametrize("arch", ["llama", "qwen2", "phi3"])
def test_targets_cover_attention_and_mlp_of_each_layout(arch: str) -> None:
    from peft import LoraConfig, get_peft_model

    model = _tiny(arch)
    targets = resolve_target_modules(model)
    assert sorted(targets) == sorted(SHAPES[arch])
    peft_model = get_peft_model(model, LoraConfig(r=R, lora_alpha=32, target_modules=targets, task_type="CAUSAL_LM"))
    trainable, total = trainable_parameters(peft_model)
    expected = LAYERS * sum(R * (i + o) for i, o in SHAPES[arch].values())
    assert trainable == expected, "every projection of every layer is adapted, nothing else"
    assert total > trainable


def test_explicit_targets_are_checked() -> None:
    model = _tiny("phi3")
    with pytest.raises(InputError, match="not in this model"):
        resolve_target_modules(model, ["q_proj", "v_proj"])  # the Llama names: Phi-3 fuses them
    assert resolve_target_modules(model, ["qkv_proj"]) == ["qkv_proj"]


WORDS = [w for w in ("what treats gout colchicine is first line therapy the sources do not answer INSUFFICIENT "
                     "EVIDENCE risk category high low age ejection fraction").split()]


def _rows(n: int) -> list[dict]:
    rows = []
    for i in range(n):
        rows.append({"id": f"x{i}", "part": ["closed_book", "hf_risk"][i % 2], "source": "t", "group": f"g{i}",
                     "split": "train", "meta": {},
                     "prompt": [{"role": "system", "content": "answer"},
                                {"role": "user", "content": "what treats gout"}],
                     "completion": [{"role": "assistant", "content": "colchicine is first line therapy"}]})
    return rows


@pytest.fixture(params=[32])
def setup(tmp_path: Path, request: pytest.FixtureRequest):
    from tests.fakes import build_tiny_qwen2

    # 4-bit blocks need wider layers than the 32-wide default tiny model.
    model = build_tiny_qwen2(tmp_path / "model", WORDS, hidden=request.param, intermediate=2 * request.param)
    data = tmp_path / "data"
    data.mkdir()
    for split, n in (("train", 16), ("val", 4)):
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _rows(n)))
    (data / "CARD.md").write_text("# card\n")
    overrides = [f"generator.model={model}", f"train.data_dir={data}", f"train.run_dir={tmp_path / 'run'}",
                 f"train.output_dir={tmp_path / 'adapter'}", "train.quantization=none",
                 "train.compute_dtype=float32", "train.max_length=64", "train.val_samples=4", "train.eval_steps=1",
                 "train.save_steps=1", "train.logging_steps=1", "train.batch_size=2", "train.grad_accum=1",
                 "train.learning_rate=0.01", "train.warmup_ratio=0.0"]
    return model, tmp_path, overrides


def test_two_step_training_writes_adapter_and_card_and_resumes(setup) -> None:
    from finetune.train import train
    from rag.config import load_config

    _model, tmp, overrides = setup
    cfg = load_config(overrides=overrides)
    card = train(cfg, max_steps=2, quiet=True)
    out = tmp / "adapter"
    assert (out / "adapter_model.safetensors").exists() and (out / "adapter_config.json").exists()
    for name in ("training_card.json", "TRAINING_CARD.md", "loss.png", "effective_config.yaml", "DATA_CARD.md"):
        assert (out / name).exists(), name
    assert card["steps"] == 2
    assert card["trainable_parameters"] > 0
    assert sorted(card["lora"]["target_modules"]) == sorted(SHAPES["qwen2"])
    assert card["val_loss"]["base"] is not None and card["val_loss"]["final"] < card["val_loss"]["base"]
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 16

    from rag.models import list_models

    listed = [r for r in list_models(tmp / "no-cache", [tmp]) if r.role == "adapter"]
    assert [(r.name, r.status) for r in listed] == [(str(out), "ready")]
    assert "tiny" in listed[0].model_id or "LoRA on" in listed[0].model_id

    with pytest.raises(InputError, match="--resume"):
        train(cfg, max_steps=2, quiet=True)  # checkpoints exist: refuse to clobber them silently
    card3 = train(cfg, max_steps=3, resume=True, quiet=True)
    assert card3["steps"] == 3 and card3["resumed"]


def test_second_stage_continues_the_first_adapter(setup) -> None:
    """train.init_adapter: stage 2 starts from stage 1's weights (its start val loss is stage 1's final)."""
    from finetune.train import train
    from rag.config import load_config

    _model, tmp, overrides = setup
    first = train(load_config(overrides=overrides), max_steps=2, quiet=True)
    stage2 = [*overrides, f"train.init_adapter={tmp / 'adapter'}", f"train.run_dir={tmp / 'run2'}",
              f"train.output_dir={tmp / 'adapter2'}", "train.lora_r=4"]
    second = train(load_config(overrides=stage2), max_steps=1, quiet=True)
    assert second["val_loss"]["base"] == pytest.approx(first["val_loss"]["final"], rel=1e-4)
    assert second["val_loss"]["base"] < first["val_loss"]["base"], "not a fresh LoRA"
    assert second["init_adapter"]["path"] == str(tmp / "adapter") and second["init_adapter"]["steps"] == 2
    assert second["lora"]["r"] == 16, "the card reports the continued adapter's rank, not the config's"
    assert "Second stage" in (tmp / "adapter2" / "TRAINING_CARD.md").read_text()
    with pytest.raises(InputError, match=r"adapter_config\.json"):
        train(load_config(overrides=[*stage2, f"train.init_adapter={tmp}", "train.run_dir=" + str(tmp / "run3")]),
              max_steps=1, quiet=True)


def test_resume_without_checkpoint_is_an_input_error(setup) -> None:
    from finetune.train import train
    from rag.config import load_config

    _, _, overrides = setup
    with pytest.raises(InputError, match="no checkpoint"):
        train(load_config(overrides=overrides), max_steps=1, resume=True, quiet=True)


def test_adapter_round_trip_through_the_generator(setup) -> None:
    from peft import PeftModel

    from finetune.train import train
    from rag.config import load_config
    from rag.generate import Generator

    model, tmp, overrides = setup
    train(load_config(overrides=overrides), max_steps=2, quiet=True)
    base = Generator(model, "test/tiny")
    tuned = Generator(model, "test/tiny", adapter=tmp / "adapter")
    assert tuned.adapter == str(tmp / "adapter")
    ids = torch.tensor([[4, 5, 6, 7, 8, 9]])
    with torch.inference_mode():
        lb = base.model(ids).logits
        lt = tuned.model(ids).logits
        # The last checkpoint holds the same adapter in fp32; the committed file is bf16.
        ref = PeftModel.from_pretrained(transformers.AutoModelForCausalLM.from_pretrained(str(model)),
                                        str(tmp / "run" / "checkpoint-2")).eval()
        lr = ref(ids).logits
    assert not torch.allclose(lb, lt, atol=1e-4), "the adapter changes the model"
    assert torch.allclose(lt, lr, atol=2e-2), "the saved adapter reproduces the trained one"


@pytest.mark.parametrize("setup", [128], indirect=True)
def test_qlora_nf4_trains_on_cpu(setup) -> None:
    pytest.importorskip("bitsandbytes")
    from finetune.train import train
    from rag.config import load_config

    _, tmp, overrides = setup
    cfg = load_config(overrides=[*overrides, "train.quantization=nf4", "train.compute_dtype=bfloat16"])
    card = train(cfg, max_steps=1, quiet=True)
    assert card["method"].startswith("QLoRA")
    assert card["val_loss"]["base"] is None, "no inference pass on the 4-bit model before training on CPU"
    assert (tmp / "adapter" / "adapter_model.safetensors").exists()


def test_bf16_autocast_trains_fp32_lora_on_cpu(setup) -> None:
    """The committed recipe: fp32 weights, bf16 autocast (the Trainer's CPU autocast), loss going down."""
    from finetune.train import train
    from rag.config import load_config

    _, _tmp, overrides = setup
    card = train(load_config(overrides=[*overrides, "train.autocast_bf16=true"]), max_steps=2, quiet=True)
    assert card["autocast_bf16"] is True
    assert card["val_loss"]["final"] < card["val_loss"]["base"]


def test_select_counts_withheld_grounded_parts_apart() -> None:
    from finetune.train import select, stratified

    rows = [{"part": p, "meta": {"withheld": w}} for p in ("grounded", "grounded_ehr") for w in (False, True)
            for _ in range(10)] + [{"part": "hf_risk", "meta": {}} for _ in range(10)]
    got = select(rows, {"grounded_ehr": 3, "grounded_ehr_withheld": 1, "grounded": 0, "grounded_withheld": 2}, 1)
    key = [(r["part"], r["meta"].get("withheld", False)) for r in got]
    assert key.count(("grounded_ehr", False)) == 3 and key.count(("grounded_ehr", True)) == 1
    assert key.count(("grounded", False)) == 0 and key.count(("grounded", True)) == 2
    assert key.count(("hf_risk", False)) == 10  # a part missing from the mix keeps all of it
    assert len(stratified(rows, 9, 1)) == 3 * 3 + 2 * 1


def test_a_part_the_mix_gives_zero_leaves_the_committed_selection_and_validation_as_they_were() -> None:
    """A new part in the data (``grounded_clinician``) must not change what an existing recipe trains on."""
    from finetune.train import select, stratified

    old = [{"id": f"{p}{i}", "part": p, "meta": {}} for p in ("closed_book", "grounded", "hf_risk") for i in range(9)]
    new = old + [{"id": f"c{i}", "part": "grounded_clinician", "meta": {}} for i in range(9)]
    mix = {"closed_book": 2, "grounded": 3, "hf_risk": 4}
    assert select(new, mix | {"grounded_clinician": 0}, 5) == select(old, mix, 5)
    assert stratified(new, 6, 5, frozenset({"grounded_clinician"})) == stratified(old, 6, 5)
