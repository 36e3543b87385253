"""Which linear layers LoRA adapts, resolved from the loaded model rather than assumed.

Architectures name their projections differently: Llama and Qwen2 have separate
``q_proj/k_proj/v_proj/o_proj`` and ``gate_proj/up_proj/down_proj``; Phi-3 fuses them into
``qkv_proj`` and ``gate_up_proj``. A fixed list written for one layout silently matches only
part of another (a Phi-3 project adapted ``o_proj`` alone), so the names are read from the
modules the model actually has, and a run that finds no attention or no MLP projection stops.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

ATTENTION = ("q_proj", "k_proj", "v_proj", "qkv_proj", "o_proj", "query_key_value", "c_attn", "c_proj",
             "Wqkv", "out_proj", "dense")
MLP = ("gate_proj", "up_proj", "down_proj", "gate_up_proj", "fc1", "fc2", "c_fc", "w1", "w2", "w3",
       "dense_h_to_4h", "dense_4h_to_h")


def _is_linear(module: Any) -> bool:
    import torch

    if isinstance(module, torch.nn.Linear):
        return True
    # bitsandbytes' Linear4bit / Linear8bitLt subclass nn.Linear, transformers' Conv1D (GPT-2) does not.
    return type(module).__name__ in ("Conv1D", "Linear4bit", "Linear8bitLt")


def linear_names(model: Any) -> Counter[str]:
    """Leaf names of the linear layers inside the transformer blocks (not the embeddings or LM head)."""
    out: Counter[str] = Counter()
    for name, module in model.named_modules():
        dotted = f".{name}."
        if _is_linear(module) and any(b in dotted for b in (".layers.", ".h.", ".blocks.")):
            out[name.rsplit(".", 1)[-1]] += 1
    return out


def resolve_target_modules(model: Any, requested: list[str] | str = "auto") -> list[str]:
    """The projection names to adapt: every attention and MLP projection (``auto``), or a checked list."""
    from rag.errors import InputError

    present = linear_names(model)
    if requested != "auto":
        wanted = list(requested)
        unknown = [n for n in wanted if n not in present]
        if unknown:
            raise InputError(f"train.target_modules {unknown} not in this model; its block linears are "
                             f"{sorted(present)} (or use target_modules: auto)")
        return wanted
    attn = [n for n in ATTENTION if n in present]
    mlp = [n for n in MLP if n in present]
    if not attn or not mlp:
        raise InputError(f"cannot find attention and MLP projections among {sorted(present)}; set "
                         "train.target_modules to the names to adapt")
    return attn + mlp


def trainable_parameters(model: Any) -> tuple[int, int]:
    """(trainable, total) parameter counts; 4-bit weights count as their unpacked size."""
    trainable = total = 0
    for p in model.parameters():
        n = p.numel()
        if type(p).__name__ == "Params4bit":
            n *= 2  # two 4-bit values per stored byte
        total += n
        if p.requires_grad:
            trainable += n
    return trainable, total
