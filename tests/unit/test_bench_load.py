"""eval/bench_load.py against a fake HTTP server (no models): failure counting, the update orchestration."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from corpora import load_sources
from eval import bench_load as bl


class _Fake:
    """Answers like the server: the disk version is a file (the "update" writes it); the served version
    follows it at the next question, as the real server's reload does."""

    def __init__(self, marker: Path):
        self.marker = marker
        self.go = marker.with_name("go")  # created when two "hold" questions are in: the update may publish
        self.serving = "v1"
        self.lock = threading.Lock()
        self.batches = 0
        self.holding = 0
        self.new_status_served = 0  # status responses that showed the new version on disk
        self.seen_twice = threading.Event()
        self.refusals: dict[str, int] = {}  # "busy N ..." questions: refused (429) N times, then answered

    def disk(self) -> str:
        return self.marker.read_text().strip() if self.marker.exists() else "v1"


def _handler(fake: _Fake) -> type[BaseHTTPRequestHandler]:
    class H(BaseHTTPRequestHandler):
        def log_message(self, *a: Any) -> None:
            pass

        def _send(self, status: int, body: bytes, ctype: str = "application/json",
                  headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path == "/v1/index/status":
                disk = fake.disk()
                self._send(200, json.dumps({"version": disk, "serving_version": fake.serving}).encode())
                if disk != "v1":
                    fake.new_status_served += 1
                    if fake.new_status_served >= 2:  # the monitor has recorded the first one
                        fake.seen_twice.set()
            elif self.path == "/metrics":
                text = (f"cds_generation_batch_size_count {fake.batches}\ncds_process_resident_bytes 1048576\n"
                        '# HELP x\ncds_answers_total{outcome="answered"} 2\n')
                self._send(200, text.encode(), "text/plain")
            else:
                self._send(404, b"{}")

        def do_POST(self) -> None:
            q = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["question"]
            with fake.lock:
                fake.serving = fake.disk()  # a new question picks up a published version
                version = fake.serving
            if q.startswith("slow"):
                time.sleep(0.4)
            if q == "hold":  # in flight across the publish, by construction
                with fake.lock:
                    fake.holding += 1
                    if fake.holding == 2:
                        fake.go.touch()
                fake.seen_twice.wait(30)
            if q.startswith("busy"):
                with fake.lock:
                    seen = fake.refusals[q] = fake.refusals.get(q, 0) + 1
                if seen <= int(q.split()[1]):
                    self._send(429, b'{"error": "the generator is busy; retry in 0.2 s", "status": 429}',
                               headers={"Retry-After": "0.2"})
                    return
            if q == "noheader":
                self._send(429, b'{"error": "busy", "status": 429}')
            elif q == "fail":
                self._send(500, b'{"error": "boom", "status": 500}')
            elif q == "junk":
                self._send(200, b'{"not": "an answer"}')
            elif q == "text":
                self._send(200, b"plain text, not JSON")
            else:
                fake.batches += 1
                gated = q.startswith("gated")
                self._send(200, json.dumps({"question": q, "answer": "a", "abstained": gated, "index_version": version,
                                            "citations": [], "generated": not gated}).encode())
    return H


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, _Fake]]:
    fake = _Fake(tmp_path / "version")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    th = threading.Thread(target=httpd.serve_forever, daemon=True)
    th.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", fake
    httpd.shutdown()
    httpd.server_close()


def test_every_non_answer_counts_as_failed(server: tuple[str, _Fake]) -> None:
    base, _ = server
    plan: list[list[tuple[str, str | None]]] = [[("ok one", None), ("fail", None)],
                                                [("junk", "P002"), ("gated q", None)], [("text", None), ("ok", None)]]
    rows = bl.run_clients(base, plan, timeout=10, t0=time.perf_counter())
    s = bl.summarize(rows, wall=6.0)
    assert s["requests"] == 6 and s["failed"] == 3
    assert sorted(f["status"] for f in s["failures"]) == [200, 200, 500]
    assert s["answers_per_min"] == 30.0 and s["generated_answers_per_min"] == 20.0  # 3 answers, 2 generated, in 6 s
    assert (s["generated"], s["answered"], s["abstained_before_generation"]) == (2, 2, 1)
    assert s["answers_by_index_version"] == {"v1": 3}


