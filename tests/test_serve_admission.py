"""Admission control (serve/admission.py): a question that would wait for the generator past
``serve.request_timeout_s`` is refused at once with 429 and Retry-After, from measured batch times.

The API tests run the real FastAPI app (TestClient) over the engine with the test doubles of
tests/test_serve.py: a generator held by a gate, so the queue stands still while it is inspected.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from serve.admission import BatchClock, Estimate, batches_ahead
from tests.test_serve import QUESTION, SUPPORTED, StreamingGenerator, _client


# -- the estimate ---------------------------------------------------------------------------------------
def test_the_clock_starts_from_the_prior_and_follows_measured_batches() -> None:
    clock = BatchClock(prior_s=50.0)
    assert clock.estimate(1) == 50.0 and clock.estimate(4) == 200.0  # unmeasured: one after another
    clock.observe(4, 100.0)
    assert clock.estimate(4) == 100.0
    assert clock.estimate(2) == 100.0  # no slower than a measured larger batch
    assert clock.estimate(8) == 200.0  # at most proportionally slower than a measured smaller one
    clock.observe(4, 200.0)
    assert clock.estimate(4) == pytest.approx(130.0)  # running mean: 0.7 * 100 + 0.3 * 200
    clock.observe(1, 40.0)
    assert clock.estimate(1) == 40.0 and clock.measured == 3
    assert clock.estimate(2) == 80.0  # not the batch of four's 130 s: never slower than two singles
    assert clock.estimate(4) == pytest.approx(130.0)  # under four singles (160 s): the measured value stands
    assert clock.finish_s == 0.0
    clock.observe_finish(2.0)
    assert clock.finish_s == 2.0 and clock.snapshot() == {"1": 40.0, "4": 130.0}


@pytest.mark.parametrize(("queue", "new", "size", "ahead", "own"), [
    ([], True, 4, [], 1),
    ([True] * 3, True, 4, [], 4),  # joins the waiting three
    ([True] * 4, True, 4, [4], 1),
    ([True] * 9, True, 4, [4, 4], 2),
    ([False, True], True, 4, [1], 2),  # a streamed question goes alone; the newcomer joins the next
    ([True, True], False, 4, [2], 1),  # a streamed newcomer goes alone after them
    ([True] * 3, True, 1, [1, 1, 1], 1),
])
def test_batches_ahead_replays_the_workers_rule(queue: list[bool], new: bool, size: int, ahead: list[int],
                                                own: int) -> None:
    assert batches_ahead(queue, new, size) == (ahead, own)


def test_refused_only_when_the_answer_would_come_after_the_timeout() -> None:
    est = Estimate(running_s=5.0, queued_s=20.0, own_s=10.0, finish_s=1.0, batches_ahead=3)
    assert est.wait_s == 36.0
    assert not est.refuse(elapsed_s=2.0, timeout_s=40.0)
    assert est.refuse(elapsed_s=5.0, timeout_s=40.0) and est.retry_after(5.0, 40.0) == 1
    assert est.retry_after(2.0, 30.0) == 8
    alone = Estimate(0.0, 0.0, 500.0, 0.0, batches_ahead=0)  # nothing ahead: waiting would not help
    assert not alone.refuse(0.0, 300.0)
    # With a headroom of a fifth, the answer must be expected within 32 s of a 40 s timeout.
    assert est.refuse(elapsed_s=2.0, timeout_s=40.0, headroom=0.2) and est.retry_after(2.0, 40.0, 0.2) == 6
    assert not est.refuse(elapsed_s=2.0, timeout_s=50.0, headroom=0.2)


def test_a_batch_cut_short_raises_the_estimate_to_what_it_ran_never_lowers_it() -> None:
    clock = BatchClock(prior_s=10.0)
    clock.observe_at_least(4, 30.0)  # cut short after 30 s: below the prior's 4 x 10 s, so it says nothing
    assert clock.estimate(4) == 40.0 and clock.measured == 0
    clock.observe_at_least(4, 55.0)  # ran 55 s and was still not done: at least that
    assert clock.estimate(4) == 55.0 and clock.measured == 1
    clock.observe(4, 50.0)
    assert clock.estimate(4) == pytest.approx(0.7 * 55.0 + 0.3 * 50.0)


def test_a_slow_batch_of_four_stops_counting_once_singles_are_fast_again() -> None:
    """In the load test a batch of four ran 1,163 s while another process had the core. Measured singles of
    50 s afterwards cap its estimate at four of them (200 s): else every question that found anything ahead
    would be refused, only singles would run, and the batch of four's estimate would never be corrected."""
    clock = BatchClock(prior_s=60.0)
    clock.observe_at_least(4, 1163.0)
    assert clock.estimate(4) == 1163.0  # nothing else measured: it stands
    clock.observe(1, 50.0)
    assert clock.estimate(4) == 200.0 and clock.estimate(3) == 150.0 and clock.estimate(1) == 50.0


