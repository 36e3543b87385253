"""Run multiple-choice benchmarks: one or several conditions (base, tuned, base+rag, tuned+rag).

The runner reads the data once, retrieves once (for the +rag conditions), loads each model once
(base, then the adapter-merged model), and writes one run folder per condition:
``predictions.jsonl``, ``summary.json``, ``report.md`` and a reliability diagram. With more than one
condition, the folders sit under ``--output`` with a combined ``report.md``, ``matrix.json`` and an
accuracy chart, and every condition is compared with ``base`` on the same questions.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import random
import subprocess
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from eval.mcq import report, stats
from eval.mcq.prompts import Passage, PromptTemplate, prefix_body, render, suffix_body
from eval.mcq.readers import LETTERS, CopBase, Dataset, MCQItem, fewshot_pool, read_bench
from eval.mcq.results import ConditionResult
from eval.mcq.scoring import LoglikScorer, Prompt, generate_answers, parse_letter, softmax
from rag.config import PROJECT_ROOT, AppConfig, resolve_path
from rag.errors import InputError

log = logging.getLogger(__name__)

CONDITIONS = ("base", "tuned", "base+rag", "tuned+rag")


@dataclass
class RunSpec:
    """What to evaluate and how (everything here is recorded in each summary)."""

    bench: str
    data: str
    output: str
    conditions: list[str] = field(default_factory=lambda: ["base"])
    adapter: str | None = None
    subjects: list[str] | None = None
    limit: int | None = None
    seed: int = 1234
    batch_size: int = 8
    k_shot: int = 0
    fewshot: str | None = None
    chat_template: bool = False
    scorer: Literal["loglik", "generate"] = "loglik"
    max_new_tokens: int = 16
    rag_k: int = 3
    rag_tokens: int = 256
    cop_base: CopBase = "auto"
    prefix_cache: bool = True
    overwrite: bool = False
    skip_missing_adapter: bool = False  # the matrix skips tuned conditions when there is no adapter


def folder_name(condition: str) -> str:
    return condition.replace("+", "-")


def conditions_from_flags(matrix: bool, conditions: str | None, adapter: str | None, rag: bool) -> list[str]:
    """The CLI's --matrix / --conditions / --adapter / --rag as a list of condition names."""
    if matrix and conditions:
        raise InputError("use --matrix or --conditions, not both")
    if matrix:
        return list(CONDITIONS)
    if conditions:
        return [c.strip() for c in conditions.split(",") if c.strip()]
    return [("tuned" if adapter else "base") + ("+rag" if rag else "")]


def plan_conditions(spec: RunSpec) -> tuple[list[str], list[str]]:
    """(conditions to run, skipped with a reason). Unknown names are a usage error."""
    bad = [c for c in spec.conditions if c not in CONDITIONS]
    if bad:
        raise InputError(f"unknown condition(s) {', '.join(bad)}; choose from {', '.join(CONDITIONS)}")
    tuned = [c for c in spec.conditions if c.startswith("tuned")]
    if tuned and not spec.adapter:
        if not spec.skip_missing_adapter:
            raise InputError(f"condition {tuned[0]} needs a LoRA adapter: pass --adapter DIR")
        return [c for c in spec.conditions if c not in tuned], tuned
    if spec.adapter and not (Path(spec.adapter) / "adapter_config.json").exists():
        raise InputError(f"adapter folder {spec.adapter} has no adapter_config.json; pass a peft adapter folder")
    return list(dict.fromkeys(spec.conditions)), []


def select(items: list[MCQItem], limit: int | None, seed: int) -> list[MCQItem]:
    """A seeded random subset of ``limit`` questions, kept in file order (so subjects stay mixed)."""
    if limit is None or limit >= len(items):
        return items
    if limit < 1:
        raise InputError("--limit must be at least 1")
    keep = set(random.Random(seed).sample(range(len(items)), limit))
    return [it for i, it in enumerate(items) if i in keep]


