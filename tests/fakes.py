"""Test doubles built from real parts: a hash embedder and a tiny random Qwen2 chat model."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rag.models import EmbedderSpec

HASH_SPEC = EmbedderSpec("test/hash-embedder", max_length=512, sim_floor=0.05, sim_ceiling=0.6,
                         support_threshold=0.3)


class HashEmbedder:
    """Bag of hashed lower-cased words, L2-normalised: deterministic, instant, lexical."""

    spec = HASH_SPEC

    def __init__(self, dim: int = 256):
        self._dim = dim

    @property
    def model_id(self) -> str:
        return self.spec.model_id

    @property
    def dim(self) -> int:
        return self._dim

    def tokenize(self, text: str) -> list[str]:
        return text.split()

    def _vec(self, text: str) -> np.ndarray:
        v = np.zeros(self._dim, dtype=np.float32)
        for w in re.findall(r"[a-z0-9]+", text.lower()):
            v[int(hashlib.md5(w.encode()).hexdigest(), 16) % self._dim] += 1.0
        n = np.linalg.norm(v)
        return v / n if n else v

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([self._vec(t) for t in texts]) if texts else np.zeros((0, self._dim), np.float32)

    def encode_passages(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        return self.encode_queries(texts)


CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_qwen2(folder: Path, words: Sequence[str], hidden: int = 32, intermediate: int = 64) -> Path:
    """A 2-layer random Qwen2 with a word-level tokenizer: the real architecture, tiny and offline."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    specials = ["<unk>", "<pad>", "<|im_start|>", "<|im_end|>"]
    vocab = {t: i for i, t in enumerate(specials + sorted(set(words) | set("[]0123456789.,:")))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>",
                                   eos_token="<|im_end|>", additional_special_tokens=specials[2:])
    fast.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=len(vocab), hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096,
                      eos_token_id=vocab["<|im_end|>"], pad_token_id=vocab["<pad>"], tie_word_embeddings=True)
    Qwen2ForCausalLM(cfg).save_pretrained(str(folder))
    fast.save_pretrained(str(folder))
    return folder


_WORD = re.compile(r"[a-z0-9]+(?:\.[0-9]+)?")
_STOP = frozenset("a an and are as at be by can do does for from has have how in is it of on or the this to was what "
                  "which who with question claim".split())


def _content(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP}


class LexicalVerifier:
    """Verifier double: word overlap instead of the tuned cross-encoder (same interface, instant).

    answerability = share of the question's content words in the passage; support = share of the
    claim's content words in the passage, 0 when a number of the claim is not in the passage.
    """

    model_id = "test/lexical-verifier"

    def __init__(self) -> None:
        self.calls: list[int] = []

    def answerability(self, question: str, passages: Sequence[str]) -> np.ndarray:
        self.calls.append(len(passages))
        q = _content(question)
        return np.array([len(q & _content(p)) / max(len(q), 1) for p in passages], dtype=np.float32)

    def support(self, question: str, claims: Sequence[str], passages: Sequence[str]) -> np.ndarray:
        self.calls.append(len(claims))
        out = []
        for c, p in zip(claims, passages, strict=True):
            cw, pw = _content(c), _content(p)
            nums = {w for w in cw if w[0].isdigit()}
            out.append(0.0 if nums - pw else len(cw & pw) / max(len(cw), 1))
        return np.array(out, dtype=np.float32)


class ScriptedGenerator:
    """Generator double that replies with a fixed text (whatever the prompt), for pipeline tests; given a
    list, the n-th call gets the n-th reply (the last one after that). The prompts it got are kept."""

    model_id = "test/scripted"
    adapter = None

    def __init__(self, reply: str | list[str]):
        self.replies = [reply] if isinstance(reply, str) else list(reply)
        self.calls = 0
        self.prompts: list[Any] = []

    @property
    def reply(self) -> str:
        return self.replies[0]

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def _gen(self, messages: Any = None) -> Any:
        from rag.generate import Generation

        text = self.replies[min(self.calls, len(self.replies) - 1)]
        self.calls += 1
        self.prompts.append(messages)
        return Generation(text, [0.9] * 8, 100, 8, 1.0, 2.0)

    def generate(self, messages: Any, max_new_tokens: int, temperature: float = 0.0, on_text: Any = None) -> Any:
        return self._gen(messages)

    def generate_batch(self, batch: Any, max_new_tokens: int, should_stop: Any = None) -> list[Any]:
        return [self._gen(m) for m in batch]
