"""LoRA / QLoRA supervised fine-tuning of the generator with TRL's SFTTrainer.

``python app.py --config configs/train-qwen0.5b-cpu.yaml train [--max-steps N] [--resume]``

- The base model is ``generator.model`` (hub id, local HF folder, or offline bundle).
- ``train.quantization: nf4`` (default) is QLoRA: 4-bit NF4 weights with double quantisation
  and bf16 compute; ``none`` is plain LoRA on a dense model (faster on CPUs, measured in
  DESIGN.md). LoRA targets every attention and MLP projection the loaded model has.
- Data: ``train.jsonl``/``val.jsonl`` from ``python app.py train data``, prompt/completion
  pairs, so the loss is on the assistant's reply only.
- Checkpoints go to ``train.run_dir`` every ``save_steps``; ``--resume`` continues from the last.
- The adapter, effective config and a training card (loss curve PNG, throughput, peak memory,
  hardware, git commit, base model hash, dataset card) go to ``train.output_dir``.

CPU trap (DESIGN.md): an inference pass on a 4-bit model before training corrupts LoRA
gradients on AVX512-BF16 CPUs, so with nf4 on CPU no evaluation runs before the first step.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import yaml

from finetune.data import fingerprint, read_examples
from finetune.targets import resolve_target_modules, trainable_parameters
from rag.config import PROJECT_ROOT, AppConfig, TrainConfig, resolve_path
from rag.errors import InputError

log = logging.getLogger(__name__)


def select(rows: list[dict[str, Any]], mix: dict[str, int], seed: int) -> list[dict[str, Any]]:
    """A seeded sample with ``mix[part]`` examples per part (``<part>_withheld`` counted apart)."""
    by_part: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_part[_part(r)].append(r)
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    for part in sorted(by_part):
        items = by_part[part]
        n = mix.get(part, len(items))
        out += rng.sample(items, min(n, len(items)))
    rng.shuffle(out)
    return out


def stratified(rows: list[dict[str, Any]], n: int, seed: int, skip: frozenset[str] = frozenset()
               ) -> list[dict[str, Any]]:
    """About ``n`` validation examples spread evenly over the parts (``skip``: mix keys the recipe trains none of,
    left out of validation too)."""
    rows = [r for r in rows if _part(r) not in skip]
    parts = sorted({r["part"] for r in rows} - skip)
    if not parts or n <= 0:
        return []
    per = max(1, n // len(parts))
    withheld = {f"{p}_withheld": per // 3 for p in parts if p.startswith("grounded")}
    return select(rows, {p: per for p in parts} | withheld, seed)


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _git_commit() -> str:
    """HEAD, with "+dirty" when tracked files differ from it (the card must not claim a commit it was not)."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--"], cwd=PROJECT_ROOT, capture_output=True,
                               timeout=10).returncode == 1
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return f"{head}+dirty" if head and dirty else head


def _hardware(device: str) -> dict[str, Any]:
    import torch

    hw: dict[str, Any] = {"device": device, "cpu": platform.processor() or platform.machine(),
                          "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                          "python": platform.python_version(), "torch": torch.__version__}
    if device == "cuda":
        hw["gpu"] = torch.cuda.get_device_name(0)
    return hw


def _peak_memory_mb(device: str) -> dict[str, float]:
    import torch

    out = {"process_rss_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device == "cuda":
        out["gpu_peak_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def load_base(path: Path, cfg: TrainConfig, device: str) -> Any:
    """The base model, 4-bit (QLoRA) or dense, ready for k-bit training; nothing is run on it."""
    import torch
    from transformers import AutoModelForCausalLM

    dtype = getattr(torch, cfg.compute_dtype)
    if cfg.quantization == "nf4":
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise InputError("QLoRA needs bitsandbytes: pip install 'bitsandbytes>=0.50' (or set "
                             "train.quantization: none)") from None
        from peft import prepare_model_for_kbit_training
        from transformers import BitsAndBytesConfig

        q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=dtype)
        model = AutoModelForCausalLM.from_pretrained(str(path), quantization_config=q, dtype=dtype,
                                                     device_map={"": 0} if device == "cuda" else {"": "cpu"})
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
        if device == "cuda":
            model.to(torch.device("cuda"))  # type: ignore[arg-type]  # transformers types .to oddly
        if cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.enable_input_require_grads()
    model.config.use_cache = False  # incompatible with gradient checkpointing; re-enabled by inference code
    return model


def add_lora(model: Any, cfg: TrainConfig) -> tuple[Any, list[str]]:
    from peft import LoraConfig, get_peft_model

    targets = resolve_target_modules(model, cfg.target_modules)
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=targets, bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, lora), targets


def continue_lora(model: Any, adapter_dir: Path) -> tuple[Any, list[str]]:
    """Load a trained adapter as trainable, for a second training stage on top of the first."""
    from peft import PeftModel

    if not (adapter_dir / "adapter_config.json").is_file():
        raise InputError(f"train.init_adapter: {adapter_dir} has no adapter_config.json; point it at a trained "
                         "adapter directory")
    model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=True)
    return model, sorted(model.peft_config["default"].target_modules)


