"""The ``openai`` backend: any OpenAI-compatible ``/v1/chat/completions`` server.

Production example: vLLM serving Llama-3.2-3B-Instruct with our LoRA adapter (README,
"Generation backends"). Requests stream (server-sent events) with ``logprobs: true``, so the
first token is timed and shown as it arrives and every emitted token comes with its
log-probability. The fixed prompt prefix is identical in every request, so servers with
prefix caching (vLLM ``--enable-prefix-caching``, llama.cpp's ``cache_prompt``) compute it once.

:class:`StreamCollector` turns OpenAI-format chunks into a :class:`Generation`; the in-process
llama.cpp backend produces the same chunks and uses it too.
"""

from __future__ import annotations

import json
import logging
import math
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from rag.errors import GenerationError
from rag.generate import Generation, stop_guard

log = logging.getLogger(__name__)


class StreamCollector:
    """Accumulates streamed chat-completion chunks: text, token probabilities, timings."""

    def __init__(self, on_text: Callable[[str], None] | None = None):
        self.t0 = time.perf_counter()
        self.first: float | None = None
        self.parts: list[str] = []
        self.probs: list[float] = []
        self.usage: dict[str, Any] = {}
        self.timings: dict[str, Any] = {}
        self.finish_reason: str | None = None
        self._on_text = on_text

    def add(self, chunk: dict[str, Any]) -> None:
        if "error" in chunk:
            err = chunk["error"]
            raise GenerationError(f"the generation server answered an error: "
                                  f"{err.get('message', err) if isinstance(err, dict) else err}")
        self.usage = chunk.get("usage") or self.usage
        self.timings = chunk.get("timings") or self.timings
        for choice in chunk.get("choices") or []:
            self.finish_reason = choice.get("finish_reason") or self.finish_reason
            delta = choice.get("delta") or choice.get("message") or {}
            text = delta.get("content") or ""
            logprobs = (choice.get("logprobs") or {}).get("content") or []
            if (text or logprobs) and self.first is None:
                self.first = time.perf_counter()
            self.probs.extend(math.exp(float(lp["logprob"])) for lp in logprobs)
            if text:
                self.parts.append(text)
                if self._on_text is not None:
                    self._on_text(text)

    def result(self, prompt_tokens: int | None = None) -> Generation:
        total = (time.perf_counter() - self.t0) * 1000
        cached = self.timings.get("cache_n") or (self.usage.get("prompt_tokens_details") or {}).get("cached_tokens")
        return Generation(text="".join(self.parts).strip(), token_probs=self.probs,
                          prompt_tokens=int(self.usage.get("prompt_tokens") or prompt_tokens or 0),
                          new_tokens=int(self.usage.get("completion_tokens") or len(self.probs)),
                          first_token_ms=((self.first - self.t0) * 1000) if self.first is not None else total,
                          total_ms=total, cached_tokens=int(cached or 0))


def chat_request(messages: list[dict[str, str]], max_new_tokens: int, temperature: float) -> dict[str, Any]:
    """The request body every backend sends: greedy unless ``temperature`` > 0, log-probs on, streamed."""
    body: dict[str, Any] = {"messages": messages, "max_tokens": max_new_tokens, "temperature": temperature,
                            "logprobs": True, "top_logprobs": 1, "stream": True,
                            "stream_options": {"include_usage": True}}
    if temperature == 0:
        body["top_p"] = 1.0
    return body


class OpenAIBackend:
    """Chat completions from an OpenAI-compatible server (``generator.openai_url``/``openai_model``)."""

    backend = "openai"

    def __init__(self, url: str, model: str, api_key: str | None = None, timeout_s: float = 120.0,
                 count_tokens: Callable[[str], int] | None = None, prefix_cache: bool = True, parallel: int = 4):
        self.url = url.rstrip("/")
        if not self.url.endswith("/v1"):
            self.url += "/v1"
        self.model_id = model
        self.adapter: str | None = None  # the server applies it: vLLM names an adapter as a model
        self._key = api_key
        self.timeout_s = timeout_s
        self.prefix_cache = prefix_cache
        self.parallel = parallel
        self._count = count_tokens
        if count_tokens is None:
            log.warning("no local tokenizer for the served model: source budgets use ~3 characters per token")

    @property
    def info(self) -> dict[str, str]:
        return {"backend": self.backend, "dtype": "server", "url": self.url}

    def count_tokens(self, text: str) -> int:
        # Without the model's tokenizer, 3 characters per token over-counts English text (~4 per
        # token), so the sources still fit the budget.
        return self._count(text) if self._count is not None else math.ceil(len(text) / 3)

    def generate(self, messages: list[dict[str, str]], max_new_tokens: int, temperature: float = 0.0,
                 on_text: Callable[[str], None] | None = None) -> Generation:
        body = chat_request(messages, max_new_tokens, temperature)
        body["model"] = self.model_id
        # llama.cpp's switch (on by default there); vLLM caches prefixes server-wide
        # (--enable-prefix-caching) and ignores the extra field.
        body["cache_prompt"] = self.prefix_cache
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        req = urllib.request.Request(f"{self.url}/chat/completions", data=json.dumps(body).encode(), headers=headers,
                                     method="POST")
        out = StreamCollector(on_text)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                for raw in resp:
                    line = raw.decode("utf-8", errors="replace").strip()
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    out.add(json.loads(data))
        except urllib.error.HTTPError as e:
            detail = e.read(500).decode("utf-8", errors="replace").replace("\n", " ")
            raise GenerationError(f"the generation server {self.url} answered HTTP {e.code} ({detail[:200]}); check "
                                  "generator.openai_url, generator.openai_model and the API key variable") from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise GenerationError(f"cannot reach the generation server {self.url} ({reason}); start it or fix "
                                  "generator.openai_url") from None
        except ValueError as e:
            raise GenerationError(f"the generation server {self.url} sent a malformed stream ({e})") from None
        if not out.probs and out.parts:
            raise GenerationError(f"the generation server {self.url} returned no token log-probabilities; the "
                                  "confidence score needs them (use a server that supports logprobs)")
        return out.result()

    def generate_batch(self, batch: list[list[dict[str, str]]], max_new_tokens: int,
                       should_stop: Callable[[], bool] | None = None) -> list[Generation]:
        """Concurrent requests: the server batches them (continuous batching in vLLM and llama.cpp)."""
        on_text = stop_guard(should_stop)
        with ThreadPoolExecutor(max(1, min(self.parallel, len(batch)))) as pool:
            return list(pool.map(lambda m: self.generate(m, max_new_tokens, on_text=on_text), batch))
