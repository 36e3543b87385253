"""Train the domain-tuned embedder: contrastive fine-tuning of the bundled sentence encoder.

``python app.py train embedder`` builds triplets (finetune/embedder_data.py) and fine-tunes the whole
encoder with sentence-transformers' trainer and MultipleNegativesRankingLoss (the other passages of a
batch and one mined hard negative per question are the negatives; a no-duplicates batch sampler keeps
a question's own passage from appearing as another's negative). It is resumable (a checkpoint every
``save_steps`` in the run folder) and capped in wall time (``max_minutes``: the run stops at the cap,
checkpointed, and the card says how many steps it did). The output folder is a plain model folder
that ``embedder.model`` can name; it carries

- ``.cds-complete.json``: the model id the index manifest records (name + a hash of the weights, so an
  index built with another training run is refused);
- ``cds_embedder_spec.json``: how to call it (pooling, normalisation, max length, similarity scale);
- ``README.md`` and ``training_card.json``: data, split, steps, time, held-out figures (base vs tuned).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from finetune.embedder_data import Triplet, read

log = logging.getLogger(__name__)

SPEC_FILE = "cds_embedder_spec.json"


@dataclass
class EmbedderTrainOptions:
    learning_rate: float = 5e-5
    warmup_ratio: float = 0.1
    batch_size: int = 32
    max_steps: int | None = None  # None: one epoch over the training triplets
    max_seq_length: int = 128  # index children are ~96 tokens plus their title line
    # The word embeddings and the first ``freeze_layers`` transformer layers stay as they are: backward then stops
    # early (one shared CPU core does ~1 step of 32 triplets per 20-25 s), and little data moves only the top.
    freeze_layers: int = 2
    save_steps: int = 25
    max_minutes: float | None = 50.0  # wall-time cap; the run stops there with a checkpoint
    seed: int = 13
    threads: int | None = None
    heldout_queries: int = 600  # held-out questions scored for the card (all their passages are the corpus)


def retrieval_metrics(q: np.ndarray, p: np.ndarray, gold: list[int], k: int = 10) -> dict[str, float]:
    """Recall@1, MRR@k and nDCG@k (one relevant passage per query) of cosine ranking; vectors normalised."""
    sims = q @ p.T
    gold_s = sims[np.arange(len(gold)), gold]
    rank = (sims > gold_s[:, None]).sum(1)  # 0-based rank of the gold passage (ties count for it)
    inside = rank < k
    return {"recall@1": round(float((rank == 0).mean()) * 100, 1),
            "mrr@10": round(float(np.where(inside, 1.0 / (rank + 1), 0.0).mean()) * 100, 1),
            "ndcg@10": round(float(np.where(inside, 1.0 / np.log2(rank + 2), 0.0).mean()) * 100, 1),
            "n": len(gold)}


def heldout_eval(model: Any, held: list[Triplet], limit: int, seed: int) -> dict[str, float]:
    """Questions of the held-out pages against every held-out positive and negative passage."""
    import random

    rows = random.Random(seed).sample(held, min(limit, len(held)))
    corpus = sorted({t.positive for t in held} | {t.negative for t in held})
    pos = {p: i for i, p in enumerate(corpus)}
    qv = model.encode([t.query for t in rows], batch_size=64, normalize_embeddings=True)
    pv = model.encode(corpus, batch_size=64, normalize_embeddings=True)
    out = retrieval_metrics(np.asarray(qv), np.asarray(pv), [pos[t.positive] for t in rows])
    out["corpus"] = len(corpus)
    return out


def weights_hash(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.glob("*.safetensors")):
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:10]


def freeze_lower(model: Any, layers: int) -> int:
    """Freeze the embeddings and the first ``layers`` encoder layers of a BERT-like model; return the parameters
    left trainable."""
    if layers < 0:
        return sum(p.numel() for p in model.parameters() if p.requires_grad)
    hf = model[0].auto_model
    for p in hf.embeddings.parameters():
        p.requires_grad = False
    for layer in hf.encoder.layer[:layers]:
        for p in layer.parameters():
            p.requires_grad = False
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _time_cap(minutes: float | None, already_s: float, clock: Path) -> Any:
    from transformers import TrainerCallback

    class TimeCap(TrainerCallback):
        """Stops (and checkpoints) once this run's wall time plus earlier runs' passes the cap; the wall time at
        each checkpoint goes to ``clock``, so a run killed and resumed still counts (and reports) all of it."""

        def __init__(self) -> None:
            self.t0 = time.perf_counter()
            self.hit = False

        def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> Any:
            clock.write_text(json.dumps({"seconds": already_s + time.perf_counter() - self.t0,
                                         "step": int(state.global_step)}) + "\n")
            return control

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> Any:
            if minutes is not None and already_s + time.perf_counter() - self.t0 > minutes * 60:
                self.hit = True
                control.should_save = True
                control.should_training_stop = True
            return control

    return TimeCap()


def train(data_dir: Path, base: Path, base_id: str, out_dir: Path, run_dir: Path, opts: EmbedderTrainOptions,
          name: str, progress: bool = False) -> dict[str, Any]:
    """Fine-tune ``base`` on ``data_dir``'s triplets; write the model, its spec and its card to ``out_dir``."""
    import torch
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from sentence_transformers.sentence_transformer.training_args import BatchSamplers
    from transformers.trainer_utils import get_last_checkpoint

    if opts.threads:
        torch.set_num_threads(opts.threads)
    train_rows = read(data_dir / "train.jsonl")
    held = read(data_dir / "heldout.jsonl")
    model = SentenceTransformer(str(base), device="cpu")
    model.max_seq_length = opts.max_seq_length
    frozen = freeze_lower(model, opts.freeze_layers)
    steps = opts.max_steps or math.ceil(len(train_rows) / opts.batch_size)
    ds = Dataset.from_dict({"anchor": [t.query for t in train_rows], "positive": [t.positive for t in train_rows],
                            "negative": [t.negative for t in train_rows]})
    run_dir.mkdir(parents=True, exist_ok=True)
    clock = run_dir / "elapsed.json"  # wall seconds of earlier (interrupted) runs, for the cap and the card
    already = float(json.loads(clock.read_text())["seconds"]) if clock.exists() else 0.0
    args = SentenceTransformerTrainingArguments(
        output_dir=str(run_dir), max_steps=steps, per_device_train_batch_size=opts.batch_size,
        learning_rate=opts.learning_rate, warmup_steps=max(1, int(steps * opts.warmup_ratio)),
        batch_sampler=BatchSamplers.NO_DUPLICATES, save_strategy="steps", save_steps=opts.save_steps,
        save_total_limit=2, logging_steps=5, seed=opts.seed, use_cpu=True, report_to="none",
        dataloader_num_workers=0, disable_tqdm=not progress)
    cap = _time_cap(opts.max_minutes, already, clock)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=ds,
                                         loss=MultipleNegativesRankingLoss(model), callbacks=[cap])
    last = get_last_checkpoint(str(run_dir)) if any(run_dir.glob("checkpoint-*")) else None
    if last:
        log.info("resuming from %s", last)
    t0 = time.perf_counter()
    trainer.train(resume_from_checkpoint=last)
    train_s = time.perf_counter() - t0
    clock.write_text(json.dumps({"seconds": already + train_s, "step": int(trainer.state.global_step)}) + "\n")
    done = int(trainer.state.global_step)
    loss_log = [(int(e["step"]), float(e["loss"])) for e in trainer.state.log_history if "loss" in e]

    tmp = out_dir.with_name(out_dir.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save(str(tmp))
    t = time.perf_counter()
    tuned_held = heldout_eval(model, held, opts.heldout_queries, opts.seed)
    eval_s = time.perf_counter() - t
    base_held = heldout_eval(SentenceTransformer(str(base), device="cpu"), held, opts.heldout_queries, opts.seed)
    model_id = f"cds/{name}@{weights_hash(tmp)}"
    data_card = json.loads((data_dir / "card.json").read_text()) if (data_dir / "card.json").exists() else None
    card = {
        "what": "domain-tuned sentence embedder: the bundled encoder fine-tuned contrastively on MedQuAD/WikiDoc "
                "questions and their answer passages (MultipleNegativesRankingLoss, in-batch + mined hard negatives)",
        "model_id": model_id, "base": base_id, "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "options": asdict(opts), "trainable_parameters": frozen, "train_triplets": len(train_rows),
        "heldout_triplets": len(held),
        "steps_planned": steps, "steps_done": done, "stopped_by_time_cap": bool(cap.hit),
        "examples_seen": done * opts.batch_size, "train_seconds_total": round(already + train_s, 1),
        "loss_first": loss_log[0][1] if loss_log else None, "loss_last": loss_log[-1][1] if loss_log else None,
        "heldout": {"base": base_held, "tuned": tuned_held, "tuned_eval_seconds": round(eval_s, 1)},
        "data_card": data_card,
    }
    (tmp / ".cds-complete.json").write_text(json.dumps({"model_id": model_id, "base": base_id}) + "\n")
    spec = {"pooling": "mean", "normalize": True, "max_length": 256,
            "sim_floor": 0.15, "sim_ceiling": 0.70, "support_threshold": 0.5}
    (tmp / SPEC_FILE).write_text(json.dumps(spec, indent=1) + "\n")
    (tmp / "training_card.json").write_text(json.dumps(card, indent=1) + "\n")
    (tmp / "losses.json").write_text(json.dumps(loss_log) + "\n")
    (tmp / "README.md").write_text(card_markdown(card))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return card


def card_markdown(card: dict[str, Any]) -> str:
    h = card["heldout"]
    d = card.get("data_card") or {}
    o = card["options"]
    lines = [
        f"# {card['model_id']}", "",
        card["what"] + ".", "",
        f"- base: `{card['base']}`; created {card['created']}",
        f"- data: {card['train_triplets']:,} training triplets (question, answer passage, hard negative); "
        f"negatives {d.get('stats', {}).get('negative.sibling', '?')} sibling pages, "
        f"{d.get('stats', {}).get('negative.bm25', '?')} BM25 of another topic",
        f"- never trained on: {d.get('excluded', '?')}",
        f"- steps: {card['steps_done']} of {card['steps_planned']} planned (batch {o['batch_size']}, lr "
        f"{o['learning_rate']}, max length {o['max_seq_length']}; embeddings and the first {o['freeze_layers']} "
        f"layers frozen, {card['trainable_parameters']:,} parameters trained); stopped by the time cap: "
        f"{card['stopped_by_time_cap']}; training time {card['train_seconds_total'] / 60:.1f} min",
        f"- loss: {card['loss_first']} (first logged) -> {card['loss_last']} (last)", "",
        f"Held-out pages ({h['tuned']['n']} questions against {h['tuned']['corpus']:,} passages of pages "
        "never trained on):", "",
        "| model | recall@1 | MRR@10 | nDCG@10 |", "|---|---|---|---|",
        f"| base | {h['base']['recall@1']} | {h['base']['mrr@10']} | {h['base']['ndcg@10']} |",
        f"| tuned | {h['tuned']['recall@1']} | {h['tuned']['mrr@10']} | {h['tuned']['ndcg@10']} |", "",
        "Use it with `--set embedder.model=<this folder>` (and rebuild the index: the manifest records the id).",
        "",
    ]
    return "\n".join(lines)
