"""Fit and validate the heart-failure risk model (``app.py train risk``) and write it with its card.

Data: the 299 UCI heart-failure records (Ahmad et al. 2017; Chicco & Jurman 2020). Outcome:
``DEATH_EVENT``. **``time`` is never a predictor**: it is the follow-up, and a short follow-up is the
death itself. Inputs: the 11 clinical columns.

Model: scikit-learn logistic regression on standardised features. Transforms fixed before looking at
the outcome: log creatinine and log CPK (right-skewed laboratory values), everything else linear;
one choice is made from the data, inside the validation: LVEF linear, or a hinge at 35, 40 or 45%
(a different slope below and above), with the L2 strength C in {0.1, 1}.

Validation (every row is a patient, so every split is by patient): nested cross-validation, 10
outer folds repeated 5 times, the LVEF form and C chosen by 5-fold CV inside each outer training
part; the metrics are computed on the out-of-fold predictions of each repeat and averaged, with 95%
percentile intervals from 1,000 bootstrap resamples of patients. AUROC; calibration slope and
intercept (logistic recalibration of the out-of-fold log-odds; ideal 1 and 0); Brier score.
The comparisons use the same patients, resamples and folds: the points rule (``rag/hf_rule.py``,
the fine-tuning targets' rule), MAGGIC's integer points where the variables allow, each also as a
probability through a logistic fit on the points inside the same folds, and a random forest (the
published model family on this dataset).

The final model is fitted on all 299 with the form chosen by the same inner procedure; 200
bootstrap refits (same standardisation) give the interval of an individual prediction.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import logging
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from corpora.heart_failure import HFRecord, read_records
from corpora.report import LoadReport
from rag.config import PROJECT_ROOT
from rag.hf_model import BOOLEAN_INPUTS, INPUTS, features
from rag.hf_rule import risk_points

log = logging.getLogger(__name__)

BASE_TRANSFORMS: dict[str, list[str]] = {
    "age": ["linear"], "serum_creatinine": ["log"], "serum_sodium": ["linear"], "creatinine_phosphokinase": ["log"],
    "platelets": ["linear"], "anaemia": ["linear"], "diabetes": ["linear"], "high_blood_pressure": ["linear"],
    "male": ["linear"], "smoking": ["linear"]}
EF_FORMS: dict[str, list[str]] = {"linear": ["linear"], **{f"hinge {k}": [f"below:{k}", f"above:{k}"]
                                                           for k in (35, 40, 45)}}
CS = (0.1, 1.0)
THRESHOLDS = (0.20, 0.40)  # low below 20%, high at 40% or more: fixed, not fitted (the cohort's rate is 32%)
OUTER_FOLDS, REPEATS, INNER_FOLDS, N_BOOT, N_REFITS = 10, 5, 5, 1000, 200
CHICCO_JURMAN_2020 = {"model": "random forest, all 11 clinical features", "roc_auc": 0.800,
                      "protocol": "mean of 100 random 80/20 train/test splits (their Table 4); not our folds",
                      "reference": "Chicco D, Jurman G. Machine learning can predict survival of patients with heart "
                                   "failure from serum creatinine and ejection fraction alone. BMC Med Inform Decis "
                                   "Mak 2020;20:16"}
# The generator stating a category: measured once on 60 held-out patients (BENCHMARKS.md, `eval hf-risk`).
GENERATOR_ROWS = [
    {"model": "committed adapter (Qwen2.5-Coder-0.5B + LoRA) stating a category", "patients": 60,
     "roc_auc": 0.500, "ci": [0.50, 0.50], "note": "says 'low' for all 60 (BENCHMARKS.md, not re-run)"},
    {"model": "adapter trained on the points working, stating a category", "patients": 60, "roc_auc": 0.461,
     "ci": [0.34, 0.59], "note": "not committed (BENCHMARKS.md, not re-run)"},
]
MAGGIC_MISSING = ("systolic blood pressure", "BMI", "NYHA class (all III-IV in this cohort)", "COPD",
                  "heart failure diagnosed > 18 months", "beta-blocker", "ACE inhibitor/ARB")


# -- MAGGIC integer score (Pocock et al., Eur Heart J 2013), the items this dataset has ----------------
def maggic_partial(r: HFRecord) -> int:
    """MAGGIC points for LVEF, age (by LVEF band), creatinine, male sex, current smoking and diabetes."""
    ef = r.ejection_fraction
    pts = 7 if ef < 20 else 6 if ef < 25 else 5 if ef < 30 else 3 if ef < 35 else 2 if ef < 40 else 0
    age_bands = (55, 60, 65, 70, 75, 80)
    by_ef = ((0, 1, 2, 4, 6, 8, 10) if ef < 30 else (0, 2, 4, 6, 8, 10, 13) if ef < 40 else (0, 3, 5, 7, 9, 12, 15))
    pts += by_ef[sum(r.age >= a for a in age_bands)]
    umol = r.serum_creatinine * 88.4
    pts += (0, 1, 2, 3, 4, 5, 6, 8)[sum(umol >= c for c in (90, 110, 130, 150, 170, 210, 250))]
    return pts + int(r.male) + int(r.smoking) + 3 * int(r.diabetes)


# -- data ------------------------------------------------------------------------------------------
@dataclass
class Cohort:
    records: list[HFRecord]
    died: np.ndarray
    csv_path: Path

    def inputs(self, name: str) -> np.ndarray:
        return np.array([float(getattr(r, name)) for r in self.records])


def read_cohort(csv_path: Path) -> Cohort:
    records = read_records(csv_path, LoadReport(fmt="uci-heart-failure"))
    with csv_path.open(encoding="utf-8-sig", newline="") as f:
        died = np.array([int(float(row["DEATH_EVENT"])) for row in csv.DictReader(f)])
    if len(records) != len(died):
        raise ValueError(f"{csv_path}: {len(died) - len(records)} rows failed validation; the cohort must be whole")
    return Cohort(records, died, csv_path)


def design(c: Cohort, ef_form: str) -> tuple[np.ndarray, list[tuple[str, str]]]:
    cols, spec = [], []
    for name in INPUTS:
        for t in EF_FORMS[ef_form] if name == "ejection_fraction" else BASE_TRANSFORMS[name]:
            cols.append(features(name, t, c.inputs(name)))
            spec.append((name, t))
    return np.column_stack(cols), spec


# -- metrics ---------------------------------------------------------------------------------------
def auroc(p: np.ndarray, y: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p))


def calibration(p: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(slope, intercept): y ~ a + b logit(p) for the slope; y ~ a + offset(logit(p)) for calibration-in-the-large."""
    eta = np.log(np.clip(p, 1e-6, 1 - 1e-6) / (1 - np.clip(p, 1e-6, 1 - 1e-6)))
    w = np.zeros(2)
    x = np.column_stack([np.ones_like(eta), eta])
    for _ in range(50):  # Newton, unpenalised
        q = 1 / (1 + np.exp(-(x @ w)))
        w -= np.linalg.solve(x.T @ (x * (q * (1 - q))[:, None]) + 1e-9 * np.eye(2), x.T @ (q - y))
    a = 0.0
    for _ in range(50):
        q = 1 / (1 + np.exp(-(a + eta)))
        a -= float(np.sum(q - y) / max(np.sum(q * (1 - q)), 1e-9))
    return float(w[1]), a


