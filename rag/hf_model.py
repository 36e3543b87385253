"""The fitted heart-failure risk model at runtime: features, probability, interval, contributions, ranges.

A logistic regression on standardised features of the UCI heart-failure inputs (never follow-up
``time``), fitted and validated by ``app.py train risk`` (``finetune/hf_risk_model.py``) and stored as
JSON with its model card (``configs/risk/hf-logistic.json``). Pure numpy: nothing to train here.

- **Probability** of death during a follow-up like the cohort's (4-285 days, median 115), and a 95%
  interval from the bootstrap refits stored with the coefficients (the uncertainty of the fit).
- **Contributions**: each input's log-odds relative to the cohort's average patient (the features are
  standardised on the cohort, so the average patient sits at zero). They add up, with the intercept,
  to the model's log-odds: an explanation built from them is consistent by construction.
- **Missing inputs** count as the cohort average in the central estimate, and the risk is given as
  the range over the cohort's 5th-95th percentile of each missing input (both values of a yes/no); a
  written range ("LVEF 30-35%") is used as a range too.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rag.config import PROJECT_ROOT
from rag.errors import InputError

DEFAULT_MODEL = PROJECT_ROOT / "configs" / "risk" / "hf-logistic.json"
# The model's inputs (UCI column names) and what each is called in text.
INPUTS = ("age", "ejection_fraction", "serum_creatinine", "serum_sodium", "creatinine_phosphokinase", "platelets",
          "anaemia", "diabetes", "high_blood_pressure", "male", "smoking")
BOOLEAN_INPUTS = ("anaemia", "diabetes", "high_blood_pressure", "male", "smoking")
NAMES = {"age": "age", "ejection_fraction": "LVEF", "serum_creatinine": "serum creatinine",
         "serum_sodium": "serum sodium", "creatinine_phosphokinase": "CPK", "platelets": "platelet count",
         "anaemia": "anaemia", "diabetes": "diabetes", "high_blood_pressure": "hypertension", "male": "male sex",
         "smoking": "current smoking"}
WHY_IT_MATTERS = {
    "ejection_fraction": "it defines the heart-failure phenotype (HFrEF/HFmrEF/HFpEF) and is one of the strongest "
                         "prognostic markers; in this model it moves the risk more than any other input",
    "serum_creatinine": "renal dysfunction is one of the strongest predictors of death in heart failure and guides "
                        "diuretic and RAAS-inhibitor dosing",
    "serum_sodium": "hyponatraemia marks neurohormonal activation and worse prognosis",
    "age": "risk rises steeply with age in every heart-failure risk model",
    "anaemia": "anaemia is associated with worse outcomes and is treatable (iron deficiency)",
    "diabetes": "diabetes is a risk factor in published heart-failure scores (MAGGIC)",
    "high_blood_pressure": "hypertension is a modifiable risk factor",
    "male": "sex enters published heart-failure scores (MAGGIC)",
    "smoking": "smoking is a modifiable risk factor in published heart-failure scores (MAGGIC)",
    "creatinine_phosphokinase": "a weak predictor in this cohort",
    "platelets": "a weak predictor in this cohort",
}


def features(name: str, transform: str, x: np.ndarray) -> np.ndarray:
    """One feature of one input: ``linear``, ``log``, ``below:K`` (min(x, K)) or ``above:K`` (max(x - K, 0))."""
    if transform == "linear":
        return x
    if transform == "log":
        return np.log(x)
    kind, _, k = transform.partition(":")
    if kind == "below":
        return np.minimum(x, float(k))
    if kind == "above":
        return np.maximum(x - float(k), 0.0)
    raise ValueError(f"feature {name}: unknown transform {transform!r}")


@dataclass(frozen=True)
class Feature:
    input: str
    transform: str
    mean: float
    sd: float
    coef: float  # on the standardised feature

    def z(self, x: np.ndarray) -> np.ndarray:
        return (features(self.input, self.transform, x) - self.mean) / self.sd


@dataclass(frozen=True)
class Contribution:
    input: str
    value: float
    log_odds: float  # relative to the cohort's average patient
    low: float = 0.0  # 95% interval of the log-odds over the bootstrap refits
    high: float = 0.0

    @property
    def direction(self) -> str:
        return "raises" if self.log_odds > 0 else "lowers" if self.log_odds < 0 else "does not change"

    @property
    def certain(self) -> bool:
        """The direction holds in 95% of the bootstrap refits (the interval excludes zero)."""
        return self.low > 0 or self.high < 0

    @property
    def odds_ratio(self) -> float:
        return math.exp(self.log_odds)


@dataclass
class Prediction:
    probability: float  # central estimate (missing inputs at the cohort average)
    interval: tuple[float, float]  # 95% over the bootstrap refits, at the central estimate
    category: str
    contributions: list[Contribution]  # largest |log-odds| first; missing inputs excluded
    missing: list[str] = field(default_factory=list)
    range: tuple[float, float] | None = None  # over plausible values of missing or range-valued inputs
    range_categories: tuple[str, str] | None = None
    intercept: float = 0.0

    @property
    def log_odds(self) -> float:
        return self.intercept + sum(c.log_odds for c in self.contributions)


def _sigmoid(x: np.ndarray | float) -> Any:
    return 1 / (1 + np.exp(-np.asarray(x, dtype=float)))


@dataclass
class RiskModel:
    features: list[Feature]
    intercept: float
    boot: np.ndarray  # (n, 1 + n_features): intercept and coefficients of each bootstrap refit
    thresholds: tuple[float, float]  # probability: below the first low, at or above the second high
    plausible: dict[str, tuple[float, float]]  # 5th-95th percentile of each input in the cohort
    card: dict[str, Any]
    observed: dict[str, tuple[float, float]] = field(default_factory=dict)  # the cohort's min-max
    path: Path | None = None

    def outside_cohort(self, inputs: dict[str, float]) -> list[str]:
        """Inputs outside the range seen in the cohort: the model extrapolates there."""
        return [k for k, v in inputs.items() if k in self.observed
                and not self.observed[k][0] <= v <= self.observed[k][1]]

    @classmethod
    def load(cls, path: Path | str = DEFAULT_MODEL) -> RiskModel:
        path = Path(path)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(f"risk model {path} not found; fit it with `python app.py train risk`") from None
        return cls([Feature(**f) for f in d["features"]], d["intercept"], np.asarray(d["bootstrap"], dtype=float),
                   (d["thresholds"]["low_below"], d["thresholds"]["high_at"]),
                   {k: (v[0], v[1]) for k, v in d["plausible"].items()}, d["card"],
                   {k: (v[0], v[1]) for k, v in d.get("observed", {}).items()}, path)

    def category(self, p: float) -> str:
        lo, hi = self.thresholds
        return "low" if p < lo else "high" if p >= hi else "intermediate"

    def _z(self, inputs: dict[str, float]) -> np.ndarray:
        """Standardised features; a missing input's features are 0 (the cohort average)."""
        return np.array([f.z(np.array([inputs[f.input]]))[0] if f.input in inputs else 0.0 for f in self.features])

    def contribution(self, name: str, x: float, coefs: np.ndarray | None = None) -> float:
        coefs = np.array([f.coef for f in self.features]) if coefs is None else coefs
        return float(sum(c * f.z(np.array([x]))[0] for f, c in zip(self.features, coefs, strict=True)
                         if f.input == name))

    def _span(self, name: str, band: tuple[float, float]) -> tuple[float, float]:
        """Smallest and largest contribution of one input over a band of its values."""
        if name in BOOLEAN_INPUTS and band == (0.0, 1.0):
            grid = [0.0, 1.0]
        else:  # piecewise monotone between the hinges: the ends and the hinges inside the band suffice
            knots = [float(f.transform.partition(":")[2]) for f in self.features
                     if f.input == name and ":" in f.transform]
            grid = [band[0], band[1], *(k for k in knots if band[0] < k < band[1])]
        vals = [self.contribution(name, float(x)) for x in grid]
        return min(vals), max(vals)

    def predict(self, inputs: dict[str, float], bands: dict[str, tuple[float, float]] | None = None) -> Prediction:
        """``inputs``: the known inputs (UCI names, booleans as 0/1); ``bands``: inputs known only as a range."""
        unknown = [k for k in inputs if k not in INPUTS]
        if unknown:
            raise ValueError(f"unknown risk-model inputs {unknown}; expected some of {INPUTS}")
        bands = dict(bands or {})
        missing = [k for k in INPUTS if k not in inputs and k not in bands]
        central = dict(inputs)
        for k, (lo, hi) in bands.items():
            central[k] = (lo + hi) / 2
        z = self._z(central)
        coefs = np.array([f.coef for f in self.features])
        eta = self.intercept + float(coefs @ z)
        p = float(_sigmoid(eta))
        boot_p = _sigmoid(self.boot[:, 0] + self.boot[:, 1:] @ z)
        interval = (float(np.percentile(boot_p, 2.5)), float(np.percentile(boot_p, 97.5)))
        contribs = []
        for k in INPUTS:
            if k in central:
                cols = [j for j, f in enumerate(self.features) if f.input == k]
                per_refit = self.boot[:, [1 + j for j in cols]] @ z[cols]
                lo, hi = (float(np.percentile(per_refit, q)) for q in (2.5, 97.5))
                contribs.append(Contribution(k, float(central[k]), self.contribution(k, float(central[k]), coefs),
                                             lo, hi))
        contribs.sort(key=lambda c: -abs(c.log_odds))
        out = Prediction(p, interval, self.category(p), contribs, missing, intercept=self.intercept)
        varying = {k: (0.0, 1.0) if k in BOOLEAN_INPUTS else self.plausible[k] for k in missing} | bands
        if varying:
            fixed = eta - sum(self.contribution(k, float(central[k]), coefs) for k in bands)
            spans = [self._span(k, b) for k, b in varying.items()]
            lo, hi = (float(_sigmoid(fixed + sum(s[i] for s in spans))) for i in (0, 1))
            out.range = (lo, hi)
            out.range_categories = (self.category(lo), self.category(hi))
        return out
