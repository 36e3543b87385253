"""Supervised fine-tuning data: closed-book QA, grounded answering with citations, heart-failure cases.

Every example is a conversational prompt/completion pair (``prompt``: the messages up to the
assistant turn; ``completion``: the assistant's reply), so the loss falls on the reply only.

1. ``closed_book``: answered MedQuAD pairs and WikiDoc patient information, near-identical
   questions removed, long answers cut at a sentence boundary.
2. ``grounded``: a MedQuAD question in **exactly the assistant's runtime prompt**
   (:func:`rag.generate.build_messages`) with 3-5 numbered sources retrieved from the full
   index: the gold answer's passage among distractors, and a target made of the gold
   passage's own sentences, each cited ``[n]`` (so every cited sentence is supported by its
   source). In ``withheld`` examples the gold document (and anything on the same topic) is
   removed and the target is the runtime abstention reply.
3. ``grounded_ehr``: a question about one heart-failure patient in the runtime ``--patient``
   prompt, sources from the product's patient-scoped retrieval, and a target stating the asked
   value from the record with ``[n]`` (or the abstention reply when the record cannot answer);
   see :mod:`finetune.ehr_grounded`.
4. ``hf_risk``: UCI heart-failure records as varied case narratives (no follow-up time, no
   outcome) with a rule-based risk assessment (:mod:`finetune.hf_cases`); some variants lack
   key measurements and the target says what is missing and why it matters.

Held-out evaluation questions never enter: the MedQuAD retrieval split (test and dev,
:func:`finetune.heldout.held_out_doc_ids`), every pair whose answer text equals a held-out answer,
and every question equal to a held-out question. Splits are by group: MedQuAD XML file (so
sibling questions stay together), WikiDoc entry, heart-failure patient.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from corpora.document import Document
from corpora.heart_failure import HFRecord, read_records
from corpora.medquad import read_medquad
from corpora.report import LoadReport
from corpora.wikidoc import read_wikidoc
from finetune import hf_cases
from finetune.ehr_grounded import ehr_examples
from rag.errors import InputError, SourceError
from rag.generate import ABSTAIN_TOKEN, PromptSource, build_messages, fit_sources
from rag.text import split_sentences

log = logging.getLogger(__name__)

CLOSED_BOOK_SYSTEM = ("You are a careful medical assistant. Answer the health question accurately and "
                      "concisely, in plain language.")
HF_SYSTEM = ("You are a careful clinical decision-support assistant. From the case description, give a risk "
             "category (low, intermediate or high) and the clinical factors driving it. Name missing "
             "measurements. Never predict or state an outcome.")
# Format "working" (train.hf_format): the rule is stated and the reply shows each factor's points.
HF_SYSTEM_WORKING = ("You are a careful clinical decision-support assistant. From the case description, give a "
                     "risk category (low, intermediate or high) and the clinical factors driving it: list each "
                     "factor's points, then the total, then the category. Name missing measurements. Never "
                     "predict or state an outcome.\n" + hf_cases.rule_text())
HF_SYSTEMS = {"category_first": HF_SYSTEM, "working": HF_SYSTEM_WORKING}
PARTS = ("closed_book", "grounded", "grounded_ehr", "hf_risk")
SPLITS = ("train", "val", "test")


@dataclass
class Example:
    id: str
    part: str
    source: str  # medquad | wikidoc | uci-heart-failure
    group: str  # the unit the split is drawn by
    prompt: list[dict[str, str]]
    completion: list[dict[str, str]]
    split: str = "train"
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)


@dataclass
class DataOptions:
    seed: int = 13
    val_fraction: float = 0.03  # of closed-book/grounded groups
    hf_val_fraction: float = 0.1  # of patients
    hf_test_fraction: float = 0.2
    answer_max_chars: int = 1200  # closed-book answers are cut at a sentence boundary below this
    grounded_questions: int = 3000  # how many training questions get a grounded example (0: skip the part)
    withheld_share: float = 0.3
    source_tokens: int = 400  # prompt budget for the sources of a grounded example
    target_max_words: int = 70
    hf_complete: int = 2  # complete narratives per patient
    hf_missing: int = 1  # narratives with missing key measurements per patient
    ehr_per_patient: int = 2  # record questions per heart-failure patient (grounded_ehr; 0: skip the part)
    ehr_abstain_share: float = 0.4  # chance a patient also gets a question the record cannot answer
    hf_format: str = "category_first"  # heart-failure targets: see finetune.hf_cases.FORMATS
    clinician_questions: str | None = None  # finetune/questions/clinician_grounded.jsonl: part grounded_clinician
    clinician_val_fraction: float = 0.15  # of the clinician questions' guideline documents


# -- helpers -----------------------------------------------------------------------------------
_WS = re.compile(r"\s+")


def norm_question(q: str) -> str:
    """Near-identical questions ("What is (are) X ?" vs "what is x") map to one key."""
    q = q.lower().replace("(are)", "").replace("(is)", "")
    return _WS.sub(" ", re.sub(r"[^a-z0-9 ]", " ", q)).strip()


def norm_text(t: str) -> str:
    return _WS.sub(" ", t.lower()).strip()


def cap_answer(text: str, max_chars: int) -> str:
    """Cut at the last sentence end before ``max_chars`` (never mid-sentence unless unavoidable)."""
    text = text.strip()
    if len(text) <= max_chars:
        return text
    head = text[:max_chars]
    cut = max(head.rfind(". "), head.rfind(".\n"))
    return head[: cut + 1] if cut > max_chars // 3 else head.rsplit(" ", 1)[0] + " ..."


def assign_splits(groups: Iterable[str], seed: int, fractions: Sequence[tuple[str, float]]) -> dict[str, str]:
    """Shuffle the distinct groups with ``seed`` and cut them by ``fractions``; the rest is train."""
    ordered = sorted(set(groups))
    random.Random(seed).shuffle(ordered)
    out: dict[str, str] = {}
    start = 0
    for name, frac in fractions:
        n = round(len(ordered) * frac)
        for g in ordered[start: start + n]:
            out[g] = name
        start += n
    for g in ordered[start:]:
        out[g] = "train"
    return out


def _stable(s: str) -> str:
    return hashlib.sha1(s.encode()).hexdigest()[:10]


# -- held-out exclusion ---------------------------------------------------------------------------
@dataclass
class HeldOut:
    doc_ids: set[str]
    answers: set[str]
    questions: set[str]
    # Other pages that repeat a held-out answer or question: never trained on, never shown as distractors.
    repeats: set[str] = field(default_factory=set)

    def excludes(self, doc_id: str, question: str, answer: str) -> str | None:
        if doc_id in self.doc_ids:
            return "held_out_doc"
        if norm_text(answer) in self.answers:
            return "held_out_answer_duplicate"
        if norm_question(question) in self.questions:
            return "held_out_question_duplicate"
        return None


def held_out(medquad_docs: list[Document], doc_ids: set[str]) -> HeldOut:
    held = [d for d in medquad_docs if d.doc_id in doc_ids]
    return HeldOut(doc_ids, {norm_text(d.text.split("\n\n", 1)[-1]) for d in held},
                   {norm_question(str(d.meta.get("question", ""))) for d in held})


def _answer(doc: Document) -> str:
    """A MedQuAD document's answer without its ``## Qtype`` heading."""
    text = doc.text
    return text.split("\n\n", 1)[1].strip() if text.startswith("## ") and "\n\n" in text else text.strip()


