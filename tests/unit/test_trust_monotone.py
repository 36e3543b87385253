"""A monotone map of the answer calibration (rag.confidence, eval/trust_monotone.py): the runtime and the replays
read it alike, the threshold meets the probability before the map, and the cross-fitted gate passes where a score
has the wrong shape and not where it is calibrated."""

import json

import numpy as np
import pytest

from eval import trust, trust_kept
from eval.trust_monotone import apply_map, cross_fitted, fit_map
from rag.confidence import Calibration, check_map, decision_score, load_calibration, monotone_map
from rag.config import ConfidenceConfig

CALIB = {"features": ["answer_answerability", "generation"], "coef": [2.0, 4.0], "intercept": -3.0,
         "gate": {"features": ["retrieval"], "coef": [1.0], "intercept": 0.0}}
MAP = {"x": [0.1, 0.4, 0.6, 0.9], "y": [0.05, 0.15, 0.8, 0.95]}


def _wrong_shape(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    # P(right) is a steep step in the score: over-confident below 0.5, under-confident above (C3's shape)
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.2, 0.9, n)
    truth = np.where(p < 0.5, 0.25, 0.9)
    return p, (rng.random(n) < truth).astype(float)


def test_the_map_is_piecewise_linear_flat_beyond_its_ends_and_matches_numpy():
    xs, ys = MAP["x"], MAP["y"]
    assert monotone_map(0.0, xs, ys) == 0.05 and monotone_map(1.0, xs, ys) == 0.95
    assert monotone_map(0.5, xs, ys) == pytest.approx(0.475)
    grid = np.linspace(0, 1, 101)
    assert np.allclose([monotone_map(float(g), xs, ys) for g in grid], apply_map(grid, xs, ys))


@pytest.mark.parametrize("bad, why", [({"x": [0.1, 0.1], "y": [0.2, 0.3]}, "increase"),
                                      ({"x": [0.1, 0.2], "y": [0.3, 0.2]}, "increase"),
                                      ({"x": [0.1, 0.2], "y": [0.3, 1.2]}, r"\[0, 1\]"),
                                      ({"x": [0.1], "y": []}, "one length")])
def test_a_bad_map_is_refused_when_the_calibration_loads(tmp_path, bad, why):
    from rag.errors import ConfigError

    with pytest.raises(ValueError, match=why):
        check_map(bad)
    path = tmp_path / "c.json"
    path.write_text(json.dumps({**CALIB, "monotone": bad}))
    with pytest.raises(ConfigError, match="not a calibration"):
        load_calibration(path)


def test_runtime_and_replay_give_one_probability_and_the_threshold_meets_the_score_before_the_map(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({**CALIB, "monotone": MAP}))
    cal = load_calibration(path)
    sig = {"answer_answerability": 0.5, "generation": 0.5}  # z = 0 -> 0.5 before the map, 0.475 after
    assert cal.score(sig) == pytest.approx(0.5) and cal.probability(sig) == pytest.approx(0.475)
    calib = json.loads(path.read_text())
    assert trust.probability(calib, sig) == pytest.approx(cal.probability(sig))
    assert trust.probability(calib, sig, mapped=False) == pytest.approx(0.5)
    cfg = ConfidenceConfig()
    assert decision_score(sig, cfg, cal) == pytest.approx(0.5)
    assert decision_score(sig, cfg, Calibration(cal.features, cal.coef, cal.intercept)) == pytest.approx(0.5)
    assert cal.to_dict()["monotone"]["x"] == MAP["x"]
    # a kept answer at threshold 0.48: its score (0.5) passes, its shown probability (0.475) does not need to
    kept = [{"id": "q1", "suite": "medquad", "answerable": True, "threshold": 0.48,
             "at_zero": {"right": True, "by_person": True, "signals": sig}}]
    out = trust_kept.replay(kept, calib)
    assert out[0]["answered"] and out[0]["confidence"] == pytest.approx(0.475)
    assert not trust_kept.replay([{**kept[0], "threshold": 0.51}], calib)[0]["answered"]


def test_the_gate_passes_for_a_wrong_shape_and_not_for_a_calibrated_score():
    p, y = _wrong_shape(800, seed=1)
    out = cross_fitted(p, y, folds=5, splits=5)
    assert out["gate_passed"] and out["mapped"]["ece"] < out["base"]["ece"]
    rng = np.random.default_rng(2)
    q = rng.uniform(0.05, 0.95, 800)
    calibrated = cross_fitted(q, (rng.random(800) < q).astype(float), folds=5, splits=5)
    assert not calibrated["gate_passed"]  # isotonic steps only add noise to a calibrated score's Brier


def test_the_fitted_map_is_bounded_monotone_and_loadable():
    p, y = _wrong_shape(400, seed=3)
    xs, ys = fit_map(p, y, 0.01, 0.99)
    check_map({"x": xs, "y": ys})
    assert min(ys) >= 0.01 and max(ys) <= 0.99
    with pytest.raises(ValueError, match="all right or all wrong"):
        fit_map(p, np.ones_like(p))


def test_the_tool_refuses_a_calibration_that_already_has_a_map(tmp_path, capsys):
    from eval import trust_monotone

    path = tmp_path / "c.json"
    path.write_text(json.dumps({**CALIB, "monotone": MAP}))
    with pytest.raises(SystemExit) as e:
        from eval import one_line

        one_line.run(lambda: trust_monotone.main(["--kept", "eval/results/trust-ece.jsonl", "--onto", str(path)]))
    assert e.value.code == 2 and "already has a monotone map" in capsys.readouterr().err


def test_kept_outcomes_move_to_a_map_of_their_calibration_by_replay_and_nothing_else_moves():
    from eval.trust_rekey import map_only
    from rag.errors import InputError

    sig = {"answer_answerability": 0.5, "generation": 0.5}
    kept = [{"id": "q1", "suite": "medquad", "answerable": True, "answered": True, "confidence": 0.5, "right": True,
             "by_person": True, "fingerprint": "old", "threshold": 0.2,
             "at_zero": {"right": True, "by_person": True, "signals": sig}},
            {"id": "q2", "suite": "ooc", "answerable": False, "answered": False, "confidence": 0.0, "right": True,
             "by_person": False, "fingerprint": "old", "threshold": 0.2, "at_zero": None}]
    mapped = {**CALIB, "monotone": MAP}
    assert map_only(CALIB, mapped) and not map_only(CALIB, {**mapped, "intercept": -2.0})
    out = trust_kept.rekeyed(kept, mapped, "new")
    assert [o["fingerprint"] for o in out] == ["new", "new"]
    assert out[0]["confidence"] == pytest.approx(0.475) and out[0]["answered"]
    assert out[1] == {**kept[1], "fingerprint": "new"}
    with pytest.raises(InputError, match="another outcome"):
        trust_kept.rekeyed([{**kept[0], "threshold": 0.6}], mapped, "new")  # the kept one was shown; this would not be
