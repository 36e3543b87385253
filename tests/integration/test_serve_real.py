"""The warm server with the real default models: the same answer as the library (and `app.py query --json`)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from serve.api import create_app
from serve.engine import Engine

pytestmark = pytest.mark.integration


def test_server_answers_like_the_library(real_assistant):
    q, pid = "What is the latest ejection fraction of this patient?", "P002"
    direct = real_assistant.ask(q, patient_id=pid).to_dict()
    eng = Engine(real_assistant.config, assistant=real_assistant)
    with TestClient(create_app(real_assistant.config, engine=eng), raise_server_exceptions=False) as client:
        assert eng.wait_ready(300), eng.load_error
        served = client.post("/v1/query", json={"question": q, "patient_id": pid}).json()
        gated = client.post("/v1/query", json={"question": "Who won the 1998 FIFA World Cup?"}).json()
        assert "P002" in client.get("/v1/index/status").json()["patients"]
    for key in ("answer", "abstained", "confidence", "confidence_label", "index_version", "draft", "patient_id"):
        assert served[key] == direct[key], key
    assert [c["chunk_id"] for c in served["citations"]] == [c["chunk_id"] for c in direct["citations"]]
    assert all(c["patient_id"] in (None, "P002") for c in served["citations"])
    assert gated["abstained"] and "timings_ms" in gated
