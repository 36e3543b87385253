"""The subject-variant check (:mod:`rag.subject`) on questions it was not written from.

The check was written after reading trust-split answers to removed MedQuAD topics that came from a
sibling page (type 4 answered from type 1). It is measured here on MedQuAD pages the trust split never
touches: every focus (page title) that has a sibling of another variant in MedQuAD, where neither it nor
any of its siblings is in the trust index or asked about by the trust split, plus distractor pages drawn
at random from the rest. An index of those pages is built with the default preset's models
(``.cds/index/subject_variant``); then, retrieval only (no generation):

- **gold kept**: the shown sources as retrieved. The check should not fire (a false stop);
- **topic removed**: every page of the asked focus left out of the results, as the trust split removes
  topics. The check should fire (what is left is about another variant, or unrelated);
- for **sibling** questions (foci with a sibling) and **other** questions (the distractor pages' own).

    python -m eval.subject_variant --output .cds/eval/subject_variant.json      # builds the index first
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

from eval.mcq import stats
from rag.subject import other_variant, parse, relation

SHOWN = (3, 5)  # the gate reads the sources that fit the prompt: 2-3 at the default budget, 5 at most
INDEX = ".cds/index/subject_variant"
FILES = ".cds/subject_variant/medquad"


def _rel(doc: Any) -> str:
    return str(doc.source).split("#")[0].split("medquad/", 1)[-1]


def siblings(foci: list[str]) -> dict[str, set[str]]:
    """Per focus, the other foci that are :func:`rag.subject.relation` siblings of it."""
    parsed = {f: parse(f) for f in foci}
    by_word: dict[str, list[str]] = defaultdict(list)
    for f in foci:
        if parsed[f].words:
            by_word[min(parsed[f].words)].append(f)  # a sibling's words are all in the asking title
    out: dict[str, set[str]] = defaultdict(set)
    for f in foci:
        for w in parsed[f].words:
            for t in by_word.get(w, []):
                if t != f and relation(parsed[f], t) == "sibling":
                    out[f].add(t)
    return out


def select(docs: list[Any], trust: dict[str, Any], distractors: int, seed: int) -> dict[str, Any]:
    """The foci to ask about (sibling families clear of the trust split) and the files to index."""
    asked = {i for part in ("dev", "test") for suite in ("medquad", "topic_removed") for i in trust[part][suite]}
    trust_files = set(trust["index_medquad_files"])
    by_focus: dict[str, list[Any]] = defaultdict(list)
    for d in docs:
        by_focus[str(d.meta.get("focus", "")).strip()].append(d)
    by_focus.pop("", None)
    trust_foci = {f for f, ds in by_focus.items() if any(d.doc_id in asked or _rel(d) in trust_files for d in ds)}
    sib = siblings(sorted(by_focus))
    family = sorted(f for f, s in sib.items() if f not in trust_foci and not s & trust_foci)
    members = set(family) | {t for f in family for t in sib[f]}
    rest = sorted(f for f in by_focus if f not in members and f not in trust_foci and f not in sib)
    other = random.Random(seed).sample(rest, min(distractors, len(rest)))
    files = sorted({_rel(d) for f in members | set(other) for d in by_focus[f]})
    return {"sibling": family, "other": other, "files": files, "by_focus": by_focus}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="configs/default.yaml")
    ap.add_argument("--distractors", type=int, default=1500, help="other foci indexed (their pages)")
    ap.add_argument("--questions", type=int, default=400, help="questions asked per group at most")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--output", default=".cds/eval/subject_variant.json")
    args = ap.parse_args(argv)

    from corpora import load_sources
    from eval import trust_set
    from rag import Assistant
    from rag.config import data_dir, load_config, resolve_path
    from rag.index_jobs import IndexJobs

    cfg = load_config(args.config)
    medquad = data_dir(cfg) / "medquad"
    sel = select(load_sources([f"medquad:{medquad}"]).documents, trust_set.load(), args.distractors, args.seed)
    cfg.index.dir, cfg.index.auto_build_demo = INDEX, False
    out_files = resolve_path(FILES)
    if not (resolve_path(INDEX) / "CURRENT").exists():
        if out_files.exists():
            shutil.rmtree(out_files)
        for rel in sel["files"]:
            (out_files / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(medquad / rel, out_files / rel)
        IndexJobs.of(Assistant(cfg, progress=True)).update([f"medquad:{out_files}"], strict=True)
    a = Assistant(cfg)
    rng = random.Random(args.seed)
    rows = []
    for group in ("sibling", "other"):
        qs = [d for f in sel[group] for d in sel["by_focus"][f]]
        for d in rng.sample(qs, min(args.questions, len(qs))):
            focus = str(d.meta["focus"]).strip()
            units = a.retrieve(str(d.meta["question"]), top_k=30).units
            titles = [u.chunk.title or "" for u in units]
            left = [t for t in titles if t.strip().lower() != focus.lower()]
            row = {"group": group, "doc_id": d.doc_id, "question": d.meta["question"], "focus": focus,
                   "gold_shown_top3": focus.lower() in [t.strip().lower() for t in titles[:3]]}
            for k in SHOWN:
                row[f"kept_top{k}"] = other_variant(str(d.meta["question"]), titles[:k])
                row[f"removed_top{k}"] = other_variant(str(d.meta["question"]), left[:k])
            rows.append(row)

    def share(group: str, key: str) -> dict[str, Any]:
        g = [r for r in rows if r["group"] == group]
        k = sum(r[key] is not None for r in g)
        return {"k": k, "n": len(g), "share": round(k / len(g), 4) if g else None,
                "ci95": [round(x, 4) for x in stats.wilson(k, len(g))] if g else None}

    summary = {"sibling_foci": len(sel["sibling"]), "other_foci": len(sel["other"]), "files": len(sel["files"]),
               **{f"{g}_{key}": share(g, key) for g in ("sibling", "other")
                  for key in (f"{w}_top{k}" for w in ("kept", "removed") for k in SHOWN)}}
    path = Path(args.output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"summary": summary, "rows": rows}, indent=1), encoding="utf-8")
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    from eval import one_line

    one_line.run(main)