def test_a_429_with_retry_after_is_refused_not_failed_and_retried_on_request(server: tuple[str, _Fake]) -> None:
    base, _ = server
    plan: list[list[tuple[str, str | None]]] = [[("busy 2 a", None), ("ok", None)], [("noheader", None)]]
    rows = bl.run_clients(base, plan, timeout=10, t0=time.perf_counter())  # no retries: the 429 ends it
    s = bl.summarize(rows, wall=6.0)
    assert (s["requests"], s["failed"], s["refused_429"], s["not_answered"], s["retries"]) == (3, 1, 1, 2, 0)
    assert s["failures"][0]["status"] == 429  # a 429 without Retry-After is no admission answer: failed
    assert s["refusals"][0]["retry_after"] == 0.2 and s["refusal_max_s"] is not None

    rows = bl.run_clients(base, [[("busy 2 b", None), ("busy 9 c", None)]], timeout=10, t0=time.perf_counter(),
                          max_retries=3)
    s = bl.summarize(rows, wall=6.0)
    b, c = rows
    assert b.ok and b.retries == 2 and b.retry_wait_s == pytest.approx(0.4)
    assert b.latency_s >= 0.4 and b.attempt_start_s - b.start_s >= 0.4  # the retries' time is in the latency
    assert c.refused and c.retries == 3  # gave up after --retries
    assert (s["failed"], s["refused_429"], s["retries"], s["retried_requests"]) == (0, 1, 5, 2)
    assert s["added_latency_p50_s"] >= 0.4 and s["served_p50_s"] < s["p50_s"]


def test_no_server_is_a_failed_request_not_a_crash() -> None:
    row = bl.ask(f"http://127.0.0.1:{bl.free_port()}", "q", None, 2, time.perf_counter(), 0, 0)
    assert not row.ok and row.status == 0 and row.error


def test_update_during_load_is_recorded_with_the_switch(server: tuple[str, _Fake], tmp_path: Path) -> None:
    base, fake = server
    t0 = time.perf_counter()
    mon = bl.Monitor(base, t0, interval=0.05)
    mon.start()
    # The "update" publishes v2 once both clients' first questions are in (as `app.py index update` would,
    # printing its JSON summary); those questions are answered only after the monitor has seen v2 on disk.
    script = (f"import json, os, time\nwhile not os.path.exists({str(fake.go)!r}): time.sleep(0.01)\n"
              f"open({str(fake.marker)!r}, 'w').write('v2')\n"
              "print(json.dumps({'published': True, 'version': 'v2', 'previous': 'v1'}))")
    upd = bl.Update([sys.executable, "-c", script], t0, at=0.0)
    upd.start()
    rows = bl.run_clients(base, [[("hold", None), ("after", None), ("after", None)], [("hold", None), ("after", None)]],
                          timeout=60, t0=t0)
    upd.join()
    mon.stop()
    rep = bl.update_report(rows, upd, mon, "v1")
    assert rep["returncode"] == 0 and rep["version"] == "v2" and rep["from"] == "v1" and rep["new_version"] == "v2"
    assert rep["started_s"] >= 0.0 and rep["finished_s"] > rep["started_s"]
    assert rep["switched"] and rep["server_switched_s"] >= rep["published_seen_s"]
    assert rep["during_update"]["requests"] >= 2 and rep["during_update"]["failed"] == 0
    assert rep["in_flight_at_publish"] == {"in_flight": 2, "failed": 0}  # both held questions, both answered
    assert bl.summarize(rows, 1.0)["answers_by_index_version"] == {"v1": 2, "v2": 3}
    assert mon.changes[0]["serving"] == "v1" and mon.changes[-1]["serving"] == "v2"


