"""Adapt the answerability model to an index's own guideline documents (the verifier's "index" stage).

Version 2 learned answerability from MedQuAD/WikiDoc questions and NGC/USPSTF detail questions. On the
trust split, clinicians' shorthand and vignette questions about the demo guidelines are scored near 0
although their gold section is retrieved first, so the gate stops them. This stage reads no question set:
it writes questions from the indexed guideline sections themselves (``verifier_styles.detail_question``:
one guidance sentence's subject and most specific words, its numbers left out, terse, some after a short
case description) and pairs them with

- the section passage holding the fact (1);
- a passage of the same guideline sharing at most a third of the question's keywords (0: on topic, does
  not answer);
- the BM25 top passage of another indexed guideline sharing at most half of them (0);

and adds *cross-corpus* negatives: detail questions from NGC/USPSTF guideline summaries (the training side of
version 2's hash split) against the BM25 top indexed passage sharing at most half their keywords (0), so a
topic the index does not cover stays unanswerable. Each epoch mixes the new pairs 1:1 with version 2's own
answerability pairs (replay), as stage 3 (``verifier_realistic``) does. Sections whose hash falls in the
held-out share are never trained on; their pairs measure the adapter.

    python -m finetune.verifier_index --sources corpora/demo/guidelines --out .cds/verifier/index/adapter

The result is used with ``--set verifier.answerability_adapter=<out>`` (claim support keeps version 2).
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from corpora.document import Document
from finetune.verifier_data import Pair, Passages, _hash_part, _passage_table, ask_detail, detail_sentences
from finetune.verifier_styles import idf_table, overlap
from rag.verifier import ADAPTED_DOCUMENTS, answerability_text

SOURCE = "index"


def section_key(doc: Document, passage: str) -> str:
    """A passage's section (its header line): the unit of the held-out split, so no held-out section's
    text is ever trained on through another question."""
    return f"{doc.doc_id}#{passage.split(chr(10), 1)[0]}"


def index_pairs(docs: Sequence[Document], passages_of: Passages, rng: random.Random, per_passage: int,
                vignette_share: float, heldout_share: float, stats: Counter[str]
                ) -> dict[str, list[Pair]]:
    """Answerability pairs written from ``docs``' own passages: ``{"train": ..., "heldout": ...}``."""
    flat, lex, by_doc = _passage_table(list(docs), passages_of)
    parts: dict[str, list[Pair]] = {"train": [], "heldout": []}
    if lex is None:
        return parts
    idf = idf_table([p for _, p in flat])
    for d, passage in flat:
        part = _hash_part(section_key(d, passage), heldout_share)
        same_doc = [p for p in by_doc[d.doc_id] if p != passage]
        sents = detail_sentences(passage)
        made = 0
        for s in rng.sample(sents, len(sents)):
            q_kws = ask_detail(s, d.title, idf, rng, vignette_share)
            if q_kws is None:
                continue
            q, kws = q_kws
            q = answerability_text(q)
            parts[part].append(Pair("answerable", q, passage, 1, "detail", SOURCE))
            stats[f"{part}.pos"] += 1
            same = [p for p in same_doc if overlap(kws, p) <= 0.34]
            if same:
                parts[part].append(Pair("answerable", q, rng.choice(same), 0, "same_doc", SOURCE))
                stats[f"{part}.same_doc"] += 1
            other = [flat[j][1] for j in lex.top(q, 8) if flat[j][0].doc_id != d.doc_id
                     and overlap(kws, flat[j][1]) <= 0.5]
            if other:
                parts[part].append(Pair("answerable", q, other[0], 0, "bm25", SOURCE))
                stats[f"{part}.bm25"] += 1
            made += 1
            if made == per_passage:
                break
        if made == 0:
            stats["passages_without_question"] += 1
    return parts