# -- part 1: closed-book QA -----------------------------------------------------------------------
def closed_book(medquad: list[Document], wikidoc: list[Document], held: HeldOut, opts: DataOptions,
                stats: Counter[str]) -> list[Example]:
    seen_q: set[str] = set()  # shared: a WikiDoc question already asked in MedQuAD is a near-duplicate
    out: list[Example] = []
    for d in sorted(medquad, key=lambda d: d.doc_id):
        ex = _closed_book_one(d, "medquad", _answer(d), f"medquad:{d.source.rsplit('#', 1)[0]}",
                              {"qtype": d.meta.get("qtype")}, held, opts, stats, seen_q)
        if ex is not None:
            out.append(ex)
    for d in wikidoc:
        ex = _closed_book_one(d, "wikidoc", d.text.strip(), f"wikidoc:{d.doc_id}", {}, held, opts, stats, seen_q)
        if ex is not None:
            out.append(ex)
    return out


def _closed_book_one(d: Document, source: str, answer: str, group: str, meta: dict[str, Any], held: HeldOut,
                     opts: DataOptions, stats: Counter[str], seen_q: set[str]) -> Example | None:
    q = str(d.meta.get("question", "")).strip()
    if not q or not answer:
        stats[f"closed_book.{source}.no_question"] += 1
        held.repeats.add(d.doc_id)
        return None
    why = held.excludes(d.doc_id, q, answer)
    if why:
        stats[f"closed_book.{source}.excluded.{why}"] += 1
        held.repeats.add(d.doc_id)
        return None
    key = norm_question(q)
    if key in seen_q:
        stats[f"closed_book.{source}.near_duplicate_question"] += 1
        return None
    seen_q.add(key)
    capped = cap_answer(answer, opts.answer_max_chars)
    stats[f"closed_book.{source}.answer_capped"] += capped != answer
    return Example(id=f"cb-{d.doc_id}", part="closed_book", source=source, group=group,
                   prompt=[{"role": "system", "content": CLOSED_BOOK_SYSTEM}, {"role": "user", "content": q}],
                   completion=[{"role": "assistant", "content": capped}], meta={"doc_id": d.doc_id, **meta})


