"""Do the risk categories a generator states separate the heart-failure patients who died?

Held-out patients are the ``test`` split of the training data (split by patient, never
trained on). Each gets one complete case narrative; the generator's reply is parsed for its
category (low < intermediate < high) and the category's AUROC against ``DEATH_EVENT`` is
compared with two references on the same patients:

- a logistic regression on the same 11 features, fitted on the training patients;
- the points rule the training targets were derived from (finetune/hf_cases.py).

A category counts only where the reply states it as the risk category
(:func:`finetune.hf_cases.stated_category`, the parser the ``risk`` command's checks use too);
"high blood pressure" is not a category. A reply that states none is **unparsed**: counted on its
own, and wrong in the agreement with the rule's category. AUROC cannot score a reply without a
category, so it is reported twice: ``auroc.stated_category`` over the parsed replies only (their
number in ``auroc_patients``), and ``auroc.stated_category_unparsed_as_intermediate`` over every
patient with an unparsed reply ranked as the middle category, which is what the first version of
this evaluation silently did. Neither alone is fair to a model that often fails to state one:
read them with the unparsed count.

``DEATH_EVENT`` is read here and only here; no model input contains it or follow-up time.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from corpora.heart_failure import HFRecord, read_records
from corpora.report import LoadReport
from eval.hf_working import check_reply
from finetune.data import read_examples
from rag.errors import InputError
from rag.hf_rule import CATEGORIES, stated_category

parse_category = stated_category  # the reply's stated category, or None (unparsed)


def outcomes(csv_path: Path) -> dict[str, int]:
    """``HFnnn`` -> DEATH_EVENT, numbered by data row like the reader."""
    with csv_path.open(encoding="utf-8-sig", newline="") as f:
        return {f"HF{n:03d}": int(float(row["DEATH_EVENT"])) for n, row in enumerate(csv.DictReader(f), start=1)}


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mann-Whitney AUROC with ties counted half (categories tie a lot)."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def auroc_ci(scores: np.ndarray, labels: np.ndarray, n_boot: int = 2000, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n_boot):
        i = rng.integers(0, len(scores), len(scores))
        if labels[i].min() != labels[i].max():
            vals.append(auroc(scores[i], labels[i]))
    if not vals:  # every resample has one outcome only (a handful of patients): no interval
        return [float("nan"), float("nan")]
    return [round(float(np.percentile(vals, 2.5)), 4), round(float(np.percentile(vals, 97.5)), 4)]


FEATURES = ("age", "anaemia", "creatinine_phosphokinase", "diabetes", "ejection_fraction", "high_blood_pressure",
            "platelets", "serum_creatinine", "serum_sodium", "male", "smoking")


def features(r: HFRecord) -> list[float]:
    return [float(getattr(r, f)) for f in FEATURES]


def logistic_regression(x: np.ndarray, y: np.ndarray, l2: float = 1.0, iters: int = 50) -> tuple[np.ndarray, Any]:
    """L2-regularised logistic regression by Newton's method on standardised features."""
    mu, sd = x.mean(0), x.std(0) + 1e-9
    z = np.hstack([np.ones((len(x), 1)), (x - mu) / sd])
    w = np.zeros(z.shape[1])
    reg = np.eye(z.shape[1]) * l2
    reg[0, 0] = 0
    for _ in range(iters):
        p = 1 / (1 + np.exp(-z @ w))
        grad = z.T @ (p - y) + reg @ w
        hess = z.T @ (z * (p * (1 - p))[:, None]) + reg
        w -= np.linalg.solve(hess, grad)

    def predict(xn: np.ndarray) -> np.ndarray:
        zn = np.hstack([np.ones((len(xn), 1)), (xn - mu) / sd])
        return np.asarray(1 / (1 + np.exp(-zn @ w)))

    return w, predict


def score_categories(cats: list[str | None], rule_cats: list[str], died: np.ndarray) -> dict[str, Any]:
    """The stated categories (None: unparsed) against the rule's categories and the outcomes.

    An unparsed reply counts as wrong in the agreement and is never read as intermediate; the
    AUROC is over the parsed replies, and once more with unparsed as the middle category (see
    the module docstring for why both).
    """
    parsed = np.array([c is not None for c in cats], dtype=bool)
    stated = np.array([CATEGORIES.index(c) if c else 1 for c in cats], dtype=float)  # unparsed -> middle
    n_parsed = int(parsed.sum())
    middle = _rounded(auroc(stated, died)) if len(cats) else None
    return {
        "unparsed": len(cats) - n_parsed,
        "agreement_with_rule_category": round(float(np.mean([c is not None and c == t for c, t in zip(
            cats, rule_cats, strict=True)])), 4) if cats else 0.0,
        "stated_category_counts": {**{c: cats.count(c) for c in CATEGORIES}, "unparsed": cats.count(None)},
        "death_rate_by_stated_category": {
            str(c or "unparsed"): (round(float(died[[x == c for x in cats]].mean()), 3) if c in cats else None)
            for c in (*CATEGORIES, None)},
        "auroc": {"stated_category": _rounded(auroc(stated[parsed], died[parsed])) if n_parsed else None,
                  "stated_category_unparsed_as_intermediate": middle},
        "auroc_ci95": {"stated_category": auroc_ci(stated[parsed], died[parsed]) if n_parsed else None,
                       "stated_category_unparsed_as_intermediate": auroc_ci(stated, died) if len(cats) else None},
        "auroc_patients": {"stated_category": n_parsed, "stated_category_unparsed_as_intermediate": len(cats)},
    }