def cross_pairs(outside: Sequence[Document], docs: Sequence[Document], passages_of: Passages,
                rng: random.Random, per_doc: int, vignette_share: float, stats: Counter[str]) -> Iterator[Pair]:
    """Questions about guidelines the index does not hold, against the index's nearest passage (0)."""
    indexed, lex, _ = _passage_table(list(docs), passages_of)
    if lex is None:
        return
    flat = [p for _, p in indexed]
    outside_passages = [(d, p) for d in outside for p in passages_of(d)]
    idf = idf_table([p for _, p in outside_passages])
    by_doc: dict[str, list[str]] = {}
    for d, p in outside_passages:
        by_doc.setdefault(d.doc_id, []).append(p)
    for d in outside:
        ps = by_doc.get(d.doc_id, [])
        for passage in rng.sample(ps, min(per_doc, len(ps))):
            sents = detail_sentences(passage)
            if not sents:
                continue
            made = ask_detail(rng.choice(sents), d.title, idf, rng, vignette_share)
            if made is None:
                continue
            q, kws = made
            near = [flat[j] for j in lex.top(q, 3) if overlap(kws, flat[j]) <= 0.5]
            if near:
                yield Pair("answerable", answerability_text(q), near[0], 0, "outside", SOURCE)
                stats["outside"] += 1


def _measure(verifier: Any, pairs: Sequence[Pair]) -> dict[str, Any]:
    from finetune.verifier import metrics

    if not pairs:
        return {}
    probs = verifier.score([(p.text_a, p.text_b) for p in pairs])
    out = metrics(list(pairs), probs)
    for kind in sorted({p.kind for p in pairs}):
        idx = [i for i, p in enumerate(pairs) if p.kind == kind]
        out[f"mean_p.{kind}"] = round(float(probs[idx].mean()), 4)
    return out