# -- through the API ------------------------------------------------------------------------------------
def _post(client: Any, body: dict[str, Any]) -> tuple[int, dict[str, str], Any, float]:
    t = time.perf_counter()
    r = client.post("/v1/query", json=body)
    return r.status_code, dict(r.headers), r.json(), time.perf_counter() - t


def _wait(cond: Any, what: str) -> None:
    for _ in range(500):
        if cond():
            return
        time.sleep(0.01)
    raise AssertionError(what)


def test_the_question_that_would_outlast_the_timeout_is_refused_at_once(hash_index):
    """Measured batch 10 s, timeout 35 s, one question per batch: with one generating and two waiting,
    a fourth would answer at ~40 s: 429 at once with Retry-After; the three admitted are answered."""
    gate = threading.Event()
    gen = StreamingGenerator(f"{SUPPORTED} [1].", gate)
    client, eng = _client(hash_index, gen, None, "serve.batch_size=1", "serve.request_timeout_s=35",
                          "serve.admission_headroom=0", "verifier.answerable_min=0.5")
    with client, ThreadPoolExecutor(4) as pool:
        assert eng.wait_ready(30)
        eng.clock.observe(1, 10.0)  # what the worker records after a 10 s batch of one
        admitted = [pool.submit(_post, client, {"question": QUESTION})]
        assert gen.entered.wait(10), "the first question is generating (held by the gate)"
        for n in (1, 2):
            admitted.append(pool.submit(_post, client, {"question": QUESTION}))
            _wait(lambda n=n: eng.waiting == n, f"{n} questions waiting")
        assert eng.estimate().batches_ahead == 3 and eng.estimate().wait_s > 35.0 - 5.0

        fourth = pool.submit(_post, client, {"question": QUESTION})
        status, headers, body, took = fourth.result(timeout=8)  # without admission control it would wait
        assert status == 429 and took < 5.0, (status, body)
        assert body["status"] == 429 and "serve.request_timeout_s" in body["error"] and "\n" not in body["error"]
        assert 1 <= int(headers["retry-after"]) <= 10 and f"retry in {headers['retry-after']} s" in body["error"]

        # Questions that need no generation are answered meanwhile: evidence only, and the gate's abstention.
        status, _, body, _ = _post(client, {"question": QUESTION, "generate": False})
        assert status == 200 and not body["generated"]
        status, _, body, _ = _post(client, {"question": "zzq xylophone quokka marmalade"})
        assert status == 200 and body["abstained"] and not body["generated"]

        # A streamed question hears it in its first event (the 200 headers have gone): 429 with the wait.
        with client.stream("POST", "/v1/query", json={"question": QUESTION, "stream": True}) as r:
            raw = "".join(r.iter_text())
        assert raw.startswith("event: error"), raw[:200]
        event = json.loads(raw.split("\n")[1].removeprefix("data: "))
        assert event["status"] == 429 and event["retry_after_s"] >= 1

        ready = client.get("/readyz").json()["admission"]
        assert ready["enabled"] and ready["rejected"] == 2 and ready["batches_ahead"] == 3
        assert ready["expected_wait_s"] > 25.0 and ready["batch_seconds"]["1"] == 10.0
        text = client.get("/metrics").text
        assert 'cds_rejected_total{reason="overloaded"} 2' in text
        assert "cds_admission_expected_wait_seconds" in text and 'cds_generation_batch_seconds_mean{size="1"}' in text

        gate.set()
        assert [f.result(timeout=30)[0] for f in admitted] == [200, 200, 200]
    assert gen.batches == [1, 1, 1]


