"""Training triplets for the domain-tuned embedder (finetune/embedder.py), from MedQuAD and WikiDoc.

Each example is ``(question, positive passage, hard negative passage)``:

- the question is the source's own question, or (``styled_share`` of them) the same information need
  worded as a patient or a clinician types it (``verifier_styles.restyle``: lay phrasing, shorthand,
  a short background sentence), so the encoder sees the query styles of the realistic set;
- the positive is the first passage of its answer, cut by the index's own chunker (what the index
  embeds: ``Chunk.context_text()``, title — section header and ~96 tokens);
- the hard negative is the first passage of a *sibling* page (same MedQuAD file: same condition,
  another question type, e.g. causes vs treatment) or a BM25 top passage of another topic. The
  other examples of a batch are the in-batch negatives (MultipleNegativesRankingLoss).

Held out, never trained on: every MedQuAD file of the retrieval split (eval/splits/medquad_retrieval.json,
dev and test: the pages of the realistic and MedQuAD retrieval benchmarks), every other page whose
focus (condition) one of those files has, and every page whose answer text is identical to one of theirs
(MedQuAD repeats boilerplate answers across conditions). NGC guideline summaries (the realistic set's
other gold) are not read at all. A further ``heldout_share`` of the remaining MedQuAD files and of
WikiDoc pages (by a hash of the file / page id) is kept apart to measure the embedder itself (the ``heldout`` part).
"""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from corpora import load_sources
from corpora.document import Document
from finetune.verifier_data import Lexical, Passages, QADoc, _hash_part, qa_docs, styled


@dataclass(frozen=True)
class Triplet:
    query: str
    positive: str
    negative: str
    doc_id: str  # the positive's document
    negative_kind: str  # sibling | bm25
    source: str  # medquad | wikidoc


@dataclass
class EmbedderDataOptions:
    seed: int = 13
    styled_share: float = 0.5  # questions reworded as patients/clinicians type them
    vignette_share: float = 0.1  # questions put after a short case description
    sibling_share: float = 0.5  # hard negative from a sibling page when there is one, else BM25
    heldout_share: float = 0.05  # of the remaining MedQuAD files and WikiDoc pages, for the card's figures
    max_examples: int | None = None  # cap on training triplets (a random sample), None: all


def split_files(split: dict[str, Any]) -> set[str]:
    """The MedQuAD files (``folder/file.xml``) of every held-out part of the retrieval split."""
    files = split.get("files", {})
    return {f for part in ("test", "dev") for f in files.get(part, [])} | {
        q["file"] for part in ("test", "dev") for q in split.get(part, []) if "file" in q}


def medquad_file(d: Document) -> str:
    return d.source.split("#", 1)[0]


def answer_key(d: Document) -> str:
    """The answer text without its "## Qtype" heading, whitespace-normalised (MedQuAD repeats answers verbatim)."""
    return " ".join(d.text.split("\n", 2)[-1].split()) if d.text.startswith("#") else " ".join(d.text.split())


def partition(mq: list[Document], wd: list[Document], held_files: set[str], held_doc_ids: set[str],
              heldout_share: float) -> tuple[list[Document], list[Document], Counter[str]]:
    """``(train documents, held-out documents, counts)``: the split's files, their ids, their foci and any page
    whose answer text is identical to one of theirs never reach training; ``heldout_share`` of the rest (by file
    / page hash) is held out for the card."""
    stats: Counter[str] = Counter()
    in_split = [d for d in mq if medquad_file(d) in held_files or d.doc_id in held_doc_ids]
    split_focus = {str(d.meta.get("focus", "")).strip().lower() for d in in_split} - {""}
    split_ids = {d.doc_id for d in in_split}
    split_answers = {answer_key(d) for d in in_split}
    train: list[Document] = []
    held: list[Document] = []
    for d in mq:
        if d.doc_id in split_ids:
            stats["medquad.retrieval_split"] += 1
        elif str(d.meta.get("focus", "")).strip().lower() in split_focus:
            stats["medquad.same_focus_as_split"] += 1
        elif answer_key(d) in split_answers:
            stats["medquad.same_answer_as_split"] += 1
        elif _hash_part(medquad_file(d), heldout_share) == "heldout":
            held.append(d)
        else:
            train.append(d)
    for d in wd:
        if answer_key(d) in split_answers:
            stats["wikidoc.same_answer_as_split"] += 1
        else:
            (held if _hash_part(d.doc_id, heldout_share) == "heldout" else train).append(d)
    stats["train_documents"] = len(train)
    stats["heldout_documents"] = len(held)
    return train, held, stats


