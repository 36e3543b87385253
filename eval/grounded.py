"""Grounded answering on held-out MedQuAD questions, through the full assistant.

Each held-out question (the retrieval split's ``test`` part, never trained on) is asked in
one of two conditions (a seeded share is withheld; ``--both`` asks every question in both):

- **answerable**: the normal pipeline. Does the answer cite the gold page (the question's
  own MedQuAD answer, or a verbatim duplicate of it)? Does it wrongly abstain? A gold citation
  is counted two ways too: by a marker the generator wrote (``cites_gold_model``), or only by
  the pipeline's post-hoc attribution (``cites_gold_attributed``: the generator gave no marker,
  or one the support check re-cited); ``cites_gold`` is either.
- **gold withheld**: the gold page, its siblings (same XML file), pages with the same topic
  title, and verbatim duplicates are hidden from retrieval. The assistant should abstain.
  Other collections (WikiDoc, guidelines) may still hold an answer, so 100% is not the
  ceiling; the comparison between models is on identical prompts.

Every answer and its numbers go to ``answers.jsonl``; ``summary.json`` has the shares with
95% Wilson intervals.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from corpora import load_sources
from eval.mcq.stats import mcnemar_p, wilson
from eval.splits import load_split
from rag.answer import Answer
from rag.errors import InputError


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def _answer_text(text: str) -> str:
    return text.split("\n\n", 1)[1] if text.startswith("## ") and "\n\n" in text else text


def questions(medquad: Path, split_path: Path, limit: int, seed: int, part: str = "test") -> list[dict[str, Any]]:
    """A seeded sample of held-out questions with their gold and withheld document sets."""
    split = load_split(split_path)
    ids = [q["doc_id"] for q in split.get(part, [])]
    if not ids:
        raise InputError(f"{split_path} has no '{part}' questions")
    docs = load_sources([f"medquad:{medquad}"]).documents
    by_id = {d.doc_id: d for d in docs}
    by_answer: dict[str, set[str]] = defaultdict(set)
    by_file: dict[str, set[str]] = defaultdict(set)
    for d in docs:
        by_answer[_norm(_answer_text(d.text))].add(d.doc_id)
        by_file[d.source.rsplit("#", 1)[0]].add(d.doc_id)
    picked = random.Random(seed).sample(ids, min(limit, len(ids)))
    out = []
    for doc_id in picked:
        doc = by_id.get(doc_id)
        if doc is None or not doc.meta.get("question"):
            continue
        gold = by_answer[_norm(_answer_text(doc.text))] | {doc_id}
        out.append({"doc_id": doc_id, "question": str(doc.meta["question"]).strip(), "title": doc.title,
                    "gold": sorted(gold), "siblings": sorted(by_file[doc.source.rsplit("#", 1)[0]])})
    return out


def withheld_docs(q: dict[str, Any], titles: dict[str, set[str]]) -> set[str]:
    """Everything that could answer ``q`` from its own page: gold, duplicates, siblings, same-title pages."""
    return set(q["gold"]) | set(q["siblings"]) | titles.get(q["title"].strip().lower(), set())


def _cited_docs(a: Answer, attributed: bool | None = None) -> set[str]:
    """Documents the answer's sentences cite; with ``attributed``, only sentences whose citation
    was (True) or was not (False, the generator's own marker) added by the pipeline's attribution."""
    used = {n for s in a.sentences if attributed is None or s.attributed == attributed for n in s.citations}
    return {c.doc_id for c in a.citations if c.n in used}


def reuse(run_dir: Path, limit: int) -> tuple[list[dict[str, Any]], set[int]]:
    """The first ``limit`` questions of an earlier run, each in the same condition (a paired comparison)."""
    path = run_dir / "answers.jsonl"
    if not path.exists():
        raise InputError(f"{path} not found; --reuse takes the folder of an earlier `eval grounded` run")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()][:limit]
    keys = ("doc_id", "question", "title", "gold", "siblings")
    return [{k: r[k] for k in keys} for r in rows], {i for i, r in enumerate(rows) if "withheld" in r}


def evaluate(assistant: Any, qs: list[dict[str, Any]], out_dir: Path, batch_size: int = 8,
             progress: Callable[[int, int], None] | None = None, withheld_share: float = 0.4, both: bool = False,
             seed: int = 7, withheld: set[int] | None = None) -> dict[str, Any]:
    index = assistant.index
    titles: dict[str, set[str]] = defaultdict(set)
    for c in index.children:
        titles[c.title.strip().lower()].add(c.doc_id)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = [dict(q) for q in qs]
    n_held = len(qs) if both else round(len(qs) * withheld_share)
    held_idx = set(range(len(qs))) if both else set(random.Random(seed).sample(range(len(qs)), n_held))
    if withheld is not None:
        held_idx = set(withheld)
    ans_idx = list(range(len(qs))) if both else [i for i in range(len(qs)) if i not in held_idx]
    held_list = sorted(held_idx)
    total = len(ans_idx) + len(held_list)
    t0 = time.perf_counter()
    done = [0]

    def tick(_: int, __: Answer) -> None:
        done[0] += 1
        if progress is not None:
            progress(done[0], total)

    normal = assistant.ask_many([qs[i]["question"] for i in ans_idx], batch_size=batch_size, on_answer=tick)
    held = assistant.ask_many([qs[i]["question"] for i in held_list],
                              withhold=[withheld_docs(qs[i], titles) for i in held_list], batch_size=batch_size,
                              on_answer=tick)
    seconds = time.perf_counter() - t0
    for i, a in zip(ans_idx, normal, strict=True):
        row = rows[i]
        gold = set(row["gold"])
        by_model = (not a.abstained) and bool(gold & _cited_docs(a, attributed=False))
        cites_gold = (not a.abstained) and bool(gold & _cited_docs(a))
        row["answerable"] = {"abstained": a.abstained, "reason": a.abstain_reason, "answer": a.answer,
                             "draft": a.draft, "confidence": a.confidence,
                             "gold_in_sources": bool(gold & {c.doc_id for c in a.citations}),
                             "cites_gold": cites_gold, "cites_gold_model": by_model,
                             "cites_gold_attributed": cites_gold and not by_model,
                             "cited_docs": sorted(_cited_docs(a))}
    for i, w in zip(held_list, held, strict=True):
        rows[i]["withheld"] = {"abstained": w.abstained, "reason": w.abstain_reason, "answer": w.answer,
                               "draft": w.draft, "confidence": w.confidence,
                               "model_abstained": w.abstain_reason == "the generator found no answer in the sources"}
    with (out_dir / "answers.jsonl").open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    summary = summarize(rows)
    models = (normal or held)[0].models if (normal or held) else {}
    summary.update({"model": models, "questions": len(rows), "answerable_questions": len(ans_idx),
                    "withheld_questions": len(held_list),
                    "seconds": round(seconds, 1), "batch_size": batch_size, "index_version": index.version})
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    return summary


def share(k: int, n: int) -> dict[str, Any]:
    """``k`` of ``n`` as a share with its 95% Wilson interval."""
    lo, hi = wilson(k, n) if n else (0.0, 0.0)
    return {"k": k, "n": n, "share": round(k / n, 4) if n else None, "ci95": [round(lo, 4), round(hi, 4)]}


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The shares of a run's rows (``answers.jsonl``).

    ``cites_gold_model`` / ``cites_gold_attributed`` are over the answerable rows that record the
    split; rows written before it (an older run) have only ``cites_gold`` and are left out of them.
    """
    a = [r["answerable"] for r in rows if "answerable" in r]
    w = [r["withheld"] for r in rows if "withheld" in r]
    n = len(a)
    gold_shown = [x for x in a if x["gold_in_sources"]]
    split = [x for x in a if "cites_gold_model" in x]
    return {
        "answerable": {
            "cites_gold": share(sum(x["cites_gold"] for x in a), n),
            "cites_gold_model": share(sum(x["cites_gold_model"] for x in split), len(split)),
            "cites_gold_attributed": share(sum(x["cites_gold_attributed"] for x in split), len(split)),
            "cites_gold_when_gold_retrieved": share(sum(x["cites_gold"] for x in gold_shown), len(gold_shown)),
            "answered": share(sum(not x["abstained"] for x in a), n),
            "wrong_abstention_when_gold_retrieved": share(sum(x["abstained"] for x in gold_shown), len(gold_shown)),
            "gold_retrieved": share(len(gold_shown), n),
            "abstain_reasons": dict(Counter(x["reason"] for x in a if x["abstained"])),
        },
        "withheld": {
            "abstained": share(sum(x["abstained"] for x in w), len(w)),
            "generator_abstained": share(sum(x["model_abstained"] for x in w), len(w)),
            "abstain_reasons": dict(Counter(x["reason"] for x in w if x["abstained"])),
        },
    }


def cell(s: dict[str, Any]) -> str:
    """A share for a table: ``62.5% (54-71)``."""
    return f"{100 * s['share']:.1f}% ({100 * s['ci95'][0]:.0f}-{100 * s['ci95'][1]:.0f})" if s["n"] else "-"


def markdown(summaries: dict[str, dict[str, Any]]) -> str:
    """One row per run (base, tuned, ...)."""
    lines = ["| run | cites gold | by the generator's marker | only by attribution | cites gold (gold retrieved) | "
             "wrong abstention (gold retrieved) | abstains, gold withheld | generator abstains, gold withheld |",
             "|---|---|---|---|---|---|---|---|"]
    for name, s in summaries.items():
        a, w = s["answerable"], s["withheld"]
        split = [cell(a[k]) if k in a else "-" for k in ("cites_gold_model", "cites_gold_attributed")]
        lines.append(f"| {name} | {cell(a['cites_gold'])} | {split[0]} | {split[1]} | "
                     f"{cell(a['cites_gold_when_gold_retrieved'])} | "
                     f"{cell(a['wrong_abstention_when_gold_retrieved'])} | {cell(w['abstained'])} | "
                     f"{cell(w['generator_abstained'])} |")
    return "\n".join(lines) + "\n"


def paired(run_a: Path, run_b: Path) -> dict[str, Any]:
    """Per-question comparison of two runs on the same questions (``--reuse``): discordant pairs + McNemar."""
    def rows(d: Path) -> dict[str, dict[str, Any]]:
        with (d / "answers.jsonl").open(encoding="utf-8") as f:
            return {r["doc_id"]: r for r in map(json.loads, f)}

    a, b = rows(run_a), rows(run_b)
    out: dict[str, Any] = {"run_a": str(run_a), "run_b": str(run_b)}
    for cond, key in (("answerable", "cites_gold"), ("answerable", "cites_gold_model"), ("answerable", "abstained"),
                      ("withheld", "abstained")):
        # A run written before the model/attribution split has no cites_gold_model: n is then 0.
        common = [d for d in a if d in b and key in a[d].get(cond, {}) and key in b[d].get(cond, {})]
        only_a = sum(bool(a[d][cond][key]) and not b[d][cond][key] for d in common)
        only_b = sum(bool(b[d][cond][key]) and not a[d][cond][key] for d in common)
        out[f"{cond}.{key}"] = {"n": len(common), "only_a": only_a, "only_b": only_b,
                                "mcnemar_p": round(mcnemar_p(only_a, only_b), 4)}
    return out
