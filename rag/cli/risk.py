"""``app.py risk``: heart-failure risk of a case description (:mod:`rag.risk`), printed or as JSON.

Exit codes: 0 the assessment was printed, 2 bad input (no heart-failure data, an impossible value,
an empty or unreadable file), 1 a runtime failure.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from rag.cli import excerpt, load_config, print_json, with_index, wrap


def add(sub: Any, common: argparse.ArgumentParser) -> None:
    rk = sub.add_parser("risk", parents=[common], help="heart-failure risk of a case description: inputs read from "
                        "the text, a validated model, contributions, missing inputs, guideline sources")
    rk.add_argument("case", nargs="?", help="the case description (or --file)")
    rk.add_argument("--file", help="read the case description from this text file")
    rk.add_argument("--json", action="store_true", help="print the assessment as JSON")
    rk.add_argument("--plot", metavar="PNG", help="write a bar chart of the contributions")
    rk.add_argument("--model", help="risk model JSON (default: configs/risk/hf-logistic.json)")
    rk.add_argument("--no-sources", action="store_true", help="skip the guideline passages (no index or embedder)")
    rk.add_argument("--explain", choices=["template", "generator"], default="template",
                    help="who writes the explanation: the template (default) or the generator, checked against the "
                         "computation and replaced by the template if any check fails")
    rk.add_argument("--adapter", help="LoRA adapter folder for the generator (with --explain generator)")
    with_index(rk)
    rk.set_defaults(handler=run)


def read_case(args: argparse.Namespace) -> str:
    """The case description: the argument, or the text of ``--file`` (one of them)."""
    from rag.errors import InputError

    if (args.case is None) == (args.file is None):
        raise InputError("give the case description as text or with --file PATH (one of them)")
    if not args.file:
        return str(args.case)
    from rag.fsutil import read_small_text
    from rag.risk import MAX_CASE_CHARS

    path = Path(args.file)
    if not path.exists():
        raise InputError(f"--file {path}: no such file; check the path")
    try:
        case = read_small_text(path, 4 * MAX_CASE_CHARS)
    except IsADirectoryError:
        raise InputError(f"--file {path} is a folder; pass the text file with the case description") from None
    except ValueError as e:
        raise InputError(f"--file {path} {e}") from None
    if not case.strip():
        raise InputError(f"--file {path} is empty; write the case description in it")
    return case


def run(args: argparse.Namespace) -> int:
    from rag.hf_model import DEFAULT_MODEL, RiskModel
    from rag.risk import assess, cite_guidelines, explain, generator_explanation, index_retriever, plot_contributions

    t0 = time.perf_counter()
    case = read_case(args)
    report = assess(case, RiskModel.load(args.model or DEFAULT_MODEL))  # bad input fails before any model loads
    if not args.no_sources or args.explain == "generator":
        from rag import Assistant

        # --index and --adapter applied there; the demo index is built only when sources are wanted.
        assistant = Assistant.open(load_config(args), build_missing=not args.no_sources, progress=not args.quiet)
        if not args.no_sources:
            t = time.perf_counter()
            cite_guidelines(report, index_retriever(assistant))
            report.timings_ms["sources"] = (time.perf_counter() - t) * 1000
    report.explanation = explain(report)
    if args.explain == "generator":
        t = time.perf_counter()
        gen = assistant.generator
        generator_explanation(report, lambda m: gen.generate(m, 160).text)
        report.timings_ms["generator_explanation"] = (time.perf_counter() - t) * 1000
    if args.plot:
        plot_contributions(report, args.plot)
    report.timings_ms["total"] = (time.perf_counter() - t0) * 1000
    if args.json:
        print_json(report.to_dict())
        return 0
    _print_risk(report, args.plot)
    return 0


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _print_risk(report: Any, plot: str | None) -> None:
    from rag.risk import NOTICE

    p = report.prediction
    print(f"HEART-FAILURE RISK: {_pct(p.probability)} (95% CI {_pct(p.interval[0])}-{_pct(p.interval[1])}), "
          f"category {p.category.upper()}")
    if p.range:
        print(f"  incomplete inputs: between {_pct(p.range[0])} and {_pct(p.range[1])} over plausible values of "
              "what is missing or given as a range")
    who = "the generator (checked against the computation)" if report.explained_by == "generator" else "template"
    print(f"\nEXPLANATION ({who})")
    for line in report.explanation.splitlines():
        print(wrap(line, "  "))
    if report.generator_problems:
        print(f"  (the generator's explanation failed {len(report.generator_problems)} check(s) and was replaced: "
              f"{report.generator_problems[0]})")
    _print_contributions(report)
    _print_inputs(report)
    auc = report.model["auroc"]
    print(wrap(f"\nCOHORT: {report.cohort}.", ""))
    print(f"model {report.model['path']} (fitted {report.model['date']}; nested-CV AUROC {auc['value']:.2f}, 95% CI "
          f"{auc['ci95'][0]:.2f}-{auc['ci95'][1]:.2f}); {report.timings_ms['total']:.0f} ms"
          + (f"; plot {plot}" if plot else ""))
    print(NOTICE)


def _print_contributions(report: Any) -> None:
    from rag.hf_model import BOOLEAN_INPUTS, NAMES

    print("\nCONTRIBUTIONS (log-odds against the cohort's average patient, 95% bootstrap interval)")
    for c in report.prediction.contributions:
        name, shown = NAMES[c.input], f"{c.value:,.0f}" if c.input == "platelets" else f"{c.value:g}"
        if c.input == "male":
            name, shown = "sex", "male" if c.value else "female"
        elif c.input in BOOLEAN_INPUTS:
            shown = "yes" if c.value else "no"
        flag = "" if c.certain else "  (direction uncertain)"
        print(f"  {name:<18} {shown:>9}  {c.log_odds:+.2f} ({c.low:+.2f} to {c.high:+.2f})  "
              f"odds x{c.odds_ratio:.2f}{flag}")
    if report.missing:
        print("\nMISSING INPUTS (the estimate sets them to the cohort average; the range covers them)")
        for m in report.missing:
            print(wrap(f"{NAMES[m.input]}: {m.why}", "  - "))


def _print_inputs(report: Any) -> None:
    """What was read from the text, its notes, and the guideline passages for the modifiable factors."""
    from rag.hf_model import NAMES

    print("\nREAD FROM THE TEXT")
    for v in report.extraction.values.values():
        note = f"  [{v.note}]" if v.note else ""
        print(wrap(f"{v.name} = {v.value}  <- '{v.text}' (chars {v.start}-{v.end}){note}", "  "))
    for n in report.notes:
        print(wrap(n, "  ! "))
    if report.outside_cohort:
        print(wrap("outside the cohort's range (the model extrapolates): "
                   + ", ".join(NAMES[k] for k in report.outside_cohort), "  ! "))
    if report.sources:
        print("\nSOURCES (guideline passages for the modifiable factors)")
        shown_n: set[int] = set()
        for s in report.sources:
            if s.n in shown_n:
                continue
            shown_n.add(s.n)
            print(f" [{s.n}] {s.title} — {s.section}  ({NAMES[s.factor]})")
            print(wrap(excerpt(s.text).replace("\n", " "), "     > "))