def _sha256(paths: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def git_commit() -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def adapter_info(path: str | None) -> dict[str, Any] | None:
    if not path:
        return None
    folder = Path(path)
    cfg = json.loads((folder / "adapter_config.json").read_text())
    weights = sorted(folder.glob("adapter_model.*"))
    return {"path": str(folder.resolve()), "base_model": cfg.get("base_model_name_or_path"),
            "r": cfg.get("r"), "sha256": _sha256(weights) if weights else None}


# -- retrieval ---------------------------------------------------------------------------------
def rag_query(item: MCQItem) -> str:
    return " ".join((item.question + " " + " ".join(item.options)).split())


def retrieve_all(assistant: Any, items: Sequence[MCQItem], k: int, token_budget: int,
                 count_tokens: Any) -> tuple[list[list[Passage]], list[list[str]], dict[str, Any]]:
    """Top-``k`` sources per question (question + options as the query), each trimmed to ``token_budget / k``."""
    from rag.generate import PromptSource, fit_sources

    retriever = assistant.retriever()
    limit = assistant.config.query.max_question_chars
    passages, ids = [], []
    for it in items:
        ret = retriever.retrieve(rag_query(it)[:limit], None, k)
        srcs = [PromptSource(n, u.chunk.title, u.chunk.section, u.chunk.kind, u.chunk.patient_id, u.chunk.text)
                for n, u in enumerate(ret.units, start=1)]
        # An equal share of the budget per source: a long merged section must not crowd out the others.
        srcs = [t for s in srcs for t in fit_sources([s], count_tokens, max(64, token_budget // max(1, k)))]
        passages.append([Passage(s.n, s.title, s.section, s.text) for s in srcs])
        kept = {s.n for s in srcs}
        ids.append([u.chunk.chunk_id for n, u in enumerate(ret.units, start=1) if n in kept])
    idx = assistant.index
    info = {"dir": str(assistant.index_root), "version": idx.version, "embedder": assistant.embedder.model_id,
            "top_k": k, "token_budget": token_budget, "query": "question + options",
            "children": len(idx.children)}
    return passages, ids, info


# -- prompts -----------------------------------------------------------------------------------
def build_prompts(template: PromptTemplate, items: Sequence[MCQItem], exemplars: dict[str, list[MCQItem]],
                  passages: Sequence[Sequence[Passage]] | None, chat: Any) -> list[Prompt]:
    out = []
    for i, it in enumerate(items):
        shots = exemplars.get(it.subject, exemplars.get("*", []))
        shots = [s for s in shots if s.question != it.question]  # never show a question its own answer
        pre, suf = render(prefix_body(template, it.subject, shots), suffix_body(
            template, it, passages[i] if passages else ()), chat)
        out.append(Prompt(pre, suf, tuple(template.continuation(LETTERS[k]) for k in range(len(it.options)))))
    return out


# -- the run -----------------------------------------------------------------------------------
def run(cfg: AppConfig, spec: RunSpec, progress: bool = False, say: Any = print,
        assistant: Any = None) -> list[ConditionResult]:
    """Evaluate every planned condition; returns the results (also written under ``spec.output``).

    ``assistant`` (a :class:`rag.Assistant`) serves the +rag conditions; by default one is built from
    ``cfg`` (its configured index, built from the demo corpus on first use).
    """
    conditions, skipped = plan_conditions(spec)
    git = git_commit()  # at the start: the code that runs is the code at this commit
    if skipped:
        say(f"skipping {', '.join(skipped)}: no LoRA adapter given (pass --adapter DIR once the QLoRA "
            "adapter exists)")
    if spec.k_shot < 0:
        raise InputError("--k-shot must be 0 or more")
    if spec.batch_size < 1:
        raise InputError("--batch-size must be at least 1")
    out = Path(spec.output)
    multi = len(conditions) > 1
    marker = out / ("matrix.json" if multi else "summary.json")
    if marker.exists() and not spec.overwrite:
        raise InputError(f"{out} already holds a run; pass --overwrite or choose another --output")
    dataset: Dataset = read_bench(spec.bench, spec.data, spec.subjects, spec.cop_base)
    items = select(dataset.items, spec.limit, spec.seed)
    exemplars: dict[str, list[MCQItem]] = {}
    fewshot_files: list[Path] = []
    if spec.k_shot:
        subjects = sorted({it.subject for it in items}) if spec.bench == "mmlu" else []
        exemplars, fewshot_files = fewshot_pool(spec.bench, spec.data, spec.fewshot, subjects, spec.cop_base)
        short = [s for s, ex in exemplars.items() if len(ex) < spec.k_shot]
        if short:
            raise InputError(f"--k-shot {spec.k_shot} but only {len(exemplars[short[0]])} exemplars for "
                             f"{short[0]}")
    from rag.models import resolve

    resolved = resolve(cfg.generator.model, resolve_path(cfg.models.cache_dir))
    data_info = {"bench": dataset.bench, "files": [str(f) for f in dataset.files],
                 "sha256": _sha256(dataset.files), "n_total": len(dataset.items), "limit": spec.limit,
                 "seed": spec.seed, **dataset.notes,
                 "fewshot_files": [str(f) for f in fewshot_files]}

    rag_cache: tuple[list[list[Passage]], list[list[str]], dict[str, Any]] | None = None
    results: list[ConditionResult] = []
    for adapter in ([None] if any(c.startswith("base") for c in conditions) else []) + \
            ([spec.adapter] if any(c.startswith("tuned") for c in conditions) else []):
        from rag.generate import Generator

        t_load = time.perf_counter()
        gen = Generator(resolved.path, resolved.model_id, Path(adapter) if adapter else None, cfg.generator.dtype)
        load_s = time.perf_counter() - t_load
        prefix = "tuned" if adapter else "base"
        for cond in [c for c in conditions if c.split("+")[0] == prefix]:
            use_rag = cond.endswith("+rag")
            if use_rag and rag_cache is None:
                if assistant is None:
                    from rag import Assistant

                    assistant = Assistant.open(cfg, progress=progress)
                say("retrieving sources for every question (once for all +rag conditions) ...")
                rag_cache = retrieve_all(assistant, items, spec.rag_k, spec.rag_tokens, gen.count_tokens)
            template = PromptTemplate("mmlu" if spec.bench == "mmlu" else "qa", spec.k_shot, spec.chat_template,
                                      use_rag, chat_template_text=gen.tokenizer.chat_template if spec.chat_template
                                      else None)
            folder = out / folder_name(cond) if multi else out
            res = _run_condition(cond, gen, template, items, exemplars, rag_cache if use_rag else None, spec,
                                 folder, progress, say)
            res.summary.update(model={"id": gen.model_id, "path": str(resolved.path), "dtype": gen.dtype,
                                      "load_s": round(load_s, 1)},
                               adapter=adapter_info(adapter), data=data_info, git=git,
                               index=rag_cache[2] if use_rag and rag_cache else None)
            report.write_run(folder, res.summary)
            results.append(res)
            say(f"{cond}: accuracy {res.summary['accuracy']:.3f} ± {res.summary['se']:.3f} "
                f"(n={res.summary['n']}, {res.summary['questions_per_s']:.2f} questions/s) -> {folder}")
        del gen
    if multi:
        report.write_matrix(out, results, skipped, spec.seed)
    return results


def _run_condition(cond: str, gen: Any, template: PromptTemplate, items: list[MCQItem],
                   exemplars: dict[str, list[MCQItem]],
                   rag: tuple[list[list[Passage]], list[list[str]], dict[str, Any]] | None, spec: RunSpec,
                   folder: Path, progress: bool, say: Any) -> ConditionResult:
    from tqdm import tqdm

    chat = None
    if spec.chat_template:
        def chat(text: str) -> str:
            return str(gen.tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                         add_generation_prompt=True))

    prompts = build_prompts(template, items, exemplars, rag[0] if rag else None, chat)
    bar = tqdm(total=len(items), desc=cond, unit="q", disable=not progress, dynamic_ncols=True)
    load_before = _loadavg()
    t0, cpu0 = time.perf_counter(), time.process_time()
    replies: list[str] | None = None

    def done(n: int) -> None:  # tqdm.update's signature differs between types-tqdm versions
        bar.update(n)

    if spec.scorer == "loglik":
        scorer = LoglikScorer(gen.model, gen.tokenizer, spec.batch_size, spec.prefix_cache,
                              add_special_tokens=not spec.chat_template)
        logliks = scorer.score(prompts, on_done=done)
        tokens = scorer.prompt_tokens
    else:
        replies, tokens = generate_answers(gen.model, gen.tokenizer, prompts, spec.max_new_tokens,
                                           add_special_tokens=not spec.chat_template, on_done=done)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    bar.close()

    records, correct, conf_, golds, probs_rows = [], [], [], [], []
    parse_failures = 0
    for i, it in enumerate(items):
        rec: dict[str, Any] = {"id": it.id, "subject": it.subject, "gold": LETTERS[it.answer]}
        if replies is None:
            lp = logliks[i]
            p = softmax(lp)
            pred: int | None = int(np.argmax(lp))
            rec["probs"] = {LETTERS[k]: round(float(v), 6) for k, v in enumerate(p)}
            rec["logliks"] = {LETTERS[k]: round(float(v), 4) for k, v in enumerate(lp)}
            conf_.append(float(p.max()))
            golds.append(it.answer)
            probs_rows.append(p)
        else:
            pred = parse_letter(replies[i], len(it.options))
            rec["reply"] = replies[i]
            rec["probs"] = None
            parse_failures += pred is None
        ok = pred == it.answer
        rec.update(predicted=LETTERS[pred] if pred is not None else None, correct=ok,
                   retrieved=rag[1][i] if rag else [])
        records.append(rec)
        correct.append(ok)

    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "predictions.jsonl").open("w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    c = np.asarray(correct, dtype=bool)
    acc = stats.accuracy(c)
    per_subject = {}
    for subj in sorted({it.subject for it in items}):
        m = np.asarray([it.subject == subj for it in items])
        a = stats.accuracy(c[m])
        per_subject[subj] = {"n": a.n, "accuracy": a.accuracy, "se": a.se, "ci95": list(a.ci95)}
    summary: dict[str, Any] = {
        "condition": cond, "bench": spec.bench, "n": acc.n, "correct": acc.correct, "accuracy": acc.accuracy,
        "se": acc.se, "ci95": list(acc.ci95), "ci_method": "wilson", "per_subject": per_subject,
        "scorer": spec.scorer, "random_baseline": float(np.mean([1 / len(it.options) for it in items])),
        "ece_15": stats.ece(conf_, c, 15) if conf_ else None,
        "brier": stats.brier(np.stack(probs_rows), golds) if probs_rows else None,
        "reliability": [asdict(b) for b in stats.reliability(conf_, c, 15)] if conf_ else None,
        "parse_failures": parse_failures if replies is not None else None,
        "prompt": {"template": template.to_dict(), "hash": template.hash, "chat_template": spec.chat_template,
                   "k_shot": spec.k_shot, "example": prompts[0].prefix + prompts[0].suffix
                   + prompts[0].continuations[items[0].answer] if prompts else None},
        "settings": {"batch_size": spec.batch_size, "prefix_cache": spec.prefix_cache,
                     "rag_k": spec.rag_k if rag else None, "rag_tokens": spec.rag_tokens if rag else None,
                     "max_new_tokens": spec.max_new_tokens if replies is not None else None},
        "wall_s": round(wall, 2), "questions_per_s": len(items) / wall if wall > 0 else None,
        # CPU seconds of this process while scoring: with other jobs on the machine, wall time
        # grows but this does not (divide by the torch threads for an idle-machine wall estimate).
        "process_cpu_s": round(cpu, 2), "load_average_1m": [load_before, _loadavg()],
        "prompt_tokens_processed": tokens,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"python": platform.python_version(), "cpu": platform.machine(), "torch_threads": _threads()},
    }
    return ConditionResult(cond, folder, summary, c, [it.id for it in items])


def _loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _threads() -> int:
    import torch

    return int(torch.get_num_threads())
