"""Training pairs for the evidence verifier (rag/verifier.py), made from the corpora we have.

No labelled NLI or answerability data ships offline, so pairs are built from sources whose
structure gives the label:

- **answerability** (``question: Q`` vs passage): a MedQuAD or WikiDoc question against the first
  passage of its own answer (1); against the answer to a *sibling* question about the same focus
  ("What causes X?" vs the treatment page of X: on topic, does not answer; 0); against the BM25
  top passages of other topics (hard negatives, 0). Heart-failure record questions against the
  record section holding the asked value (1) and the other sections (0); questions the record
  cannot answer (potassium, medications ...) against every section (0).
- **claim support** (``question: Q / claim: S`` vs passage): a sentence of the passage (1), lightly
  reworded (two sentences joined, a first clause, the subject named or not: 1); the same sentence
  with the question's subject swapped for another condition ("<asked condition> is managed by <the
  passage's treatment>", the failure seen in the trust issue), a changed number, a changed unit, a
  flipped negation, or against another topic's passage (0). Record claims in the tuned generator's
  own phrasing (finetune/ehr_grounded.py) against their record section (1), and with the value of
  another measurement, another patient's value, the yes/no flipped, or the wrong section (0).
  Guideline summaries (NGC) add recommendation sentences with the same perturbations.

Version 3 adds: questions after a short case description (``verifier_styles.vignette``; the label is
unchanged), support positives with a lead naming the source ("The guideline recommends that ..."), and
support negatives for a sibling term swapped in (``verifier_styles.swap_term``: another drug class,
condition, population, route or frequency the passage never names) and for *off-question* claims: a
true sentence of a sibling page, or the record's true value of another measurement, as an answer to a
question it does not answer ("CPK?" answered with the sodium).

Splits: MedQuAD documents of the held-out retrieval split (eval/splits) never enter training, and
neither does any page whose focus one of them has; heart-failure patients keep the split of the
generator's data (test/val patients out); WikiDoc and NGC are split by a hash of the document. The
``heldout`` file is built the same way from the held-out side and measures the verifier itself.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from corpora import load_sources
from corpora.document import Document
from corpora.heart_failure import HFRecord, read_records, render_record
from corpora.report import LoadReport
from finetune.data import assign_splits
from finetune.ehr_grounded import FACTS, UNANSWERABLE, Fact
from finetune.verifier_styles import (
    RECORD_SHORTHAND,
    attribute_lead,
    detail_question,
    idf_table,
    overlap,
    restyle,
    swap_term,
    vignette,
)
from rag.chunk import HierarchicalChunker
from rag.text import split_sentences, tokenize
from rag.verifier import answerability_text, support_text

WINDOW_WORDS = 80  # runtime child passages are ~96 embedder tokens

# Document -> its passages as the index shows them (``Chunk.context_text()`` of the children).
Passages = Callable[[Document], list[str]]


@dataclass
class Pair:
    task: str  # "answerable" | "support"
    text_a: str
    text_b: str
    label: int
    kind: str  # how the pair was made (pos, sibling, bm25, swap, number, unit, negation, ...)
    source: str  # medquad | wikidoc | record | ngc


@dataclass
class QADoc:
    """A question with its answer cut into passages (header + ~80 words, sentence-aligned)."""

    doc_id: str
    question: str
    focus: str
    group: str  # same group = same page family (MedQuAD file); siblings come from it
    passages: list[str]
    source: str
    qtype: str = ""


def windows(text: str, header: str, words: int = WINDOW_WORDS) -> list[str]:
    """Sentence-aligned passages of about ``words`` words, each with its header line."""
    sents = [s for s in split_sentences(re.sub(r"^#+ .*$", "", text, flags=re.M)) if len(s.split()) >= 3]
    out: list[str] = []
    cur: list[str] = []
    for s in sents:
        if cur and sum(len(x.split()) for x in cur) + len(s.split()) > words:
            out.append(" ".join(cur))
            cur = []
        cur.append(s)
    if cur:
        out.append(" ".join(cur))
    return [f"{header}\n{w}" for w in out]


def body(passage: str) -> str:
    text = passage.split("\n", 1)[1] if "\n" in passage else passage
    return re.sub(r"^#+ .*\n*", "", text.lstrip()).strip()


def chunk_passages(tokenize_ids: Callable[[str], Any], parent_max_tokens: int, child_tokens: int,
                   child_overlap: int) -> Passages:
    """Passages made by the index's own chunker, so training pairs look exactly like what the
    verifier reads at run time (title — section header, markdown heading line, ~96-token children).
    The first verifier was trained on windows with another header and rejected verbatim sentences
    of guideline passages (support 0.02 with the header, 0.94 without)."""
    chunker = HierarchicalChunker(tokenize_ids, parent_max_tokens, child_tokens, child_overlap)
    return lambda d: [c.context_text() for c in chunker.chunk(d)[1]]


def _hash_part(key: str, heldout_share: float) -> str:
    h = int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "heldout" if h < heldout_share else "train"


# -- perturbations -------------------------------------------------------------------------------
_NUM = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)(?![\w.]\d)")
_UNITS = [("mg/dL", "mmol/L"), ("mmol/L", "mg/dL"), ("mEq/L", "mg/dL"), ("mcg", "mg"), ("mg", "g"),
          ("weeks", "months"), ("months", "years"), ("days", "weeks"), ("hours", "days"), ("years", "months"),
          ("ml", "litres"), ("per cent", "per mille")]
_AUX = re.compile(r"\b(is|are|can|should|may|will|does|do|was|were|has|have)\b(?! not\b)")
_NOT = re.compile(r"\b(is|are|can|should|may|will|does|do|was|were|has|have) not\b")


def change_number(sentence: str, rng: random.Random, avoid: str = "") -> str | None:
    nums = [m for m in _NUM.finditer(sentence)]
    if not nums:
        return None
    m = rng.choice(nums)
    v = m.group(1)
    for _ in range(10):
        if "." in v:
            new = f"{float(v) * rng.choice([0.5, 2, 3, 10, 0.1]):.{len(v.split('.')[1])}f}"
        else:
            n = int(v)
            new = str(rng.choice([n * 2, n + rng.randint(1, 9), max(n // 2, 1) if n > 1 else n + 3, n * 10, n + 20]))
        if new != v and not re.search(rf"(?<![\w.]){re.escape(new)}(?![\w.]\d)", avoid):
            return sentence[:m.start(1)] + new + sentence[m.end(1):]
    return None


def change_unit(sentence: str, rng: random.Random) -> str | None:
    options = [(a, b) for a, b in _UNITS if re.search(rf"\b{re.escape(a)}\b", sentence)]
    if not options:
        return None
    a, b = rng.choice(options)
    return re.sub(rf"\b{re.escape(a)}\b", b, sentence, count=1)


def flip_negation(sentence: str) -> str | None:
    if _NOT.search(sentence):
        return _NOT.sub(lambda m: m.group(1), sentence, count=1)
    if re.search(r"\bno\b", sentence):
        return re.sub(r"\bno\b", "some", sentence, count=1)
    if _AUX.search(sentence):
        return _AUX.sub(lambda m: f"{m.group(1)} not", sentence, count=1)
    return None


def perturbed(sentence: str, passage: str, rng: random.Random,
              order: tuple[str, ...] = ("number", "negation", "unit")) -> tuple[str, str] | None:
    """(kind, the sentence changed so the passage no longer states it): the first of ``order`` that applies."""
    makers = {"number": lambda x: change_number(x, rng, body(passage)), "unit": lambda x: change_unit(x, rng),
              "negation": flip_negation}
    for kind in order:
        alt = makers[kind](sentence)
        if alt and alt != sentence:
            return kind, alt
    return None


def swap_subject(sentence: str, focus: str, other: str) -> str:
    """The sentence said of ``other`` instead of ``focus`` (the subject-swap failure)."""
    if focus and re.search(re.escape(focus), sentence, re.I):
        return re.sub(re.escape(focus), other, sentence, flags=re.I)
    head = re.match(r"^(It|This condition|This disease|This disorder|They|These)\b", sentence)
    if head:
        return other + sentence[head.end():]
    return f"{other}: {sentence[0].lower()}{sentence[1:]}" if sentence else sentence


def reword(sentences: list[str], i: int, focus: str, rng: random.Random) -> str:
    """A claim the passage still states: two sentences joined, a first clause, or the subject named."""
    s = sentences[i]
    r = rng.random()
    if r < 0.35 and i + 1 < len(sentences):
        return f"{s.rstrip('.')}; {sentences[i + 1][0].lower()}{sentences[i + 1][1:]}"
    if r < 0.6 and "," in s and len(s.split(",")[0].split()) >= 5:
        return s.split(",")[0].rstrip() + "."
    if r < 0.8 and focus:
        head = re.match(r"^(It|This condition|This disease|This disorder)\b", s)
        if head:
            return focus + s[head.end():]
    return s


def _v3_support(q: str, s: str, passage: str, rng: random.Random, source: str) -> Iterator[Pair]:
    """Version 3's support pairs for a sentence ``s`` of ``passage``: the sentence with a lead naming
    the source (1, as the generator phrases it) and with one treatment, condition, population, route
    or frequency swapped for a sibling the passage never mentions (0)."""
    yield Pair("support", support_text(q, attribute_lead(s, rng)), passage, 1, "lead", source)
    swapped = swap_term(s, body(passage), rng)
    if swapped:
        yield Pair("support", support_text(q, swapped), passage, 0, "term_swap", source)


# -- MedQuAD / WikiDoc ---------------------------------------------------------------------------
def qa_docs(docs: Iterable[Document], passages_of: Passages | None = None) -> list[QADoc]:
    out = []
    for d in docs:
        q = str(d.meta.get("question") or "").strip()
        if not q:
            continue
        coll = d.meta.get("collection")
        if coll == "medquad":
            focus = str(d.meta.get("focus") or d.title)
            label = d.text.split("\n", 1)[0].lstrip("# ").strip()
            header = f"{focus} — {label}" if label else focus
            group = d.source.rsplit("#", 1)[0]
        else:
            focus = re.sub(r"^(what|how|who|which|when|why|is|are|can|do|does)\b.*?\b(of|for|about|is|are)\s+",
                           "", q.rstrip("?"), flags=re.I).strip() or q
            header, group = q, d.doc_id
        passages = passages_of(d) if passages_of else windows(d.text, header)
        if passages:
            out.append(QADoc(d.doc_id, q, focus, group, passages, str(coll), str(d.meta.get("qtype") or "")))
    return out


def styled(qdocs: list[QADoc], rng: random.Random, share: float, vignette_share: float = 0.0) -> list[QADoc]:
    """``share`` of the questions rewritten as clinicians or patients type them (verifier_styles), and
    ``vignette_share`` of all of them put after a short case description."""
    out = []
    for d in qdocs:
        q = restyle(d.question, d.focus, d.qtype, rng) if rng.random() < share else d.question
        if vignette_share and rng.random() < vignette_share:
            q = vignette(q, rng)
        out.append(replace(d, question=q) if q != d.question else d)
    return out


class Lexical:
    """BM25 over passages, for hard negatives (bm25s, the same engine as the index)."""

    def __init__(self, passages: list[str]):
        import bm25s

        self.passages = passages
        self.retriever = bm25s.BM25()
        self.retriever.index([tokenize(p) or ["empty"] for p in passages], show_progress=False)

    def top(self, query: str, k: int) -> list[int]:
        toks = tokenize(query) or ["empty"]
        res, _ = self.retriever.retrieve([toks], k=min(k, len(self.passages)), show_progress=False)
        return [int(i) for i in res[0]]


def qa_pairs(qdocs: list[QADoc], pool: list[QADoc], rng: random.Random, stats: Counter[str]) -> Iterator[Pair]:
    """Answerability and support pairs for ``qdocs``; hard negatives are drawn from ``pool``."""
    flat = [(d, p) for d in pool for p in d.passages]
    lex = Lexical([p for _, p in flat])
    by_group: dict[str, list[QADoc]] = defaultdict(list)
    for d in pool:
        by_group[d.group].append(d)
    focuses = sorted({d.focus for d in pool if 2 <= len(d.focus.split()) <= 6 or len(d.focus) > 4})
    for d in qdocs:
        q, first = d.question, d.passages[0]
        norm_focus = d.focus.lower()
        yield Pair("answerable", answerability_text(q), first, 1, "pos", d.source)
        sibs = [s for s in by_group[d.group] if s.doc_id != d.doc_id and s.question.lower() != q.lower()]
        if sibs:
            sib = rng.choice(sibs)
            yield Pair("answerable", answerability_text(q), sib.passages[0], 0, "sibling", d.source)
            # Version 3: a true sentence of the same topic that answers another question ("how many people
            # have X?" answered with a sentence on X's breathing problems) is not support for this one.
            sib_sents = [x for x in split_sentences(body(sib.passages[0])) if 6 <= len(x.split()) <= 60]
            if sib_sents:
                yield Pair("support", support_text(q, rng.choice(sib_sents)), sib.passages[0], 0, "off_question",
                           d.source)
        hard = [flat[i] for i in lex.top(q, 12) if flat[i][0].focus.lower() != norm_focus
                and flat[i][0].group != d.group]
        for _other, p in hard[:2]:
            yield Pair("answerable", answerability_text(q), p, 0, "bm25", d.source)
        # Claim support: a sentence of one of the answer's passages.
        pi = rng.randrange(len(d.passages))
        passage = d.passages[pi]
        sents = [s for s in split_sentences(body(passage)) if 4 <= len(s.split()) <= 60]
        if not sents:
            stats["support.skipped.no_sentence"] += 1
            continue
        i = rng.randrange(len(sents))
        s = sents[i]
        yield Pair("support", support_text(q, s), passage, 1, "pos", d.source)
        yield Pair("support", support_text(q, reword(sents, i, d.focus, rng)), passage, 1, "reword", d.source)
        yield from _v3_support(q, s, passage, rng, d.source)
        other_focus = rng.choice(focuses)
        if other_focus.lower() != norm_focus:
            q_other = re.sub(re.escape(d.focus), other_focus, q, flags=re.I) if re.search(
                re.escape(d.focus), q, re.I) else f"What about {other_focus}?"
            yield Pair("support", support_text(q_other, swap_subject(s, d.focus, other_focus)), passage, 0, "swap",
                       d.source)
        changed = perturbed(s, passage, rng, ("number", "unit", "negation"))
        if changed:
            yield Pair("support", support_text(q, changed[1]), passage, 0, changed[0], d.source)
        wrong = [flat[j][1] for j in lex.top(s, 8) if flat[j][0].focus.lower() != norm_focus
                 and flat[j][0].group != d.group]
        if wrong:
            yield Pair("support", support_text(q, s), wrong[0], 0, "other_passage", d.source)


# -- heart-failure records -----------------------------------------------------------------------
def record_sections(r: HFRecord, passages_of: Passages | None = None) -> list[str]:
    """The record's sections as the index shows them: title — section, then the lines."""
    if passages_of is not None:
        return passages_of(Document(doc_id=f"uci-hf-{r.patient_id}", text=render_record(r),
                                    title=f"Heart failure clinical record {r.patient_id}", kind="ehr",
                                    source=f"records#{r.patient_id}", patient_id=r.patient_id))
    title = f"Heart failure clinical record {r.patient_id}"
    out = []
    for block in render_record(r).split("## ")[1:]:
        name, _, text = block.partition("\n")
        out.append(f"{title} — {name.strip()}\n{text.strip()}")
    return out


