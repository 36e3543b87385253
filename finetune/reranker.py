"""Distil the verifier's answerability into a small cross-encoder that can rerank the top 20 on a CPU.

``python app.py train reranker`` (docs/TRAINING.md): the verifier (all-MiniLM-L6-v2 + LoRA, rag/verifier.py)
reads 20 (question, passage) pairs in about a second of one AVX2 core; the rerank budget is 150 ms. The
student is the verifier itself cut to its first ``layers`` transformer layers (the LoRA merged in, the same
classification head), trained to give the teacher's probabilities (binary cross-entropy on the teacher's
soft labels) on the pairs of finetune/reranker_data.py. Three resumable stages under the run folder:

1. ``labels.jsonl``: the teacher's probability for each pair, appended in blocks (a killed run resumes);
2. ``checkpoint.pt``: the student, optimizer and step every ``save_steps`` (``max_minutes`` caps the loop:
   it stops checkpointed, and the card says how far it got);
3. the output folder: a plain Hugging Face model folder with its tokenizer, ``cds_reranker.json`` (what
   ``retrieval.reranker`` checks) and a card with the held-out agreement with the teacher.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from finetune.reranker_data import RerankPair, read
from rag.cross_encoder import MARKER
from rag.verifier import answerability_text

log = logging.getLogger(__name__)


@dataclass
class RerankTrainOptions:
    # Two layers at least: with one, the [CLS] output is a weighted bag of the tokens and cannot compare the question
    # with the passage (a one-layer student stayed at the constant-prediction loss). Scoring computes the last layer
    # at [CLS] only (rag.cross_encoder.cls_logits), so the second layer costs its key/value projections.
    layers: int = 2  # transformer layers kept from the teacher (it has 6)
    ffn: int | None = 384  # feed-forward units kept per layer (the teacher has 1,536); None: all
    max_length: int = 192  # as the teacher was trained; the pairs are ~130 tokens
    batch_size: int = 16
    epochs: float = 1.0
    learning_rate: float = 2e-4
    # "bce": binary cross-entropy on the teacher's probabilities; "mse": squared error on its logits (the usual
    # cross-encoder distillation loss: it keeps the ordering among passages the teacher finds unlikely, where a
    # probability near 0 gives BCE almost no gradient).
    loss: str = "bce"
    warmup_ratio: float = 0.06
    save_steps: int = 50
    max_minutes: float | None = 40.0  # wall cap of labelling + training together
    label_block: int = 64  # pairs the teacher scores between two appends to labels.jsonl
    max_pairs: int | None = None  # the first N training pairs only (whole questions when a multiple of 12)
    seed: int = 17
    threads: int | None = 1


def label(pairs: Sequence[RerankPair], score: Callable[[list[tuple[str, str]]], np.ndarray], path: Path,
          block: int, deadline: float | None = None, say: Callable[[str], None] = lambda _: None) -> list[float]:
    """The teacher's probability for every pair, resuming from (and appending to) ``path``; raises TimeoutError
    at ``deadline`` (``time.perf_counter()`` value) with what is done kept."""
    done: list[float] = []
    if path.exists():
        text = path.read_text(encoding="utf-8")
        done = [float(x) for x in text.split("\n")[:-1]]  # a line cut by a kill has no newline: dropped
        path.write_text("".join(f"{x:.6f}\n" for x in done), encoding="utf-8")
    t0, first = time.perf_counter(), len(done)
    with path.open("a", encoding="utf-8") as f:
        for s in range(len(done), len(pairs), block):
            if deadline is not None and time.perf_counter() > deadline:
                raise TimeoutError(f"teacher labels: {len(done)} of {len(pairs)} pairs done; run again to resume")
            chunk = pairs[s: s + block]
            probs = score([(answerability_text(p.question), p.passage) for p in chunk])
            f.write("".join(f"{float(x):.6f}\n" for x in probs))
            f.flush()
            done.extend(float(x) for x in probs)
            if (s // block) % 20 == 0:
                rate = (len(done) - first) / max(1e-9, time.perf_counter() - t0)
                say(f"teacher labels {len(done)}/{len(pairs)} ({rate:.1f} pairs/s)")
    return done[: len(pairs)]


def truncate(model: Any, layers: int, ffn: int | None = None) -> Any:
    """A BERT-like sequence classifier cut to its first ``layers`` encoder layers (in place), ready to train, each
    feed-forward block narrowed to its ``ffn`` most important units when given (importance: the norm of a unit's
    input row times that of its output column; the feed-forward blocks are two thirds of a layer's multiply-adds)."""
    import torch

    # Trainable, except the word embeddings (most of the parameters; the teacher's are kept): the verifier comes
    # out of PEFT with its base weights frozen, which left a first student learning its head only.
    for p in model.parameters():
        p.requires_grad_(True)
    model.base_model.embeddings.word_embeddings.weight.requires_grad_(False)
    enc = model.base_model.encoder
    if not 1 <= layers <= len(enc.layer):
        raise ValueError(f"layers must be in [1, {len(enc.layer)}], got {layers}")
    enc.layer = torch.nn.ModuleList(list(enc.layer)[:layers])
    model.config.num_hidden_layers = layers
    # A fresh pooler and head: the teacher's were fitted to its sixth layer's outputs (a student keeping them stayed
    # at the constant-prediction loss; a fresh head alone did not fix that either: BENCHMARKS.md, issue 15).
    with torch.no_grad():
        for lin in (model.base_model.pooler.dense, model.classifier):
            lin.weight.normal_(0.0, model.config.initializer_range)
            lin.bias.zero_()
    width = model.config.intermediate_size
    if ffn is None or ffn == width:
        return model
    if not 1 <= ffn < width:
        raise ValueError(f"ffn must be in [1, {width}], got {ffn}")
    with torch.no_grad():
        for layer in enc.layer:
            up, down = layer.intermediate.dense, layer.output.dense
            keep = torch.argsort(up.weight.norm(dim=1) * down.weight.norm(dim=0), descending=True)[:ffn].sort().values
            new_up, new_down = torch.nn.Linear(up.in_features, ffn), torch.nn.Linear(ffn, down.out_features)
            new_up.weight.copy_(up.weight[keep])
            new_up.bias.copy_(up.bias[keep])
            new_down.weight.copy_(down.weight[:, keep])
            new_down.bias.copy_(down.bias)
            layer.intermediate.dense, layer.output.dense = new_up, new_down
    model.config.intermediate_size = ffn
    return model


def _batches(n: int, batch: int, epochs: float, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    out: list[list[int]] = []
    for _ in range(math.ceil(epochs)):
        order = list(range(n))
        rng.shuffle(order)
        out.extend(order[s: s + batch] for s in range(0, n, batch))
    return out[: math.ceil(n * epochs / batch)]


def agreement(teacher: np.ndarray, student: np.ndarray, qids: Sequence[str], gold: Sequence[int]) -> dict[str, Any]:
    """How closely the student follows the teacher on held-out pairs: correlations, same top passage per
    question, and each one's AUROC against the own-answer label."""
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import roc_auc_score

    by_q: dict[str, list[int]] = {}
    for i, q in enumerate(qids):
        by_q.setdefault(q, []).append(i)
    same = [int(np.argmax(teacher[ix]) == np.argmax(student[ix])) for ix in by_q.values()]
    y = np.asarray(gold)
    return {"pairs": len(qids), "questions": len(by_q), "pearson": round(float(pearsonr(teacher, student)[0]), 3),
            "spearman": round(float(spearmanr(teacher, student)[0]), 3),
            "mean_abs_diff": round(float(np.abs(teacher - student).mean()), 3),
            "same_top_passage": round(float(np.mean(same)) * 100, 1),
            "auroc_own_answer": {"teacher": round(float(roc_auc_score(y, teacher)), 3),
                                 "student": round(float(roc_auc_score(y, student)), 3)}}


def _score_with(model: Any, tok: Any, pairs: Sequence[RerankPair], max_length: int, batch: int = 32) -> np.ndarray:
    import torch

    out = []
    with torch.inference_mode():
        for s in range(0, len(pairs), batch):
            chunk = pairs[s: s + batch]
            enc = tok([answerability_text(p.question) for p in chunk], [p.passage for p in chunk],
                      truncation="longest_first", max_length=max_length, padding=True, return_tensors="pt")
            out.append(torch.sigmoid(model(**enc).logits.squeeze(-1).float()).numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def fit(model: Any, tok: Any, pairs: Sequence[RerankPair], targets: Sequence[float], opts: RerankTrainOptions,
        run_dir: Path, deadline: float | None, say: Callable[[str], None]) -> dict[str, Any]:
    """BCE on the teacher's probabilities or MSE on its logits (``opts.loss``), resumable from
    ``run_dir/checkpoint.pt``; returns the loop's facts."""
    import torch

    if opts.loss not in ("bce", "mse"):
        raise ValueError(f"loss must be 'bce' or 'mse', got {opts.loss!r}")

    batches = _batches(len(pairs), opts.batch_size, opts.epochs, opts.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=opts.learning_rate, weight_decay=0.01)
    warm = max(1, int(len(batches) * opts.warmup_ratio))
    sched = torch.optim.lr_scheduler.LambdaLR(
        optim, lambda s: min((s + 1) / warm, max(0.0, (len(batches) - s) / max(1, len(batches) - warm))))
    ckpt = run_dir / "checkpoint.pt"
    step, losses, seconds = 0, [], 0.0
    # what a resumed run must share with the checkpoint's (else its schedule and targets would mix two runs)
    plan = {k: getattr(opts, k) for k in ("layers", "ffn", "batch_size", "epochs", "learning_rate", "loss",
                                          "max_pairs", "seed")}
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        old = state.get("plan", plan)
        if old != plan:
            diff = ", ".join(f"{k} {old.get(k)} -> {plan[k]}" for k in plan if old.get(k) != plan[k])
            raise ValueError(f"{ckpt} was trained with other options ({diff}); resume with the same options or "
                             "start again with --overwrite")
        model.load_state_dict(state["model"])
        optim.load_state_dict(state["optim"])
        sched.load_state_dict(state["sched"])
        step, losses, seconds = state["step"], state["losses"], state["seconds"]
        say(f"resuming at step {step} of {len(batches)}")
    y = torch.tensor(list(targets), dtype=torch.float32)
    if opts.loss == "mse":
        # the labels keep 6 decimals: clip before the logit so 0 and 1 stay finite (|logit| <= 13.8)
        p = y.clamp(1e-6, 1 - 1e-6)
        y = torch.log(p) - torch.log1p(-p)
    loss_fn = torch.nn.BCEWithLogitsLoss() if opts.loss == "bce" else torch.nn.MSELoss()
    t0, stopped = time.perf_counter(), False

    def save() -> None:
        torch.save({"model": model.state_dict(), "optim": optim.state_dict(), "sched": sched.state_dict(),
                    "plan": plan, "step": step, "losses": losses, "seconds": seconds + time.perf_counter() - t0},
                   run_dir / "checkpoint.tmp")
        (run_dir / "checkpoint.tmp").replace(ckpt)

    model.train()
    while step < len(batches):
        if deadline is not None and time.perf_counter() > deadline:
            stopped = True
            break
        idx = batches[step]
        enc = tok([answerability_text(pairs[i].question) for i in idx], [pairs[i].passage for i in idx],
                  truncation="longest_first", max_length=opts.max_length, padding=True, return_tensors="pt")
        loss = loss_fn(model(**enc).logits.squeeze(-1), y[idx])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optim.step()
        sched.step()
        optim.zero_grad()
        step += 1
        losses.append(round(float(loss.detach()), 4))
        if step % opts.save_steps == 0 or step == len(batches):
            save()
            say(f"step {step}/{len(batches)} loss {np.mean(losses[-opts.save_steps:]):.4f}")
    if stopped:
        save()
    model.eval()
    return {"steps_done": step, "steps_planned": len(batches), "stopped_by_time_cap": stopped,
            "train_seconds_total": round(seconds + time.perf_counter() - t0, 1),
            "loss_first": float(np.mean(losses[:20])) if losses else None,
            "loss_last": float(np.mean(losses[-20:])) if losses else None}


def weights_hash(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.glob("*.safetensors")):
        h.update(f.read_bytes())
    return h.hexdigest()[:10]


def train(data_dir: Path, teacher: Any, out_dir: Path, run_dir: Path, opts: RerankTrainOptions,
          say: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Label ``data_dir``'s pairs with ``teacher`` (a :class:`rag.verifier.Verifier`), train the student, write
    ``out_dir`` with its card. Raises TimeoutError at the time cap (everything done so far is kept)."""
    import copy

    import torch

    if opts.threads:
        torch.set_num_threads(opts.threads)
    torch.manual_seed(opts.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    clock = run_dir / "elapsed.json"  # wall seconds of earlier runs (the cap counts all of them)
    already = float(json.loads(clock.read_text())["seconds"]) if clock.exists() else 0.0
    start = time.perf_counter()
    deadline = start + opts.max_minutes * 60 - already if opts.max_minutes is not None else None
    train_pairs, held = read(data_dir / "train.jsonl"), read(data_dir / "heldout.jsonl")
    train_pairs = train_pairs[: opts.max_pairs] if opts.max_pairs else train_pairs
    teacher.batch_size = 32
    try:
        t = time.perf_counter()
        y = label(train_pairs, teacher.score, run_dir / "labels.jsonl", opts.label_block, deadline, say)
        y_held = label(held, teacher.score, run_dir / "labels-heldout.jsonl", opts.label_block, deadline, say)
        label_s = time.perf_counter() - t
        teacher._load()
        student = truncate(copy.deepcopy(teacher._model), opts.layers, opts.ffn)
        loop = fit(student, teacher._tok, train_pairs, y, opts, run_dir, deadline, say)
    finally:
        clock.write_text(json.dumps({"seconds": already + time.perf_counter() - start}) + "\n")
    if loop["stopped_by_time_cap"]:
        raise TimeoutError(f"time cap reached at step {loop['steps_done']} of {loop['steps_planned']} "
                           "(checkpointed); run the command again to resume")
    student_held = _score_with(student, teacher._tok, held, opts.max_length)
    card = {
        "what": f"answerability reranker distilled from the evidence verifier: its first {opts.layers} of "
                f"{len(teacher._model.base_model.encoder.layer)} layers (feed-forward width "
                f"{student.config.intermediate_size} of {teacher._model.config.intermediate_size}), trained on the "
                + ("teacher's probabilities" if opts.loss == "bce" else "teacher's logits (squared error)"),
        "teacher": teacher.model_id, "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "options": asdict(opts), "parameters": sum(p.numel() for p in student.parameters()),
        "train_pairs": len(train_pairs), "train_questions": len({p.qid for p in train_pairs}),
        "teacher_label_seconds_this_run": round(label_s, 1),
        "teacher_mean_probability": round(float(np.mean(y)), 3), **loop,
        "heldout": agreement(np.asarray(y_held), student_held, [p.qid for p in held], [p.gold for p in held]),
        "data_card": json.loads((data_dir / "card.json").read_text()) if (data_dir / "card.json").exists() else None,
    }
    card["train_seconds_total"] = round(already + time.perf_counter() - start, 1)
    save_student(student, teacher._tok, out_dir, card, opts)
    return card


def save_student(student: Any, tok: Any, out_dir: Path, card: dict[str, Any], opts: RerankTrainOptions) -> None:
    """Write the student folder (weights, tokenizer, ``cds_reranker.json``, card) atomically; sets
    ``card["model_id"]`` (the folder name and a hash of the weights)."""
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    student.save_pretrained(str(tmp))
    tok.save_pretrained(str(tmp))
    card["model_id"] = f"cds/{out_dir.name}@{weights_hash(tmp)}"
    (tmp / MARKER).write_text(json.dumps({"model_id": card["model_id"], "teacher": card.get("teacher"),
                                          "layers": opts.layers, "ffn": opts.ffn,
                                          "max_length": opts.max_length}) + "\n")
    (tmp / "training_card.json").write_text(json.dumps(card, indent=1) + "\n")
    if "heldout" in card:
        (tmp / "README.md").write_text(card_markdown(card))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)


def card_markdown(card: dict[str, Any]) -> str:
    h, o = card["heldout"], card["options"]
    d = (card.get("data_card") or {}).get("counts", {})
    return "\n".join([
        f"# {card['model_id']}", "", card["what"] + ".", "",
        f"- teacher: `{card['teacher']}`; created {card['created']}; {card['parameters']:,} parameters",
        f"- data: {card['train_pairs']:,} (question, passage) pairs of {card['train_questions']:,} training "
        f"questions (own answer, sibling pages, BM25 of {d.get('pool_pages', '?')} other training pages); never "
        f"read: {(card.get('data_card') or {}).get('excluded', '?')}",
        f"- training: {card['steps_done']} of {card['steps_planned']} steps (batch {o['batch_size']}, lr "
        f"{o['learning_rate']}, loss {o.get('loss', 'bce')}, max length {o['max_length']}), "
        f"{card['train_seconds_total'] / 60:.1f} min in all "
        f"(teacher labels included); loss {card['loss_first']:.4f} -> {card['loss_last']:.4f}",
        "", f"Held-out pages ({h['questions']} questions, {h['pairs']} pairs), student against teacher:", "",
        f"- Pearson {h['pearson']}, Spearman {h['spearman']}, mean |p difference| {h['mean_abs_diff']}; same top "
        f"passage for {h['same_top_passage']}% of questions",
        f"- AUROC for the question's own answer passage: teacher {h['auroc_own_answer']['teacher']}, student "
        f"{h['auroc_own_answer']['student']}",
        "", "Use it with `--set retrieval.rerank=true --set retrieval.reranker=<this folder>` (BENCHMARKS.md, "
        "issue 15).", ""])