def triplets(qdocs: list[QADoc], rng: random.Random, opts: EmbedderDataOptions, stats: Counter[str]
             ) -> list[Triplet]:
    """One triplet per question: its first passage, and a sibling or BM25 hard negative of another topic."""
    if not qdocs:
        return []
    flat = [(d, p) for d in qdocs for p in d.passages]
    lex = Lexical([p for _, p in flat])
    by_group: dict[str, list[QADoc]] = defaultdict(list)
    for d in qdocs:
        by_group[d.group].append(d)
    out: list[Triplet] = []
    for d in styled(qdocs, rng, opts.styled_share, opts.vignette_share):
        pos = d.passages[0]
        sibs = [s for s in by_group[d.group] if s.doc_id != d.doc_id and s.passages[0] != pos
                and s.question.lower() != d.question.lower()]
        neg, kind = None, "bm25"
        if sibs and rng.random() < opts.sibling_share:
            neg, kind = rng.choice(sibs).passages[0], "sibling"
        else:
            focus = d.focus.lower()
            for i in lex.top(d.question, 16):
                other, p = flat[i]
                # Another topic only: a passage of the same condition may answer the question too.
                if other.group != d.group and other.focus.lower() != focus and p != pos:
                    neg = p
                    break
        if neg is None:
            stats["no_negative"] += 1
            continue
        stats[f"negative.{kind}"] += 1
        stats[f"source.{d.source}"] += 1
        out.append(Triplet(d.question, pos, neg, d.doc_id, kind, d.source))
    return out


def build(data_dir: Path, split: dict[str, Any], opts: EmbedderDataOptions, passages_of: Passages | None = None
          ) -> tuple[dict[str, list[Triplet]], dict[str, Any]]:
    """``{"train": triplets, "heldout": triplets}`` and a card of counts."""
    mq = load_sources([f"medquad:{data_dir / 'medquad'}"]).documents
    wd_path = data_dir / "wikidoc_patient_info" / "medical_meadow_wikidoc_patient_information.json"
    wd = load_sources([f"wikidoc:{wd_path}"]).documents if wd_path.exists() else []
    return build_from(mq, wd, split, opts, passages_of)


def build_from(mq: list[Document], wd: list[Document], split: dict[str, Any], opts: EmbedderDataOptions,
               passages_of: Passages | None = None) -> tuple[dict[str, list[Triplet]], dict[str, Any]]:
    held_doc_ids = {q["doc_id"] for part in ("test", "dev") for q in split.get(part, [])}
    train_docs, held_docs, stats = partition(mq, wd, split_files(split), held_doc_ids, opts.heldout_share)
    rng = random.Random(opts.seed)
    train = triplets(qa_docs(train_docs, passages_of), rng, opts, stats)
    rng.shuffle(train)
    if opts.max_examples is not None and len(train) > opts.max_examples:
        train = train[:opts.max_examples]
    held_stats: Counter[str] = Counter()
    held = triplets(qa_docs(held_docs, passages_of), random.Random(opts.seed + 1), opts, held_stats)
    card = {"options": asdict(opts), "counts": {"train": len(train), "heldout": len(held)},
            "stats": dict(sorted(stats.items())), "heldout_stats": dict(sorted(held_stats.items())),
            "excluded": "MedQuAD files of eval/splits/medquad_retrieval.json (dev+test), pages sharing their "
                        "focus, pages whose answer text is identical to theirs; NGC not read"}
    return {"train": train, "heldout": held}, card


def write(parts: dict[str, list[Triplet]], card: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in parts.items():
        with (out / f"{name}.jsonl").open("w", encoding="utf-8") as f:
            for t in rows:
                f.write(json.dumps(asdict(t), ensure_ascii=False) + "\n")
    (out / "card.json").write_text(json.dumps(card, indent=1) + "\n", encoding="utf-8")


def read(path: Path) -> list[Triplet]:
    with path.open(encoding="utf-8") as f:
        return [Triplet(**json.loads(line)) for line in f if line.strip()]