_MEASURE_NAMES = ("serum sodium", "serum creatinine", "serum potassium", "platelet count",
                  "creatine phosphokinase (CPK)", "left ventricular ejection fraction", "haemoglobin", "heart rate")


def record_pairs(records: list[HFRecord], rng: random.Random, stats: Counter[str],
                 passages_of: Passages | None = None, shorthand_share: float = 0.0) -> Iterator[Pair]:
    for r in records:
        sections = record_sections(r, passages_of)
        others = [x for x in records if x.patient_id != r.patient_id]
        for fact in rng.sample(FACTS, 3):
            who = "this patient" if rng.random() < 0.6 else f"patient {r.patient_id}"
            forms = RECORD_SHORTHAND.get(fact.key) if rng.random() < shorthand_share else None
            q = rng.choice(forms or fact.questions).format(who=who)
            needle = fact.needle(r)
            holding = [s for s in sections if needle in s]
            if not holding:
                stats["record.skipped.no_section"] += 1
                continue
            sec = holding[0]
            yield Pair("answerable", answerability_text(q), sec, 1, "pos", "record")
            yield Pair("answerable", answerability_text(q), rng.choice([s for s in sections if s != sec]), 0,
                       "other_section", "record")
            claims = split_sentences(re.sub(r"\s*\[\d+\]", "", fact.answer(r, who, 1)))
            claim = claims[0]
            yield Pair("support", support_text(q, claim), sec, 1, "pos", "record")
            yield Pair("support", support_text(q, claim), rng.choice([s for s in sections if s != sec]), 0,
                       "other_section", "record")
            yield from _record_negatives(fact, r, rng.choice(others), who, q, claim, sec, rng)
            # Version 3: the record's true value of another measurement ("CPK?" answered with the sodium).
            other_fact = rng.choice([f for f in FACTS if f.key != fact.key])
            other_secs = [x for x in sections if other_fact.needle(r) in x]
            if other_secs:
                off = split_sentences(re.sub(r"\s*\[\d+\]", "", other_fact.answer(r, who, 1)))[0]
                yield Pair("support", support_text(q, off), other_secs[0], 0, "off_question", "record")
        q = rng.choice(UNANSWERABLE).format(who="this patient")
        for sec in rng.sample(sections, 2):
            yield Pair("answerable", answerability_text(q), sec, 0, "not_in_record", "record")