def test_without_admission_control_the_fourth_question_waits(hash_index):
    """The same queue with ``serve.admission=false``: the fourth is queued (and would risk the 504)."""
    gate = threading.Event()
    gen = StreamingGenerator(f"{SUPPORTED} [1].", gate)
    client, eng = _client(hash_index, gen, None, "serve.batch_size=1", "serve.request_timeout_s=35",
                          "serve.admission=false")
    with client, ThreadPoolExecutor(4) as pool:
        assert eng.wait_ready(30)
        eng.clock.observe(1, 10.0)
        futures = [pool.submit(_post, client, {"question": QUESTION})]
        assert gen.entered.wait(10)
        for n in (1, 2, 3):
            futures.append(pool.submit(_post, client, {"question": QUESTION}))
            _wait(lambda n=n: eng.waiting == n, f"{n} questions waiting")
        gate.set()
        assert [f.result(timeout=30)[0] for f in futures] == [200] * 4
        assert client.get("/readyz").json()["admission"]["rejected"] == 0


class Sleepy(StreamingGenerator):
    """Each generation takes ``delay`` seconds of wall time."""

    delay = 0.2

    def generate(self, messages: Any, max_new_tokens: int, temperature: float = 0.0, on_text: Any = None) -> Any:
        time.sleep(self.delay)
        return super().generate(messages, max_new_tokens, temperature, on_text)


def test_the_estimate_is_measured_from_the_batches_the_server_generates(hash_index):
    gen = Sleepy(f"{SUPPORTED} [1].")
    client, eng = _client(hash_index, gen, None, "serve.batch_size=1", "serve.admission_prior_s=30")
    with client:
        assert eng.wait_ready(30)
        before = client.get("/readyz").json()["admission"]
        assert before["measured_batches"] == 0 and before["batch_seconds"] == {}
        assert before["expected_wait_s"] == 30.0  # the prior: nothing measured, nothing ahead
        assert client.post("/v1/query", json={"question": QUESTION}).status_code == 200
        first = client.get("/readyz").json()["admission"]
        assert first["measured_batches"] == 1 and 0.2 <= first["batch_seconds"]["1"] < 1.5
        assert first["expected_wait_s"] < 2.0 and first["finish_seconds"] > 0.0
        gen.delay = 1.0
        assert client.post("/v1/query", json={"question": QUESTION}).status_code == 200
        second = client.get("/readyz").json()["admission"]["batch_seconds"]["1"]
        assert second == pytest.approx(0.7 * first["batch_seconds"]["1"] + 0.3 * 1.0, abs=0.15)


class Timed(StreamingGenerator):
    """A batch of n takes 0.6 + 0.4 n seconds (batching pays, as on a CPU)."""

    def generate(self, messages: Any, max_new_tokens: int, temperature: float = 0.0, on_text: Any = None) -> Any:
        time.sleep(1.0)
        return super().generate(messages, max_new_tokens, temperature, on_text)

    def generate_batch(self, batch: Any, max_new_tokens: int, should_stop: Any = None) -> list[Any]:
        time.sleep(0.6 + 0.4 * len(batch))
        return super().generate_batch(batch, max_new_tokens, should_stop)


def _load_test(hash_index, *overrides: str) -> tuple[dict[str, Any], dict[str, float]]:
    """eval/bench_load.py's clients (12 x 2, honouring Retry-After) against the app served by uvicorn."""
    import uvicorn

    from eval import bench_load as bl
    from serve.api import create_app

    _, eng = _client(hash_index, Timed(f"{SUPPORTED} [1]."), None, "serve.batch_size=4",
                          "serve.request_timeout_s=6", "serve.admission_prior_s=1", *overrides)
    port = bl.free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(eng.config, engine=eng), host="127.0.0.1", port=port,
                                           log_config=None, access_log=False))
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    try:
        assert eng.wait_ready(60)
        base = f"http://127.0.0.1:{port}"
        t0 = time.perf_counter()
        rows = bl.run_clients(base, [[(QUESTION, None)] * 2 for _ in range(12)], timeout=120, t0=t0,
                              max_retries=20)
        summary = bl.summarize(rows, time.perf_counter() - t0)
        print({k: v for k, v in summary.items() if k not in ("failures", "refusals")})  # shown with -s
        return summary, bl.metrics(base)
    finally:
        server.should_exit = True
        th.join(30)