# -- part 2: grounded answering -------------------------------------------------------------------
def cited_target(text: str, n: int, max_words: int) -> str | None:
    """The gold passage's leading whole sentences, each cited ``[n]``; None if it has no usable sentence."""
    picked: list[str] = []
    words = 0
    for line in text.splitlines():
        line = line.strip().lstrip("-•* ").strip()
        if not line or line.startswith("#"):
            continue
        for s in split_sentences(line):
            if not picked and not (s[:1].isupper() or s[:1].isdigit()):
                continue  # a passage can open mid-sentence (chunk overlap)
            if not s.endswith((".", "!")) or len(s.split()) < 4:
                continue  # questions repeated inside MedQuAD answers are not statements
            if picked and words + len(s.split()) > max_words:
                break
            picked.append(f"{s[:-1].rstrip()} [{n}]{s[-1]}")
            words += len(s.split())
            if words >= max_words:
                break
        if words >= max_words or len(picked) >= 3:
            break
    return " ".join(picked) or None


def _shingles(text: str, k: int = 8) -> set[str]:
    w = norm_question(text).split()
    return {" ".join(w[i: i + k]) for i in range(max(0, len(w) - k + 1))}


def source_of(n: int, chunk: Any) -> PromptSource:
    """Source ``n`` of a grounded prompt, from an index chunk."""
    return PromptSource(n, chunk.title, chunk.section, chunk.kind, chunk.patient_id, chunk.text)


def grounded(medquad_train: list[Document], held: HeldOut, assistant: Any, count_tokens: Callable[[str], int],
             opts: DataOptions, stats: Counter[str], progress: bool = False) -> list[Example]:
    """Grounded examples for (a seeded sample of) the training questions, retrieved from ``assistant``'s index."""
    rng = random.Random(opts.seed + 1)
    docs = [d for d in medquad_train if d.meta.get("question")]
    rng.shuffle(docs)
    docs = docs[: opts.grounded_questions]
    index = assistant.index
    retriever = assistant.retriever()
    allowed = index.allowed_mask(None).copy()
    # Held-out documents (and pages repeating them) are never shown, not even as distractors.
    hidden = held.doc_ids | held.repeats
    held_rows = [i for i, c in enumerate(index.children) if c.doc_id in hidden]
    allowed[held_rows] = False
    out: list[Example] = []
    batch = 64
    it: Iterable[int] = range(0, len(docs), batch)
    if progress:
        from tqdm import tqdm

        it = tqdm(list(it), desc="grounded examples", unit="batch")
    for start in it:
        chunk = docs[start: start + batch]
        qvs = assistant.embedder.encode_queries([str(d.meta["question"]) for d in chunk]).astype(np.float32)
        for d, qv in zip(chunk, qvs, strict=True):
            ex = _grounded_one(d, qv, retriever, allowed, count_tokens, opts, rng, stats)
            if ex is not None:
                out.append(ex)
    return out