def _record_negatives(fact: Fact, r: HFRecord, other: HFRecord, who: str, q: str, claim: str, sec: str,
                      rng: random.Random) -> Iterator[Pair]:
    other_claim = split_sentences(re.sub(r"\s*\[\d+\]", "", fact.answer(other, who, 1)))[0]
    if other_claim != claim and fact.needle(other) not in sec:
        yield Pair("support", support_text(q, other_claim), sec, 0, "other_patient", "record")
    if claim.startswith(("Yes", "No")):
        flipped = split_sentences(re.sub(r"\s*\[\d+\]", "", fact.answer(
            _flip(r, fact.key), who, 1)))[0]
        yield Pair("support", support_text(q, flipped), sec, 0, "negation", "record")
        return
    # The value stated for another measurement (the sodium line quoted as potassium).
    names = [n for n in _MEASURE_NAMES if n.split()[-1].lower() not in claim.lower()]
    m = re.match(r"^The (.+?) of ", claim)
    if m and names:
        wrong_name = rng.choice(names)
        yield Pair("support", support_text(q, claim.replace(m.group(1), wrong_name, 1)), sec, 0, "other_measure",
                   "record")
    alt = change_number(claim, rng, body(sec))
    if alt:
        yield Pair("support", support_text(q, alt), sec, 0, "number", "record")


