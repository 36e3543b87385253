"""index.operating_point: a gate and threshold used only on the index and calibration they were chosen with."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from eval import trust, trust_operating
from rag import operating
from rag.assistant import Assistant
from rag.config import load_config
from rag.errors import ConfigError

MANIFEST = {"documents": {"g1": {"hash": "a", "kind": "guideline"}, "p1": {"hash": "b", "kind": "ehr"}}}


def _point_file(tmp_path, calib, **over):
    body = {"answerable_min": 0.1, "abstain_below": 0.2, "documents": {"g1": "a", "p1": "b"},
            "calibration_sha256": operating.sha256_of(calib), **over}
    path = tmp_path / "point.json"
    path.write_text(json.dumps(body))
    return path


@pytest.fixture
def calib(tmp_path):
    path = tmp_path / "calibration.json"
    path.write_text('{"features": []}')
    return path


def test_a_point_applies_only_to_its_documents_and_calibration(tmp_path, calib):
    point = operating.load(_point_file(tmp_path, calib))
    assert point.mismatch(MANIFEST, calib) is None
    added = {"documents": {**MANIFEST["documents"], "p2": {"hash": "c", "kind": "ehr"}}}
    assert "1 document(s) added" in point.mismatch(added, calib)
    changed = {"documents": {**MANIFEST["documents"], "g1": {"hash": "z", "kind": "guideline"}}}
    assert "1 changed" in point.mismatch(changed, calib)
    assert "1 removed" in point.mismatch({"documents": {"g1": {"hash": "a"}}}, calib)
    other = tmp_path / "other.json"
    other.write_text('{"features": [1]}')
    assert "not the file it was chosen with" in point.mismatch(MANIFEST, other)
    assert "no confidence.calibration" in point.mismatch(MANIFEST, None)


@pytest.mark.parametrize("text, says", [(None, "does not exist"), ("{not json", "not readable JSON"),
                                        ('{"answerable_min": 0.1}', "lacks a valid"),
                                        ('{"answerable_min": 2, "abstain_below": 0.2, "documents": {"a": "b"}, '
                                         '"calibration_sha256": "x"}', "must be in")])
def test_a_bad_point_file_says_what_to_do(tmp_path, text, says):
    path = tmp_path / "point.json"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ConfigError, match=says) as e:
        operating.load(path)
    assert "trust_operating --rows" in str(e.value) and "\n" not in str(e.value)


def test_the_assistant_uses_the_point_only_where_it_applies(tmp_path, calib):
    cfg = load_config(overrides=[f"index.operating_point={_point_file(tmp_path, calib)}",
                                 f"confidence.calibration={calib}", "verifier.answerable_min=0.5",
                                 "confidence.abstain_below=0.35"])
    a = Assistant(cfg)
    assert a.operating_point(SimpleNamespace(version="v1", manifest=MANIFEST)) == (0.1, 0.2)
    other = SimpleNamespace(version="v2", manifest={"documents": {"g9": {"hash": "q"}}})
    assert a.operating_point(other) == (0.5, 0.35)  # another index: the general point
    cfg.confidence.calibrated_answers = False
    assert Assistant(cfg).operating_point(SimpleNamespace(version="v1", manifest=MANIFEST)) == (0.5, 0.35)
    cfg.index.operating_point = None
    assert Assistant(cfg).operating_point(SimpleNamespace(version="v1", manifest=MANIFEST)) == (0.5, 0.35)


def test_replay_applies_the_index_point_to_the_questions_asked_on_that_index():
    settings = {"gate": 0.5, "abstain_below": 0.35, "demo_point": [0.1, 0.2]}
    assert trust.point({"suite": "demo_answerable"}, settings) == (0.1, 0.2)
    assert trust.point({"suite": "medquad"}, settings) == (0.5, 0.35)
    assert trust.point({"suite": "demo_answerable"}, {**settings, "demo_point": None}) == (0.5, 0.35)


def _grid(gate, conf, answered, right, ooc):
    g = object.__new__(trust_operating.Grid)
    g.gate, g.confidence = np.array(gate), np.array(conf)
    g.answered, g.right, g.ooc = np.array(answered), np.array(right), np.array(ooc)
    return g


def test_the_rule_takes_the_most_right_answers_at_the_out_of_corpus_bar():
    # Two answerable (gate 0.3 right, 0.6 right) and two out of corpus (gate 0.2 and 0.4).
    g = _grid([0.3, 0.6, 0.2, 0.4], [0.9, 0.9, 0.9, 0.9], [True] * 4, [True, True, False, False],
              [False, False, True, True])
    every = np.ones(4, bool)
    assert g.choose(every, 1.0, 0.0) == (0.6, 0.9)  # both out of corpus stopped: the 0.6 answer kept, stricter ties
    assert g.choose(every, 0.5, 0.0) == (0.3, 0.9)  # one may pass: both right answers kept
    assert g.choose(every, 1.0, 0.7) == (0.95, 0.95)  # gates from the floor only: no right answer left, strictest
    s = g.stats(every, 0.21, 0.0)
    assert (s["right"], s["answerable_abstained"], s["out_of_corpus_abstained"]) == (2, 0.0, 0.5)


def test_halves_split_each_suite():
    rows = [{"suite": "a"}] * 4 + [{"suite": "b"}] * 6
    a, b = trust_operating.halves(rows, 3)
    assert a.sum() == 5 and not (a & b).any() and a[:4].sum() == 2 and a[4:].sum() == 3


def test_the_chooser_refuses_bad_input_in_one_line(tmp_path, capsys):
    assert trust_operating.main(["--rows", str(tmp_path / "none.jsonl")]) == 2
    assert trust_operating.main(["--rows", "x", "--target", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("error: ") for line in err)


def test_no_point_reaching_the_bar_is_none():
    g = _grid([0.9], [0.9], [True], [False], [True])
    assert g.choose(np.ones(1, bool), 1.0, 0.96) is None


def test_a_bad_point_file_stops_the_assistant_before_any_model_loads(tmp_path):
    (tmp_path / "point.json").write_text("{")
    with pytest.raises(ConfigError, match="not readable JSON"):
        Assistant(load_config(overrides=[f"index.operating_point={tmp_path / 'point.json'}"]))