def sft_args(cfg: TrainConfig, run_dir: Path, device: str, n_train: int, with_eval: bool) -> Any:
    """The ``SFTConfig`` every run uses (also the GPU benchmark, so its numbers are this recipe's).

    Paged 8-bit AdamW on CUDA (optimizer state pages to host memory instead of failing on spikes),
    plain AdamW on CPU where bitsandbytes' paged optimizers do not run.
    """
    from trl import SFTConfig

    optim = cfg.optimizer
    if optim == "auto":
        optim = "paged_adamw_8bit" if device == "cuda" else "adamw_torch"
    samples_per_step = cfg.batch_size * cfg.grad_accum
    steps = cfg.max_steps if cfg.max_steps > 0 else max(1, int(n_train * cfg.epochs / samples_per_step))
    return SFTConfig(
        output_dir=str(run_dir), per_device_train_batch_size=cfg.batch_size, per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum, learning_rate=cfg.learning_rate, lr_scheduler_type="cosine",
        warmup_steps=max(1, round(steps * cfg.warmup_ratio)), weight_decay=cfg.weight_decay,
        num_train_epochs=cfg.epochs, max_steps=cfg.max_steps, logging_steps=cfg.logging_steps,
        eval_strategy="steps" if with_eval else "no", eval_steps=cfg.eval_steps, save_strategy="steps",
        save_steps=cfg.save_steps, save_total_limit=2, seed=cfg.seed, data_seed=cfg.seed,
        bf16=(device == "cuda" and cfg.compute_dtype == "bfloat16") or cfg.autocast_bf16, use_cpu=device == "cpu",
        gradient_checkpointing=cfg.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False}, optim=optim, max_length=cfg.max_length,
        completion_only_loss=True, packing=False, report_to="none", disable_tqdm=True,
        dataloader_num_workers=0, remove_unused_columns=True,
    )


class _Progress:
    """A tqdm bar per optimizer step with loss, samples/s and ETA; one log line per logging step."""

    def __init__(self, samples_per_step: int, quiet: bool):
        from transformers import TrainerCallback

        outer = self

        class CB(TrainerCallback):
            def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                from tqdm import tqdm

                outer.t0 = time.perf_counter()
                outer.step0 = state.global_step
                outer.bar = None if quiet else tqdm(total=state.max_steps, initial=state.global_step,
                                                    desc="training", unit="step", file=sys.stderr)

            def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                if outer.bar is not None:
                    outer.bar.update(1)
                    done = state.global_step - outer.step0
                    rate = done * samples_per_step / max(time.perf_counter() - outer.t0, 1e-9)
                    outer.bar.set_postfix(loss=f"{outer.loss:.3f}", samples_s=f"{rate:.2f}")

            def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
                logs = logs or {}
                if "loss" in logs:
                    outer.loss = float(logs["loss"])
                if "eval_loss" in logs and outer.bar is not None:
                    outer.bar.write(f"step {state.global_step}: val loss {logs['eval_loss']:.4f}")

            def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                if outer.bar is not None:
                    outer.bar.close()

        self.callback = CB()
        self.t0 = 0.0
        self.step0 = 0
        self.loss = float("nan")
        self.bar: Any = None


