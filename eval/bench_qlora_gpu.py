"""CUDA QLoRA throughput of our training code on the production architectures (randomly initialised).

    python eval/bench_qlora_gpu.py --arch llama-3.2-3b phi-3-mini-4k --seq-len 512 --out results/

Real weights cannot reach the GPU machine, so each model is built from the architecture's published
``config.json`` values (below) with random weights: throughput and memory depend on shapes, not values.
The model then goes through exactly the path ``app.py train`` takes — ``load_base`` (NF4, double
quantisation, bf16 compute, ``prepare_model_for_kbit_training``, gradient checkpointing), ``add_lora``
(targets resolved from the loaded layout), ``sft_args`` (paged 8-bit AdamW, cosine schedule, bf16) and
TRL's ``SFTTrainer`` — on pre-tokenised sequences of exactly ``--seq-len`` tokens, half prompt and half
completion (the loss is on the completion, as in our data).

For each batch size (doubling from 1 until CUDA runs out of memory, then bisecting) it reports
samples/s over the steps after ``--warmup`` and the peak GPU memory. The reference paper reports
4.619 samples/s for QLoRA on a TITAN RTX (24 GB).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from finetune.targets import trainable_parameters
from finetune.train import add_lora, load_base, sft_args
from rag.config import TrainConfig

# From the models' config.json on the hub (meta-llama/Llama-3.2-3B-Instruct, microsoft/Phi-3-mini-4k-instruct).
ARCHS: dict[str, dict[str, Any]] = {
    "llama-3.2-3b": dict(
        model_type="llama", vocab_size=128256, hidden_size=3072, intermediate_size=8192, num_hidden_layers=28,
        num_attention_heads=24, num_key_value_heads=8, head_dim=128, max_position_embeddings=131072,
        rms_norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=True, hidden_act="silu",
        rope_scaling={"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                      "original_max_position_embeddings": 8192, "rope_type": "llama3"},
        bos_token_id=128000, eos_token_id=[128001, 128008, 128009]),
    "phi-3-mini-4k": dict(
        model_type="phi3", vocab_size=32064, hidden_size=3072, intermediate_size=8192, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096,
        original_max_position_embeddings=4096,
        rms_norm_eps=1e-5, rope_theta=10000.0, sliding_window=2047, tie_word_embeddings=False, hidden_act="silu",
        bos_token_id=1, eos_token_id=32000, pad_token_id=32000),
}
REFERENCE_SAMPLES_S = 4.619  # the reference paper's QLoRA run, TITAN RTX 24 GB


def build_random_model(arch: str, out: Path) -> Path:
    """Save a randomly initialised bf16 checkpoint of ``arch`` (plus a minimal tokenizer) to ``out``."""
    import torch
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

    values = dict(ARCHS[arch])
    config = AutoConfig.for_model(values.pop("model_type"), **values)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(out)
    del model
    torch.cuda.empty_cache()
    # The trainer only needs pad/eos ids from the tokenizer: the data below is already token ids.
    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(WordLevel({"<pad>": 0, "<eos>": 1, "<unk>": 2}, unk_token="<unk>")),
        pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    tok.save_pretrained(out)
    return out


def synthetic_dataset(n: int, seq_len: int, vocab: int, seed: int) -> Any:
    """``n`` sequences of exactly ``seq_len`` random token ids; the second half is the completion."""
    import numpy as np
    from datasets import Dataset

    rng = np.random.default_rng(seed)
    ids = rng.integers(3, vocab, size=(n, seq_len)).tolist()
    half = seq_len // 2
    return Dataset.from_dict({"input_ids": ids, "completion_mask": [[0] * half + [1] * (seq_len - half)] * n})


def time_batch(model: Any, tok: Any, cfg: TrainConfig, batch: int, seq_len: int, steps: int, warmup: int,
               vocab: int, run_dir: Path) -> dict[str, Any]:
    """Train ``steps`` optimizer steps at ``batch`` and time the ones after ``warmup``."""
    import torch
    from transformers import TrainerCallback
    from trl import SFTTrainer

    stamps: list[float] = []

    class Stamp(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            torch.cuda.synchronize()
            stamps.append(time.perf_counter())

    cfg = cfg.model_copy(update={"batch_size": batch, "grad_accum": 1, "max_steps": steps, "max_length": seq_len,
                                 "save_steps": 10**9, "logging_steps": 10**9})
    args = sft_args(cfg, run_dir, "cuda", n_train=batch * steps, with_eval=False)
    args.save_strategy = "no"
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    trainer = SFTTrainer(model=model, args=args, train_dataset=synthetic_dataset(batch * steps, seq_len, vocab, batch),
                         processing_class=tok, callbacks=[Stamp()])
    t0 = time.perf_counter()
    try:
        trainer.train()
        timed = stamps[-1] - stamps[warmup - 1]
        n = batch * (steps - warmup)
        return {"batch": batch, "fits": True, "samples_s": n / timed, "tokens_s": n * seq_len / timed,
                "s_per_step": timed / (steps - warmup), "wall_s": time.perf_counter() - t0,
                "peak_gpu_allocated_gib": torch.cuda.max_memory_allocated() / 2**30,
                "peak_gpu_reserved_gib": torch.cuda.max_memory_reserved() / 2**30,
                "optimizer": args.optim}
    except torch.OutOfMemoryError:
        return {"batch": batch, "fits": False}
    finally:
        # The optimizer's paged state and activations of a failed step must go before the next size.
        trainer.optimizer = None
        del trainer
        model.zero_grad(set_to_none=True)
        gc.collect()
        torch.cuda.empty_cache()


def bench_arch(arch: str, seq_len: int, steps: int, warmup: int, max_batch: int, work: Path) -> dict[str, Any]:
    import torch
    from transformers import AutoTokenizer

    t0 = time.perf_counter()
    path = build_random_model(arch, work / arch)
    cfg = TrainConfig.model_validate({})  # the default recipe: QLoRA nf4, r 16, alpha 32, dropout 0.05, all projections
    model = load_base(path, cfg, "cuda")
    model, targets = add_lora(model, cfg)
    trainable, total = trainable_parameters(model)
    tok = AutoTokenizer.from_pretrained(str(path))
    vocab = ARCHS[arch]["vocab_size"]
    rows: list[dict[str, Any]] = []
    ok, bad, b = 0, 0, 1
    while b <= max_batch:  # doubling until out of memory ...
        row = time_batch(model, tok, cfg, b, seq_len, steps, warmup, vocab, work / "run")
        rows.append(row)
        print(json.dumps({"arch": arch, **row}), flush=True)
        if not row["fits"]:
            bad = b
            break
        ok, b = b, b * 2
    while bad and bad - ok > max(1, ok // 4):  # ... then bisect to within 1/4 of the largest that fits
        b = (ok + bad) // 2
        row = time_batch(model, tok, cfg, b, seq_len, steps, warmup, vocab, work / "run")
        rows.append(row)
        print(json.dumps({"arch": arch, **row}), flush=True)
        ok, bad = (b, bad) if row["fits"] else (ok, b)
    fitting = [r for r in rows if r["fits"]]
    best = max(fitting, key=lambda r: r["samples_s"]) if fitting else None
    result = {
        "arch": arch, "config": ARCHS[arch], "seq_len": seq_len, "steps": steps, "warmup": warmup,
        "lora_targets": targets, "trainable_parameters": trainable, "total_parameters": total,
        "largest_batch_fits": ok, "smallest_batch_oom": bad or None, "rows": sorted(rows, key=lambda r: r["batch"]),
        "best_samples_s": best["samples_s"] if best else None, "best_batch": best["batch"] if best else None,
        "vs_reference_paper": best["samples_s"] / REFERENCE_SAMPLES_S if best else None,
        "gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "bench_wall_s": time.perf_counter() - t0,
    }
    del model
    gc.collect()
    torch.cuda.empty_cache()
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", nargs="+", default=list(ARCHS), choices=list(ARCHS))
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--steps", type=int, default=5, help="optimizer steps per batch size")
    ap.add_argument("--warmup", type=int, default=2, help="steps not timed (CUDA/kernel warm-up)")
    ap.add_argument("--max-batch", type=int, default=512)
    ap.add_argument("--out", type=Path, default=Path("."))
    a = ap.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("error: this benchmark needs a CUDA GPU (QLoRA's paged 8-bit AdamW and NF4 kernels)", file=sys.stderr)
        return 2
    a.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for arch in a.arch:
            res = bench_arch(arch, a.seq_len, a.steps, a.warmup, a.max_batch, Path(tmp))
            (a.out / f"qlora-{arch}.json").write_text(json.dumps(res, indent=1))
            print(f"{arch}: {res['trainable_parameters']:,} trainable of {res['total_parameters']:,}; largest batch "
                  f"{res['largest_batch_fits']}; best {res['best_samples_s']:.2f} samples/s at batch "
                  f"{res['best_batch']} ({res['vs_reference_paper']:.1f}x the paper's {REFERENCE_SAMPLES_S})",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
