"""Log-likelihood scoring on a tiny random Qwen2: cached prefix == plain forward, batching, multi-token options."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from eval.mcq.prompts import PromptTemplate, prefix_body, render, suffix_body
from eval.mcq.readers import read_mmlu
from eval.mcq.scoring import LoglikScorer, Prompt, generate_answers, parse_letter, softmax

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "mcq"
WORDS = ("A B C D E Answer Question Choices Context The following are multiple choice questions with answers about "
         "anatomy clinical knowledge Which bone protects the brain Skull Femur Rib Pelvis heart has how many chambers "
         "in humans Two Three Four Five kneecap is also called Patella Tibia Ulna Sternum lungs sit Abdomen Thorax "
         "( )").split()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.fakes import build_tiny_qwen2

    folder = build_tiny_qwen2(tmp_path_factory.mktemp("tiny-mcq"), WORDS)
    return AutoModelForCausalLM.from_pretrained(str(folder)).eval(), AutoTokenizer.from_pretrained(str(folder))


def _prompts() -> list[Prompt]:
    ds = read_mmlu(FIX / "mmlu" / "val", ["anatomy"])
    shots = read_mmlu(FIX / "mmlu" / "dev", ["anatomy"]).items
    t = PromptTemplate("mmlu", k_shot=2, chat_template=False, rag=False)
    out = []
    for it in ds.items:
        pre, suf = render(prefix_body(t, it.subject, shots), suffix_body(t, it), None)
        out.append(Prompt(pre, suf, tuple(t.continuation(x) for x in "ABCD")))
    return out


def _brute(model: Any, tok: Any, p: Prompt) -> np.ndarray:
    """One unbatched forward over prefix + suffix + continuation per option: the definition."""
    import torch

    ctx = tok(p.prefix)["input_ids"] + tok(p.suffix, add_special_tokens=False)["input_ids"]
    out = []
    for cont in p.continuations:
        c = tok(cont, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            lp = torch.log_softmax(model(torch.tensor([ctx + c])).logits[0].float(), -1)
        out.append(sum(float(lp[len(ctx) - 1 + j, t]) for j, t in enumerate(c)))
    return np.array(out)


def test_cached_batched_scores_equal_the_plain_forward(tiny: Any) -> None:
    model, tok = tiny
    prompts = _prompts()
    assert prompts[0].prefix.startswith("The following are multiple choice questions") and prompts[0].prefix
    expected = np.stack([_brute(model, tok, p) for p in prompts])
    cached = LoglikScorer(model, tok, batch_size=2, prefix_cache=True)
    done: list[int] = []
    got = np.stack(cached.score(prompts, on_done=done.append))
    assert sum(done) == len(prompts)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    plain = np.stack(LoglikScorer(model, tok, batch_size=1, prefix_cache=False).score(prompts))
    np.testing.assert_allclose(plain, expected, atol=1e-4)
    # The shared prefix was run once, not once per question.
    uncached = LoglikScorer(model, tok, batch_size=1, prefix_cache=False)
    uncached.score(prompts)
    assert cached.prompt_tokens < uncached.prompt_tokens
    p = softmax(got)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-6)


def test_multi_token_continuations(tiny: Any) -> None:
    model, tok = tiny
    prompts = [Prompt(p.prefix, p.suffix, tuple(f" ( {x} )" for x in "ABCD")) for p in _prompts()]
    assert len(tok(" ( A )", add_special_tokens=False)["input_ids"]) == 3
    got = np.stack(LoglikScorer(model, tok, batch_size=3).score(prompts))
    np.testing.assert_allclose(got, np.stack([_brute(model, tok, p) for p in prompts]), atol=1e-4)


def test_chat_template_split_keeps_the_shared_head(tiny: Any) -> None:
    _, tok = tiny
    t = PromptTemplate("qa", 0, True, False)

    def chat(text: str) -> str:
        return str(tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                           add_generation_prompt=True))

    ds = read_mmlu(FIX / "mmlu" / "val", ["anatomy"])
    pre, suf = render(prefix_body(t, "anatomy", []), suffix_body(t, ds.items[0]), chat)
    assert pre == "<|im_start|>user\n" and suf.endswith("Answer:<|im_end|>\n<|im_start|>assistant\n")
    assert t.continuation("B") == "B" and PromptTemplate("qa", 0, False, False).continuation("B") == " B"


@pytest.mark.parametrize(("reply", "expected"), [
    ("B", 1), (" (C) because", 2), ("D. Diaphragm", 3), ("The answer is A.", 0), ("answer: (b)", 1),
    ("Because of the lungs", None), ("E", None), ("", None),
])
def test_parse_letter(reply: str, expected: int | None) -> None:
    assert parse_letter(reply, 4) == expected


def test_generate_answers_runs(tiny: Any) -> None:
    model, tok = tiny
    replies, tokens = generate_answers(model, tok, _prompts()[:2], max_new_tokens=3)
    assert len(replies) == 2 and tokens > 0
