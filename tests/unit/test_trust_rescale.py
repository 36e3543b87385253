"""The cross-fitted gate of a Platt rescale (eval/trust_rescale.py): it passes where the scores are miscalibrated in
a way a slope fixes, and not where they are already calibrated."""

import numpy as np
import pytest

from eval.trust_rescale import cross_fitted, logits


def _draw(n: int, true_slope: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    z = rng.normal(0.3, 1.2, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-true_slope * z))).astype(float)
    return z, y


def test_a_too_flat_score_is_fixed_by_the_rescale_on_held_out_halves():
    z, y = _draw(600, 2.5, seed=1)  # the truth is steeper than the score: under-confident at both ends
    out = cross_fitted(z, y, splits=10)
    assert out["gate_passed"]
    assert out["rescaled"]["ece"] < out["base"]["ece"] and out["rescaled"]["brier"] < out["base"]["brier"]
    assert out["fold_slopes"][0] > 1.5


def test_a_calibrated_score_does_not_pass_the_gate():
    z, y = _draw(600, 1.0, seed=2)
    out = cross_fitted(z, y, splits=10)
    assert not out["gate_passed"]  # a fitted slope and intercept only add noise to a calibrated score
    assert out["rescaled"]["brier"] >= out["base"]["brier"]


def test_one_label_only_is_refused_and_logits_are_finite():
    with pytest.raises(ValueError, match="one label"):
        cross_fitted(np.zeros(10), np.ones(10), splits=2)
    assert np.isfinite(logits(np.array([0.0, 0.5, 1.0]))).all()


def test_the_tools_say_bad_input_in_one_line(tmp_path, capsys):
    from eval import one_line, trust_kept
    from rag.errors import InputError

    with pytest.raises(InputError, match="not found"):
        trust_kept.with_signals(tmp_path / "missing.jsonl")

    def bad() -> int:
        raise InputError("the file is missing; keep it first")

    with pytest.raises(SystemExit) as e:
        one_line.run(bad)
    assert e.value.code == 2 and capsys.readouterr().err == "error: the file is missing; keep it first\n"


@pytest.mark.parametrize("tool", ["trust_rescale", "trust_refit", "trust_monotone"])
def test_the_kept_outcome_tools_refuse_a_calibration_with_another_gate(tmp_path, tool):
    import importlib
    import json

    from rag.errors import InputError

    other = tmp_path / "other.json"
    other.write_text(json.dumps({"features": ["support"], "coef": [1.0], "intercept": 0.0,
                                 "gate": {"features": ["retrieval"], "coef": [1.0], "intercept": 0.0}}))
    argv = ["--kept", "eval/results/trust-ece.jsonl", "--onto", str(other)]
    if tool == "trust_refit":
        argv += ["--out", str(tmp_path / "x.json")]
    with pytest.raises(InputError, match="another gate model"):
        importlib.import_module(f"eval.{tool}").main(argv)


def test_a_missing_or_malformed_file_is_one_line_too(tmp_path, capsys):
    import json

    from eval import one_line

    def missing() -> int:
        (tmp_path / "rows.jsonl").read_text()
        return 0

    def malformed() -> int:
        json.loads("{bad")
        return 0

    for main, said in ((missing, "rows.jsonl not found; check the path"), (malformed, "malformed JSON")):
        with pytest.raises(SystemExit) as e:
            one_line.run(main)
        err = capsys.readouterr().err
        assert e.value.code == 2 and said in err and err.count("\n") == 1
