"""Generation backends: selection, dtype auto, config validation, the prefix cache, the GGUF LoRA, stream parsing."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from rag.backends import load_backend
from rag.config import load_config
from rag.errors import ConfigError, GenerationError, InputError, ModelNotAvailableError
from rag.generate import build_messages, cpu_has_bf16, resolve_dtype
from rag.openai_backend import OpenAIBackend, StreamCollector

FLAGS = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f {extra}\n\n"

# -- dtype auto ---------------------------------------------------------------------------------


@pytest.mark.parametrize("extra,expected", [("avx512_bf16", "bfloat16"), ("amx_bf16 amx_tile", "bfloat16"),
                                            ("", "float32"), ("avx512_bf16x", "float32")])
def test_dtype_auto_follows_the_cpu_bf16_flags(extra, expected):
    assert resolve_dtype("auto", FLAGS.format(extra=extra)) == expected


def test_explicit_dtype_is_kept_and_no_cpuinfo_means_no_bf16():
    assert resolve_dtype("float32", FLAGS.format(extra="avx512_bf16")) == "float32"
    assert resolve_dtype("bfloat16", FLAGS.format(extra="")) == "bfloat16"
    assert cpu_has_bf16("") is False


# -- config ------------------------------------------------------------------------------------


def test_defaults_transformers_and_auto():
    from rag.config import GeneratorConfig

    g = GeneratorConfig()
    assert g.backend == "transformers" and g.dtype == "auto" and g.prefix_cache
    # The default preset states float32: its calibration was fitted on float32 answers.
    assert load_config().generator.dtype == "float32"


def test_openai_backend_needs_url_and_model():
    with pytest.raises(ConfigError, match=r"openai_url and generator\.openai_model"):
        load_config(None, ["generator.backend=openai"])
    with pytest.raises(ConfigError, match="http:// or https://"):
        load_config(None, ["generator.backend=openai", "generator.openai_url=localhost:8000",
                           "generator.openai_model=cds"])
    cfg = load_config(None, ["generator.backend=openai", "generator.openai_url=http://127.0.0.1:8000/v1",
                             "generator.openai_model=cds"])
    assert cfg.generator.openai_model == "cds"


def test_unknown_backend_and_dtype_are_refused_with_the_key():
    with pytest.raises(ConfigError, match=r"generator\.backend"):
        load_config(None, ["generator.backend=vllm"])
    with pytest.raises(ConfigError, match=r"generator\.dtype"):
        load_config(None, ["generator.dtype=float16"])


# -- selection ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.fakes import build_tiny_qwen2

    words = "what reduces mortality heart failure start an inhibitor use beta blocker gout colchicine".split()
    return build_tiny_qwen2(tmp_path_factory.mktemp("tiny"), words)


def test_transformers_backend_selected_and_records_its_dtype(tiny_folder):
    cfg = load_config(None, [f"generator.model={tiny_folder}", "generator.adapter=null", "generator.dtype=float32"])
    gen = load_backend(cfg.generator, tiny_folder.parent)
    assert gen.info == {"backend": "transformers", "dtype": "float32"}
    out = gen.generate([{"role": "user", "content": "what reduces mortality"}], 3)
    assert len(out.token_probs) == out.new_tokens and all(0 < p <= 1 for p in out.token_probs)


def test_llamacpp_backend_without_xllamacpp_says_how_to_install(tiny_folder, tmp_path, monkeypatch):
    from rag.llamacpp import LlamaCppBackend

    monkeypatch.setitem(sys.modules, "xllamacpp", None)  # import fails as if not installed
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(ModelNotAvailableError, match="pip install"):
        LlamaCppBackend(gguf, "m")


def test_llamacpp_backend_refuses_a_model_that_is_not_gguf(tiny_folder):
    cfg = load_config(None, ["generator.backend=llamacpp", f"generator.model={tiny_folder}", "generator.adapter=null"])
    with pytest.raises(ModelNotAvailableError, match="reads GGUF files"):
        load_backend(cfg.generator, tiny_folder.parent)


def test_openai_backend_selected_without_contacting_the_server(tiny_folder):
    cfg = load_config(None, ["generator.backend=openai", "generator.openai_url=http://127.0.0.1:9",
                             "generator.openai_model=cds", f"generator.model={tiny_folder}"])
    gen = load_backend(cfg.generator, tiny_folder.parent)
    assert isinstance(gen, OpenAIBackend) and gen.url == "http://127.0.0.1:9/v1" and gen.model_id == "cds"
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_folder))  # the local tokenizer of generator.model, not a guess
    text = "what reduces mortality in heart failure?"
    assert gen._count is not None and gen.count_tokens(text) == len(tok.encode(text, add_special_tokens=False))
    with pytest.raises(GenerationError, match="cannot reach"):
        gen.generate([{"role": "user", "content": "hi"}], 2)


# -- the fixed prefix, computed once -----------------------------------------------------------


def test_prefix_cache_gives_the_same_reply_and_reuses_the_prefix(tiny_folder):
    from rag.generate import Generator, PromptSource

    gen = Generator(tiny_folder, "tiny", dtype="float32")
    src = [PromptSource(1, "heart", "failure", "guideline", None, "start an inhibitor")]
    for q in ["what reduces mortality", "use beta blocker"]:
        msgs = build_messages(q, src, None)
        gen.prefix_cache = False
        plain = gen.generate(msgs, 6)
        gen.prefix_cache = True
        cached = gen.generate(msgs, 6)
        assert plain.cached_tokens == 0 and 0 < cached.cached_tokens < cached.prompt_tokens
        assert cached.text == plain.text
        np.testing.assert_allclose(cached.token_probs, plain.token_probs, rtol=1e-4, atol=1e-6)
    key = gen._prefix[0] if gen._prefix else None
    gen.generate([{"role": "system", "content": "other"}, {"role": "user", "content": "heart"}], 2)
    assert gen._prefix is not None and gen._prefix[0] != key  # another prefix: recomputed, never reused wrongly


# -- LoRA -> GGUF LoRA --------------------------------------------------------------------------


def _tiny_adapter(folder: Path, out: Path, **extra) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(str(folder))
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                                            init_lora_weights=False, **extra))
    peft.save_pretrained(str(out))
    return out


def test_lora_to_gguf_names_shapes_values_and_metadata(tiny_folder, tmp_path):
    import gguf
    from safetensors.numpy import load_file

    from rag.gguf_lora import SOURCE_KEY, checked, convert

    adapter = _tiny_adapter(tiny_folder, tmp_path / "lora")
    base = json.loads((tiny_folder / "config.json").read_text())
    r = convert(adapter, base)
    assert r.path == adapter / "adapter_model.gguf" and r.arch == "qwen2" and r.rank == 4 and r.alpha == 8
    reader = gguf.GGUFReader(str(r.path))
    f = reader.fields
    assert f["general.type"].contents() == "adapter" and f["adapter.type"].contents() == "lora"
    assert f["adapter.lora.alpha"].contents() == 8.0 and f["general.architecture"].contents() == "qwen2"
    tensors = {t.name: t for t in reader.tensors}
    expected = {f"blk.{i}.{m}.weight.lora_{s}" for i in (0, 1) for m in ("attn_q", "attn_v", "ffn_down")
                for s in "ab"}
    assert set(tensors) == expected
    hidden, inter, kv = base["hidden_size"], base["intermediate_size"], base["hidden_size"] // 2
    # ggml order (ne): lora_a = [in, r], lora_b = [r, out]
    assert list(tensors["blk.0.attn_q.weight.lora_a"].shape) == [hidden, 4]
    assert list(tensors["blk.0.attn_v.weight.lora_b"].shape) == [4, kv]
    assert list(tensors["blk.1.ffn_down.weight.lora_a"].shape) == [inter, 4]
    peft = load_file(str(adapter / "adapter_model.safetensors"))
    a = peft["base_model.model.model.layers.1.mlp.down_proj.lora_A.weight"]
    b = peft["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"]
    np.testing.assert_array_equal(np.asarray(tensors["blk.1.ffn_down.weight.lora_a"].data).reshape(a.shape), a)
    np.testing.assert_array_equal(np.asarray(tensors["blk.0.attn_q.weight.lora_b"].data).reshape(b.shape), b)
    assert len(f[SOURCE_KEY].contents()) == 64
    assert checked(adapter) == r.path
    # The adapter retrained: the old conversion is refused, not used.
    (adapter / "adapter_model.safetensors").write_bytes((adapter / "adapter_model.safetensors").read_bytes() + b" ")
    with pytest.raises(ModelNotAvailableError, match="convert-lora"):
        checked(adapter)


def test_lora_conversion_refuses_what_gguf_cannot_hold(tiny_folder, tmp_path):
    from rag.gguf_lora import checked, convert

    base = json.loads((tiny_folder / "config.json").read_text())
    dora = _tiny_adapter(tiny_folder, tmp_path / "dora", use_dora=True)
    with pytest.raises(InputError, match="plain LoRA"):
        convert(dora, base)
    with pytest.raises(InputError, match="not a peft LoRA folder"):
        convert(tmp_path, base)
    with pytest.raises(InputError, match="no GGUF architecture"):
        convert(_tiny_adapter(tiny_folder, tmp_path / "ok"), {**base, "model_type": "no-such-arch"})
    with pytest.raises(ModelNotAvailableError, match="convert-lora"):
        checked(tmp_path / "ok")


def test_llama_qk_permutation_applies_to_lora_b_rows():
    from rag.gguf_lora import _permute_rows

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4, 16)), rng.normal(size=(16, 4))  # 4 heads of 4 rows
    np.testing.assert_allclose(_permute_rows(b, 4) @ a, _permute_rows(b @ a, 4))
    assert not np.allclose(_permute_rows(b, 4), b)


def test_assemble_gguf_checks_magic_and_hash(tmp_path):
    from rag.models import assemble_gguf

    parts = [tmp_path / "p1", tmp_path / "p2"]
    parts[0].write_bytes(b"GG")
    parts[1].write_bytes(b"UFrest")
    out = assemble_gguf(parts, tmp_path / "m.gguf")
    assert out.read_bytes() == b"GGUFrest"
    with pytest.raises(ModelNotAvailableError, match="sha256"):
        assemble_gguf(parts, tmp_path / "x.gguf", expected_sha256="0" * 64)
    parts[0].write_bytes(b"XX")
    with pytest.raises(ModelNotAvailableError, match="bad magic"):
        assemble_gguf(parts, tmp_path / "y.gguf")
    assert not (tmp_path / "x.gguf").exists() and not (tmp_path / "y.gguf").exists()


# -- OpenAI-format streams ---------------------------------------------------------------------


def _chunk(text, logprob):
    return {"choices": [{"index": 0, "delta": {"content": text},
                         "logprobs": {"content": [{"token": text, "logprob": logprob}]}}]}


def test_stream_collector_text_probabilities_usage_and_streamed_text():
    seen: list[str] = []
    c = StreamCollector(seen.append)
    c.add({"choices": [{"index": 0, "delta": {"role": "assistant", "content": None}}]})
    c.add(_chunk("Start", -0.1))
    c.add(_chunk(" SGLT2i [1].", -0.5))
    c.add({"choices": [], "usage": {"prompt_tokens": 40, "completion_tokens": 3,
                                    "prompt_tokens_details": {"cached_tokens": 30}}})
    g = c.result()
    assert g.text == "Start SGLT2i [1]." and seen == ["Start", " SGLT2i [1]."]
    np.testing.assert_allclose(g.token_probs, [np.exp(-0.1), np.exp(-0.5)])
    assert (g.prompt_tokens, g.new_tokens, g.cached_tokens) == (40, 3, 30)
    assert 0 <= g.first_token_ms <= g.total_ms


def test_stream_collector_turns_a_server_error_into_a_generation_error():
    with pytest.raises(GenerationError, match="context size"):
        StreamCollector().add({"error": {"code": 400, "message": "the request exceeds the context size"}})