def test_a_publish_after_the_last_question_is_confirmed_by_a_probe(server: tuple[str, _Fake]) -> None:
    base, fake = server
    t0 = time.perf_counter()
    mon = bl.Monitor(base, t0, interval=0.05)
    mon.start()
    rows = bl.run_clients(base, [[("quick", None)]], timeout=10, t0=t0)
    fake.marker.write_text("v2")  # published after the last question: the server has not switched yet
    mon.stop()
    assert mon.published_at("v2") is not None and mon.switched_at("v2") is None
    assert bl.probe_switch(base, "quick", mon, "v2") and mon.switched_at("v2") is not None
    assert not bl.probe_switch(base, "quick", mon, None)
    assert rows[0].index_version == "v1"


def test_batch_sizes_from_the_cumulative_histogram() -> None:
    def hist(counts: dict[str, float]) -> dict[str, float]:
        return {f'cds_generation_batch_size_bucket{{le="{k}"}}': v for k, v in counts.items()}

    before = hist({"1": 4, "2": 4, "4": 4, "8": 4, "+Inf": 4})  # the warm-up's 4 single calls
    after = hist({"1": 6, "2": 7, "4": 10, "8": 10, "+Inf": 11})
    assert bl.batch_sizes(after, before) == {"1": 2, "2": 1, "3-4": 3, ">8": 1}


def test_a_failed_update_is_not_reported_as_a_switch(server: tuple[str, _Fake]) -> None:
    base, _ = server
    t0 = time.perf_counter()
    mon = bl.Monitor(base, t0, interval=0.05)
    mon.start()
    upd = bl.Update([sys.executable, "-c", "import sys; sys.stderr.write('refused'); sys.exit(2)"], t0, at=0.0)
    upd.start()
    rows = bl.run_clients(base, [[("slow", None)]], timeout=10, t0=t0)
    upd.join()
    mon.stop()
    rep = bl.update_report(rows, upd, mon, "v1")
    assert rep["returncode"] == 2 and not rep["switched"] and rep["stderr_tail"] == "refused"


def test_metrics_delta_and_percentiles(server: tuple[str, _Fake]) -> None:
    base, fake = server
    before = bl.metrics(base)
    fake.batches = 3
    d = bl.delta(bl.metrics(base), before, "cds_generation_batch_size_count")
    assert d == {"cds_generation_batch_size_count": 3.0}
    assert bl.metrics(base)['cds_answers_total{outcome="answered"}'] == 2.0
    assert bl.percentile([1.0, 2.0, 3.0, 4.0], 0.95) == 4.0 and bl.percentile([1.0, 2.0], 0.5) == 1.0
    assert bl.percentile(list(map(float, range(1, 101))), 0.95) == 95.0 and bl.percentile([], 0.5) is None


def test_questions_cycle_and_default_set(tmp_path: Path) -> None:
    qs = bl.default_questions()
    assert len(qs) == 32 and all(q for q, _ in qs)  # the demo dev split
    plan = bl.cycle(qs, clients=8, per_client=25)
    assert len(plan) == 8 and all(len(p) == 25 for p in plan)
    assert [p[0] for p in plan] == qs[:8] and plan[0][1] == qs[8]  # the first round asks 8 different questions
    f = tmp_path / "q.jsonl"
    f.write_text('{"question": "A?", "patient_id": "P002"}\n\n{"question": "B?"}\n', encoding="utf-8")
    assert bl.load_questions(f) == [("A?", "P002"), ("B?", None)]
    f.write_text('{"text": "no question"}\n', encoding="utf-8")
    with pytest.raises(SystemExit):
        bl.load_questions(f)