def _grounded_one(d: Document, qv: np.ndarray, retriever: Any, allowed: np.ndarray,
                  count_tokens: Callable[[str], int], opts: DataOptions, rng: random.Random,
                  stats: Counter[str]) -> Example | None:
    q = str(d.meta["question"]).strip()
    units = retriever.search(q, qv, None, 10, allowed=allowed).units
    gold = next((u for u in units if u.chunk.doc_id == d.doc_id), None)
    withheld = rng.random() < opts.withheld_share
    source_file = d.source.rsplit("#", 1)[0]
    focus = d.title.strip().lower()
    gold_sh = _shingles(_answer(d))
    if withheld:
        # Anything that could answer the question goes: the gold document, its siblings (same XML
        # file), pages on the same topic, and text that repeats the gold answer (MedQuAD has duplicates).
        pool = [u for u in units if u.chunk.doc_id != d.doc_id and not u.chunk.source.startswith(source_file)
                and focus not in u.chunk.title.lower() and u.chunk.title.lower() not in focus
                and not (gold_sh & _shingles(u.chunk.text))]
        k = rng.choice([3, 4, 5])
        if len(pool) < 3:
            stats["grounded.skipped.too_few_distractors"] += 1
            return None
        chosen = pool[:k]
        rng.shuffle(chosen)
        sources = fit_sources([source_of(n, u.chunk) for n, u in enumerate(chosen, 1)], count_tokens,
                              opts.source_tokens)
        target = ABSTAIN_TOKEN
        gold_n = None
    else:
        if gold is None:
            stats["grounded.skipped.gold_not_retrieved"] += 1
            return None
        others = [u for u in units if u.chunk.doc_id != d.doc_id]
        k = rng.choice([3, 4, 5])
        chosen = others[: k - 1]
        pos = rng.randrange(len(chosen) + 1)
        chosen.insert(pos, gold)
        # The gold source is trimmed first if the budget is tight, so its place is kept early.
        srcs = [source_of(n, u.chunk) for n, u in enumerate(chosen, 1)]
        sources = fit_sources(srcs, count_tokens, opts.source_tokens)
        gold_n = pos + 1
        if len(sources) < gold_n:
            stats["grounded.skipped.gold_trimmed"] += 1
            return None
        tgt = cited_target(sources[gold_n - 1].text, gold_n, opts.target_max_words)
        if tgt is None:
            stats["grounded.skipped.no_citable_sentence"] += 1
            return None
        target = tgt
    stats[f"grounded.{'withheld' if withheld else 'answer'}"] += 1
    messages = build_messages(q, sources, None)
    return Example(id=f"gr-{d.doc_id}", part="grounded", source="medquad", group=f"medquad:{source_file}",
                   prompt=messages, completion=[{"role": "assistant", "content": target}],
                   meta={"doc_id": d.doc_id, "withheld": withheld, "gold_n": gold_n, "n_sources": len(sources),
                         "source_doc_ids": [u.chunk.doc_id for u in chosen[: len(sources)]]})


# -- part 3: heart-failure cases ------------------------------------------------------------------
def hf_examples(records: list[HFRecord], opts: DataOptions, stats: Counter[str]) -> list[Example]:
    out: list[Example] = []
    for r in records:
        rng = random.Random(f"{opts.seed}-{r.patient_id}")
        variants = hf_cases.variants(r, rng, opts.hf_complete, opts.hf_missing, opts.hf_format)
        for i, (user, target, missing) in enumerate(variants):
            stats[f"hf_risk.{'missing' if missing else 'complete'}"] += 1
            out.append(Example(id=f"hf-{r.patient_id}-{i}", part="hf_risk", source="uci-heart-failure",
                               group=f"patient:{r.patient_id}",
                               prompt=[{"role": "system", "content": HF_SYSTEMS[opts.hf_format]},
                                       {"role": "user", "content": user}],
                               completion=[{"role": "assistant", "content": target}],
                               meta={"patient_id": r.patient_id, "missing": missing,
                                     "category": hf_cases.risk_category(r, frozenset(missing), opts.hf_format),
                                     "points": hf_cases.risk_points(r, frozenset(missing), opts.hf_format)}))
    return out


# -- the whole dataset ----------------------------------------------------------------------------
@dataclass
class Inputs:
    medquad: Path
    wikidoc: Path
    heart_failure: Path


def inputs_from_sources(sources: list[str]) -> Inputs:
    """Pick the three training inputs out of a source set (``FORMAT:PATH`` entries)."""
    found: dict[str, Path] = {}
    for s in sources:
        fmt, _, path = s.partition(":")
        found[fmt] = Path(path)
    missing = [f for f in ("medquad", "wikidoc", "uci-heart-failure") if f not in found]
    if missing:
        raise InputError(f"the source set has no {', '.join(missing)} entry; training data needs MedQuAD, WikiDoc "
                         "and the UCI heart-failure CSV (configs/full.yaml source_sets.full)")
    for p in found.values():
        if not p.exists():
            raise SourceError(f"{p} not found; set index.data_dir (or CDS_DATA_DIR) to the datasets folder")
    return Inputs(found["medquad"], found["wikidoc"], found["uci-heart-failure"])


