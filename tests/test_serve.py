"""The HTTP API (serve/) with FastAPI's TestClient and fake models: endpoints, limits, auth, queue, logs."""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from rag.assistant import Assistant
from rag.config import load_config
from rag.errors import InputError
from rag.index import current_version
from serve.api import DRAFT_NOTICE, api_key, create_app
from serve.engine import Engine
from serve.logs import JsonFormatter
from tests.fakes import HashEmbedder, LexicalVerifier, ScriptedGenerator

SUPPORTED = ("SGLT2 inhibitors (dapagliflozin or empagliflozin) are recommended in symptomatic chronic HFrEF to "
             "reduce cardiovascular death and heart failure hospitalisation")
QUESTION = "Which drugs reduce cardiovascular death in HFrEF?"
KEY = "k" * 24


class StreamingGenerator(ScriptedGenerator):
    """Scripted reply streamed word by word; ``gate`` (when set) holds every generation until released."""

    def __init__(self, reply: str, gate: threading.Event | None = None):
        super().__init__(reply)
        self.gate = gate
        self.batches: list[int] = []
        self.entered = threading.Event()

    def generate(self, messages: Any, max_new_tokens: int, temperature: float = 0.0, on_text: Any = None) -> Any:
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(10)
        if on_text is not None:
            for w in self.reply.split(" "):
                on_text(w + " ")
        self.batches.append(1)
        return self._gen()

    def generate_batch(self, batch: Any, max_new_tokens: int, should_stop: Any = None) -> list[Any]:
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(10)
        self.batches.append(len(batch))
        return [self._gen() for _ in batch]


def _config(hash_index, *overrides: str):
    root, _ = hash_index
    return load_config(overrides=[f"index.dir={root}", "index.auto_build_demo=false", "verifier.answerable_min=0.0",
                                  "confidence.abstain_below=0.0", *overrides])


def _client(hash_index, gen: ScriptedGenerator | None = None, key: str | None = None, *overrides: str
            ) -> tuple[TestClient, Engine]:
    cfg = _config(hash_index, *overrides)
    a = Assistant(cfg, embedder=HashEmbedder(), generator=gen or StreamingGenerator(f"{SUPPORTED} [1]."),  # type: ignore[arg-type]
                  verifier=LexicalVerifier())  # type: ignore[arg-type]
    eng = Engine(cfg, assistant=a)
    client = TestClient(create_app(cfg, engine=eng, key=key), raise_server_exceptions=False)
    return client, eng


@pytest.fixture
def served(hash_index):
    client, eng = _client(hash_index)
    with client:
        assert eng.wait_ready(30)
        yield client, eng


def _one_line_error(r) -> str:
    body = r.json()
    assert set(body) == {"error", "status"} and body["status"] == r.status_code
    assert "\n" not in body["error"] and "Traceback" not in body["error"]
    return body["error"]


def test_health_ready_info_and_docs(served):
    client, _ = served
    assert client.get("/healthz").json()["ok"] is True
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json()["index_version"].startswith("v")
    info = client.get("/v1/info").json()
    assert "Not a medical device" in info["notice"] and info["auth_required"] is False
    schema = client.get("/openapi.json").json()
    assert {"/v1/query", "/v1/index/status", "/healthz", "/readyz", "/metrics"} <= set(schema["paths"])
    assert "question" in json.dumps(schema["paths"]["/v1/query"]["post"]["requestBody"])
    assert client.get("/docs").status_code == 200


def test_query_returns_the_answer_json(served):
    client, _ = served
    r = client.post("/v1/query", json={"question": QUESTION})
    assert r.status_code == 200, r.text
    d = r.json()
    assert {"question", "answer", "abstained", "confidence", "confidence_label", "citations", "sentences",
            "index_version", "models", "timings_ms"} <= set(d)
    assert not d["abstained"] and "SGLT2" in d["answer"] and d["citations"][0]["end"] > d["citations"][0]["start"]
    assert r.headers["x-request-id"]
    assert client.get("/healthz", headers={"x-request-id": "abc-123"}).headers["x-request-id"] == "abc-123"
    forged = client.get("/healthz", headers={"x-request-id": "P002 has diabetes"}).headers["x-request-id"]
    assert "P002" not in forged and len(forged) == 16


