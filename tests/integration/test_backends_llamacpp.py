"""The llamacpp and openai backends on the real default model (the bundle's GGUF) and our adapter.

The openai backend talks over HTTP to a real local OpenAI-compatible server, started here:
``eval.llamacpp_server`` (llama.cpp's own server, through xllamacpp) with the same GGUF and LoRA.
Skipped, with the reason, when xllamacpp or the bundle is not installed.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rag.config import PROJECT_ROOT, load_config
from rag.errors import GenerationError, ModelNotAvailableError
from rag.generate import PromptSource, build_messages

pytestmark = pytest.mark.integration

xllamacpp = pytest.importorskip("xllamacpp", reason="xllamacpp is not installed: pip install 'cds-assistant[llamacpp]'")

ADAPTER = PROJECT_ROOT / "adapters" / "qwen2.5-coder-0.5b-cds"
SOURCES = [PromptSource(1, "Heart failure", "Treatment", "guideline", None,
                        "ACE inhibitors, beta-blockers, mineralocorticoid receptor antagonists and SGLT2 inhibitors "
                        "reduce mortality in heart failure with reduced ejection fraction.")]
MESSAGES = build_messages("Which drug classes reduce mortality in HFrEF?", SOURCES, None)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The bundle's GGUF (assembled in a temporary cache) and our adapter converted to a GGUF LoRA."""
    from rag.gguf_lora import convert
    from rag.models import resolve, resolve_gguf

    cfg = load_config()
    tmp = tmp_path_factory.mktemp("gguf")
    try:
        gguf, _ = resolve_gguf(cfg.generator.model, tmp)
        base = resolve(cfg.generator.model, PROJECT_ROOT / cfg.models.cache_dir).path / "config.json"
    except ModelNotAvailableError as e:
        pytest.skip(f"{e} (`make test` fetches it)")
    import json

    lora = convert(ADAPTER, json.loads(base.read_text()), tmp / "cds-lora.gguf").path
    return gguf, lora


@pytest.fixture(scope="module")
def backends(files: tuple[Path, Path]) -> Iterator[dict[str, object]]:
    from rag.llamacpp import LlamaCppBackend

    gguf, lora = files
    with_lora = LlamaCppBackend(gguf, "qwen", lora, str(ADAPTER), threads=1, n_ctx=2048)
    plain = LlamaCppBackend(gguf, "qwen", None, None, threads=1, n_ctx=2048)
    yield {"lora": with_lora, "plain": plain}


@pytest.fixture(scope="module")
def server(files: tuple[Path, Path]) -> Iterator[str]:
    gguf, lora = files
    proc = subprocess.Popen([sys.executable, "-m", "eval.llamacpp_server", "--gguf", str(gguf), "--lora", str(lora),
                             "--threads", "1", "--ctx", "2048"], cwd=PROJECT_ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None and proc.stdin is not None
    line = proc.stdout.readline()
    try:
        assert line.startswith("listening http://127.0.0.1:"), line
        yield line.split()[-1]
    finally:
        proc.stdin.close()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_llamacpp_streams_text_with_a_probability_per_token_and_reuses_the_prefix(backends):
    gen = backends["lora"]
    seen: list[str] = []
    first = gen.generate(MESSAGES, 12, on_text=seen.append)  # type: ignore[attr-defined]
    assert first.text and "".join(seen).strip() == first.text
    assert len(first.token_probs) >= first.new_tokens - 1 and all(0 < p <= 1 for p in first.token_probs)
    other = build_messages("What reduces mortality in heart failure?", SOURCES, None)
    again = gen.generate(other, 4)  # type: ignore[attr-defined]
    # The fixed prefix (system prompt, worked examples) came from the slot's cache, not recomputed.
    assert again.cached_tokens >= 250 and again.prompt_tokens > again.cached_tokens
    assert gen.count_tokens("heart failure") == 2  # type: ignore[attr-defined]


def test_the_converted_lora_changes_the_model_like_the_peft_adapter(backends):
    """With the GGUF LoRA the first-token probability is the peft adapter's, not the base model's.

    Measured with transformers + peft (float32, merged adapter) on this prompt: 0.891 for 'ACE';
    the base model without the adapter gives 0.98 (see BENCHMARKS.md, "Generation backends").
    """
    tuned = backends["lora"].generate(MESSAGES, 1)  # type: ignore[attr-defined]
    plain = backends["plain"].generate(MESSAGES, 1)  # type: ignore[attr-defined]
    assert abs(tuned.token_probs[0] - plain.token_probs[0]) > 0.02


def test_openai_backend_against_a_real_local_server(server, backends):
    from rag.openai_backend import OpenAIBackend

    client = OpenAIBackend(server, "cds", api_key="unused-locally")
    seen: list[str] = []
    out = client.generate(MESSAGES, 12, on_text=seen.append)
    assert out.text and "".join(seen).strip() == out.text
    assert out.token_probs and all(0 < p <= 1 for p in out.token_probs)
    assert out.prompt_tokens > 300 and out.first_token_ms <= out.total_ms
    # Same engine, same GGUF and LoRA, greedy: the same reply as in process.
    local = backends["lora"].generate(MESSAGES, 12)
    assert out.text == local.text
    batch = client.generate_batch([MESSAGES, MESSAGES], 3)
    assert len(batch) == 2 and batch[0].text == batch[1].text and batch[0].token_probs


def test_openai_backend_errors_are_one_line_generation_errors(server):
    from rag.openai_backend import OpenAIBackend

    with pytest.raises(GenerationError, match="HTTP 404"):
        OpenAIBackend(server + "/no-such-prefix", "cds").generate(MESSAGES, 2)