def brier(p: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean((p - y) ** 2))


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "auroc": auroc, "calibration_slope": lambda p, y: calibration(p, y)[0],
    "calibration_intercept": lambda p, y: calibration(p, y)[1], "brier": brier}


def summarise(oof: list[np.ndarray], y: np.ndarray, rng: np.random.Generator, probabilities: bool = True,
              n_boot: int = N_BOOT) -> dict[str, Any]:
    """Each metric averaged over the repeats' out-of-fold predictions, with a patient bootstrap interval."""
    names = list(METRICS) if probabilities else ["auroc"]
    point = {m: float(np.mean([METRICS[m](p, y) for p in oof])) for m in names}
    boots: dict[str, list[float]] = {m: [] for m in names}
    for _ in range(n_boot):
        i = rng.integers(0, len(y), len(y))
        if y[i].min() == y[i].max():
            continue
        for m in names:
            boots[m].append(float(np.mean([METRICS[m](p[i], y[i]) for p in oof])))
    return {m: {"value": round(point[m], 4), "ci95": [round(float(np.percentile(boots[m], q)), 4) for q in (2.5, 97.5)],
                "per_repeat": [round(METRICS[m](p, y), 4) for p in oof]} for m in names}


# -- fitting ---------------------------------------------------------------------------------------
def _fit(x: np.ndarray, y: np.ndarray, c: float) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000)).fit(x, y)


