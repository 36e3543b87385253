"""(question, passage) pairs for distilling the verifier's answerability into a small reranker.

The distilled reranker (finetune/reranker.py) learns to give the scores the verifier gives to the passages a
retriever puts in front of it, so its pairs look like a rerank head: for each training question, its own
answer passages, the first passages of sibling pages (same condition, another question type: on topic,
usually not an answer) and BM25's top passages of a pool of other training pages (hard negatives of other
topics), ``candidates`` in all. Questions are reworded as patients and clinicians type them for a share of
them (``verifier_styles.restyle``, ``vignette``), like the realistic set. The labels are not here: the
teacher scores every pair (``finetune.reranker.label``).

Only training pages are read: the partition of the domain-tuned embedder (``embedder_data.partition``) keeps
out every MedQuAD file of the held-out retrieval split (the realistic and MedQuAD retrieval benchmarks'
pages), pages sharing their focus and pages with an identical answer; NGC is not read. The retrieved top 20
of the realistic or trust index are *not* used as candidates: their MedQuAD pages are the split's held-out
pages (the trust index's 615 MedQuAD files are all in the split), so the student would see the benchmark's
passages. A hashed ``heldout`` share of the remaining pages gives the card's teacher-agreement figures.
"""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from corpora.document import Document
from finetune.embedder_data import medquad_file, partition, split_files
from finetune.verifier_data import Lexical, Passages, QADoc, qa_docs, styled


@dataclass
class RerankDataOptions:
    seed: int = 17
    questions: int = 1200  # training questions (each with ``candidates`` passages)
    heldout_questions: int = 100  # questions of held-out pages, for the card
    candidates: int = 12
    own: int = 2  # passages of the question's own answer
    siblings: int = 2  # first passages of sibling pages
    pool_docs: int = 6000  # training pages whose passages BM25 searches for the rest (besides the questions' own)
    styled_share: float = 0.6
    vignette_share: float = 0.1
    heldout_share: float = 0.05


@dataclass(frozen=True)
class RerankPair:
    question: str
    passage: str
    qid: str  # the question's document
    kind: str  # own | sibling | bm25
    gold: int  # 1: a passage of the question's own answer (for the card's AUROC; training uses the teacher)


def candidates(qdocs: list[QADoc], pool: list[QADoc], opts: RerankDataOptions, rng: random.Random,
               stats: Counter[str]) -> list[RerankPair]:
    """Up to ``opts.candidates`` passages per question: own, sibling, then BM25 of the pool (other pages)."""
    flat = [(d, p) for d in pool for p in d.passages]
    lex = Lexical([p for _, p in flat])
    by_group: dict[str, list[QADoc]] = defaultdict(list)
    for d in pool:
        by_group[d.group].append(d)
    out: list[RerankPair] = []
    for d in styled(qdocs, rng, opts.styled_share, opts.vignette_share):
        sibs = [s for s in by_group[d.group] if s.doc_id != d.doc_id and s.question.lower() != d.question.lower()]
        picks = [(p, "own") for p in d.passages[: opts.own]]
        picks += [(s.passages[0], "sibling") for s in rng.sample(sibs, min(opts.siblings, len(sibs)))]
        picks += [(flat[i][1], "bm25") for i in lex.top(d.question, 3 * opts.candidates)
                  if flat[i][0].doc_id != d.doc_id]
        seen: set[str] = set()
        for p, kind in picks:
            if p in seen:
                continue
            seen.add(p)
            out.append(RerankPair(d.question, p, d.doc_id, kind, int(kind == "own")))
            stats[f"pairs.{kind}"] += 1
            if len(seen) == opts.candidates:
                break
    return out


def _sample(docs: list[Document], n: int, rng: random.Random) -> list[Document]:
    return rng.sample(docs, min(n, len(docs)))


def build_from(mq: list[Document], wd: list[Document], split: dict[str, Any], opts: RerankDataOptions,
               passages_of: Passages | None = None) -> tuple[dict[str, list[RerankPair]], dict[str, Any]]:
    """``{"train": pairs, "heldout": pairs}`` and a card of counts."""
    held_ids = {q["doc_id"] for part in ("test", "dev") for q in split.get(part, [])}
    train_docs, held_docs, stats = partition(mq, wd, split_files(split), held_ids, opts.heldout_share)
    rng = random.Random(opts.seed)
    with_q = [d for d in train_docs if d.meta.get("question")]
    asked = _sample(with_q, opts.questions, rng)
    groups = {medquad_file(d) for d in asked if d.meta.get("collection") == "medquad"}
    # Siblings of the asked pages, then a random sample of the others: the BM25 pool (all training pages).
    family = [d for d in train_docs if d.meta.get("collection") == "medquad" and medquad_file(d) in groups]
    picked = {d.doc_id for d in asked} | {d.doc_id for d in family}
    rest = _sample([d for d in train_docs if d.doc_id not in picked], opts.pool_docs, rng)
    pool = qa_docs([*asked, *[d for d in family if d.doc_id not in {a.doc_id for a in asked}], *rest], passages_of)
    asked_ids = {d.doc_id for d in asked}
    train = candidates([d for d in pool if d.doc_id in asked_ids], pool, opts, rng, stats)
    held_stats: Counter[str] = Counter()
    hrng = random.Random(opts.seed + 1)
    held_pool = qa_docs(held_docs, passages_of)
    held_q = hrng.sample(held_pool, min(opts.heldout_questions, len(held_pool)))
    held = candidates(held_q, held_pool, opts, hrng, held_stats)
    card = {"options": asdict(opts), "counts": {"train_pairs": len(train), "heldout_pairs": len(held),
                                                "train_questions": len(asked_ids), "pool_pages": len(pool),
                                                "heldout_questions": len(held_q)},
            "stats": dict(sorted(stats.items())), "heldout_stats": dict(sorted(held_stats.items())),
            "excluded": "MedQuAD files of eval/splits/medquad_retrieval.json (dev+test), pages sharing their "
                        "focus, pages whose answer text is identical to theirs; NGC not read"}
    return {"train": train, "heldout": held}, card


def write(parts: dict[str, list[RerankPair]], card: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in parts.items():
        tmp = out / f".{name}.jsonl.tmp"
        with tmp.open("w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(asdict(r), ensure_ascii=False) + "\n")
        tmp.rename(out / f"{name}.jsonl")
    (out / "card.json").write_text(json.dumps(card, indent=1) + "\n", encoding="utf-8")


def read(path: Path) -> list[RerankPair]:
    with path.open(encoding="utf-8") as f:
        return [RerankPair(**json.loads(line)) for line in f if line.strip()]