def build(inputs: Inputs, held_ids: set[str], opts: DataOptions, assistant: Any | None,
          count_tokens: Callable[[str], int], progress: bool = False) -> tuple[list[Example], dict[str, Any]]:
    stats: Counter[str] = Counter()
    mq = read_medquad(inputs.medquad, strict=False)
    wd = read_wikidoc(inputs.wikidoc, strict=False)
    hf_report = LoadReport(fmt="uci-heart-failure")
    records = read_records(inputs.heart_failure, hf_report, strict=False)
    held = held_out(mq.documents, held_ids)
    examples = closed_book(mq.documents, wd.documents, held, opts, stats)

    # Splits by group, drawn before the grounded part so a question's two examples share a side.
    groups = assign_splits((e.group for e in examples), opts.seed, [("val", opts.val_fraction)])
    for e in examples:
        e.split = groups[e.group]
    if assistant is not None and opts.grounded_questions > 0:
        train_docs = [d for d in mq.documents if held.excludes(d.doc_id, str(d.meta.get("question", "")),
                                                               _answer(d)) is None]
        gr = grounded(train_docs, held, assistant, count_tokens, opts, stats, progress)
        for e in gr:
            e.split = groups.get(e.group, "train")
        examples += gr
    else:
        stats["grounded.skipped.no_index"] += 1
    if assistant is not None and opts.clinician_questions:
        examples += _clinician(Path(opts.clinician_questions), assistant, count_tokens, opts, held, stats)
    hf = hf_examples(records, opts, stats)
    pat = assign_splits((e.group for e in hf), opts.seed,
                        [("test", opts.hf_test_fraction), ("val", opts.hf_val_fraction)])
    for e in hf:
        e.split = pat[e.group]
    examples += hf
    if assistant is not None and opts.ehr_per_patient > 0:
        ehr = ehr_examples(records, pat, assistant, count_tokens, held.doc_ids | held.repeats, opts.source_tokens,
                           opts.seed, opts.ehr_per_patient, opts.ehr_abstain_share, stats)
        examples += [Example(**e) for e in ehr]
    else:
        stats["grounded_ehr.skipped.no_index"] += 1
    card = dataset_card(examples, opts, stats, count_tokens, inputs,
                        {"medquad": mq.stats, "wikidoc": wd.stats, "heart_failure": hf_report.stats},
                        len(held_ids))
    return examples, card


def _clinician(path: Path, assistant: Any, count_tokens: Callable[[str], int], opts: DataOptions, held: HeldOut,
               stats: Counter[str]) -> list[Example]:
    """Part ``grounded_clinician`` (:mod:`finetune.clinician_grounded`), split by guideline document."""
    from finetune.clinician_grounded import clinician_examples, read_questions

    rows = clinician_examples(read_questions(path), assistant, count_tokens, opts.source_tokens, opts.seed,
                              held.doc_ids | held.repeats, stats)
    examples = [Example(**r) for r in rows]
    groups = assign_splits((e.group for e in examples), opts.seed, [("val", opts.clinician_val_fraction)])
    for e in examples:
        e.split = groups[e.group]
    return examples


def _pct(values: list[int]) -> dict[str, int]:
    if not values:
        return {}
    a = np.array(values)
    return {f"p{p}": int(np.percentile(a, p)) for p in (50, 90, 99)} | {"max": int(a.max())}


def example_tokens(e: Example, count_tokens: Callable[[str], int]) -> tuple[int, int]:
    """Approximate (prompt, completion) token counts (message text only, no template tokens)."""
    return (sum(count_tokens(m["content"]) for m in e.prompt), sum(count_tokens(m["content"]) for m in e.completion))


