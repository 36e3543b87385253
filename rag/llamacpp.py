"""The ``llamacpp`` backend: the GGUF file itself through llama.cpp, in this process (xllamacpp).

No dequantised copy: llama.cpp memory-maps the quantised GGUF (0.5 GB for the default model
against 2.5 GB in float32). Our adapter is loaded as a GGUF LoRA (``python app.py models
convert-lora``). llama.cpp's server engine runs inside the process: requests go to it as
OpenAI-format chat completions (streamed, with log-probabilities), and ``cache_prompt`` keeps
the previous prompt's key/value cache in the slot, so the fixed prefix (system prompt and
worked examples) is not computed again. It also listens on a loopback port, which gives the
tokenizer endpoint (``/tokenize``) used to budget sources.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from rag.errors import GenerationError, ModelNotAvailableError
from rag.generate import Generation, stop_guard
from rag.openai_backend import StreamCollector, chat_request

log = logging.getLogger(__name__)


def available() -> bool:
    try:
        import xllamacpp  # noqa: F401
    except ImportError:
        return False
    return True


class LlamaCppBackend:
    backend = "llamacpp"

    def __init__(self, gguf: Path, model_id: str, lora_gguf: Path | None = None, adapter: str | None = None,
                 threads: int = 1, n_ctx: int = 4096, parallel: int = 1, prefix_cache: bool = True,
                 verbosity: int = 0):
        try:
            import xllamacpp as xlc
        except ImportError:
            raise ModelNotAvailableError("generator.backend llamacpp needs xllamacpp: pip install 'cds-assistant"
                                         "[llamacpp]' (or pip install xllamacpp)") from None
        self.model_id = model_id
        self.adapter = adapter
        self.gguf = gguf
        self.lora_gguf = lora_gguf
        self.prefix_cache = prefix_cache
        self.parallel = parallel
        self.threads = threads
        p: Any = xlc.CommonParams()
        p.model.path = str(gguf)
        p.n_parallel = parallel
        p.n_ctx = n_ctx * parallel  # llama.cpp splits the context among its slots
        p.cpuparams.n_threads = threads
        p.cpuparams_batch.n_threads = threads
        p.hostnames = ["127.0.0.1"]  # loopback only: the tokenizer endpoint, never exposed
        p.port = 0
        p.verbosity = verbosity
        if lora_gguf is not None:
            p.lora_adapters = [xlc.CommonAdapterLoraInfo(str(lora_gguf), 1.0)]
        try:
            self.server: Any = xlc.Server(p)
        except Exception as e:  # the binding raises plain RuntimeErrors for unreadable files
            raise ModelNotAvailableError(f"llama.cpp could not load {gguf}"
                                         f"{' with ' + str(lora_gguf) if lora_gguf else ''} ({str(e)[:160]}); "
                                         "check generator.gguf / re-run `python app.py models convert-lora`") from None
        self.url = str(self.server.listening_address).rstrip("/")

    @property
    def info(self) -> dict[str, str]:
        return {"backend": self.backend, "dtype": "gguf", "gguf": self.gguf.name}

    def count_tokens(self, text: str) -> int:
        req = urllib.request.Request(f"{self.url}/tokenize", method="POST",
                                     data=json.dumps({"content": text, "add_special": False}).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return len(json.loads(resp.read())["tokens"])
        except (OSError, ValueError, KeyError) as e:
            raise GenerationError(f"the llama.cpp tokenizer endpoint failed ({e})") from None

    def generate(self, messages: list[dict[str, str]], max_new_tokens: int, temperature: float = 0.0,
                 on_text: Callable[[str], None] | None = None) -> Generation:
        body = chat_request(messages, max_new_tokens, temperature)
        body["cache_prompt"] = self.prefix_cache
        if temperature == 0:
            body["top_k"] = 1  # greedy, as in the transformers backend
        out = StreamCollector(on_text)
        # The binding calls back with each chunk (a dict) and returns when the reply is complete;
        # an exception raised in the callback would be lost in C++, so errors are kept and re-raised.
        failed: list[BaseException] = []

        def chunk(c: Any) -> bool:
            try:
                out.add(c if isinstance(c, dict) else json.loads(c))
            except BaseException as e:
                failed.append(e)
                return True  # stop the stream
            return False

        result = self.server.handle_chat_completions(body, chunk)
        if failed:
            raise failed[0]
        if isinstance(result, dict) and "error" in result:
            out.add(result)
        return out.result()

    def generate_batch(self, batch: list[list[dict[str, str]]], max_new_tokens: int,
                       should_stop: Callable[[], bool] | None = None) -> list[Generation]:
        """Concurrent requests share llama.cpp's slots (continuous batching) when ``generator.parallel`` > 1."""
        on_text = stop_guard(should_stop)
        with ThreadPoolExecutor(max(1, min(self.parallel, len(batch)))) as pool:
            return list(pool.map(lambda m: self.generate(m, max_new_tokens, on_text=on_text), batch))