def choose_form(c: Cohort, idx: np.ndarray, seed: int) -> tuple[str, float]:
    """The LVEF form and C with the best inner-CV AUROC on the patients ``idx``."""
    from sklearn.model_selection import StratifiedKFold

    y = c.died[idx]
    best: tuple[float, str, float] = (-1.0, "", 0.0)
    for form in EF_FORMS:
        x = design(c, form)[0][idx]
        for cval in CS:
            p = np.zeros(len(idx))
            for tr, te in StratifiedKFold(INNER_FOLDS, shuffle=True, random_state=seed).split(x, y):
                p[te] = _fit(x[tr], y[tr], cval).predict_proba(x[te])[:, 1]
            best = max(best, (auroc(p, y), form, cval))
    return best[1], best[2]


def cross_validate(c: Cohort, seed: int = 0, say: Callable[[str], None] = log.info,
                   repeats: int = REPEATS) -> dict[str, Any]:
    """Nested CV out-of-fold predictions for the model and the comparison rows, per repeat."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import StratifiedKFold

    y = c.died
    points = {"rule": np.array([risk_points(r) for r in c.records], dtype=float),
              "maggic": np.array([maggic_partial(r) for r in c.records], dtype=float)}
    raw = np.column_stack([c.inputs(n) for n in INPUTS])
    oof: dict[str, list[np.ndarray]] = {k: [] for k in ("model", "rule_calibrated", "maggic_calibrated", "forest")}
    chosen: list[str] = []
    for rep in range(repeats):
        preds = {k: np.zeros(len(y)) for k in oof}
        for fold, (tr, te) in enumerate(StratifiedKFold(OUTER_FOLDS, shuffle=True, random_state=seed + rep)
                                        .split(raw, y)):
            form, cval = choose_form(c, tr, seed + 100 * rep + fold)
            chosen.append(f"{form}, C={cval:g}")
            x = design(c, form)[0]
            preds["model"][te] = _fit(x[tr], y[tr], cval).predict_proba(x[te])[:, 1]
            for k in ("rule", "maggic"):
                pts = points[k][:, None]
                preds[f"{k}_calibrated"][te] = _fit(pts[tr], y[tr], 1e6).predict_proba(pts[te])[:, 1]
            forest = RandomForestClassifier(300, min_samples_leaf=3, random_state=seed + rep, n_jobs=1)
            preds["forest"][te] = forest.fit(raw[tr], y[tr]).predict_proba(raw[te])[:, 1]
        for k in oof:
            oof[k].append(preds[k])
        say(f"repeat {rep + 1}/{repeats}: model AUROC {auroc(preds['model'], y):.3f}")
    return {"oof": oof, "points": points, "chosen": chosen}


def fit_final(c: Cohort, seed: int = 0, n_refits: int = N_REFITS) -> dict[str, Any]:
    form, cval = choose_form(c, np.arange(len(c.died)), seed)
    x, spec = design(c, form)
    model = _fit(x, c.died, cval)
    scaler, lr = model.steps[0][1], model.steps[1][1]
    rng = np.random.default_rng(seed)
    z = (x - scaler.mean_) / scaler.scale_
    from sklearn.linear_model import LogisticRegression

    boot = []
    for _ in range(n_refits):  # same standardisation, so every refit's coefficients are on the same scale
        i = rng.integers(0, len(z), len(z))
        b = LogisticRegression(C=cval, max_iter=2000).fit(z[i], c.died[i])
        boot.append([float(b.intercept_[0]), *map(float, b.coef_[0])])
    feats = [{"input": n, "transform": t, "mean": float(m), "sd": float(s), "coef": float(w)}
             for (n, t), m, s, w in zip(spec, scaler.mean_, scaler.scale_, lr.coef_[0], strict=True)]
    plausible = {n: [float(np.percentile(c.inputs(n), 5)), float(np.percentile(c.inputs(n), 95))] for n in INPUTS}
    observed = {n: [float(c.inputs(n).min()), float(c.inputs(n).max())] for n in INPUTS if n not in BOOLEAN_INPUTS}
    return {"form": form, "C": cval, "intercept": float(lr.intercept_[0]), "features": feats,
            "bootstrap": np.round(np.array(boot), 5).tolist(), "plausible": plausible, "observed": observed}


# -- report ----------------------------------------------------------------------------------------
def _categories(p: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    lo, hi = THRESHOLDS
    cats = np.where(p < lo, "low", np.where(p >= hi, "high", "intermediate"))
    return {k: {"patients": int((cats == k).sum()), "died": int(y[cats == k].sum()),
                "death_rate": round(float(y[cats == k].mean()), 3) if (cats == k).any() else None}
            for k in ("low", "intermediate", "high")}


def plot_calibration(p: np.ndarray, y: np.ndarray, out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = np.argsort(p)
    bins = np.array_split(order, 10)
    mp = [p[b].mean() for b in bins]
    obs = [y[b].mean() for b in bins]
    err = [1.96 * np.sqrt(max(o * (1 - o), 1e-9) / len(b)) for o, b in zip(obs, bins, strict=True)]
    fig, (ax, hx) = plt.subplots(2, 1, figsize=(5.5, 6.5), height_ratios=(3, 1), sharex=True)
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1, label="ideal")
    ax.errorbar(mp, obs, yerr=err, fmt="o-", capsize=3, label="deciles of predicted risk (95% CI)")
    ax.set_ylabel("observed death rate")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    hx.hist([p[y == 0], p[y == 1]], bins=20, range=(0, 1), stacked=True, label=["survived", "died"])
    hx.set_xlabel("predicted probability (out-of-fold)")
    hx.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def train(csv_path: Path, out: Path, plot: Path, seed: int = 0, say: Callable[[str], None] = log.info,
          repeats: int = REPEATS, n_boot: int = N_BOOT, n_refits: int = N_REFITS) -> dict[str, Any]:
    """Validate, fit, and write the model JSON (with its card), MODEL_CARD.md beside it, and the plot.

    ``repeats``, ``n_boot`` and ``n_refits`` are smaller only in tests; the committed model uses the defaults."""
    import sklearn

    commit = _git_commit()  # the code that runs, not whatever HEAD is by the time it finishes
    c = read_cohort(csv_path)
    y = c.died
    cv = cross_validate(c, seed, say, repeats)
    def rows_of(preds: list[np.ndarray], probabilities: bool = True) -> dict[str, Any]:
        # the same patient resamples for every row (one seed), so the intervals compare like with like
        return summarise(preds, y, np.random.default_rng(seed), probabilities, n_boot)

    rows = {"model": rows_of(cv["oof"]["model"]),
            "rule_points": rows_of([cv["points"]["rule"]], probabilities=False),
            "rule_points_calibrated": rows_of(cv["oof"]["rule_calibrated"]),
            "maggic_partial": rows_of([cv["points"]["maggic"]], probabilities=False),
            "maggic_partial_calibrated": rows_of(cv["oof"]["maggic_calibrated"]),
            "random_forest": rows_of(cv["oof"]["forest"])}
    final = fit_final(c, seed, n_refits)
    mean_oof = np.mean(cv["oof"]["model"], axis=0)
    plot_calibration(mean_oof, y, plot, f"Heart-failure logistic model, nested CV ({repeats}x{OUTER_FOLDS}-fold), "
                     f"{len(y)} patients")
    digest = hashlib.sha256(csv_path.read_bytes()).hexdigest()
    from collections import Counter

    card = {
        "name": "hf-logistic", "date": dt.date.today().isoformat(), "git_commit": commit,
        "library": f"scikit-learn {sklearn.__version__}",
        "data": {"file": csv_path.name, "sha256": digest, "patients": len(y), "deaths": int(y.sum()),
                 "source": "UCI Heart failure clinical records (Ahmad et al., PLOS ONE 2017; Chicco & Jurman 2020), "
                           "CC BY 4.0",
                 "cohort": "299 patients with heart failure (left ventricular systolic dysfunction, NYHA class "
                           "III-IV), Faisalabad Institute of Cardiology and Allied Hospital, Pakistan, "
                           "April-December 2015; 105 women, 194 men, age 40-95",
                 "outcome": "DEATH_EVENT: death during follow-up (4-285 days, median 115); censoring is ignored",
                 "not_used": "time (follow-up: a short follow-up is the death itself)"},
        "model": {"kind": "logistic regression (L2), standardised features",
                  "transforms": {**{k: v for k, v in BASE_TRANSFORMS.items()},
                                 "ejection_fraction": EF_FORMS[final["form"]]},
                  "chosen": {"ejection_fraction_form": final["form"], "C": final["C"]},
                  "candidates": {"ejection_fraction_form": list(EF_FORMS), "C": list(CS)}},
        "validation": {"scheme": f"nested cross-validation by patient: {OUTER_FOLDS} outer folds x {repeats} repeats, "
                                 f"LVEF form and C chosen by {INNER_FOLDS}-fold CV inside each outer training part; "
                                 f"metrics averaged over repeats; 95% CI from {n_boot} patient bootstrap resamples",
                       "forms_chosen_in_outer_folds": dict(Counter(cv["chosen"])),
                       "metrics": rows["model"],
                       "categories_out_of_fold": _categories(mean_oof, y)},
        "comparison": rows,
        "published": CHICCO_JURMAN_2020,
        "generator": GENERATOR_ROWS,
        "maggic_missing": list(MAGGIC_MISSING),
        "thresholds": {"low_below": THRESHOLDS[0], "high_at": THRESHOLDS[1],
                       "why": "fixed, not fitted; the cohort's death rate during follow-up is 32%"},
        "intended_use": "research and demonstration: explaining which recorded factors move a heart-failure patient's "
                        "risk in a model fitted on one small cohort. Not a medical device; not validated outside "
                        "this cohort; not for treatment decisions.",
        "limitations": ["one hospital, 299 patients, 96 deaths: wide intervals",
                        "follow-up of varying length; a logistic model ignores censoring",
                        "no external validation; inputs outside the cohort's range are extrapolated",
                        "no NYHA class, blood pressure, BMI, natriuretic peptides or medication"],
    }
    model = {"format": 1, "intercept": final["intercept"], "features": final["features"],
             "thresholds": card["thresholds"], "plausible": final["plausible"], "observed": final["observed"],
             "card": card,
             "bootstrap": final["bootstrap"]}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(model, indent=1) + "\n", encoding="utf-8")
    (out.parent / "MODEL_CARD.md").write_text(model_card_md(card, final), encoding="utf-8")
    return card


def _cell(m: dict[str, Any] | None, key: str, digits: int = 3) -> str:
    if not m or key not in m:
        return "-"
    v = m[key]
    d = max(digits - 1, 2)
    return f"{v['value']:.{digits}f} ({v['ci95'][0]:.{d}f} to {v['ci95'][1]:.{d}f})"


def comparison_table(card: dict[str, Any]) -> str:
    r = card["comparison"]
    n = card["data"]["patients"]
    lines = [f"| model ({n} patients, {card['data']['deaths']} died) | AUROC (95% CI) | calibration slope | "
             "calibration intercept | Brier |", "|---|---|---|---|---|"]

    def row(name: str, m: dict[str, Any]) -> None:
        lines.append(f"| {name} | {_cell(m, 'auroc')} | {_cell(m, 'calibration_slope', 2)} | "
                     f"{_cell(m, 'calibration_intercept', 2)} | {_cell(m, 'brier')} |")

    row("**logistic model (ours), nested CV**", r["model"])
    row("points rule of the fine-tuning targets (`rag/hf_rule.py`), points as they are", r["rule_points"])
    row("the same points, as a probability (logistic on points, same folds)", r["rule_points_calibrated"])
    row("MAGGIC integer points, 6 of 13 items (LVEF, age, creatinine, sex, smoking, diabetes)", r["maggic_partial"])
    row("the same MAGGIC points, as a probability (same folds)", r["maggic_partial_calibrated"])
    row("random forest, same 11 inputs and folds", r["random_forest"])
    for g in card["generator"]:
        lines.append(f"| {g['model']} ({g['patients']} held-out patients; {g['note']}) | {g['roc_auc']:.3f} "
                     f"({g['ci'][0]:.2f}-{g['ci'][1]:.2f}) | - | - | - |")
    p = card["published"]
    lines.append(f"| published: {p['model']} (Chicco & Jurman 2020; {p['protocol']}) | {p['roc_auc']:.3f} | - | - "
                 "| - |")
    return "\n".join(lines) + "\n"


def model_card_md(card: dict[str, Any], final: dict[str, Any]) -> str:
    v = card["validation"]
    cats = v["categories_out_of_fold"]
    coef_lines = "\n".join(f"| {f['input']} | {f['transform']} | {f['mean']:.4g} | {f['sd']:.4g} | {f['coef']:+.3f} |"
                           for f in final["features"])
    d = card["data"]
    chosen = ", ".join(f"{k} ({n})" for k, n in v["forms_chosen_in_outer_folds"].items())
    groups = "; ".join(f"{k} {c['patients']} ({c['death_rate']})" for k, c in cats.items())
    return f"""# Model card: heart-failure risk (hf-logistic)