def test_the_marker_document_is_one_new_guideline(tmp_path: Path) -> None:
    path = bl.write_marker(tmp_path / "loadtest", "20261201T000000")
    docs = load_sources([tmp_path / "loadtest"]).documents
    assert [(d.doc_id, d.kind) for d in docs] == [("loadtest-20261201T000000", "guideline")]
    assert path.exists()


def test_the_journal_keeps_each_answer_as_it_comes_and_summarizes_a_cut_run(server: tuple[str, _Fake],
                                                                           tmp_path: Path) -> None:
    base, _ = server
    path = tmp_path / "out.journal.jsonl"
    journal = bl.Journal(path)
    journal.write("start", {"command": "an earlier invocation"})
    journal.write("run", {"batch_size": 1})
    journal.write("row", {"client": 0, "n": 0, "question": "stale", "patient": None, "start_s": 0.0, "ok": False})
    journal.write("start", {"command": "this invocation"})  # a new invocation: the earlier one is not counted
    journal.write("run", {"batch_size": 4, "server_ready_s": 1.0})
    t0 = time.perf_counter()
    mon = bl.Monitor(base, t0, interval=0.05, journal=journal)
    mon.start()
    rows = bl.run_clients(base, [[("ok one", None), ("fail", None)], [("gated q", None)]], timeout=10, t0=t0,
                          journal=journal)
    mon.stop()
    lines = path.read_text(encoding="utf-8").splitlines()
    assert sum(1 for ln in lines if json.loads(ln)["event"] == "row") == 4  # every question, as it ended
    with path.open("a", encoding="utf-8") as f:
        f.write('{"event": "row", "client": 1, "n"')  # killed mid-line: no "end" event, a torn last line
    [run] = bl.summarize_journal(path)
    assert run["batch_size"] == 4 and run["complete"] is False
    assert (run["requests"], run["failed"], run["generated"], run["abstained_before_generation"]) == (3, 1, 1, 1)
    assert run["wall_s"] == pytest.approx(max(r.end_s for r in rows), abs=0.06)  # rounded to 0.1 s
    assert run["index_versions_seen"][0]["serving"] == "v1"


def test_a_run_journals_its_end_and_summarize_reads_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "j.jsonl"
    journal = bl.Journal(path)
    journal.write("run", {"batch_size": 4})
    row = bl.Row(0, 0, "q", None, 0.5, end_s=2.5, status=200, ok=True, index_version="v2", generated=True,
                 abstained=False)
    journal.write("row", bl.row_json(row))
    journal.write("update", {"version": "v2", "returncode": 0})
    journal.write("end", {"failed": 0})
    assert bl.main(["--summarize", str(path)]) == 0
    [run] = json.loads(capsys.readouterr().out)
    assert run["complete"] and run["update"]["version"] == "v2" and run["answers_by_index_version"] == {"v2": 1}
    assert run["p50_s"] == 2.0 and run["answered"] == 1
    args = bl.parse(["--output", str(tmp_path / "x.json")])
    assert bl.journal_path(args) == tmp_path / "x.journal.jsonl" and bl.journal_path(bl.parse([])) is None


def test_once_the_run_is_stopping_nothing_more_is_asked_or_recorded(server: tuple[str, _Fake], tmp_path: Path) -> None:
    """An interrupted run stops its server: the clients' connection errors after that are the stop's doing,
    not failures of the server, and must not reach the journal (they did in the seventh session's run)."""
    base, _ = server
    stop = threading.Event()
    journal = bl.Journal(tmp_path / "j.jsonl")
    timer = threading.Timer(0.2, stop.set)
    timer.start()
    rows = bl.run_clients(base, [[("slow a", None), ("slow b", None)], [("quick", None), ("slow c", None)]],
                          timeout=10, t0=time.perf_counter(), journal=journal, stopping=stop)
    timer.join()
    assert [r.question for r in rows] == ["quick"]  # "slow a" and "slow c" ended after the stop; "slow b" never asked
    [run] = bl.summarize_journal(tmp_path / "j.jsonl")
    assert run["requests"] == 1 and run["failed"] == 0