def _flip(r: HFRecord, attr: str) -> HFRecord:
    from dataclasses import replace

    changes: dict[str, Any] = {attr: not getattr(r, attr)}
    return replace(r, **changes)


def _passage_table(docs: list[Document], passages_of: Passages | None
                   ) -> tuple[list[tuple[Document, str]], Lexical | None, dict[str, list[str]]]:
    """Every passage with its document, BM25 over them (hard negatives; None without passages), and the
    passages of each document."""
    passages = [(d, p) for d in docs for p in (passages_of(d) if passages_of else windows(d.text, d.title))]
    by_doc: dict[str, list[str]] = defaultdict(list)
    for d, p in passages:
        by_doc[d.doc_id].append(p)
    return passages, (Lexical([p for _, p in passages]) if passages else None), by_doc


# -- guideline summaries (NGC) -------------------------------------------------------------------
def guideline_pairs(docs: list[Document], rng: random.Random, per_doc: int, passages_of: Passages | None = None
                    ) -> Iterator[Pair]:
    passages, lex, by_doc = _passage_table(docs, passages_of)
    if lex is None:
        return
    for d in docs:
        ps = by_doc[d.doc_id]
        if not ps:
            continue
        q = f"What does the guideline on {d.title} recommend?"
        for passage in rng.sample(ps, min(per_doc, len(ps))):
            sents = [s for s in split_sentences(body(passage)) if 6 <= len(s.split()) <= 60]
            if not sents:
                continue
            i = rng.randrange(len(sents))
            s = sents[i]
            yield Pair("support", support_text(q, reword(sents, i, "", rng)), passage, 1, "pos", "ngc")
            yield from _v3_support(q, s, passage, rng, "ngc")
            changed = perturbed(s, passage, rng)
            if changed:
                yield Pair("support", support_text(q, changed[1]), passage, 0, changed[0], "ngc")
            wrong = [passages[j][1] for j in lex.top(s, 6) if passages[j][0].doc_id != d.doc_id]
            if wrong:
                yield Pair("support", support_text(q, s), wrong[0], 0, "other_passage", "ngc")


