"""Answerability pairs from hand-written realistic questions (the verifier's third stage).

The first two stages learn answerability from templated or programmatically restyled questions. On
the trust split the gold passage of a clinician's vignette or shorthand question ("K+ 7.2, broad QRS
... what now?") is retrieved first but scored near 0, so the gate stops it. This stage adds the team's
hand-written questions of ``eval/questions/realistic_retrieval.jsonl`` (lay, shorthand, vignette and
multipart wording; MedQuAD and NGC gold), **dev part only**; its test part measures the result.

Per question: the positive is the gold document's passage the current answerability model ranks
best (a long guideline has many passages, most not about the question); the negatives are the BM25
top passages of other documents about another subject. Questions about a MedQuAD focus the trust split
asks about (answerable or removed topic) are left out, so the trust evaluation stays unseen.

    python -m eval.realistic_index            # the realistic corpus (.cds/realistic/medquad)
    python -m finetune.verifier_realistic --out adapters/verifier-minilm-realistic

Measured, not adopted (BENCHMARKS.md, "Trust", eleventh session): use it with
``--set verifier.answerability_adapter=adapters/verifier-minilm-realistic``.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from corpora.document import Document
from finetune.verifier_data import Lexical, Pair, Passages
from rag.verifier import answerability_text

QUESTIONS = Path("eval/questions/realistic_retrieval.jsonl")


def load_questions(path: Path, part: str) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [r for r in rows if r.get("split") == part]


def medquad_rel(doc: Document) -> str:
    """A MedQuAD document's file path below ``medquad/`` (the trust split names files so)."""
    return str(doc.source).split("#")[0].split("medquad/", 1)[-1]


def trust_foci(medquad: Sequence[Document], trust: dict[str, Any]) -> set[str]:
    """MedQuAD foci (lower case) the trust split asks about (answerable or removed): training must not see them.

    Pages the trust index only holds as distractors stay allowed: most realistic questions' pages are among
    them (the two sets draw on the same held-out pages), and no trust question asks about them."""
    asked = {i for part in ("dev", "test") for suite in ("medquad", "topic_removed") for i in trust[part][suite]}
    return {str(d.meta.get("focus", "")).strip().lower() for d in medquad if d.doc_id in asked} - {""}


def subject(doc: Document) -> str:
    """What a document is about: the MedQuAD focus, else the title."""
    return str(doc.meta.get("focus") or doc.title or doc.doc_id).strip().lower()


def starting_point(verifier_cfg: Any, from_adapter: str | None, model: str | None = None) -> tuple[str, str]:
    """The adapter to continue and the encoder it was trained on, decided in one place so they cannot drift.

    Adapter: ``from_adapter``, else the config's answerability adapter, else ``verifier.adapter``. Encoder:
    ``model`` when given; the config's answerability model when the config's answerability adapter is continued
    (an answerability-only adapter on a larger encoder, `train verifier --task answerable`); else
    ``verifier.model``."""
    adapter = str(from_adapter or verifier_cfg.answerability_adapter or verifier_cfg.adapter)
    if model:
        return adapter, model
    if not from_adapter and verifier_cfg.answerability_adapter and verifier_cfg.answerability_model:
        return adapter, str(verifier_cfg.answerability_model)
    return adapter, str(verifier_cfg.model)


def build(questions: Sequence[dict[str, Any]], docs: Sequence[Document], passages_of: Passages,
          best_of: Callable[[str, list[str]], int], excluded_foci: set[str], negatives: int = 3,
          seed: int = 13) -> tuple[list[Pair], Counter[str]]:
    """Answerability pairs for ``questions``; ``best_of(question, passages)`` picks the positive passage."""
    rng = random.Random(seed)
    stats: Counter[str] = Counter()
    by_id = {d.doc_id: d for d in docs}
    flat: list[tuple[Document, str]] = [(d, p) for d in docs for p in passages_of(d)]
    lex = Lexical([p for _, p in flat])
    pairs: list[Pair] = []
    for q in questions:
        gold = [by_id[g] for g in q["gold"] if g in by_id]
        if len(gold) < len(q["gold"]):
            stats["skipped.gold_not_in_corpus"] += 1
            continue
        if any(subject(d) in excluded_foci for d in gold):
            stats["skipped.trust_focus"] += 1
            continue
        text = answerability_text(q["question"])
        source = f"realistic-{q['source']}"
        for d in gold:
            cands = passages_of(d)
            if cands:
                pairs.append(Pair("answerable", text, cands[best_of(q["question"], cands)], 1, f"{q['style']}/pos",
                                  source))
                stats["pos"] += 1
        gold_ids = {d.doc_id for d in gold}
        gold_subjects = {subject(d) for d in gold}
        taken = 0
        for i in lex.top(q["question"], 30):
            d, p = flat[i]
            if d.doc_id in gold_ids or subject(d) in gold_subjects:
                continue
            pairs.append(Pair("answerable", text, p, 0, f"{q['style']}/bm25", source))
            stats["bm25"] += 1
            taken += 1
            if taken == negatives:
                break
    rng.shuffle(pairs)
    return pairs, stats


def _measure(verifier: Any, pairs: Sequence[Pair]) -> dict[str, Any]:
    from finetune.verifier import metrics

    probs = verifier.score([(p.text_a, p.text_b) for p in pairs])
    out = metrics(list(pairs), probs)
    by_style: dict[str, Any] = {}
    for style in sorted({p.kind.split("/")[0] for p in pairs}):
        idx = [i for i, p in enumerate(pairs) if p.kind.startswith(style + "/")]
        by_style[style] = metrics([pairs[i] for i in idx], probs[idx]).get("answerable")
    out["by_style"] = by_style
    return out