def test_query_with_patient_and_evidence_only(served):
    client, _ = served
    d = client.post("/v1/query", json={"question": "latest ejection fraction", "patient_id": "P002",
                                       "generate": False}).json()
    assert not d["generated"] and d["patient_id"] == "P002"
    assert all(c["patient_id"] in (None, "P002") for c in d["citations"])


def test_index_status(served):
    client, _ = served
    st = client.get("/v1/index/status").json()
    assert st["serving_version"] == st["version"] and "P002" in st["patients"]


@pytest.mark.parametrize(("body", "status", "needle"), [
    (b"{not json", 400, "not valid JSON"),
    (b"[1, 2]", 400, "JSON object"),
    (b'{"question": 5}', 422, "question"),
    (b'{"question": "x", "colour": "red"}', 422, "colour"),
    (b'{"question": "x", "top_k": 0}', 422, "top_k"),
    (b'{"question": "   "}', 400, "empty"),
    (b'{"question": "What is HFrEF?", "patient_id": "P 1"}', 400, "patient"),
    (b'{"question": "What is HFrEF?", "patient_id": "P999"}', 400, "P999"),
    (json.dumps({"question": "a" * 2001}).encode(), 400, "limit"),
    (b"\xff\xfe", 400, "not valid JSON"),
    (b'{"question": "What is HFrEF?\\u0000"}', 400, "control characters"),
    (b'{"question": "What is HFrEF?", "patient_id": 5}', 422, "patient_id"),
    (b'{"question": "What is HFrEF?", "stream": "maybe"}', 422, "stream"),
    (b'{"question": "What is HFrEF?", "top_k": 1e99}', 422, "top_k"),
    (b'{"question": ["What is HFrEF?"]}', 422, "question"),
    (b'{}', 422, "question"),
    (b"", 400, "not valid JSON"),
    (b'"just a string"', 400, "JSON object"),
    (b'{"question": "What is HFrEF?", "patient_id": "P002\\nforged log line"}', 400, "patient"),
])
def test_bad_requests_are_4xx_with_one_line(served, body, status, needle):
    client, _ = served
    r = client.post("/v1/query", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert needle in _one_line_error(r)


def test_body_too_large_and_unknown_route(served):
    client, _ = served
    r = client.post("/v1/query", content=b'{"question": "' + b"a" * 20000 + b'"}',
                    headers={"content-type": "application/json"})
    assert r.status_code == 413 and "max_body_bytes" in _one_line_error(r)
    assert client.get("/v1/nothing").status_code == 404
    assert client.get("/v1/query").status_code == 405


def test_streaming_marks_the_draft_unchecked_then_sends_the_checked_answer(served):
    client, _ = served
    with client.stream("POST", "/v1/query", json={"question": QUESTION, "stream": True}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        raw = "".join(r.iter_text())
    events = [(b.split("\n")[0].removeprefix("event: "), json.loads(b.split("\n")[1].removeprefix("data: ")))
              for b in raw.strip().split("\n\n")]
    names = [n for n, _ in events]
    assert names[0] == "sources" and names[-1] == "answer" and "draft" in names
    assert events[0][1]["notice"] == DRAFT_NOTICE
    assert all(d["unchecked"] is True for n, d in events if n == "draft")
    assert "SGLT2" in "".join(d["text"] for n, d in events if n == "draft")
    final = events[-1][1]
    assert not final["abstained"] and final["citations"]


def test_stream_reports_bad_input_as_an_error_event(served):
    client, _ = served
    with client.stream("POST", "/v1/query", json={"question": "What is HFrEF?", "patient_id": "P999",
                                                  "stream": True}) as r:
        raw = "".join(r.iter_text())
    assert raw.startswith("event: error") and '"status": 400' in raw


def test_metrics(served):
    client, _ = served
    client.post("/v1/query", json={"question": QUESTION})
    text = client.get("/metrics").text
    assert '# TYPE cds_requests_total counter' in text
    assert 'cds_requests_total{route="/v1/query",status="200"} 1' in text
    assert 'cds_answers_total{outcome="answered"} 1' in text
    assert "cds_request_seconds_bucket" in text and "cds_ready 1" in text and "cds_process_resident_bytes" in text


def test_api_key_required_when_set(hash_index):
    client, eng = _client(hash_index, None, KEY)
    with client:
        assert eng.wait_ready(30)
        assert client.get("/healthz").status_code == 200 and client.get("/readyz").status_code == 200
        assert client.get("/v1/info").json()["auth_required"] is True
        for r in (client.post("/v1/query", json={"question": QUESTION}), client.get("/v1/index/status"),
                  client.get("/metrics"), client.post("/v1/query", json={"question": QUESTION},
                                                      headers={"Authorization": "Bearer wrong-key-wrong-key"})):
            assert r.status_code == 401 and "API key" in _one_line_error(r)
        ok = client.post("/v1/query", json={"question": QUESTION}, headers={"Authorization": f"Bearer {KEY}"})
        assert ok.status_code == 200
        assert client.get("/v1/index/status", headers={"X-API-Key": KEY}).status_code == 200


def test_binding_beyond_loopback_needs_a_key():
    cfg = load_config().serve
    assert api_key(cfg, {}) is None  # loopback: no key needed
    cfg.host = "0.0.0.0"
    with pytest.raises(InputError, match="CDS_API_KEY"):
        api_key(cfg, {})
    with pytest.raises(InputError, match="shorter"):
        api_key(cfg, {"CDS_API_KEY": "short"})
    assert api_key(cfg, {"CDS_API_KEY": KEY}) == KEY


@pytest.mark.parametrize(("argv", "key", "needle"), [
    (["serve", "--host", "0.0.0.0"], None, "CDS_API_KEY"),
    (["serve", "--host", "::"], None, "CDS_API_KEY"),
    (["serve", "--host", "0.0.0.0"], "short", "shorter"),
    (["serve", "--port", "70000"], None, "--port"),
    (["serve", "--port", "http"], None, "--port"),
    (["serve", "--set", "serve.queue_size=0"], None, "queue_size"),
])
def test_cli_refuses_bad_serve_options_before_loading(monkeypatch, capsys, argv, key, needle):
    import app

    monkeypatch.delenv("CDS_API_KEY", raising=False)
    if key is not None:
        monkeypatch.setenv("CDS_API_KEY", key)
    try:
        code = app.main(argv)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and needle in err, err


def test_not_ready_is_503(hash_index):
    client, eng = _client(hash_index)
    eng.cfg.warmup = False
    with client:
        r = client.post("/v1/query", json={"question": QUESTION})
        assert r.status_code == 503 and "loading" in _one_line_error(r)
        assert client.get("/readyz").status_code == 503
        assert client.get("/healthz").status_code == 200


def test_missing_index_is_reported_by_readyz(tmp_path):
    cfg = load_config(overrides=[f"index.dir={tmp_path / 'none'}", "index.auto_build_demo=false"])
    eng = Engine(cfg, assistant=Assistant(cfg, embedder=HashEmbedder()))
    with TestClient(create_app(cfg, engine=eng), raise_server_exceptions=False) as client:
        for _ in range(100):
            if eng.load_error:
                break
            time.sleep(0.05)
        r = client.get("/readyz")
        assert r.status_code == 503 and "index" in r.json()["reason"]
        assert client.post("/v1/query", json={"question": QUESTION}).status_code == 503


def test_first_start_builds_the_demo_index(tmp_path):
    """The server's explicit first-run step (Engine.load -> Assistant.ensure_index): no index yet, demo built."""
    cfg = load_config(overrides=[f"index.dir={tmp_path / 'idx'}", "verifier.answerable_min=0.0",
                                 "confidence.abstain_below=0.0"])
    a = Assistant(cfg, embedder=HashEmbedder(), generator=StreamingGenerator(f"{SUPPORTED} [1]."),  # type: ignore[arg-type]
                  verifier=LexicalVerifier())  # type: ignore[arg-type]
    eng = Engine(cfg, assistant=a)
    with TestClient(create_app(cfg, engine=eng), raise_server_exceptions=False) as client:
        assert eng.wait_ready(60), eng.load_error
        assert client.get("/readyz").json()["index_version"] == current_version(tmp_path / "idx")


def test_queue_full_is_429_and_waiting_questions_are_batched(hash_index):
    gate = threading.Event()
    gen = StreamingGenerator(f"{SUPPORTED} [1].", gate)
    client, eng = _client(hash_index, gen, None, "serve.queue_size=3", "serve.batch_size=4")
    with client:
        assert eng.wait_ready(30)
        results: list[int] = []
        threads = [threading.Thread(target=lambda: results.append(
            client.post("/v1/query", json={"question": QUESTION}).status_code)) for _ in range(3)]
        threads[0].start()
        assert gen.entered.wait(10), "the first question reached the generator (held there by the gate)"
        for t in threads[1:]:
            t.start()
        for _ in range(200):  # the first is generating, two wait
            if eng.in_progress == 3 and eng.waiting == 2:
                break
            time.sleep(0.02)
        assert eng.in_progress == 3
        r = client.post("/v1/query", json={"question": QUESTION})
        assert r.status_code == 429 and r.headers["retry-after"] and "busy" in _one_line_error(r)
        gate.set()
        for t in threads:
            t.join(30)
        assert results == [200, 200, 200]
        assert gen.batches == [1, 2], "the two waiting questions share one batch"
        assert eng.in_progress == 0
        assert 'cds_rejected_total{reason="queue_full"} 1' in client.get("/metrics").text


def test_logs_are_json_without_record_text(hash_index, caplog):
    secret_q = "Which drugs reduce cardiovascular death in HFrEF for Zorblatt Quixley?"
    client, eng = _client(hash_index)
    caplog.set_level(logging.DEBUG)
    with client:
        assert eng.wait_ready(30)
        client.post("/v1/query", json={"question": secret_q, "patient_id": "P002"})
        client.post("/v1/query", json={"question": secret_q, "patient_id": "Q777ZZ"})  # unknown: echoed in the 400
        client.post("/v1/query", json={"question": secret_q, "stream": True})
    fmt = JsonFormatter()
    lines = [fmt.format(r) for r in caplog.records if r.name.startswith(("serve", "uvicorn"))]
    assert any('"event": "answer"' in line for line in lines)
    for line in lines:
        rec = json.loads(line)
        assert "\n" not in line and rec["level"]
        for needle in ("Zorblatt", "P002", "Q777ZZ", "SGLT2", "dapagliflozin"):
            assert needle not in line, line


def test_a_prepared_question_is_finished_on_the_version_it_was_retrieved_from(tmp_path, demo_sources):
    """The server retrieves in one thread and checks in another: a publish in between changes nothing."""
    from corpora import load_sources
    from rag.answer import Answer
    from rag.update import build_index

    root = tmp_path / "idx"
    chunking = load_config().chunking.model_dump()
    v1, _ = build_index(load_sources(demo_sources[:1]).documents, HashEmbedder(), root, chunking)
    cfg = load_config(overrides=[f"index.dir={root}", "index.auto_build_demo=false", "verifier.answerable_min=0.0",
                                 "confidence.abstain_below=0.0"])
    a = Assistant(cfg, embedder=HashEmbedder(), generator=ScriptedGenerator(f"{SUPPORTED} [1]."),  # type: ignore[arg-type]
                  verifier=LexicalVerifier())  # type: ignore[arg-type]
    prepared = a.prepare(QUESTION)
    assert not isinstance(prepared, Answer) and prepared.index.version == v1
    v2, _ = build_index(load_sources(demo_sources).documents, HashEmbedder(), root, chunking)
    answer = a.finish(prepared, a.generate(prepared))
    assert answer.index_version == v1 and not answer.abstained
    assert all(c.chunk_id in prepared.index.child_pos for c in answer.citations)
    again = a.prepare(QUESTION)
    assert not isinstance(again, Answer) and again.index.version == v2 != v1


def test_no_failed_request_while_a_new_index_version_is_published(tmp_path, demo_sources):
    """Questions keep being answered while `index update` publishes; the server moves to the new version."""
    from corpora import load_sources
    from rag.update import build_index

    root = tmp_path / "idx"
    chunking = load_config().chunking.model_dump()
    v1, _ = build_index(load_sources(demo_sources).documents, HashEmbedder(), root, chunking)
    cfg = load_config(overrides=[f"index.dir={root}", "index.auto_build_demo=false", "verifier.answerable_min=0.0",
                                 "confidence.abstain_below=0.0", "serve.queue_size=64"])
    eng = Engine(cfg, assistant=Assistant(cfg, embedder=HashEmbedder(),
                                          generator=StreamingGenerator(f"{SUPPORTED} [1]."),  # type: ignore[arg-type]
                                          verifier=LexicalVerifier()))  # type: ignore[arg-type]
    statuses: list[int] = []
    versions: set[str] = set()
    with TestClient(create_app(cfg, engine=eng), raise_server_exceptions=False) as client:
        assert eng.wait_ready(30)

        def ask(n: int) -> None:
            for i in range(n):
                body = {"question": QUESTION} if i % 2 else {"question": "latest ejection fraction",
                                                                "patient_id": "P002"}
                r = client.post("/v1/query", json=body)
                statuses.append(r.status_code)
                if r.status_code == 200:
                    versions.add(r.json()["index_version"])

        threads = [threading.Thread(target=ask, args=(6,)) for _ in range(4)]
        for t in threads:
            t.start()
        docs = load_sources(demo_sources).documents
        v2, _ = build_index([*docs[:-1]], HashEmbedder(), root, chunking)  # one document removed
        for t in threads:
            t.join(60)
        after = client.post("/v1/query", json={"question": QUESTION}).json()
    assert statuses == [200] * 24, statuses
    assert after["index_version"] == v2 != v1 and versions <= {v1, v2}


def test_a_streamed_generation_stops_when_its_client_goes(tiny_generator):
    """The stream raises inside the generator's text callback: a real model stops at the next word."""
    from serve.api import GenerationStopped

    seen: list[str] = []

    def on_text(text: str) -> None:
        seen.append(text)
        raise GenerationStopped("the client went away")

    with pytest.raises(GenerationStopped):
        tiny_generator.generate([{"role": "user", "content": "heart failure"}], 64, on_text=on_text)
    assert len(seen) == 1


class SlowWords(StreamingGenerator):
    def generate(self, messages: Any, max_new_tokens: int, temperature: float = 0.0, on_text: Any = None) -> Any:
        self.sent = 0
        for w in self.reply.split(" ") * 50:
            time.sleep(0.01)
            on_text(w + " ")
            self.sent += 1
        return self._gen()


def test_leaving_a_stream_frees_the_generator(hash_index):
    gen = SlowWords(f"{SUPPORTED} [1].")
    client, eng = _client(hash_index, gen)
    with client:
        assert eng.wait_ready(30)
        with client.stream("POST", "/v1/query", json={"question": QUESTION, "stream": True}) as r:
            for line in r.iter_lines():
                if line.startswith("event: draft"):
                    break
        for _ in range(200):
            if eng.in_progress == 0:
                break
            time.sleep(0.02)
        assert eng.in_progress == 0
        time.sleep(0.5)
        sent = gen.sent
        time.sleep(0.5)
        assert gen.sent == sent < 500, "the generation stopped after the client left (a whole one is 1,000 words)"
        assert client.post("/v1/query", json={"question": QUESTION, "generate": False}).status_code == 200


def test_a_timed_out_request_stops_its_generation(hash_index):
    """504 for the client, and the worker stops decoding for it at the next word (not after 1,000)."""
    gen = SlowWords(f"{SUPPORTED} [1].")
    client, eng = _client(hash_index, gen, None, "serve.request_timeout_s=1")
    with client:
        assert eng.wait_ready(30)
        r = client.post("/v1/query", json={"question": QUESTION})
        assert r.status_code == 504 and "serve.request_timeout_s" in r.json()["error"]
        time.sleep(0.3)
        sent = gen.sent
        time.sleep(0.5)
        assert gen.sent == sent < 500, "generation went on after the 504"
        assert "cds_generation_abandoned_total" in client.get("/metrics").text


def test_a_batch_stops_when_every_request_in_it_is_abandoned(tiny_generator):
    """The transformers batch path polls should_stop after each decoding step."""
    chats = [[{"role": "user", "content": "heart failure"}], [{"role": "user", "content": "kidney"}]]
    calls: list[int] = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) >= 3

    outs = tiny_generator.generate_batch(chats, 64, should_stop=stop)
    assert len(outs) == 2 and all(o.new_tokens <= 3 for o in outs)


def test_the_server_gives_a_withheld_answer_its_second_try(hash_index):
    gen = ScriptedGenerator(["INSUFFICIENT EVIDENCE", f"{SUPPORTED} [1]."])
    client, eng = _client(hash_index, gen, None, "generator.second_try=true")
    with client:
        assert eng.wait_ready(30)
        r = client.post("/v1/query", json={"question": QUESTION})
    assert r.status_code == 200, r.text
    body = r.json()
    assert gen.calls == 2 and not body["abstained"] and "dapagliflozin" in body["answer"]
    assert body["first_try"]["draft"] == "INSUFFICIENT EVIDENCE" and len(body["citations"]) == 1


def test_a_chunked_prefill_gives_the_same_replies_and_stops_between_chunks(tiny_generator):
    """Server batches read long prompts in chunks, polling should_stop between them (issue 14)."""
    long_q = " ".join(["heart failure kidney potassium"] * 30)
    chats = [[{"role": "user", "content": long_q}], [{"role": "user", "content": "kidney"}]]
    plain = tiny_generator.generate_batch(chats, 12)
    chunk = tiny_generator.prefill_chunk
    try:
        tiny_generator.prefill_chunk = 16
        chunked = tiny_generator.generate_batch(chats, 12, should_stop=lambda: False)
        assert [g.text for g in chunked] == [g.text for g in plain]
        assert [g.new_tokens for g in chunked] == [g.new_tokens for g in plain]
        for a, b in zip(chunked, plain, strict=True):
            assert a.token_probs == pytest.approx(b.token_probs, abs=1e-4)
        polls: list[int] = []

        def stop() -> bool:
            polls.append(1)
            return len(polls) >= 2  # stop after the second chunk of the prompt

        gone = tiny_generator.generate_batch(chats, 12, should_stop=stop)
        assert len(polls) == 2 and all(g.new_tokens == 0 and g.text == "" for g in gone)
        assert gone[0].prompt_tokens == plain[0].prompt_tokens
    finally:
        tiny_generator.prefill_chunk = chunk


def test_a_streamed_reply_can_stop_during_a_chunked_prefill(tiny_generator):
    """generate() reads a long prompt in chunks, calling on_text("") between them: a client that left
    stops it before any token is decoded; a client that stays gets the unchunked reply."""
    from serve.api import GenerationStopped

    chat = [{"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": " ".join(["heart failure kidney potassium"] * 30)}]
    plain = tiny_generator.generate(chat, 12)
    chunk = tiny_generator.prefill_chunk
    try:
        tiny_generator.prefill_chunk = 16
        texts: list[str] = []
        streamed = tiny_generator.generate(chat, 12, on_text=texts.append)
        assert streamed.text == plain.text and streamed.token_probs == pytest.approx(plain.token_probs, abs=1e-4)
        assert texts[0] == "" and "".join(texts).strip() == plain.text

        seen: list[str] = []

        def leave(text: str) -> None:
            seen.append(text)
            raise GenerationStopped("the client went away")

        with pytest.raises(GenerationStopped):
            tiny_generator.generate(chat, 12, on_text=leave)
        assert seen == [""], "stopped between prompt chunks, before decoding"
    finally:
        tiny_generator.prefill_chunk = chunk