def detail_sentences(passage: str) -> list[str]:
    """The sentences of a passage a detail question may be written from (not headings, not fragments)."""
    return [s for s in split_sentences(body(passage)) if 8 <= len(s.split()) <= 60]


def ask_detail(sentence: str, title: str, idf: dict[str, float], rng: random.Random, vignette_share: float
               ) -> tuple[str, list[str]] | None:
    """A terse detail question about ``sentence`` (``verifier_styles.detail_question``), after a short case
    description for ``vignette_share`` of them, and the keywords it uses; None when it asks nothing."""
    made = detail_question(sentence, title, idf, rng)
    if made is None:
        return None
    q, kws = made
    return (vignette(q, rng) if rng.random() < vignette_share else q), kws


def detail_pairs(docs: list[Document], passages_of: Passages, rng: random.Random, per_doc: int, source: str,
                 vignette_share: float = 0.0) -> Iterator[Pair]:
    """Detail questions (one fact of one passage, terse wording) against guideline passages.

    Answerability: the passage holding the fact (1); a passage of the same guideline that shares
    at most a third of the question's keywords (on topic, does not answer: 0); the BM25 top passage
    of another guideline with at most half of them (0). Support: the fact's sentence (1), with a
    changed number, negation or unit (0), against another guideline's passage (0). ``vignette_share``
    of the questions come after a short case description (the label is unchanged).
    """
    passages, lex, by_doc = _passage_table(docs, passages_of)
    if lex is None:
        return
    idf = idf_table([p for _, p in passages])
    for d in docs:
        ps = by_doc[d.doc_id]
        # Questions are asked of what a guideline recommends, not of its methods or sources sections.
        advice = [p for p in ps if re.search(r"Recommendation|Clinical Considerations|Rationale|Algorithm|"
                                             r"Service and frequency|Risk assessment|Summary|Intervention",
                                             p.split("\n", 1)[0]) and "Bibliographic" not in p.split("\n", 1)[0]]
        for passage in rng.sample(advice, min(per_doc, len(advice))):
            sents = detail_sentences(passage)
            if not sents:
                continue
            s = rng.choice(sents)
            made = ask_detail(s, d.title, idf, rng, vignette_share)
            if made is None:
                continue
            q, kws = made
            yield Pair("answerable", answerability_text(q), passage, 1, "detail", source)
            same = [p for p in ps if p != passage and overlap(kws, p) <= 0.34]
            if same:
                yield Pair("answerable", answerability_text(q), rng.choice(same), 0, "same_doc", source)
            other = [passages[j][1] for j in lex.top(q, 8) if passages[j][0].doc_id != d.doc_id
                     and overlap(kws, passages[j][1]) <= 0.5]
            if other:
                yield Pair("answerable", answerability_text(q), other[0], 0, "bm25", source)
            yield Pair("support", support_text(q, s), passage, 1, "detail", source)
            yield from _v3_support(q, s, passage, rng, source)
            changed = perturbed(s, passage, rng)
            if changed:
                yield Pair("support", support_text(q, changed[1]), passage, 0, changed[0], source)
            wrong = [passages[j][1] for j in lex.top(s, 6) if passages[j][0].doc_id != d.doc_id
                     and s not in passages[j][1]]
            if wrong:
                yield Pair("support", support_text(q, s), wrong[0], 0, "other_passage", source)