def main(argv: list[str] | None = None) -> int:
    """Build the pairs, tune the committed adapter on the dev part, measure base and tuned on held-out pairs."""
    import argparse
    import logging

    from corpora import load_sources
    from finetune import verifier, verifier_data
    from rag.config import data_dir, load_config, resolve_path
    from rag.models import resolve
    from rag.verifier import Verifier

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="configs/default.yaml")
    ap.add_argument("--from-adapter", default=None, help="adapter to continue (default: the config's "
                    "verifier.answerability_adapter, else verifier.adapter)")
    ap.add_argument("--model", default=None,
                    help="the encoder the continued adapter was trained on (default: verifier.answerability_model "
                         "for the config's answerability adapter, else verifier.model)")
    ap.add_argument("--out", default=".cds/verifier/realistic/adapter")
    ap.add_argument("--replay", default=".cds/verifier/data/train.jsonl",
                    help="the earlier stages' training pairs (built here when missing, as `train verifier` does)")
    ap.add_argument("--heldout", default=".cds/verifier/data/heldout.jsonl")
    ap.add_argument("--no-realistic-test", action="store_true",
                    help="measure on the earlier stages' held-out pairs only: the realistic test pairs are not built "
                         "(choosing their positives reads every gold passage: ~45 min on 2 cores with mpnet)")
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--learning-rate", type=float, default=3e-4)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cfg = load_config(Path(args.config))
    work = resolve_path(".cds/verifier/realistic")
    work.mkdir(parents=True, exist_ok=True)
    root = data_dir(cfg)
    medquad = load_sources([f"medquad:{root / 'medquad'}"]).documents
    trust = json.loads(resolve_path("eval/splits/trust.json").read_text(encoding="utf-8"))
    excluded = trust_foci(medquad, trust)
    realistic_files = {p.relative_to(resolve_path(".cds/realistic/medquad")).as_posix()
                       for p in resolve_path(".cds/realistic/medquad").rglob("*.xml")}
    docs = [d for d in medquad if medquad_rel(d) in realistic_files]
    docs += load_sources([f"ngc:{root / 'guidelines' / 'ngc_usgov_guideline_summaries.jsonl'}"]).documents
    passages_of = verifier_data.index_passages(cfg)
    adapter, encoder = starting_point(cfg.verifier, args.from_adapter, args.model)
    start = resolve_path(adapter)
    base = resolve(encoder, resolve_path(cfg.models.cache_dir)).path
    before = Verifier(base, start, batch_size=32)

    def best_of(question: str, passages: list[str]) -> int:
        return int(before.answerability(question, passages).argmax())

    parts: dict[str, list[Pair]] = {}
    card: dict[str, Any] = {"excluded_trust_foci": len(excluded), "corpus_documents": len(docs),
                            "base": encoder, "from_adapter": str(start)}
    if (work / "pairs" / "card.json").exists():
        card.update({k: v for k, v in json.loads((work / "pairs" / "card.json").read_text(encoding="utf-8")).items()
                     if k in ("dev", "test")})
    for part in ("dev",) if args.no_realistic_test else ("dev", "test"):
        if (work / "pairs" / f"{part}.jsonl").exists():  # built by an earlier run of this command (slow: ~15 min)
            parts[part] = verifier_data.read(work / "pairs" / f"{part}.jsonl")
            continue
        pairs, stats = build(load_questions(resolve_path(str(QUESTIONS)), part), docs, passages_of, best_of, excluded)
        parts[part] = pairs
        card[part] = {"pairs": len(pairs), "stats": dict(stats)}
        verifier_data.write({part: pairs}, card, work / "pairs")
    if not resolve_path(args.replay).exists():
        # The earlier stages' pairs (as `app.py train verifier` writes them, without training): the replay pool.
        verifier_data.build_v2_pairs(cfg, resolve_path(args.replay).parent, passages_of)
    replay = [p for p in verifier_data.read(resolve_path(args.replay)) if p.task == "answerable"]
    held = [p for p in verifier_data.read(resolve_path(args.heldout)) if p.task == "answerable"]
    # the tune stage's own settings: a lower rate than stage 1, a checkpoint every 50 steps
    opts = verifier.VerifierTrainOptions(epochs=args.epochs, learning_rate=args.learning_rate, save_steps=50)
    out = resolve_path(args.out)
    card["tune"] = verifier.tune(parts["dev"], replay, base, start, out, work / "run", opts, progress=True)
    after = Verifier(base, out, batch_size=32)
    card["measured"] = {name: {"before": _measure(before, pairs), "after": _measure(after, pairs)}
                        for name, pairs in (("realistic_test", parts.get("test")), ("own_heldout", held)) if pairs}
    (out / "training_card.json").write_text(json.dumps(card, indent=1) + "\n", encoding="utf-8")
    for name, m in card["measured"].items():
        b, a = m["before"]["answerable"], m["after"]["answerable"]
        print(f"{name}: AUROC {b['auroc']} -> {a['auroc']}, precision {b['precision']} -> {a['precision']}, "
              f"recall {b['recall']} -> {a['recall']} ({b['n']} pairs)")
        for style, s in m["after"]["by_style"].items():
            was = m["before"]["by_style"][style]
            if s and was:
                print(f"  {style}: AUROC {was['auroc']} -> {s['auroc']}, recall {was['recall']} -> {s['recall']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