def evaluate(generator: Any, data_dir: Path, csv_path: Path, out_dir: Path, batch_size: int = 8,
             max_new_tokens: int = 200) -> dict[str, Any]:
    rows = read_examples(data_dir / "test.jsonl")
    train_ids = {r["meta"]["patient_id"] for r in read_examples(data_dir / "train.jsonl") + read_examples(
        data_dir / "val.jsonl") if r["part"] == "hf_risk"}
    first: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r["part"] == "hf_risk" and not r["meta"]["missing"]:
            first.setdefault(r["meta"]["patient_id"], r)
    if not first:
        raise InputError(f"{data_dir}/test.jsonl has no heart-failure test patients; rebuild with `train data`")
    records = {r.patient_id: r for r in read_records(csv_path, LoadReport(fmt="uci-heart-failure"))}
    died = outcomes(csv_path)
    pids = sorted(first)
    replies = []
    for s in range(0, len(pids), batch_size):
        batch = [first[p]["prompt"] for p in pids[s: s + batch_size]]
        replies += [g.text for g in generator.generate_batch(batch, max_new_tokens)]
    cats = [parse_category(t) for t in replies]
    y = np.array([died[p] for p in pids])
    # The points of the rule the data was built with (format category_first or working), full record.
    rule = np.array([first[p]["meta"]["points"] for p in pids], dtype=float)
    tr = sorted(train_ids - set(pids))
    _, predict = logistic_regression(np.array([features(records[p]) for p in tr]), np.array([died[p] for p in tr]))
    lr = predict(np.array([features(records[p]) for p in pids]))
    target_cats = [first[p]["meta"]["category"] for p in pids]
    # The replies' own working (points, total, category): does it add up, and is the total the rule's?
    # (eval/hf_working.py, which parses the same working once).
    working = [check_reply(t, first[p]["prompt"][-1]["content"]) for p, t in zip(pids, replies, strict=True)]
    checked = [w.checked for w in working]
    adds_up = [w.adds_up for w in working]
    total_is_rule = [w.total == int(pts) for w, pts in zip(working, rule, strict=True)]
    summary: dict[str, Any] = {
        "patients": len(pids), "deaths": int(y.sum()), "lr_train_patients": len(tr),
        "working_adds_up": round(float(np.mean(adds_up)), 4),
        "total_equals_rule_points": round(float(np.mean(total_is_rule)), 4),
        "passes_risk_checks": round(float(np.mean(checked)), 4),
        "model": {"generator": generator.model_id, "adapter": generator.adapter},
    }
    summary |= score_categories(cats, target_cats, y)
    summary["auroc"] |= {"logistic_regression": round(auroc(lr, y), 4), "rule_points": round(auroc(rule, y), 4)}
    summary["auroc_ci95"] |= {"logistic_regression": auroc_ci(lr, y), "rule_points": auroc_ci(rule, y)}
    summary["auroc_patients"] |= {"logistic_regression": len(pids), "rule_points": len(pids)}
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "replies.jsonl").open("w", encoding="utf-8") as f:
        for p, t, c, tc, w, pts, ok in zip(pids, replies, cats, target_cats, working, rule, checked, strict=True):
            f.write(json.dumps({"patient_id": p, "reply": t, "category": c, "rule_category": tc,
                                "stated_total": w.total, "rule_points": int(pts), "working_adds_up": w.adds_up,
                                "passes_risk_checks": ok})
                    + "\n")
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    return summary


def _rounded(x: float) -> float | None:
    """AUROC for JSON: None where it is undefined (one outcome only among the patients scored)."""
    return None if np.isnan(x) else round(x, 4)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def _auroc_cell(a: dict[str, Any], ci: dict[str, Any], key: str) -> str:
    v, c = a.get(key), ci.get(key)
    if v is None:
        return "-"
    return f"{v:.3f} ({c[0]:.2f}-{c[1]:.2f})" if c else f"{v:.3f}"


def markdown(summaries: dict[str, dict[str, Any]]) -> str:
    """One row per run, with the references (same patients) once at the end."""
    lines = ["| run | AUROC of stated category, parsed replies (95% CI) | AUROC, unparsed as intermediate | "
             "unparsed (of patients) | agrees with rule category (unparsed: wrong) | stated low/intermediate/high | "
             "working adds up | total = rule's | passes `risk` checks |",
             "|---|---|---|---|---|---|---|---|---|"]
    last: dict[str, Any] = {}
    for name, s in summaries.items():
        a, ci = s["auroc"], s["auroc_ci95"]
        c = s["stated_category_counts"]
        agree = 100 * s["agreement_with_rule_category"]
        lines.append(f"| {name} | {_auroc_cell(a, ci, 'stated_category')} | "
                     f"{_auroc_cell(a, ci, 'stated_category_unparsed_as_intermediate')} | "
                     f"{s['unparsed']} (of {s['patients']}) | {agree:.0f}% | "
                     f"{c.get('low', 0)}/{c.get('intermediate', 0)}/{c.get('high', 0)} | "
                     f"{_pct(s.get('working_adds_up'))} | {_pct(s.get('total_equals_rule_points'))} | "
                     f"{_pct(s.get('passes_risk_checks'))} |")
        last = s
    if last:
        a, ci = last["auroc"], last["auroc_ci95"]
        lines.append(f"| logistic regression, same 11 features ({last['lr_train_patients']} training patients) | "
                     f"{_auroc_cell(a, ci, 'logistic_regression')} | - | - | - | - | - | - | - |")
        lines.append(f"| the labelling rule's points (reference) | {_auroc_cell(a, ci, 'rule_points')} | "
                     "- | - | - | - | - | - | - |")
    return "\n".join(lines) + "\n"

