"""A fresh question set on the demo index: ask it once, then replay a pipeline switch on and off.

A check written after reading failures is measured on questions written after it and never read: a
JSON Lines file in the ``eval/questions`` formats (``gold_doc_ids`` + ``required``: answerable, scored
strictly as ``demo_answerable``; without them: out of corpus). ``run`` asks every question through the
config's assistant with the gate lowered to ``--floor`` (so any gate can be replayed) and the switch
under study on (so what it does, a second try included, is recorded), one record per line, resumable.
``compare`` replays the records at the config's operating point, at the floor with its threshold, and
with neither, with the switch off and on.

    python -m eval.trust_fresh run --questions eval/questions/generic_out_of_corpus.jsonl \\
        --questions eval/questions/generic_answerable.jsonl --output .cds/eval/k-fresh
    python -m eval.trust_fresh compare --rows .cds/eval/k-fresh/rows.jsonl --switch unseen_terms
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from eval import trust, trust_jobs, trust_set


def questions(paths: list[Path]) -> list[dict[str, Any]]:
    """The files' questions as trust records expect them (demo suites; answerable when gold is given)."""
    out: list[dict[str, Any]] = []
    for path in paths:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                q = json.loads(line)
                answerable = "gold_doc_ids" in q
                out.append({"suite": "demo_answerable" if answerable else "demo_out_of_corpus", "id": q["id"],
                            "question": q["question"], "answerable": answerable,
                            "gold": q.get("gold_doc_ids", []), "required": q.get("required", []),
                            "template": q.get("template")})
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ValueError(f"{path}:{n}: not a question record ({e}); see eval/questions/README.md") from e
    if len({q["id"] for q in out}) != len(out):
        raise ValueError("question ids repeat across the files; each id must be unique")
    return out


def compare(rows: list[dict[str, Any]], settings: dict[str, Any], switch: str) -> list[dict[str, Any]]:
    """Out-of-corpus answers shown and answerable answers right, with ``switch`` off and on, at three points."""
    floor = float(settings.get("floor", 0.05))
    points = [("operating point", settings["gate"], settings["abstain_below"]),
              ("floor gate, threshold", floor, settings["abstain_below"]), ("no gate, no threshold", floor, 0.0)]
    table = []
    for name, gate, threshold in points:
        for value in (False, True):
            # the operating point is the product's (the demo index's own point where it applies); the others are swept
            # for every suite alike
            at = {"gate": gate, "abstain_below": threshold} if name == "operating point" else \
                {"gate": gate, "abstain_below": threshold, "demo_point": None}
            out = trust.outcomes(rows, {**settings, switch: value, **at}, {})
            ans = [o for o, r in zip(out, rows, strict=True) if r["answerable"]]
            ooc = [o for o, r in zip(out, rows, strict=True) if not r["answerable"]]
            answered = [o for o in ans if o["answered"]]
            table.append({"point": name, switch: value, "ooc_shown": sum(o["answered"] for o in ooc),
                          "ooc": len(ooc), "answerable_answered": len(answered), "answerable": len(ans),
                          "right": sum(o["right"] for o in answered),
                          "mean_confidence": round(sum(o["confidence"] for o in answered) / len(answered), 3)
                          if answered else None})
    return table


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m eval.trust_fresh", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="action", required=True)
    r = sub.add_parser("run", help="ask the question files once (resumable)")
    r.add_argument("--questions", action="append", required=True, help="a JSON Lines question file (repeatable)")
    r.add_argument("--output", required=True, help="folder for rows.jsonl and its journal")
    r.add_argument("--switch", default="unseen_terms", help="the verifier switch to record on (default %(default)s)")
    r.add_argument("--floor", type=float, default=0.05, help="the gate the run generates above")
    c = sub.add_parser("compare", help="replay a run with the switch off and on")
    c.add_argument("--rows", required=True)
    c.add_argument("--switch", default="unseen_terms")
    c.add_argument("--json", action="store_true")
    for parser in (r, c):
        parser.add_argument("--config", default=None, help="config file (default configs/default.yaml)")
        parser.add_argument("--trust-index", default=".cds/index/trust", help="for the annotation of old rows only")
    args = ap.parse_args(argv)

    from rag import Assistant
    from rag.config import data_dir, load_config, resolve_path
    from rag.errors import InputError

    try:
        cfg = load_config(args.config)
        switches = [k for k in trust.pipeline_options(cfg) if k in type(cfg.verifier).model_fields]
        if args.switch not in switches:
            raise InputError(f"--switch {args.switch}: not a replayable verifier switch; one of {', '.join(switches)}")
        if args.action == "run":
            paths = [resolve_path(p) for p in args.questions]
            for p in paths:
                if not p.exists():
                    raise InputError(f"--questions {p}: no such file")
            try:
                qs = questions(paths)
            except ValueError as e:
                raise InputError(str(e)) from e
            cfg = load_config(args.config, overrides=[f"verifier.{args.switch}=true"])
            cfg.verifier.answerable_min, cfg.index.operating_point = args.floor, None
            out = resolve_path(args.output)
            out.mkdir(parents=True, exist_ok=True)
            rows = trust.run({"demo": Assistant.open(cfg)}, qs, data_dir(cfg) / trust_set.HF_CSV,
                             journal=out / "rows.journal.jsonl",
                             on_answer=lambda k, n: print(f"{k}/{n}", file=sys.stderr, flush=True))
            for row in rows:
                row["floor"] = args.floor
            trust.write_rows(rows, out / "rows.jsonl")
            print(f"{len(rows)} records in {out / 'rows.jsonl'}")
            return 0
        path = resolve_path(args.rows)
        if not path.exists():
            raise InputError(f"{path} not found; run `python -m eval.trust_fresh run` first")
        rows = trust_jobs.prepare_rows(cfg, path, [], args.trust_index)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    floor = max((float(r.get("floor", 0.05)) for r in rows), default=0.05)
    table = compare(rows, trust.settings_from(cfg, floor), args.switch)
    if args.json:
        print(json.dumps(table, indent=1))
        return 0
    print(f"| point | {args.switch} | out of corpus shown | answerable answered | right | mean confidence |")
    print("|---|---|---|---|---|---|")
    for t in table:
        print(f"| {t['point']} | {'on' if t[args.switch] else 'off'} | {t['ooc_shown']}/{t['ooc']} | "
              f"{t['answerable_answered']}/{t['answerable']} | {t['right']} | {t['mean_confidence']} |")
    return 0


if __name__ == "__main__":
    from eval import one_line

    one_line.run(main)
