"""Do the risk categories a generator states separate the heart-failure patients who died?

Held-out patients are the ``test`` split of the training data (split by patient, never
trained on). Each gets one complete case narrative; the generator's reply is parsed for its
category (low < intermediate < high) and the category's AUROC against ``DEATH_EVENT`` is
compared with two references on the same patients:

- a logistic regression on the same 11 features, fitted on the training patients;
- the points rule the training targets were derived from (finetune/hf_cases.py).

``DEATH_EVENT`` is read here and only here; no model input contains it or follow-up time.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from corpora.heart_failure import HFRecord, read_records
from corpora.report import LoadReport
from finetune.data import read_examples
from finetune.hf_cases import CATEGORIES
from rag.errors import InputError
from rag.risk import check_reply

_CAT = re.compile(r"risk(?: category)?\s*(?:is|:)?\s*\**\s*(low|intermediate|moderate|high)", re.I)
_ANY = re.compile(r"\b(low|intermediate|moderate|high)\b", re.I)


_LEGEND = re.compile(r"\(low below [^)]*\)", re.I)  # the rule's thresholds, written after the total


def parse_category(text: str) -> str | None:
    """The stated category: a "risk category: X" phrase first, else the first category word outside the legend."""
    m = _CAT.search(text) or _ANY.search(_LEGEND.sub("", text))
    if not m:
        return None
    word = m.group(1).lower()
    return "intermediate" if word == "moderate" else word


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
    stated = np.array([CATEGORIES.index(c) if c else 1 for c in cats], dtype=float)  # unparsed -> middle
    # The points of the rule the data was built with (format category_first or working), full record.
    rule = np.array([first[p]["meta"]["points"] for p in pids], dtype=float)
    tr = sorted(train_ids - set(pids))
    _, predict = logistic_regression(np.array([features(records[p]) for p in tr]), np.array([died[p] for p in tr]))
    lr = predict(np.array([features(records[p]) for p in pids]))
    target_cats = [first[p]["meta"]["category"] for p in pids]
    # The replies' own working (points, total, category): does it add up, and is the total the rule's?
    # and the risk command's checks (rag/risk.py), which parse the same working once.
    working = [check_reply(t, first[p]["prompt"][-1]["content"]) for p, t in zip(pids, replies, strict=True)]
    checked = [w.checked for w in working]
    adds_up = [w.adds_up for w in working]
    total_is_rule = [w.total == int(pts) for w, pts in zip(working, rule, strict=True)]
    summary = {
        "patients": len(pids), "deaths": int(y.sum()), "lr_train_patients": len(tr),
        "unparsed": sum(c is None for c in cats),
        "agreement_with_rule_category": round(float(np.mean([c == t for c, t in zip(cats, target_cats,
                                                                                    strict=True)])), 4),
        "working_adds_up": round(float(np.mean(adds_up)), 4),
        "total_equals_rule_points": round(float(np.mean(total_is_rule)), 4),
        "passes_risk_checks": round(float(np.mean(checked)), 4),
        "stated_category_counts": {c: cats.count(c) for c in (*CATEGORIES, None)},
        "auroc": {"stated_category": round(auroc(stated, y), 4), "logistic_regression": round(auroc(lr, y), 4),
                  "rule_points": round(auroc(rule, y), 4)},
        "auroc_ci95": {"stated_category": auroc_ci(stated, y), "logistic_regression": auroc_ci(lr, y),
                       "rule_points": auroc_ci(rule, y)},
        "model": {"generator": generator.model_id, "adapter": generator.adapter},
    }
    summary["death_rate_by_stated_category"] = {
        c: (round(float(y[[x == c for x in cats]].mean()), 3) if c in cats else None) for c in CATEGORIES}
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "replies.jsonl").open("w", encoding="utf-8") as f:
        for p, t, c, tc, w, pts, ok in zip(pids, replies, cats, target_cats, working, rule, checked, strict=True):
            f.write(json.dumps({"patient_id": p, "reply": t, "category": c, "rule_category": tc,
                                "stated_total": w.total, "rule_points": int(pts), "working_adds_up": w.adds_up,
                                "passes_risk_checks": ok})
                    + "\n")
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    return summary


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def markdown(summaries: dict[str, dict[str, Any]]) -> str:
    """One row per run, with the references (same patients) once at the end."""
    lines = ["| run | AUROC of stated category (95% CI) | unparsed | agrees with rule category | "
             "stated low/intermediate/high | working adds up | total = rule's | passes `risk` checks |",
             "|---|---|---|---|---|---|---|---|"]
    last: dict[str, Any] = {}
    for name, s in summaries.items():
        a, ci = s["auroc"], s["auroc_ci95"]
        c = s["stated_category_counts"]
        agree = 100 * s["agreement_with_rule_category"]
        lines.append(f"| {name} | {a['stated_category']:.3f} ({ci['stated_category'][0]:.2f}-"
                     f"{ci['stated_category'][1]:.2f}) | {s['unparsed']} | {agree:.0f}% | "
                     f"{c.get('low', 0)}/{c.get('intermediate', 0)}/{c.get('high', 0)} | "
                     f"{_pct(s.get('working_adds_up'))} | {_pct(s.get('total_equals_rule_points'))} | "
                     f"{_pct(s.get('passes_risk_checks'))} |")
        last = s
    if last:
        a, ci = last["auroc"], last["auroc_ci95"]
        lines.append(f"| logistic regression, same 11 features ({last['lr_train_patients']} training patients) | "
                     f"{a['logistic_regression']:.3f} ({ci['logistic_regression'][0]:.2f}-"
                     f"{ci['logistic_regression'][1]:.2f}) | - | - | - | - | - | - |")
        lines.append(f"| the labelling rule's points (reference) | {a['rule_points']:.3f} ({ci['rule_points'][0]:.2f}-"
                     f"{ci['rule_points'][1]:.2f}) | - | - | - | - | - | - |")
    return "\n".join(lines) + "\n"

