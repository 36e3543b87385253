"""Scoring a causal LM on multiple-choice prompts.

:class:`LoglikScorer` (default): the log-likelihood of each option's continuation (" A", " B", ...)
after the prompt, in batches, with the key/value cache of the shared prefix (description + k-shot
exemplars, or the chat template's head) computed once per prefix and reused for every question that
starts with it. Deterministic (no sampling); per-option probabilities are the softmax of the option
log-likelihoods. Only the logits of the positions that are scored are materialised, never the full
(batch x length x vocabulary) tensor.

:func:`generate_answers` (alternative): greedy generation and :func:`parse_letter`; unparsable
replies are counted as parse failures (and as wrong).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from eval.mcq.readers import LETTERS


@dataclass(frozen=True)
class Prompt:
    prefix: str  # shared by many questions (may be empty)
    suffix: str  # this question
    continuations: tuple[str, ...]  # one per option


@dataclass
class _Row:
    q: int  # question index
    ids: list[int]  # suffix tokens (+ all but the last continuation token in the multi-token case)
    targets: list[tuple[int, list[int], list[int]]]  # (option, positions in ids, target token ids)


def softmax(logprobs: np.ndarray) -> np.ndarray:
    z = logprobs - logprobs.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=-1, keepdims=True))


class LoglikScorer:
    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 8, prefix_cache: bool = True,
                 add_special_tokens: bool = True):
        import torch

        self.model = model
        self.tok = tokenizer
        self.batch_size = max(1, batch_size)
        self.prefix_cache = prefix_cache
        self.add_special_tokens = add_special_tokens  # False when a chat template already wrote them
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None
                          else tokenizer.eos_token_id or 0)
        self.device = next(model.parameters()).device
        self._torch = torch
        self.prompt_tokens = 0  # tokens actually run through the model (cached prefixes count once)

    def _encode(self, text: str, first: bool) -> list[int]:
        return list(self.tok(text, add_special_tokens=first and self.add_special_tokens)["input_ids"])

    def _rows(self, q: int, prompt: Prompt, lead: list[int]) -> list[_Row]:
        suffix = lead + self._encode(prompt.suffix, first=not lead and not prompt.prefix)
        conts = [self._encode(c, first=False) for c in prompt.continuations]
        if any(not c for c in conts):
            raise ValueError(f"an option continuation encodes to no tokens: {prompt.continuations}")
        last = len(suffix) - 1
        if all(len(c) == 1 for c in conts):
            return [_Row(q, suffix, [(k, [last], c) for k, c in enumerate(conts)])]
        return [_Row(q, suffix + c[:-1], [(k, list(range(last, last + len(c))), c)]) for k, c in enumerate(conts)]

    def score(self, prompts: Sequence[Prompt], on_done: Callable[[int], None] | None = None) -> list[np.ndarray]:
        """Log-likelihood of each option of each prompt (summed over the continuation's tokens)."""
        torch = self._torch
        out = [np.full(len(p.continuations), np.nan) for p in prompts]
        remaining = [len(p.continuations) for p in prompts]
        groups: dict[str, list[int]] = {}
        for i, p in enumerate(prompts):
            groups.setdefault(p.prefix if self.prefix_cache else "", []).append(i)
        for prefix, members in groups.items():
            cache = None
            lead: list[int] = []
            if prefix and self.prefix_cache:
                pids = self._encode(prefix, first=True)
                with torch.inference_mode():
                    res = self.model(input_ids=torch.tensor([pids], device=self.device), use_cache=True)
                cache, plen = res.past_key_values, len(pids)
                self.prompt_tokens += plen
            else:
                plen = 0
            rows: list[_Row] = []
            for i in members:
                if not self.prefix_cache and prompts[i].prefix:
                    lead = self._encode(prompts[i].prefix, first=True)
                rows.extend(self._rows(i, prompts[i], lead))
            rows.sort(key=lambda r: -len(r.ids))  # similar lengths together: little padding
            for start in range(0, len(rows), self.batch_size):
                batch = rows[start:start + self.batch_size]
                for r, lp in zip(batch, self._forward(batch, cache, plen), strict=True):
                    for k, score in _target_scores(r, lp):
                        out[r.q][k] = score
                        remaining[r.q] -= 1
                        if remaining[r.q] == 0 and on_done is not None:
                            on_done(1)
        return out

    def _forward(self, batch: list[_Row], cache: Any, plen: int) -> list[dict[int, np.ndarray]]:
        """Per row: {position: log-softmax over the vocabulary} for the positions it scores."""
        torch = self._torch
        width = max(len(r.ids) for r in batch)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), plen + width), dtype=torch.long)
        mask[:, :plen] = 1
        for j, r in enumerate(batch):
            ids[j, : len(r.ids)] = torch.tensor(r.ids)
            mask[j, plen: plen + len(r.ids)] = 1
        keep = sorted({p for r in batch for _, pos, _ in r.targets for p in pos})
        kwargs: dict[str, Any] = {}
        if cache is not None:
            past = copy.deepcopy(cache)
            past.batch_repeat_interleave(len(batch))
            kwargs["past_key_values"] = past
        with torch.inference_mode():
            logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                use_cache=cache is not None, logits_to_keep=torch.tensor(keep), **kwargs).logits
            logp = torch.log_softmax(logits.float(), dim=-1).cpu().numpy()
        self.prompt_tokens += sum(len(r.ids) for r in batch)
        col = {p: c for c, p in enumerate(keep)}
        return [{p: logp[j, col[p]] for _, pos, _ in r.targets for p in pos} for j, r in enumerate(batch)]


def _target_scores(row: _Row, lp: dict[int, np.ndarray]) -> list[tuple[int, float]]:
    return [(k, float(sum(lp[p][t] for p, t in zip(pos, tgt, strict=True)))) for k, pos, tgt in row.targets]


_LEAD = re.compile(r"^\W{0,3}([A-J])(?:\W|$)")
_STATED = re.compile(r"answer(?: is)?\s*(?:option\s*)?[:\-]?\s*\(?([A-J])\b", re.I)


def parse_letter(text: str, n_options: int) -> int | None:
    """The option a generated reply chose: a leading letter ("B", "(B)", "B. ...") or "answer is B"."""
    valid = LETTERS[:n_options]
    for pattern in (_LEAD, _STATED):
        m = pattern.search(text.strip())
        if m and m.group(1).upper() in valid:
            return valid.index(m.group(1).upper())
    return None


def generate_answers(model: Any, tokenizer: Any, prompts: Sequence[Prompt], max_new_tokens: int = 16,
                     add_special_tokens: bool = True, on_done: Callable[[int], None] | None = None
                     ) -> tuple[list[str], int]:
    """Greedy replies, one prompt at a time; returns the replies and the prompt tokens processed."""
    import torch

    replies, tokens = [], 0
    device = next(model.parameters()).device
    for p in prompts:
        enc = tokenizer(p.prefix + p.suffix, return_tensors="pt", add_special_tokens=add_special_tokens)
        tokens += int(enc["input_ids"].shape[1])
        with torch.inference_mode():
            out = model.generate(**enc.to(device), max_new_tokens=max_new_tokens, do_sample=False, temperature=None,
                                 top_p=None, top_k=None,
                                 pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
        replies.append(str(tokenizer.decode(out[0][enc["input_ids"].shape[1]:], skip_special_tokens=True)).strip())
        if on_done is not None:
            on_done(1)
    return replies, tokens
