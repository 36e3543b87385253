"""verifier.expand_question: the answerability model reads the question with its abbreviations written out."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np

from rag.assistant import Assistant
from rag.config import load_config


class _Recorder:
    def __init__(self) -> None:
        self.questions: list[str] = []

    def answerability(self, question: str, passages: list[str]) -> np.ndarray:
        self.questions.append(question)
        return np.array([0.25 * (i + 1) for i in range(len(passages))])


def _assistant(expand: bool) -> Any:
    cfg = load_config(overrides=[f"verifier.expand_question={str(expand).lower()}"])
    child = SimpleNamespace(context_text=lambda: "Heart failure — diuretics\nLoop diuretics relieve congestion.")
    index = SimpleNamespace(children=[child, child], child_pos={"c1": 0, "c2": 1})
    return SimpleNamespace(index=index, config=cfg)


def _units() -> list[Any]:
    return [SimpleNamespace(hits=[SimpleNamespace(chunk_id="c1"), SimpleNamespace(chunk_id="c2")])]


def test_the_question_is_written_out_only_when_asked() -> None:
    for expand, seen in ((False, "HFrEF loop dose?"),
                         (True, "HFrEF (heart failure with reduced ejection fraction) loop dose?")):
        rec = _Recorder()
        best = Assistant._answerability(_assistant(expand), rec, "HFrEF loop dose?", _units())  # type: ignore[arg-type]
        assert rec.questions == [seen]
        assert best == [0.5]  # the source's best passage