def _to_dataset(rows: list[dict[str, Any]]) -> Any:
    from datasets import Dataset

    return Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in rows])


def _last_checkpoint(run_dir: Path) -> Path | None:
    cps = sorted(run_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]) if
                 p.name.split("-")[-1].isdigit() else -1)
    return cps[-1] if cps else None


def train(app: AppConfig, max_steps: int | None = None, resume: bool = False, overwrite: bool = False,
          quiet: bool = False) -> dict[str, Any]:
    """Run (or resume) one training job; returns the training card."""
    import torch
    from transformers import set_seed
    from trl import SFTTrainer

    from rag.models import resolve

    cfg = app.train
    if max_steps is not None:
        cfg = cfg.model_copy(update={"max_steps": max_steps})
    data_dir, run_dir, out_dir = resolve_path(cfg.data_dir), resolve_path(cfg.run_dir), resolve_path(cfg.output_dir)
    last = _last_checkpoint(run_dir) if run_dir.exists() else None
    if resume and last is None:
        raise InputError(f"--resume: no checkpoint in {run_dir}; start without --resume")
    if not resume and last is not None:
        if not overwrite:
            raise InputError(f"{run_dir} has checkpoints ({last.name}); pass --resume to continue or --overwrite "
                             "to start again")
        shutil.rmtree(run_dir)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = _device()
    set_seed(cfg.seed)
    commit = _git_commit()  # the code that trains, not what was committed while it ran (an hour on CPU)

    train_rows = select(read_examples(data_dir / "train.jsonl"), cfg.mix, cfg.seed)
    untrained = frozenset(p for p, v in cfg.mix.items() if v == 0)  # not trained on: no validation loss either
    val_rows = stratified(read_examples(data_dir / "val.jsonl"), cfg.val_samples, cfg.seed, untrained)
    if not train_rows:
        raise InputError(f"{data_dir}/train.jsonl selects no examples with train.mix={cfg.mix}")
    resolved = resolve(app.generator.model, resolve_path(app.models.cache_dir))

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(resolved.path))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = load_base(resolved.path, cfg, device)
    if cfg.init_adapter:
        model, targets = continue_lora(model, resolve_path(cfg.init_adapter))
        pc = model.peft_config["default"]  # the card reports the adapter's own shape, not the config's
        cfg = cfg.model_copy(update={"lora_r": pc.r, "lora_alpha": pc.lora_alpha, "lora_dropout": pc.lora_dropout})
    else:
        model, targets = add_lora(model, cfg)
    trainable, total = trainable_parameters(model)
    log.info("LoRA on %s: %s trainable of %s parameters (%.2f%%)", targets, f"{trainable:,}", f"{total:,}",
             100 * trainable / total)

    samples_per_step = cfg.batch_size * cfg.grad_accum
    args = sft_args(cfg, run_dir, device, n_train=len(train_rows), with_eval=bool(val_rows))
    progress = _Progress(samples_per_step, quiet)
    trainer = SFTTrainer(model=model, args=args, train_dataset=_to_dataset(train_rows),
                         eval_dataset=_to_dataset(val_rows) if val_rows else None, processing_class=tok,
                         callbacks=[progress.callback])
    base_val = None
    if val_rows and not resume:
        if cfg.quantization == "nf4" and device == "cpu":
            log.warning("QLoRA on CPU: no validation pass before training (DESIGN.md trap: an inference pass on "
                        "the 4-bit model corrupts later LoRA gradients); base val loss is not measured here")
        else:
            base_val = float(trainer.evaluate()["eval_loss"])
            log.info("base model val loss %.4f", base_val)
    t0 = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(last) if resume and last else None)
    train_s = time.perf_counter() - t0
    final_val = None
    if val_rows:
        last_eval = next((h for h in reversed(trainer.state.log_history) if "eval_loss" in h), None)
        if last_eval is not None and last_eval.get("step") == trainer.state.global_step:
            final_val = float(last_eval["eval_loss"])  # the scheduled eval already ran at the last step
        else:
            final_val = float(trainer.evaluate()["eval_loss"])

    save_adapter(model, out_dir, resolved.model_id)
    history = trainer.state.log_history
    if base_val is not None:
        history = [{"step": 0, "eval_loss": base_val}, *history]
    card = _card(app, cfg, resolved, targets, trainable, total, train_rows, val_rows, history, result, train_s,
                 base_val, final_val, device, data_dir, resume)
    card["git_commit"] = commit
    _write_outputs(out_dir, app, card, history, data_dir)
    return card


