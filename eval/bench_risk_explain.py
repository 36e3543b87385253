"""How often the generator's risk explanation passes the checks (else the template is shown).

    .venv/bin/python -m eval.bench_risk_explain [--limit 8] [--part test] [--json] [--set KEY=VALUE ...]
    .venv/bin/python -m eval.bench_risk_explain --rescore eval/hf_cases/explanations-default.json

``--rescore`` checks saved replies again (greedy decoding gives the same replies; the checks may change).

For the first ``--limit`` labelled cases of ``--part`` with heart-failure data, the default preset's
generator writes the explanation from the computed contributions; :func:`rag.risk.check_explanation`
checks each factor, direction, number and category. Reports the fallback rate, the problems found, the
time per explanation, and that every shown explanation (generator's or template) passes the checks.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any


def _kind(problem: str) -> str:
    if "category" in problem:
        return "category missing or not the computed one"
    if re.search(r"^says .* (?:raises|lowers) the risk", problem):
        return "wrong direction"
    if problem.startswith("states "):
        return "a number the computation does not give"
    if problem.startswith("says '"):
        return "a yes/no factor stated against the case"
    if problem.startswith("names "):
        return "a factor the computation has no value for"
    return problem


def summary(rows: list[dict[str, Any]], seconds: list[float], generator: str | None, adapter: str | None
            ) -> dict[str, Any]:
    kinds = Counter(_kind(p) for x in rows for p in x["problems"])
    return {"cases": len(rows), "generator": generator, "adapter": adapter,
            "fallback_rate": round(sum(x["explained_by"] == "template" for x in rows) / max(len(rows), 1), 3),
            "shown_consistent": sum(x["shown_passes_checks"] for x in rows),
            "problem_kinds": dict(kinds), "median_seconds": round(statistics.median(seconds), 1) if seconds else None,
            "records": rows}


def rescore(saved: dict[str, Any], part: str) -> dict[str, Any]:
    from eval.hf_extraction import read_cases
    from rag.hf_model import RiskModel
    from rag.risk import assess, check_explanation, explain, generator_explanation

    model = RiskModel.load()
    cases = {c["id"]: c for c in read_cases("all")}
    rows: list[dict[str, Any]] = []
    for old in saved["records"]:
        r = assess(cases[old["id"]]["text"], model)
        reply: str = old["reply"]

        def replay(messages: list[dict[str, str]], reply: str = reply) -> str:
            return reply

        generator_explanation(r, replay)
        rows.append({**old, "explained_by": r.explained_by, "problems": r.generator_problems,
                     "shown_passes_checks": check_explanation(r.explanation, r) == []})
        assert r.explained_by == "generator" or r.explanation == explain(r)
    return summary(rows, [], saved.get("generator"), saved.get("adapter")) | {
        "median_seconds": saved.get("median_seconds")}


def run(limit: int, part: str, overrides: list[str]) -> dict[str, Any]:
    from eval.hf_extraction import read_cases
    from rag import Assistant
    from rag.errors import InputError
    from rag.hf_model import RiskModel
    from rag.risk import assess, check_explanation, explain, generator_explanation

    model = RiskModel.load()
    assistant = Assistant.open(None, overrides)
    gen = assistant.generator
    rows: list[dict[str, Any]] = []
    seconds: list[float] = []
    for case in read_cases(part):
        if len(rows) >= limit:
            break
        try:
            r = assess(case["text"], model)
        except InputError:
            continue
        r.explanation = explain(r)
        replies: list[str] = []

        def generate(messages: list[dict[str, str]], replies: list[str] = replies) -> str:
            replies.append(gen.generate(messages, 160).text)
            return replies[-1]

        t = time.perf_counter()
        generator_explanation(r, generate)
        seconds.append(time.perf_counter() - t)
        rows.append({"id": case["id"], "explained_by": r.explained_by, "problems": r.generator_problems,
                     "reply": replies[0], "shown_passes_checks": check_explanation(r.explanation, r) == []})
    return summary(rows, seconds, gen.model_id, gen.adapter)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--limit", type=int, default=8)
    p.add_argument("--part", default="test")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--json", action="store_true")
    p.add_argument("--rescore", metavar="JSON", help="check the replies saved by an earlier --json run again")
    args = p.parse_args()
    if args.rescore:
        out = rescore(json.loads(Path(args.rescore).read_text(encoding="utf-8")), args.part)
    else:
        out = run(args.limit, args.part, args.overrides)
    if not args.json:
        out = {k: v for k, v in out.items() if k != "records"}
    print(json.dumps(out, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