def main(argv: list[str] | None = None) -> int:
    """Build the pairs, continue the config's verifier on them, measure before/after on held-out pairs."""
    import argparse
    import logging

    from corpora import load_sources
    from finetune import verifier, verifier_data
    from rag.config import data_dir, load_config, resolve_path
    from rag.errors import InputError
    from rag.models import resolve
    from rag.verifier import Verifier

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="configs/default.yaml")
    ap.add_argument("--sources", action="append", required=True,
                    help="the index's guideline sources (folders or FORMAT:PATH, as `app.py index` takes)")
    ap.add_argument("--from-adapter", default=None, help="adapter to continue (default: the config's verifier.adapter)")
    ap.add_argument("--out", default=".cds/verifier/index/adapter")
    ap.add_argument("--work", default=".cds/verifier/index", help="pairs and the resumable run")
    ap.add_argument("--replay", default=".cds/verifier/data/train.jsonl",
                    help="version 2's training pairs (built here when missing, as `train verifier` does)")
    ap.add_argument("--per-passage", type=int, default=2, help="questions written per indexed passage")
    ap.add_argument("--outside-per-doc", type=int, default=3, help="NGC/USPSTF questions per outside guideline")
    ap.add_argument("--max-outside", type=int, default=600)
    ap.add_argument("--vignette-share", type=float, default=0.4, help="as version 2's detail questions")
    ap.add_argument("--heldout-share", type=float, default=0.2)
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--learning-rate", type=float, default=3e-4)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--pairs-only", action="store_true", help="write the pairs and their card, do not train")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cfg = load_config(Path(args.config))
    docs = [d for d in load_sources(args.sources).documents if d.kind == "guideline"]
    if not docs:
        raise InputError(f"no guideline documents in {args.sources}; pass the folders the index was built from")
    work = resolve_path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    root = data_dir(cfg)
    passages_of = verifier_data.index_passages(cfg)
    rng = random.Random(args.seed)
    stats: Counter[str] = Counter()
    parts = index_pairs(docs, passages_of, rng, args.per_passage, args.vignette_share, args.heldout_share, stats)
    outside: list[Document] = []
    # Version 2's training side of the NGC/USPSTF hash split: its held-out documents stay unseen.
    v2_share = verifier_data.VerifierDataOptions().heldout_share
    for spec in (f"ngc:{root / 'guidelines' / 'ngc_usgov_guideline_summaries.jsonl'}",
                 f"uspstf:{root / 'guidelines' / 'uspstf_specific_recommendations_text.jsonl'}"):
        if Path(spec.split(":", 1)[1]).exists():
            outside += [d for d in load_sources([spec]).documents if _hash_part(d.doc_id, v2_share) == "train"]
    outside = rng.sample(outside, min(args.max_outside, len(outside)))
    parts["train"] += list(cross_pairs(outside, docs, passages_of, rng, args.outside_per_doc, args.vignette_share,
                                       stats))
    rng.shuffle(parts["train"])
    card: dict[str, Any] = {"documents": len(docs), "sources": args.sources, "stats": dict(stats),
                            # what rag.verifier.adapter_mismatch checks an index against before using this adapter
                            ADAPTED_DOCUMENTS: {d.doc_id: d.version for d in docs},
                            "pairs": {k: len(v) for k, v in parts.items()},
                            "by": {k: dict(Counter(f"{p.kind}/{p.label}" for p in v)) for k, v in parts.items()},
                            "options": {k: getattr(args, k) for k in ("per_passage", "outside_per_doc", "max_outside",
                                                                      "vignette_share", "heldout_share", "epochs",
                                                                      "learning_rate", "seed")}}
    verifier_data.write(parts, card, work / "pairs")
    print(json.dumps({k: card[k] for k in ("documents", "pairs", "by", "stats")}))
    if args.pairs_only:
        return 0
    if not resolve_path(args.replay).exists():
        verifier_data.build_v2_pairs(cfg, resolve_path(args.replay).parent, passages_of)
    replay = [p for p in verifier_data.read(resolve_path(args.replay)) if p.task == "answerable"]
    held_v2 = [p for p in verifier_data.read(resolve_path(args.replay).parent / "heldout.jsonl")
               if p.task == "answerable"]
    base = resolve(cfg.verifier.model, resolve_path(cfg.models.cache_dir)).path
    start = resolve_path(args.from_adapter or cfg.verifier.adapter)
    opts = verifier.VerifierTrainOptions(epochs=args.epochs, learning_rate=args.learning_rate, save_steps=50,
                                         seed=args.seed)
    out = resolve_path(args.out)
    card["tune"] = verifier.tune(parts["train"], replay, base, start, out, work / "run", opts, progress=True)
    before, after = Verifier(base, start, batch_size=32), Verifier(base, out, batch_size=32)
    card["measured"] = {name: {"before": _measure(before, pairs), "after": _measure(after, pairs)}
                        for name, pairs in (("index_heldout_sections", parts["heldout"]), ("v2_heldout", held_v2))}
    (out / "training_card.json").write_text(json.dumps(card, indent=1) + "\n", encoding="utf-8")
    for name, m in card["measured"].items():
        b, a = m["before"].get("answerable", {}), m["after"].get("answerable", {})
        print(f"{name}: AUROC {b.get('auroc')} -> {a.get('auroc')}, precision {b.get('precision')} -> "
              f"{a.get('precision')}, recall {b.get('recall')} -> {a.get('recall')} ({b.get('n')} pairs)")
    return 0


def one_line_errors(main_: Callable[[list[str] | None], int], argv: list[str] | None) -> int:
    """Run a stage's ``main``; bad input (a missing source, no documents, no corpora, no model) is one line on
    stderr and exit 2."""
    import sys

    from corpora.errors import CDSError

    try:
        return main_(argv)
    except CDSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def cli(argv: list[str] | None = None) -> int:
    """:func:`main` with bad input (a missing source, no guideline documents, no corpora) as one line and exit 2."""
    return one_line_errors(main, argv)


if __name__ == "__main__":
    raise SystemExit(cli())