def save_adapter(model: Any, out_dir: Path, model_id: str | None = None) -> None:
    """``adapter_model.safetensors`` (bf16: half the size, what a committed adapter can afford) + config.

    peft upcasts bf16 adapter weights to the base model's dtype on load (``autocast_adapter_dtype``).
    """
    import torch
    from safetensors.torch import load_file, save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    path = out_dir / "adapter_model.safetensors"
    tensors = load_file(str(path))
    tmp = path.with_suffix(".tmp")
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in tensors.items()}, str(tmp),
              metadata={"format": "pt"})
    tmp.replace(path)
    cfg_path = out_dir / "adapter_config.json"
    acfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    if model_id:  # the hub id, not this machine's cache path
        acfg["base_model_name_or_path"] = model_id
    cfg_path.write_text(json.dumps(acfg, indent=2) + "\n", encoding="utf-8")
    (out_dir / "README.md").unlink(missing_ok=True)  # peft's empty model-card template; TRAINING_CARD.md is ours


def _card(app: AppConfig, cfg: TrainConfig, resolved: Any, targets: list[str], trainable: int, total: int,
          train_rows: list[dict[str, Any]], val_rows: list[dict[str, Any]], history: list[dict[str, Any]],
          result: Any, train_s: float, base_val: float | None, final_val: float | None, device: str,
          data_dir: Path, resumed: bool) -> dict[str, Any]:
    from rag.models import quick_hash

    weights = sorted(Path(resolved.path).glob("*.safetensors"))
    metrics = dict(result.metrics)
    tokens = max((h.get("num_tokens", 0) for h in history), default=0)
    return {
        "base_model": {"id": resolved.model_id, "ref": app.generator.model, "path": str(resolved.path),
                       "weights_hash": {w.name: quick_hash(w) for w in weights}},
        "method": "QLoRA (NF4, double quantisation)" if cfg.quantization == "nf4" else "LoRA (dense base)",
        "compute_dtype": cfg.compute_dtype,
        "autocast_bf16": cfg.autocast_bf16,
        "init_adapter": _adapter_origin(cfg.init_adapter),
        "lora": {"r": cfg.lora_r, "alpha": cfg.lora_alpha, "dropout": cfg.lora_dropout, "target_modules": targets},
        "trainable_parameters": trainable, "total_parameters": total,
        "data": {"dir": str(data_dir), "train_fingerprint": fingerprint(data_dir / "train.jsonl"),
                 "train_examples": len(train_rows), "val_examples": len(val_rows),
                 "train_mix": dict(Counter(_part(r) for r in train_rows)),
                 "val_mix": dict(Counter(_part(r) for r in val_rows))},
        "steps": metrics.get("global_step") or max((h.get("step", 0) for h in history), default=0),
        "samples_seen": int(metrics.get("global_step") or trainer_steps(history)) * cfg.batch_size * cfg.grad_accum,
        "train_seconds": round(train_s, 1), "resumed": resumed,
        "train_samples_per_second": metrics.get("train_samples_per_second"),
        "tokens_seen": int(tokens), "tokens_per_second": round(tokens / train_s, 1) if tokens and not resumed
        else None,
        "train_loss": metrics.get("train_loss"),
        "val_loss": {"base": base_val, "final": final_val},
        "peak_memory": _peak_memory_mb(device),
        "hardware": _hardware(device),
        "git_commit": _git_commit(),
        "seed": cfg.seed,
        "config": cfg.model_dump(),
    }