Written by `python app.py train risk` on {card['date']} (commit {card['git_commit'] or '-'}, {card['library']}).
The coefficients, bootstrap refits and this card's data are in `hf-logistic.json`.

**Intended use.** {card['intended_use']}

## Data
- {d['source']}; `{d['file']}` sha256 `{d['sha256'][:16]}…`; {d['patients']} patients, {d['deaths']} deaths.
- Cohort: {d['cohort']}.
- Outcome: {d['outcome']}.
- Not used: {d['not_used']}.

## Model
{card['model']['kind']}; log creatinine and log CPK, LVEF as `{final['form']}`, C = {final['C']:g} (chosen by
5-fold CV among {', '.join(card['model']['candidates']['ejection_fraction_form'])} x C in
{card['model']['candidates']['C']}). Intercept {final['intercept']:+.3f}; coefficients on standardised features:

| input | transform | cohort mean | cohort SD | coefficient |
|---|---|---|---|---|
{coef_lines}

## Validation
{v['scheme']}. Forms chosen in the outer folds: {chosen}.

{comparison_table(card)}
MAGGIC items missing from this dataset: {', '.join(card['maggic_missing'])}.

Categories (fixed thresholds: low below {100 * card['thresholds']['low_below']:.0f}%, high at
{100 * card['thresholds']['high_at']:.0f}% or more), out-of-fold, patients (share who died): {groups}.

![calibration](../../docs/risk-calibration.png)

## Limitations
""" + "".join(f"- {x}\n" for x in card["limitations"])
