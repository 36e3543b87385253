"""The risk model at runtime (a small written model) and, on the real data, the fitted one and its fit."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from rag.errors import InputError
from rag.hf_model import INPUTS, RiskModel

TINY = {
    "format": 1, "intercept": -0.8,
    "features": [
        {"input": "age", "transform": "linear", "mean": 60.0, "sd": 10.0, "coef": 0.6},
        {"input": "ejection_fraction", "transform": "below:35", "mean": 32.0, "sd": 5.0, "coef": -0.9},
        {"input": "ejection_fraction", "transform": "above:35", "mean": 6.0, "sd": 9.0, "coef": 0.1},
        {"input": "serum_creatinine", "transform": "log", "mean": 0.2, "sd": 0.45, "coef": 0.7},
        {"input": "diabetes", "transform": "linear", "mean": 0.4, "sd": 0.5, "coef": 0.1},
    ],
    "thresholds": {"low_below": 0.2, "high_at": 0.4},
    "plausible": {"age": [43, 82], "ejection_fraction": [20, 60], "serum_creatinine": [0.7, 3.0],
                  "serum_sodium": [130, 144], "creatinine_phosphokinase": [59, 2263], "platelets": [131800, 422500],
                  **{b: [0, 1] for b in ("anaemia", "diabetes", "high_blood_pressure", "male", "smoking")}},
    "card": {"name": "tiny"},
}


@pytest.fixture
def tiny(tmp_path: Path) -> RiskModel:
    rng = np.random.default_rng(0)
    base = np.array([TINY["intercept"], *[f["coef"] for f in TINY["features"]]])
    path = tmp_path / "m.json"
    path.write_text(json.dumps(TINY | {"bootstrap": (base + rng.normal(0, 0.1, (50, len(base)))).tolist()}))
    return RiskModel.load(path)


def test_contributions_add_up_to_the_probability(tiny: RiskModel) -> None:
    p = tiny.predict({"age": 75, "ejection_fraction": 20, "serum_creatinine": 2.0, "diabetes": 1})
    assert p.probability == pytest.approx(1 / (1 + math.exp(-p.log_odds)))
    assert [c.input for c in p.contributions] == sorted((c.input for c in p.contributions),
                                                         key=lambda k: -abs(next(c.log_odds for c in p.contributions
                                                                                 if c.input == k)))
    ef = next(c for c in p.contributions if c.input == "ejection_fraction")
    assert ef.direction == "raises" and ef.certain and ef.low <= ef.log_odds <= ef.high
    assert p.interval[0] <= p.probability <= p.interval[1]
    assert p.category == "high"


def test_missing_inputs_give_a_range_not_a_guess(tiny: RiskModel) -> None:
    full = tiny.predict({"age": 70, "ejection_fraction": 30, "serum_creatinine": 1.2, "diabetes": 0})
    assert full.range is None or "serum_sodium" in full.missing  # inputs without a feature do not move it
    part = tiny.predict({"age": 70, "diabetes": 0})
    assert {"ejection_fraction", "serum_creatinine"} <= set(part.missing)
    lo, hi = part.range  # type: ignore[misc]
    assert lo < part.probability < hi
    # The range covers every plausible value of what is missing.
    for ef in (20, 35, 60):
        for cr in (0.7, 3.0):
            q = tiny.predict({"age": 70, "diabetes": 0, "ejection_fraction": ef, "serum_creatinine": cr}).probability
            assert lo - 1e-9 <= q <= hi + 1e-9


def test_a_written_range_is_a_range(tiny: RiskModel) -> None:
    p = tiny.predict({"age": 70, "serum_creatinine": 1.0, "diabetes": 1}, bands={"ejection_fraction": (30, 35)})
    a = tiny.predict({"age": 70, "serum_creatinine": 1.0, "diabetes": 1, "ejection_fraction": 30}).probability
    b = tiny.predict({"age": 70, "serum_creatinine": 1.0, "diabetes": 1, "ejection_fraction": 35}).probability
    assert p.range is not None and p.range[0] == pytest.approx(min(a, b), abs=1e-3)


def test_errors(tiny: RiskModel, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="train risk"):
        RiskModel.load(tmp_path / "absent.json")
    with pytest.raises(ValueError, match="time"):
        tiny.predict({"time": 30})


DATA = Path(os.environ.get("CDS_DATA_DIR") or Path(__file__).resolve().parents[2] / ".." / "shared" / "data")
CSV = DATA / "heart_failure" / "heart_failure_clinical_records_dataset.csv"


def test_the_committed_model_and_its_card() -> None:
    m = RiskModel.load()
    assert {f.input for f in m.features} == set(INPUTS), "time is never a predictor"
    v = m.card["validation"]["metrics"]
    assert v["auroc"]["value"] >= 0.78 and v["auroc"]["ci95"][0] < v["auroc"]["value"] < v["auroc"]["ci95"][1]
    assert "time" in m.card["data"]["not_used"] and m.card["intended_use"]
    sick = m.predict({"age": 85, "ejection_fraction": 15, "serum_creatinine": 3.0, "serum_sodium": 128})
    well = m.predict({"age": 45, "ejection_fraction": 60, "serum_creatinine": 0.8, "serum_sodium": 140})
    assert sick.probability > 0.6 > 0.2 > well.probability


@pytest.mark.data
def test_training_reproduces_a_validated_model(tmp_path: Path) -> None:
    if not CSV.is_file():
        pytest.skip(f"{CSV} not present (real data lives in ../shared/data or CDS_DATA_DIR)")
    from finetune.hf_risk_model import train

    card = train(CSV, tmp_path / "m.json", tmp_path / "cal.png", repeats=1, n_boot=50, n_refits=10)
    assert card["validation"]["metrics"]["auroc"]["value"] > 0.75
    assert (tmp_path / "cal.png").stat().st_size > 1000 and (tmp_path / "MODEL_CARD.md").is_file()
    m = RiskModel.load(tmp_path / "m.json")
    assert len(m.boot) == 10 and {f.input for f in m.features} == set(INPUTS)