def _adapter_origin(init_adapter: str | None) -> dict[str, Any] | None:
    """Where a second stage started from: the first adapter's path, weights hash and own card's summary."""
    if not init_adapter:
        return None
    from rag.models import quick_hash

    d = resolve_path(init_adapter)
    card_path = d / "training_card.json"
    first = json.loads(card_path.read_text(encoding="utf-8")) if card_path.is_file() else {}
    return {"path": init_adapter, "weights_hash": quick_hash(d / "adapter_model.safetensors"),
            "steps": first.get("steps"), "train_mix": first.get("data", {}).get("train_mix"),
            "seed": first.get("seed")}


def trainer_steps(history: list[dict[str, Any]]) -> int:
    return int(max((h.get("step", 0) for h in history), default=0))


def _part(r: dict[str, Any]) -> str:
    """The mix key: the part, with grounded examples whose answer is withheld counted apart."""
    withheld = r["part"].startswith("grounded") and r.get("meta", {}).get("withheld")
    return f"{r['part']}_withheld" if withheld else r["part"]


def _write_outputs(out_dir: Path, app: AppConfig, card: dict[str, Any], history: list[dict[str, Any]],
                   data_dir: Path) -> None:
    (out_dir / "effective_config.yaml").write_text(yaml.safe_dump(app.model_dump(), sort_keys=False),
                                                   encoding="utf-8")
    (out_dir / "training_card.json").write_text(json.dumps(card, indent=1, default=str) + "\n", encoding="utf-8")
    (out_dir / "log_history.json").write_text(json.dumps(history, indent=1) + "\n", encoding="utf-8")
    if (data_dir / "CARD.md").exists():
        shutil.copyfile(data_dir / "CARD.md", out_dir / "DATA_CARD.md")
    plot_loss(history, out_dir / "loss.png")
    (out_dir / "TRAINING_CARD.md").write_text(card_markdown(card), encoding="utf-8")


def plot_loss(history: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tr = [(h["step"], h["loss"]) for h in history if "loss" in h and "step" in h]
    va = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h and "step" in h]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    if tr:
        ax.plot(*zip(*tr, strict=True), label="train loss")
    if va:
        ax.plot(*zip(*va, strict=True), marker="o", label="val loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (assistant tokens)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def card_markdown(card: dict[str, Any]) -> str:
    v = card["val_loss"]
    hw = card["hardware"]
    share = 100 * card["trainable_parameters"] / card["total_parameters"]
    return "\n".join([
        f"# Training card: {card['base_model']['id']} + {card['method']}",
        "",
        f"- Base model: `{card['base_model']['ref']}` ({card['base_model']['id']}); weights "
        f"{card['base_model']['weights_hash']}",
        f"- LoRA r={card['lora']['r']}, alpha={card['lora']['alpha']}, dropout={card['lora']['dropout']} on "
        f"{', '.join(card['lora']['target_modules'])}: {card['trainable_parameters']:,} trainable of "
        f"{card['total_parameters']:,} parameters ({share:.2f}%)",
        *([f"- Second stage: continues `{o['path']}` (weights {o['weights_hash']}, {o['steps']} steps on "
           f"{o['train_mix']}, seed {o['seed']}); the val loss 'base' below is that adapter's"]
          if (o := card.get("init_adapter")) else []),
        f"- Data: {card['data']['train_examples']} training examples {card['data']['train_mix']}, "
        f"{card['data']['val_examples']} validation {card['data']['val_mix']} (see DATA_CARD.md)",
        f"- Steps: {card['steps']}, samples seen: {card['samples_seen']}, tokens seen: {card['tokens_seen']:,}",
        f"- Val loss: base {v['base'] if v['base'] is None else round(v['base'], 4)} -> tuned "
        f"{v['final'] if v['final'] is None else round(v['final'], 4)}; train loss {card['train_loss']}",
        f"- Speed: {card['train_samples_per_second']} samples/s, {card['tokens_per_second']} tokens/s over "
        f"{card['train_seconds']} s" + (" (resumed run: the last segment only)" if card["resumed"] else ""),
        f"- Peak memory: {card['peak_memory']}",
        f"- Hardware: {hw}",
        f"- Git commit: {card['git_commit']}; seed {card['seed']}",
        "",
        "![loss](loss.png)",
        "",
    ])
