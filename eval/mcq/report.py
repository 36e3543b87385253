"""Run artifacts: summary.json, report.md and PNG charts (accuracy with error bars, reliability)."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eval.mcq import stats
from eval.mcq.results import ConditionResult

log = logging.getLogger(__name__)

DEFINITIONS = ("Standard error sqrt(p(1-p)/n); 95% interval: Wilson score. ECE: 15 equal-width bins of the "
               "top-option probability. Brier: multi-class, sum over options of (p - y)^2, averaged (0 best, 2 "
               "worst). Option probabilities: softmax of the option-letter log-likelihoods.")


def _pct(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def _num(x: float | None, digits: int = 3) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _plt() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # charts are optional; the numbers are in summary.json and report.md
        log.warning("matplotlib is not installed: no PNG charts")
        return None
    return plt


def reliability_png(path: Path, curves: dict[str, list[dict[str, Any]]]) -> bool:
    plt = _plt()
    if plt is None or not curves:
        return False
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1, label="perfect calibration")
    for name, bins in curves.items():
        pts = [(b["confidence"], b["accuracy"], b["n"]) for b in bins if b["n"]]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (top-option probability)", ylabel="accuracy",
           title="Reliability (15 bins)")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def accuracy_png(path: Path, rows: Sequence[dict[str, Any]], baseline: float | None) -> bool:
    plt = _plt()
    if plt is None or not rows:
        return False
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(rows), 4))
    xs = range(len(rows))
    accs = [r["accuracy"] for r in rows]
    lo = [r["accuracy"] - r["ci95"][0] for r in rows]
    hi = [r["ci95"][1] - r["accuracy"] for r in rows]
    ax.bar(xs, accs, yerr=[lo, hi], capsize=6, color="#4C72B0")
    if baseline is not None:
        ax.axhline(baseline, ls="--", c="grey", lw=1, label=f"random guess {100 * baseline:.0f}%")
        ax.legend(fontsize=8)
    ax.set_xticks(list(xs), [r["condition"] for r in rows])
    ax.set(ylim=(0, 1), ylabel="accuracy (95% Wilson interval)", title=rows[0].get("bench", ""))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _run_md(s: dict[str, Any], png: bool) -> str:
    model = s.get("model") or {}
    adapter = s.get("adapter")
    index = s.get("index")
    lines = [f"# {s['bench']} — {s['condition']}", "",
             f"- accuracy **{_pct(s['accuracy'])}%** ± {_pct(s['se'])} (SE), 95% interval "
             f"{_pct(s['ci95'][0])}–{_pct(s['ci95'][1])}%, n = {s['n']} (random guess "
             f"{_pct(s['random_baseline'])}%)",
             f"- ECE (15 bins) {_num(s['ece_15'])}, Brier {_num(s['brier'])}"
             + (f", parse failures {s['parse_failures']}" if s.get("parse_failures") is not None else ""),
             f"- model {model.get('id')} ({model.get('dtype')}); adapter "
             f"{adapter['path'] if adapter else 'none'}; index "
             f"{index['version'] + ' (' + index['dir'] + ')' if index else 'none (no retrieval)'}",
             f"- scorer {s['scorer']}; {s['prompt']['k_shot']}-shot; chat template "
             f"{'yes' if s['prompt']['chat_template'] else 'no'}; prompt template hash {s['prompt']['hash']}",
             f"- {s['questions_per_s']:.2f} questions/s, wall {s['wall_s']:.0f} s; git "
             f"{(s.get('git') or {}).get('commit')}", "",
             "| subject | n | accuracy % | SE |", "|---|---:|---:|---:|"]
    for subj, a in s["per_subject"].items():
        lines.append(f"| {subj} | {a['n']} | {_pct(a['accuracy'])} | {_pct(a['se'])} |")
    if png:
        lines += ["", "![reliability](reliability.png)"]
    lines += ["", "Prompt (first question, with its gold continuation):", "", "```", str(s["prompt"]["example"]),
              "```", "", DEFINITIONS, ""]
    return "\n".join(lines)


def write_run(folder: Path, summary: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    png = bool(summary.get("reliability")) and reliability_png(folder / "reliability.png",
                                                              {summary["condition"]: summary["reliability"]})
    (folder / "report.md").write_text(_run_md(summary, png), encoding="utf-8")


def comparison(a_ids: Sequence[str], a_correct: Any, b_ids: Sequence[str], b_correct: Any, seed: int = 0,
               n_boot: int = 10_000) -> dict[str, Any]:
    """Paired comparison of b against a on the questions both answered."""
    a_map = dict(zip(a_ids, a_correct, strict=True))
    b_map = dict(zip(b_ids, b_correct, strict=True))
    common = [i for i in a_ids if i in b_map]
    a = [bool(a_map[i]) for i in common]
    b = [bool(b_map[i]) for i in common]
    mc = stats.mcnemar_exact(a, b)
    diff, lo, hi = stats.paired_bootstrap(a, b, n_boot, seed) if common else (float("nan"),) * 3
    return {"n_common": len(common), "only_in_a": len(a_ids) - len(common), "only_in_b": len(b_ids) - len(common),
            "accuracy_a": stats.accuracy(a).accuracy, "accuracy_b": stats.accuracy(b).accuracy,
            "difference": diff, "bootstrap_ci95": [lo, hi], "bootstrap_resamples": n_boot, "seed": seed,
            "mcnemar": {"both_correct": mc.both, "only_a_correct": mc.only_a, "only_b_correct": mc.only_b,
                        "both_wrong": mc.neither, "p_value_exact": mc.p_value}}


def write_matrix(out: Path, results: Sequence[ConditionResult], skipped: Sequence[str], seed: int) -> None:
    rows = [r.summary for r in results]
    base = next((r for r in results if r.name == "base"), None)
    comps = {}
    if base is not None:
        for r in results:
            if r is not base:
                comps[f"{r.name} vs base"] = comparison(base.ids, base.correct, r.ids, r.correct, seed)
    matrix = {"conditions": [{k: s[k] for k in ("condition", "n", "accuracy", "se", "ci95", "ece_15", "brier",
                                                "questions_per_s", "wall_s")} | {"folder": r.folder.name}
                             for r, s in zip(results, rows, strict=True)],
              "skipped": list(skipped), "comparisons": comps}
    (out / "matrix.json").write_text(json.dumps(matrix, indent=2) + "\n")
    baseline = rows[0]["random_baseline"] if rows else None
    acc_png = accuracy_png(out / "accuracy.png", rows, baseline)
    rel_png = reliability_png(out / "reliability.png", {s["condition"]: s["reliability"] for s in rows
                                                        if s.get("reliability")})
    s0 = rows[0] if rows else {}
    lines = [f"# {s0.get('bench', '')}: {', '.join(r.name for r in results)}", "",
             f"Model {(s0.get('model') or {}).get('id')}; {s0.get('n')} questions; scorer {s0.get('scorer')}; "
             f"{s0.get('prompt', {}).get('k_shot')}-shot; chat template "
             f"{'yes' if s0.get('prompt', {}).get('chat_template') else 'no'}. Random guess "
             f"{_pct(baseline)}%.", ""]
    if skipped:
        lines += [f"Skipped (no LoRA adapter given): {', '.join(skipped)}.", ""]
    lines += ["| condition | accuracy % | SE | 95% interval | ECE | Brier | questions/s |",
              "|---|---:|---:|---|---:|---:|---:|"]
    for s in rows:
        lines.append(f"| {s['condition']} | {_pct(s['accuracy'])} | {_pct(s['se'])} | {_pct(s['ci95'][0])}–"
                     f"{_pct(s['ci95'][1])} | {_num(s['ece_15'])} | {_num(s['brier'])} | "
                     f"{_num(s['questions_per_s'], 2)} |")
    if comps:
        lines += ["", "Paired comparisons on the same questions (difference = condition − base):", "",
                  "| comparison | n | difference (pp) | bootstrap 95% | McNemar b / c | exact p |",
                  "|---|---:|---:|---|---|---:|"]
        for name, c in comps.items():
            m = c["mcnemar"]
            lines.append(f"| {name} | {c['n_common']} | {100 * c['difference']:+.1f} | "
                         f"{100 * c['bootstrap_ci95'][0]:+.1f} to {100 * c['bootstrap_ci95'][1]:+.1f} | "
                         f"{m['only_a_correct']} / {m['only_b_correct']} | {m['p_value_exact']:.3g} |")
    if acc_png:
        lines += ["", "![accuracy](accuracy.png)"]
    if rel_png:
        lines += ["", "![reliability](reliability.png)"]
    lines += ["", DEFINITIONS, ""]
    (out / "report.md").write_text("\n".join(lines), encoding="utf-8")


# -- eval compare ------------------------------------------------------------------------------
def load_run(path: str | Path) -> tuple[Path, list[dict[str, Any]]]:
    """A run folder (with predictions.jsonl) or a predictions.jsonl file."""
    from rag.errors import InputError
    from rag.jsonl import objects

    p = Path(path)
    file = p / "predictions.jsonl" if p.is_dir() else p
    if not file.exists():
        hint = " (a matrix output holds one run folder per condition, e.g. base/)" if (p / "matrix.json").exists() \
            else ""
        raise InputError(f"no predictions.jsonl at {p}{hint}")
    fix = "write it again with `app.py eval mcq`"
    records = []
    for n, rec in objects(file, fix):
        try:
            records.append({"id": str(rec["id"]), "gold": rec["gold"], "correct": bool(rec["correct"])})
        except KeyError as e:
            raise InputError(f"{file}:{n}: not a prediction record (no {e} field); {fix}") from None
    if not records:
        raise InputError(f"{file}: no predictions")
    return file, records


def compare_runs(a: str | Path, b: str | Path, seed: int = 0, n_boot: int = 10_000) -> dict[str, Any]:
    from rag.errors import InputError

    fa, ra = load_run(a)
    fb, rb = load_run(b)
    gold_b = {r["id"]: r["gold"] for r in rb}
    clash = next((r["id"] for r in ra if r["id"] in gold_b and gold_b[r["id"]] != r["gold"]), None)
    if clash is not None:
        raise InputError(f"question {clash} has different gold answers in the two runs: not the same benchmark")
    res = comparison([r["id"] for r in ra], [r["correct"] for r in ra], [r["id"] for r in rb],
                     [r["correct"] for r in rb], seed, n_boot)
    if res["n_common"] == 0:
        raise InputError(f"{fa} and {fb} share no question ids: nothing to pair")
    return {"run_a": str(fa), "run_b": str(fb), **res}


def format_comparison(c: dict[str, Any]) -> str:
    m = c["mcnemar"]
    extra = ""
    if c["only_in_a"] or c["only_in_b"]:
        extra = f" (ignored: {c['only_in_a']} only in A, {c['only_in_b']} only in B)"
    return "\n".join([
        f"A: {c['run_a']}", f"B: {c['run_b']}",
        f"paired questions: {c['n_common']}{extra}",
        f"accuracy A {_pct(c['accuracy_a'])}%  B {_pct(c['accuracy_b'])}%  difference B−A "
        f"{100 * c['difference']:+.1f} pp, paired bootstrap 95% interval {100 * c['bootstrap_ci95'][0]:+.1f} to "
        f"{100 * c['bootstrap_ci95'][1]:+.1f} pp ({c['bootstrap_resamples']} resamples, seed {c['seed']})",
        "                 B correct  B wrong",
        f"  A correct      {m['both_correct']:9d}  {m['only_a_correct']:7d}",
        f"  A wrong        {m['only_b_correct']:9d}  {m['both_wrong']:7d}",
        f"McNemar exact test on the {m['only_a_correct'] + m['only_b_correct']} discordant questions: "
        f"p = {m['p_value_exact']:.4g}",
    ])
