"""Batch files of recorded MedQuAD answers for a person (or a helper) to judge under ``eval/labels/RUBRIC-medquad.md``.

The automatic MedQuAD verdict is lenient (:mod:`eval.trust_labels`), so answers the fit or a report counts are judged
by reading them. This writes, for each MedQuAD answer that the config's settings show and that no verdict in
``--labels`` matches, the entry the rubric describes: the question, the shown sentences with their citations, the
gold section given to the model and any other cited source. Never the confidence or the automatic verdict: the
judge is blind to both. Verdicts go to a JSON-lines file under ``eval/labels/`` (the rubric's output format).

    python -m eval.trust_dump --rows .cds/eval/trust-s21-dev/rows-dev.jsonl \\
        --labels eval/labels/trust-s5-medquad-dev.jsonl ... --out .cds/eval/dump-dev --batch 30
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from eval import trust
from eval.trust_labels import answer_sha1

SENTENCE_CHARS = 500
SOURCE_CHARS = 2000


def _sources(row: dict[str, Any], outcome: dict[str, Any]) -> list[dict[str, Any]]:
    """The sources the shown answer's citation numbers refer to (a second try has its own)."""
    second = row.get("second_try") or {}
    if outcome.get("second_try") and second.get("sources"):
        return list(second["sources"])
    return list(row.get("sources", []))


def entry(row: dict[str, Any], outcome: dict[str, Any]) -> str:
    """One answer as the rubric describes it."""
    shown = outcome["shown_sentences"]
    gold = set(row.get("gold", []))
    lines = [f"ID {row['id']} | SHA1 {answer_sha1(shown)}", f"Q: {row['question']}"]
    for s in shown:
        cites = " ".join(f"[{n}]" for n in s["citations"])
        lines.append(f"S {cites} : {s['text'][:SENTENCE_CHARS]}")
    cited = {n for s in shown for n in s["citations"]}
    for src in _sources(row, outcome):
        kind = "GOLD" if src.get("doc_id") in gold else "CITED-NOT-GOLD" if src["n"] in cited else None
        if kind:
            text = " ".join(str(src.get("text") or "").split())[:SOURCE_CHARS]
            lines.append(f"{kind} {src['n']} {src.get('title') or ''} | {text}")
    return "\n".join(lines)


def unjudged(rows: list[dict[str, Any]], settings: dict[str, Any], records: dict[str, Any]
             ) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(row, outcome) of each MedQuAD answer shown under ``settings`` that no attached verdict matches."""
    return [(r, o) for r, o in zip(rows, trust.outcomes(rows, settings, records), strict=True)
            if r["suite"] == "medquad" and o["answered"] and not o.get("labelled")]


def write_batches(entries: list[str], out: Path, batch: int) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(0, len(entries), batch):
        path = out / f"batch-{k // batch + 1:02d}.txt"
        path.write_text("\n\n".join(entries[k:k + batch]) + "\n", encoding="utf-8")
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", required=True, help="a run's records (rows-PART.jsonl or its journal)")
    ap.add_argument("--labels", action="append", default=[], help="verdicts already written (skipped)")
    ap.add_argument("--trust-index", default=".cds/index/trust")
    ap.add_argument("--config", default=None)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config key (e.g. --set confidence.abstain_below=0: every answer a candidate "
                         "calibration might show)")
    ap.add_argument("--out", required=True, help="folder for batch-NN.txt")
    ap.add_argument("--batch", type=int, default=30, help="answers per batch file")
    args = ap.parse_args(argv)

    from eval import trust_jobs
    from rag.config import load_config, resolve_path

    cfg = load_config(args.config, args.set)
    rows = trust_jobs.prepare_rows(cfg, resolve_path(args.rows), [resolve_path(p) for p in args.labels],
                                   args.trust_index, say=print)
    floor = max(float(r.get("floor", 0.05)) for r in rows)
    todo = unjudged(rows, trust.settings_from(cfg, floor), trust_jobs.load_records(cfg))
    paths = write_batches([entry(r, o) for r, o in todo], resolve_path(args.out), max(1, args.batch))
    print(f"{len(todo)} answers to judge in {len(paths)} batch files under {args.out}")
    return 0


if __name__ == "__main__":
    from eval import one_line

    one_line.run(main)