# -- assembly ------------------------------------------------------------------------------------
@dataclass
class VerifierDataOptions:
    seed: int = 13
    medquad_docs: int = 1000
    wikidoc_docs: int = 400
    ngc_per_doc: int = 4
    heldout_medquad_docs: int = 300
    heldout_share: float = 0.1  # of WikiDoc/NGC documents (by hash)
    # Realistic wording (finetune/verifier_styles.py): share of MedQuAD/WikiDoc questions restyled,
    # share of record questions in shorthand, detail questions per guideline (NGC, USPSTF).
    styled_share: float = 0.5
    record_shorthand_share: float = 0.35
    detail_per_doc: int = 8
    uspstf_detail_per_doc: int = 2
    # Version 3: shares of questions put after a short case description (verifier_styles.vignette).
    vignette_share: float = 0.15
    detail_vignette_share: float = 0.4


def build(data_dir: Path, held_out_doc_ids: set[str], opts: VerifierDataOptions, passages_of: Passages | None = None
          ) -> tuple[dict[str, list[Pair]], dict[str, Any]]:
    """``{"train": pairs, "heldout": pairs}`` and a card of counts.

    ``passages_of`` cuts documents as the index does (:func:`chunk_passages`); without it, ~80-word
    windows (tests, and the first verifier)."""
    rng = random.Random(opts.seed)
    stats: Counter[str] = Counter()
    mq = load_sources([f"medquad:{data_dir / 'medquad'}"]).documents
    held_focus = {str(d.meta.get("focus", "")).lower() for d in mq if d.doc_id in held_out_doc_ids}
    mq_train = [d for d in mq if d.doc_id not in held_out_doc_ids
                and str(d.meta.get("focus", "")).lower() not in held_focus]
    mq_held = [d for d in mq if d.doc_id in held_out_doc_ids]
    stats["medquad.excluded_same_focus"] = len(mq) - len(mq_train) - len(mq_held)
    wd = load_sources([f"wikidoc:{data_dir / 'wikidoc_patient_info'}"
                       "/medical_meadow_wikidoc_patient_information.json"]).documents
    wd_train = [d for d in wd if _hash_part(d.doc_id, opts.heldout_share) == "train"]
    wd_held = [d for d in wd if _hash_part(d.doc_id, opts.heldout_share) == "heldout"]
    ngc = load_sources([f"ngc:{data_dir / 'guidelines' / 'ngc_usgov_guideline_summaries.jsonl'}"]).documents
    ngc_train = [d for d in ngc if _hash_part(d.doc_id, opts.heldout_share) == "train"]
    ngc_held = [d for d in ngc if _hash_part(d.doc_id, opts.heldout_share) == "heldout"]
    uspstf_path = data_dir / "guidelines" / "uspstf_specific_recommendations_text.jsonl"
    usp = load_sources([f"uspstf:{uspstf_path}"]).documents if uspstf_path.exists() else []
    usp_train = [d for d in usp if _hash_part(d.doc_id, opts.heldout_share) == "train"]
    usp_held = [d for d in usp if _hash_part(d.doc_id, opts.heldout_share) == "heldout"]
    records = read_records(data_dir / "heart_failure" / "heart_failure_clinical_records_dataset.csv",
                           LoadReport(fmt="uci-heart-failure"))
    # The generator's patient split (finetune/data.py): test and val patients are never trained on.
    split_of = assign_splits((f"patient:{r.patient_id}" for r in records), opts.seed, [("test", 0.2), ("val", 0.1)])
    rec_train = [r for r in records if split_of[f"patient:{r.patient_id}"] == "train"]
    rec_held = [r for r in records if split_of[f"patient:{r.patient_id}"] != "train"]

    q_train = qa_docs(mq_train, passages_of)
    q_wd_train = qa_docs(wd_train, passages_of)
    pool_train = q_train + q_wd_train
    pick = rng.sample(q_train, min(opts.medquad_docs, len(q_train))) + rng.sample(
        q_wd_train, min(opts.wikidoc_docs, len(q_wd_train)))
    train = list(qa_pairs(styled(pick, rng, opts.styled_share, opts.vignette_share), pool_train, rng, stats))
    train += list(record_pairs(rec_train, rng, stats, passages_of, opts.record_shorthand_share))
    train += list(guideline_pairs(ngc_train, rng, opts.ngc_per_doc, passages_of))
    if passages_of is not None:
        train += list(detail_pairs(ngc_train, passages_of, rng, opts.detail_per_doc, "ngc",
                                        opts.detail_vignette_share))
        train += list(detail_pairs(usp_train, passages_of, rng, opts.uspstf_detail_per_doc, "uspstf",
                                        opts.detail_vignette_share))

    q_held = qa_docs(mq_held, passages_of) + qa_docs(wd_held, passages_of)
    pick_held = rng.sample(q_held, min(opts.heldout_medquad_docs, len(q_held)))
    heldout = list(qa_pairs(styled(pick_held, rng, opts.styled_share, opts.vignette_share), q_held, rng,
                              stats))
    heldout += list(record_pairs(rec_held, rng, stats, passages_of, opts.record_shorthand_share))
    heldout += list(guideline_pairs(ngc_held, rng, opts.ngc_per_doc, passages_of))
    if passages_of is not None:
        heldout += list(detail_pairs(ngc_held, passages_of, rng, opts.detail_per_doc, "ngc",
                                        opts.detail_vignette_share))
        heldout += list(detail_pairs(usp_held, passages_of, rng, opts.uspstf_detail_per_doc, "uspstf",
                                        opts.detail_vignette_share))
    rng.shuffle(train)
    card: dict[str, Any] = {"options": asdict(opts), "stats": dict(stats)}
    for name, pairs in (("train", train), ("heldout", heldout)):
        card[name] = {"pairs": len(pairs),
                      "by": dict(Counter(f"{p.task}/{p.source}/{p.kind}/{p.label}" for p in pairs))}
    card["patients"] = {"train": len(rec_train), "heldout": len(rec_held)}
    return {"train": train, "heldout": heldout}, card


