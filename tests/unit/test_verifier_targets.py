"""LoRA targets of the verifier's base encoder (finetune.verifier.lora_targets): tiny random models, no weights."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("peft")


def _tiny(kind: str) -> Any:
    from transformers import AutoModelForSequenceClassification, BertConfig, MPNetConfig

    cfg_cls = {"bert": BertConfig, "mpnet": MPNetConfig}[kind]
    cfg = cfg_cls(vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                  num_labels=1)
    return AutoModelForSequenceClassification.from_config(cfg)


@pytest.mark.parametrize("kind", ["bert", "mpnet"])
def test_lora_wraps_the_encoder_projections_and_leaves_the_head_whole(kind: str) -> None:
    from peft import LoraConfig, get_peft_model

    from finetune.verifier import lora_targets

    model = _tiny(kind)
    peft = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=2, lora_alpha=4, target_modules=lora_targets(model)))
    wrapped = {n for n, m in peft.named_modules() if hasattr(m, "lora_A") and ".encoder.layer." in n}
    assert len(wrapped) == 2 * 6  # q, k, v, attention out, intermediate, output: in each of the 2 layers
    # (BERT's pooler dense is wrapped too, as the committed verifier adapter was trained)
    assert not any(hasattr(m, "lora_A") for n, m in peft.named_modules() if "classifier" in n)
    assert any(p.requires_grad for n, p in peft.named_parameters() if "classifier" in n)  # the head is trained


def test_another_architecture_is_refused_with_what_to_do() -> None:
    import torch

    from finetune.verifier import lora_targets
    from rag.errors import InputError

    with pytest.raises(InputError, match=r"verifier\.model"):
        lora_targets(torch.nn.Sequential(torch.nn.Linear(2, 2)))