def test_with_admission_control_a_load_past_capacity_gets_every_answer_by_retrying(hash_index):
    """12 clients at once: the fourth batch would end past the 6 s timeout. Admission control refuses those
    questions at once, the clients wait as told and ask again: every question answered, none timed out."""
    s, metrics = _load_test(hash_index)
    assert (s["failed"], s["refused_429"], s["requests"]) == (0, 0, 24), s["failures"]
    assert s["retries"] >= 1 and s["added_latency_max_s"] > 0 and s["refusal_max_s"] < 2.0
    assert metrics['cds_rejected_total{reason="overloaded"}'] >= 1
    assert not any('reason="timeout"' in k for k in metrics), "an admitted question timed out"


def test_without_admission_control_the_same_load_times_out(hash_index):
    s, metrics = _load_test(hash_index, "serve.admission=false")
    assert s["failed"] >= 1 and {f["status"] for f in s["failures"]} == {504} and s["retries"] == 0
    assert metrics['cds_rejected_total{reason="timeout"}'] == s["failed"]


def test_a_batch_past_its_estimate_slows_the_estimate_of_the_queue_behind_it(hash_index):
    """The CPU got slower (another process took it): the running batch of four, measured at 10 s, has run
    20 s. A newcomer's own batch is expected to take 20 s too, not 10 (the load test's 504s: questions were
    admitted on the old estimate while every batch ran past it)."""
    _, eng = _client(hash_index, StreamingGenerator(f"{SUPPORTED} [1]."), None, "serve.batch_size=4")
    eng.clock.observe(4, 10.0)
    with eng._cond:
        eng._running = (4, time.perf_counter() - 4.0)  # on time: 6 s left, the next batch 10 s
    est = eng.estimate()
    assert est.running_s == pytest.approx(6.0, abs=0.5) and est.own_s == 10.0 and est.batches_ahead == 1
    with eng._cond:
        eng._running = (4, time.perf_counter() - 20.0)  # twice its estimate so far
    est = eng.estimate()
    assert est.running_s == 0.0 and est.own_s == pytest.approx(20.0, abs=0.5)
    assert est.refuse(elapsed_s=0.0, timeout_s=24.0, headroom=0.2)  # 20 s > 19.2 s; on the old 10 s: admitted
    with eng._cond:
        eng._running = None
    assert eng.estimate().own_s == 10.0 and eng.estimate().batches_ahead == 0


class Endless(StreamingGenerator):
    """Streams words every 10 ms for 10 s unless stopped (the worker stops it once its request gave up)."""

    def generate(self, messages: Any, max_new_tokens: int, temperature: float = 0.0, on_text: Any = None) -> Any:
        for w in self.reply.split(" ") * 200:
            time.sleep(0.01)
            on_text(w + " ")
        return self._gen()


def test_a_batch_that_timed_out_teaches_the_clock_its_length(hash_index, caplog):
    """Prior 0.1 s per question, timeout 1 s: the batch runs until the request's 504 stops it, and the
    clock learns that a batch of one takes at least that long (before: a cut-short batch taught nothing,
    so admission kept admitting on the prior while every admitted question timed out)."""
    client, eng = _client(hash_index, Endless(f"{SUPPORTED} [1]."), None, "serve.request_timeout_s=1",
                          "serve.admission_prior_s=0.1")
    caplog.set_level("INFO", logger="serve.engine")
    with client:
        assert eng.wait_ready(30)
        assert client.post("/v1/query", json={"question": QUESTION}).status_code == 504
        _wait(lambda: eng.clock.measured == 1, "the cut-short batch recorded")
        assert eng.clock.estimate(1) >= 0.8
        assert client.get("/readyz").json()["admission"]["batch_seconds"]["1"] >= 0.8
    # The server log says how long each generation call ran and how many of its requests had given up.
    def logged() -> list[Any]:
        return [r for r in caplog.records if getattr(r, "event", None) == "generation"]

    _wait(logged, "the generation call logged")  # after the clock: the log line is the call's last step
    # Another test's worker may still log a late generation while this one runs: look for this call's line.
    assert any(r.batch == 1 and r.abandoned == 1 and r.ms >= 800 for r in logged()), \
        [vars(r) for r in logged()]