def dataset_card(examples: list[Example], opts: DataOptions, stats: Counter[str],
                 count_tokens: Callable[[str], int], inputs: Inputs, load_stats: dict[str, Any],
                 held_out_docs: int) -> dict[str, Any]:
    counts: dict[str, dict[str, int]] = defaultdict(dict)
    tokens: dict[str, list[int]] = defaultdict(list)
    for e in examples:
        key = f"{e.part}/{e.source}" + ("/withheld" if e.meta.get("withheld") else "")
        counts[key][e.split] = counts[key].get(e.split, 0) + 1
        p, c = example_tokens(e, count_tokens)
        tokens[e.part].append(p + c)
    return {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "options": asdict(opts),
        "inputs": {k: str(v) for k, v in asdict(inputs).items()},
        "counts": counts,
        "splits": {s: sum(1 for e in examples if e.split == s) for s in SPLITS},
        "groups": {s: len({e.group for e in examples if e.split == s}) for s in SPLITS},
        "token_length_percentiles": {k: _pct(v) for k, v in tokens.items()},
        "held_out_medquad_docs": held_out_docs,
        "stats": dict(sorted(stats.items())),
        "load_stats": load_stats,
        "risk_rule": {"points": "finetune/hf_cases.py", "high_at": hf_cases.HIGH_AT,
                      "intermediate_at": hf_cases.INTERMEDIATE_AT,
                      "derived_from": "measurements only (never DEATH_EVENT or follow-up time)"},
    }


def card_markdown(card: dict[str, Any]) -> str:
    lines = ["# Fine-tuning dataset card", "", f"Built {card['created']} with seed {card['options']['seed']}.", "",
             "| part/source | train | val | test |", "|---|---|---|---|"]
    for key, c in sorted(card["counts"].items()):
        lines.append(f"| {key} | {c.get('train', 0)} | {c.get('val', 0)} | {c.get('test', 0)} |")
    lines += ["", "Token lengths (prompt + target, message text):", "", "| part | p50 | p90 | p99 | max |",
              "|---|---|---|---|---|"]
    for part, p in card["token_length_percentiles"].items():
        lines.append(f"| {part} | {p.get('p50')} | {p.get('p90')} | {p.get('p99')} | {p.get('max')} |")
    lines += ["", f"Split groups: {card['groups']} (MedQuAD XML file, WikiDoc entry, heart-failure patient).",
              f"Excluded: {card['held_out_medquad_docs']} held-out MedQuAD questions (eval/splits/"
              "medquad_retrieval.json test+dev), pairs repeating a held-out answer or question.",
              "", "Heart-failure risk labels: a fixed points rule on the measurements (finetune/hf_cases.py; "
              f"high >= {card['risk_rule']['high_at']}, intermediate >= {card['risk_rule']['intermediate_at']} "
              "points), never the outcome or follow-up time.", "", "Counters:", ""]
    lines += [f"- {k}: {v}" for k, v in card["stats"].items()]
    return "\n".join(lines) + "\n"


def write(examples: list[Example], card: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write ``{train,val,test}.jsonl``, ``card.json`` and ``CARD.md`` atomically (temp files, then rename)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for split in SPLITS:
        path = out_dir / f"{split}.jsonl"
        tmp = path.with_suffix(".jsonl.tmp")
        with tmp.open("w", encoding="utf-8") as f:
            for e in examples:
                if e.split == split:
                    f.write(e.to_json() + "\n")
        paths[split] = tmp
    (out_dir / "card.json.tmp").write_text(json.dumps(card, indent=1) + "\n", encoding="utf-8")
    (out_dir / "CARD.md.tmp").write_text(card_markdown(card), encoding="utf-8")
    for split, tmp in paths.items():
        tmp.replace(out_dir / f"{split}.jsonl")
        paths[split] = out_dir / f"{split}.jsonl"
    (out_dir / "card.json.tmp").replace(out_dir / "card.json")
    (out_dir / "CARD.md.tmp").replace(out_dir / "CARD.md")
    return paths


def read_examples(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        raise InputError(f"{path} not found; build the training data first: python app.py train data")
    rows = []
    with path.open(encoding="utf-8") as f:
        for i, line in enumerate(f, start=1):
            try:
                row = json.loads(line)
            except ValueError as e:
                raise InputError(f"{path}:{i}: not valid JSON ({e}); rebuild with python app.py train data") from None
            if not isinstance(row, dict) or not {"prompt", "completion", "part"} <= row.keys():
                raise InputError(f"{path}:{i}: not a training example (needs prompt, completion, part); rebuild "
                                 "with python app.py train data")
            rows.append(row)
    return rows


def fingerprint(path: Path) -> str:
    return _stable(path.read_text(encoding="utf-8")) if path.exists() else ""
