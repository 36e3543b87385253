"""Continue the verifier on one kind of its own training pairs, with the rest replayed.

Version 2 of the verifier (``adapters/verifier-minilm``) is weakest on record claims: on held-out patients'
pairs it accepts 40% of true values of *another* measurement given as the answer ("CPK?" answered with the
sodium) and 43% of flipped yes/no (BENCHMARKS.md, "Trust", fifteenth session). Version 3 was retrained from
scratch with more of these negatives and lost recall everywhere. This continues version 2 on the pairs of
one source and task of its own training data (``--source record --task support``: training patients only),
each epoch mixed 1:1 with version 2's training pairs (all tasks, drawn afresh) so the rest is kept, and
measures before/after on the held-out pairs by source and kind. The result is meant as the claim-support
adapter only (``verifier.adapter``), with version 2 kept for answerability (``verifier.answerability_adapter``),
so the gate is unchanged.

    python -m finetune.verifier_focus --source record --task support --out .cds/verifier/focus/adapter
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from finetune.verifier_data import Pair


def by_kind(verifier: Any, pairs: Sequence[Pair], threshold: float = 0.5) -> dict[str, dict[str, Any]]:
    """Per ``source/task`` and ``source/task/kind/label``: pairs, share scored >= threshold, and per
    ``source/task`` the AUROC (what the held-out figures of the adapter card report)."""
    from finetune.verifier import _auroc

    probs = verifier.score([(p.text_a, p.text_b) for p in pairs]) if pairs else np.zeros(0)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, p in enumerate(pairs):
        groups[f"{p.source}/{p.task}"].append(i)
        groups[f"{p.source}/{p.task}/{p.kind}/{p.label}"].append(i)
    out: dict[str, dict[str, Any]] = {}
    for key, idx in sorted(groups.items()):
        pr = probs[idx]
        labels = np.array([pairs[i].label for i in idx])
        row: dict[str, Any] = {"n": len(idx), "accepted": round(float(np.mean(pr >= threshold)), 4)}
        if key.count("/") == 1:
            auc = _auroc(labels, pr)
            row["auroc"] = round(auc, 4) if auc is not None else None
        out[key] = row
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse
    import logging

    from finetune import verifier, verifier_data
    from rag.config import load_config, resolve_path
    from rag.errors import InputError
    from rag.models import resolve
    from rag.verifier import Verifier

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="configs/default.yaml")
    ap.add_argument("--source", required=True, help="pairs of this source (record, medquad, wikidoc, ngc, ...)")
    ap.add_argument("--task", choices=["support", "answerable"], required=True)
    ap.add_argument("--data", default=".cds/verifier/data", help="version 2's pairs (train.jsonl, heldout.jsonl)")
    ap.add_argument("--from-adapter", default=None, help="adapter to continue (default: the config's verifier.adapter)")
    ap.add_argument("--out", default=".cds/verifier/focus/adapter")
    ap.add_argument("--work", default=".cds/verifier/focus", help="the resumable run")
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--learning-rate", type=float, default=2e-4)
    ap.add_argument("--seed", type=int, default=15)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cfg = load_config(Path(args.config))
    data = resolve_path(args.data)
    if not (data / "train.jsonl").exists():
        verifier_data.build_v2_pairs(cfg, data)
    train = verifier_data.read(data / "train.jsonl")
    held = verifier_data.read(data / "heldout.jsonl")
    focus = [p for p in train if p.source == args.source and p.task == args.task]
    if not focus:
        raise InputError(f"no {args.source}/{args.task} pairs in {data / 'train.jsonl'}; "
                         f"sources there: {sorted({p.source for p in train})}")
    base = resolve(cfg.verifier.model, resolve_path(cfg.models.cache_dir)).path
    start = resolve_path(args.from_adapter or cfg.verifier.adapter)
    out = resolve_path(args.out)
    opts = verifier.VerifierTrainOptions(epochs=args.epochs, learning_rate=args.learning_rate, save_steps=50,
                                         seed=args.seed)
    card: dict[str, Any] = {"focus": f"{args.source}/{args.task}", "focus_pairs": len(focus),
                            "tune": verifier.tune(focus, train, base, start, out, resolve_path(args.work) / "run",
                                                  opts, progress=True)}
    before, after = Verifier(base, start, batch_size=32), Verifier(base, out, batch_size=32)
    card["heldout"] = {"before": by_kind(before, held), "after": by_kind(after, held)}
    (out / "training_card.json").write_text(json.dumps(card, indent=1) + "\n", encoding="utf-8")
    for key, b in card["heldout"]["before"].items():
        a = card["heldout"]["after"][key]
        extra = f", AUROC {b.get('auroc')} -> {a.get('auroc')}" if "auroc" in b else ""
        print(f"{key}: accepted {b['accepted']} -> {a['accepted']} (n {b['n']}){extra}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