def index_passages(cfg: Any) -> Passages:
    """Passages cut by ``cfg``'s index chunker with its embedder's tokenizer: exactly what the index embeds
    (Chunk.context_text()), so the verifier reads in training what it reads at run time."""
    from rag.config import resolve_path
    from rag.models import load_tokenizer

    tok = load_tokenizer(cfg.embedder.model, resolve_path(cfg.models.cache_dir))
    ch = cfg.chunking
    return chunk_passages(lambda t: tok.encode(t, add_special_tokens=False), ch.parent_max_tokens,
                          ch.child_tokens, ch.child_overlap)


def build_v2_pairs(cfg: Any, out: Path, passages_of: Passages | None = None) -> None:
    """Version 2's training and held-out pairs with their card in ``out``, as `app.py train verifier` builds them
    (the later stages' replay pool)."""
    from finetune.heldout import held_out_doc_ids
    from rag.config import data_dir

    parts, card = build(data_dir(cfg), held_out_doc_ids(), VerifierDataOptions(), passages_of or index_passages(cfg))
    write(parts, card, out)


def write(parts: dict[str, list[Pair]], card: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, pairs in parts.items():
        tmp = out / f"{name}.jsonl.tmp"
        with tmp.open("w", encoding="utf-8") as f:
            for p in pairs:
                f.write(json.dumps(asdict(p), ensure_ascii=False) + "\n")
        tmp.replace(out / f"{name}.jsonl")
    (out / "card.json").write_text(json.dumps(card, indent=1) + "\n", encoding="utf-8")


def read(path: Path) -> list[Pair]:
    with path.open(encoding="utf-8") as f:
        return [Pair(**json.loads(line)) for line in f if line.strip()]
