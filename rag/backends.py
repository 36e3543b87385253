"""Generation backends behind one interface (``generator.backend``).

- ``transformers`` (:class:`rag.generate.Generator`): training, evaluation, GPUs; the HF folder,
  float32 or bfloat16 (``dtype: auto`` picks bfloat16 where the CPU has BF16 instructions).
- ``llamacpp`` (:class:`rag.llamacpp.LlamaCppBackend`): the GGUF file itself, quantised, through
  llama.cpp in this process (``pip install xllamacpp``); our adapter as a GGUF LoRA.
- ``openai`` (:class:`rag.openai_backend.OpenAIBackend`): any OpenAI-compatible server
  (``/v1/chat/completions``), e.g. vLLM serving the production model with our adapter.

Every backend returns the probability of each token it emitted (the confidence score uses
them) and reuses the fixed prompt prefix (system prompt and worked examples) across requests.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from rag.errors import InputError, ModelNotAvailableError

if TYPE_CHECKING:
    from rag.config import GeneratorConfig
    from rag.generate import Generation

log = logging.getLogger(__name__)


@runtime_checkable
class Backend(Protocol):
    """What the assistant, the server and the benchmarks need from a generator."""

    model_id: str
    adapter: str | None

    @property
    def info(self) -> dict[str, str]:
        """``backend`` and the numeric format (``dtype``), recorded with every answer."""
        ...

    def count_tokens(self, text: str) -> int: ...

    def generate(self, messages: list[dict[str, str]], max_new_tokens: int, temperature: float = 0.0,
                 on_text: Callable[[str], None] | None = None) -> Generation:
        """Greedy (or sampled) reply; ``on_text`` gets the text as it is decoded and may raise to stop it. A
        backend may also call ``on_text("")`` while it reads a long prompt, so that a stop is not delayed
        by the whole prefill; callers ignore the empty text."""
        ...

    def generate_batch(self, batch: list[list[dict[str, str]]], max_new_tokens: int,
                       should_stop: Callable[[], bool] | None = None) -> list[Generation]:
        """Greedy replies; ``should_stop`` (polled while decoding) ends the batch early when it says so."""
        ...


def cpu_threads() -> int:
    """Cores this process may run on (``taskset`` is respected)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _adapter_dir(cfg: GeneratorConfig) -> Path | None:
    from rag.config import resolve_path

    adapter = resolve_path(cfg.adapter) if cfg.adapter else None
    if adapter is not None and not (adapter / "adapter_config.json").exists():
        raise InputError(f"adapter folder {adapter} has no adapter_config.json; pass a peft adapter folder")
    return adapter


def load_backend(cfg: GeneratorConfig, cache_dir: Path) -> Backend:
    """The configured generation backend, loaded (models read once, servers connected)."""
    from rag.models import resolve

    if cfg.backend == "transformers":
        from rag.generate import Generator

        resolved = resolve(cfg.model, cache_dir)
        return Generator(resolved.path, resolved.model_id, _adapter_dir(cfg), cfg.dtype, cfg.merge_adapter,
                         prefix_cache=cfg.prefix_cache)
    if cfg.backend == "llamacpp":
        from rag import gguf_lora
        from rag.config import resolve_path
        from rag.llamacpp import LlamaCppBackend
        from rag.models import resolve_gguf

        gguf, model_id = resolve_gguf(cfg.model, cache_dir, resolve_path(cfg.gguf) if cfg.gguf else None)
        adapter = _adapter_dir(cfg)
        lora = gguf_lora.checked(adapter, resolve_path(cfg.adapter_gguf) if cfg.adapter_gguf else None) \
            if adapter is not None else None
        n_ctx = cfg.max_context_tokens + cfg.max_new_tokens + 1536  # sources + answer + prefix, question, template
        return LlamaCppBackend(gguf, model_id, lora, str(adapter) if adapter else None, threads=cfg.threads or
                               cpu_threads(), n_ctx=n_ctx, parallel=cfg.parallel, prefix_cache=cfg.prefix_cache)
    if cfg.backend == "openai":
        from rag.openai_backend import OpenAIBackend

        assert cfg.openai_url and cfg.openai_model  # the config validator guarantees both
        return OpenAIBackend(cfg.openai_url, cfg.openai_model, api_key=os.environ.get(cfg.openai_api_key_env),
                             timeout_s=cfg.timeout_s, count_tokens=_local_counter(cfg.model, cache_dir),
                             prefix_cache=cfg.prefix_cache)
    raise InputError(f"unknown generator.backend '{cfg.backend}'; use transformers, llamacpp or openai")


def _local_counter(ref: str, cache_dir: Path) -> Callable[[str], int] | None:
    """The served model's tokenizer when ``generator.model`` is available here (tokenizer only, no weights)."""
    from rag.models import resolve

    try:
        folder = resolve(ref, cache_dir).path
    except (ModelNotAvailableError, InputError):
        return None
    from transformers import AutoTokenizer

    tok: Any = AutoTokenizer.from_pretrained(str(folder))
    return lambda text: len(tok.encode(text, add_special_tokens=False))
