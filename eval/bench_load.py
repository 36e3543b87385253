"""Load test of the warm server: N concurrent clients, optionally while `index update` publishes a new version.

    .venv/bin/python -m eval.bench_load [--index DIR] [--questions FILE.jsonl] [--clients 8] [--per-client 25]
                                        [--update-during] [--update-at 30] [--batch-sizes 1,4] [--retries 20]
                                        [--config FILE] [--set KEY=VALUE ...] [--output FILE.json]
                                        [--journal FILE.jsonl]
    .venv/bin/python -m eval.bench_load --summarize FILE.jsonl

The server (``app.py serve``, started here) always serves a scratch copy of the index (``--index``, default
``index.dir`` of the config), made in a temporary folder: the index given is only read. Each client thread
asks its questions one after another, non-streamed (so the server may batch them). A 429 with Retry-After
(the server's admission control: the generator queue would outlast ``serve.request_timeout_s``) counts as
refused; every other response but a 200 whose body is an answer JSON counts as failed (HTTP errors, 504
timeouts, refused connections, bodies that are not an answer). ``--retries N``: a client honours
Retry-After, waits and asks again (up to N times), and the report gives the retries and the latency they
added; latency is from the first attempt to the answer. Exit status 1 when any question went unanswered
(failed or refused) or the update did not publish and switch.

``--update-during``: ``--update-at`` seconds after the clients start, a separate ``app.py index update``
process publishes a new version of the scratch index: the sources the index was built from (its manifest)
plus one document written at run time (a short marker note in our own words, no clinical content). A
monitor polls ``GET /v1/index/status`` meanwhile, so the report says when the server switched versions,
which version each answer came from, and whether the requests in flight across the switch succeeded.

``--batch-sizes 1,4``: the whole run once per ``serve.batch_size`` (a fresh server and scratch index each),
for the batching A/B; without it the config's value is used.

Reported per run: failed and refused (429) requests, retries and the latency they added, p50/p95 latency,
answers per minute, wall, the server's RSS (after, and its peak from /proc), its CPU seconds, generation
calls and batch sizes (from /metrics), answers generated, abstained after generation and abstained before
generation (by the answerability gate), the load average.

The journal (``--journal``; with ``--output`` by default beside it, ``NAME.journal.jsonl``) records each
question's outcome, the index changes and the update as they happen, flushed at once: a run that is killed
or times out keeps what it had, and ``--summarize JOURNAL`` reports it (the summary of the questions
answered so far, per run, with ``complete`` false).

Default questions: the dev questions of eval/questions/demo_answerable.jsonl (eval/splits/trust.json), in
file order, cycled to fill clients x per-client; 30 of these 32 reached generation in the trust dev runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEMO_QUESTIONS = ROOT / "eval" / "questions" / "demo_answerable.jsonl"
SPLITS = ROOT / "eval" / "splits" / "trust.json"
ANSWER_FIELDS = {"question": str, "answer": str, "abstained": bool, "index_version": str, "citations": list,
                 "generated": bool}

# -- questions --------------------------------------------------------------------------------------
def load_questions(path: Path) -> list[tuple[str, str | None]]:
    """``question`` (required) and ``patient_id`` (optional) of each JSONL line."""
    out: list[tuple[str, str | None]] = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        rec = json.loads(line)
        if not isinstance(rec, dict) or not isinstance(rec.get("question"), str) or not rec["question"].strip():
            raise SystemExit(f"{path}:{n}: each line needs a non-empty \"question\" string")
        pid = rec.get("patient_id")
        out.append((rec["question"], str(pid) if pid else None))
    if not out:
        raise SystemExit(f"{path}: no questions")
    return out


def default_questions() -> list[tuple[str, str | None]]:
    """The dev questions of the demo answerable suite (ids from the trust split), in file order."""
    dev = set(json.loads(SPLITS.read_text(encoding="utf-8"))["dev"]["demo_answerable"])
    rows = [json.loads(line) for line in DEMO_QUESTIONS.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [(r["question"], r.get("patient_id")) for r in rows if r["id"] in dev]


def cycle(qs: list[tuple[str, str | None]], clients: int, per_client: int) -> list[list[tuple[str, str | None]]]:
    """Each client's questions: the list cycled, so the first ``clients`` questions start at once."""
    return [[qs[(j * clients + i) % len(qs)] for j in range(per_client)] for i in range(clients)]


# -- one request ------------------------------------------------------------------------------------
def is_answer(body: Any) -> bool:
    """Whether a 200 body is an answer JSON (``app.py query --json``), not something else."""
    return isinstance(body, dict) and all(isinstance(body.get(k), t) for k, t in ANSWER_FIELDS.items())


@dataclass
class Row:
    client: int
    n: int
    question: str
    patient: str | None
    start_s: float
    end_s: float = 0.0
    status: int = 0  # 0: no HTTP response (refused, reset, timed out)
    ok: bool = False
    error: str | None = None
    index_version: str | None = None
    generated: bool | None = None
    abstained: bool | None = None
    retry_after: float | None = None  # the last response's Retry-After (seconds), when it had one
    retries: int = 0  # 429s honoured: asked again after Retry-After
    retry_wait_s: float = 0.0  # seconds slept on Retry-After
    attempt_start_s: float = 0.0  # when the last attempt started (after the retries)
    refusal_s: float = 0.0  # the slowest 429 answer (admission control should refuse at once)

    @property
    def latency_s(self) -> float:
        """From the first attempt to the last response: retries and their waits included."""
        return self.end_s - self.start_s

    @property
    def refused(self) -> bool:
        """Ended with a 429 carrying Retry-After: the overloaded server's correct answer, but no answer."""
        return not self.ok and self.status == 429 and self.retry_after is not None


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:  # an HTTP date: not sent by this server
        return None


def attempt(base: str, row: Row, timeout: float, t0: float) -> None:
    """One POST /v1/query for the row's question; its outcome goes in ``row``."""
    body = json.dumps({"question": row.question, "patient_id": row.patient}).encode()
    req = urllib.request.Request(base + "/v1/query", data=body, headers={"Content-Type": "application/json"})
    row.attempt_start_s = time.perf_counter() - t0
    row.ok, row.error, row.retry_after = False, None, None
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            row.status = r.status
            raw = r.read()
        try:
            ans = json.loads(raw)
        except ValueError:
            ans = None
        if row.status == 200 and is_answer(ans):
            row.ok = True
            row.index_version, row.generated, row.abstained = ans["index_version"], ans["generated"], ans["abstained"]
        else:
            row.error = "the body is not an answer JSON"
    except urllib.error.HTTPError as e:
        row.status = e.code
        row.retry_after = _retry_after(e.headers.get("Retry-After"))
        row.error = e.read().decode(errors="replace")[:200]
    except (OSError, ValueError) as e:  # refused, reset, timed out, a broken response
        row.status = 0
        row.error = f"{type(e).__name__}: {e}"[:200]
    row.end_s = time.perf_counter() - t0


def ask(base: str, q: str, pid: str | None, timeout: float, t0: float, client: int, n: int,
        max_retries: int = 0) -> Row:
    """Ask one question; after a 429 with Retry-After, wait that long and ask again, up to ``max_retries``
    times (and while the question's total time stays under ``timeout``)."""
    row = Row(client, n, q, pid, time.perf_counter() - t0)
    while True:
        attempt(base, row, timeout, t0)
        if row.status == 429:
            row.refusal_s = max(row.refusal_s, row.end_s - row.attempt_start_s)
        if not row.refused or row.retries >= max_retries:
            return row
        assert row.retry_after is not None
        if row.end_s - row.start_s + row.retry_after > timeout:
            return row
        time.sleep(row.retry_after)
        row.retries += 1
        row.retry_wait_s += row.retry_after


def run_clients(base: str, plan: list[list[tuple[str, str | None]]], timeout: float, t0: float,
                max_retries: int = 0, journal: Journal | None = None, stopping: threading.Event | None = None
                ) -> list[Row]:
    """One thread per client, each asking its questions one after another; each finished question goes to
    the journal at once, when there is one. Once ``stopping`` is set (the run was interrupted and its server
    is being stopped) nothing more is asked or recorded: those failures would be the stop's, not the server's."""
    rows: list[Row] = []
    lock = threading.Lock()

    def client(i: int) -> None:
        for n, (q, pid) in enumerate(plan[i]):
            if stopping is not None and stopping.is_set():
                return
            row = ask(base, q, pid, timeout, t0, i, n, max_retries)
            with lock:
                if stopping is not None and stopping.is_set():
                    return
                rows.append(row)
                if journal is not None:
                    journal.write("row", row_json(row))

    # Daemon threads: a SIGTERM (sys.exit in the main thread) must not wait for clients sleeping on Retry-After.
    threads = [threading.Thread(target=client, args=(i,), name=f"client-{i}", daemon=True) for i in range(len(plan))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return sorted(rows, key=lambda r: r.start_s)


def row_json(row: Row) -> dict[str, Any]:
    return {**asdict(row), "latency_s": round(row.latency_s, 2), "start_s": round(row.start_s, 2),
            "end_s": round(row.end_s, 2)}


class Journal:
    """An append-only JSONL record of a run as it goes (one line per event, flushed and synced at once), so an
    interrupted or killed run keeps every answered question: ``--summarize JOURNAL`` reports from it.

    Events: ``run`` (a server is ready: its batch size, ready time), ``row`` (one question's outcome, as in
    the summary's ``rows``), ``index`` (the monitor saw the served or on-disk version change), ``update``
    (the update process ended), ``end`` (the run's summary, less its rows).
    """

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def write(self, event: str, data: dict[str, Any]) -> None:
        line = json.dumps({"event": event, "wall_time": datetime.now(UTC).isoformat(timespec="seconds"), **data})
        with self._lock, open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())


def read_journal(path: Path) -> list[dict[str, Any]]:
    """The runs of the journal's last invocation (from its last ``start`` event): each ``run`` event with its
    rows, index changes, update and end (when it got that far). A torn line (the writer killed mid-line) is
    skipped."""
    runs: list[dict[str, Any]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        kind = ev.pop("event", None)
        if kind == "start":
            runs = []
            continue
        if kind == "run" or not runs:
            runs.append({"run": ev if kind == "run" else {}, "rows": [], "index": [], "update": None, "end": None})
        if kind == "row":
            runs[-1]["rows"].append(ev)
        elif kind == "index":
            runs[-1]["index"].append(ev)
        elif kind in ("update", "end"):
            runs[-1][kind] = ev
    return runs


def summarize_journal(path: Path) -> list[dict[str, Any]]:
    """Per run of a journal: the summary of the questions answered so far (``summarize``), with the wall up
    to the last question recorded, whether the run ended, and what the monitor and the update recorded."""
    names = {f.name for f in fields(Row)}
    out = []
    for run in read_journal(path):
        rows = [Row(**{k: v for k, v in r.items() if k in names}) for r in run["rows"]]
        wall = max((r.end_s for r in rows), default=0.0)
        out.append({**run["run"], "complete": run["end"] is not None, **summarize(rows, wall),
                    "index_versions_seen": run["index"], "update": run["update"]})
    return out


# -- what the server says ---------------------------------------------------------------------------
def get_json(base: str, path: str, timeout: float = 30) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(base + path, timeout=timeout) as r:
            out = json.loads(r.read())
            return out if isinstance(out, dict) else None
    except (OSError, ValueError):
        return None


def metrics(base: str) -> dict[str, float]:
    """Every sample of /metrics, keyed by its name with labels (``name{a="b"}``)."""
    with urllib.request.urlopen(base + "/metrics", timeout=30) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def delta(after: dict[str, float], before: dict[str, float], prefix: str) -> dict[str, float]:
    return {k: round(v - before.get(k, 0.0), 3) for k, v in sorted(after.items())
            if k.startswith(prefix) and v != before.get(k, 0.0)}


def proc_status(pid: int, key: str) -> int | None:
    """A /proc/PID/status field in bytes (VmRSS, VmHWM), None when unreadable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


@dataclass
class Monitor:
    """Polls the served index version (and the server's RSS) until stopped; records every change."""

    base: str
    t0: float
    pid: int | None = None
    interval: float = 1.0
    changes: list[dict[str, Any]] = field(default_factory=list)
    rss_peak: int = 0
    journal: Journal | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def poll(self) -> None:
        st = get_json(self.base, "/v1/index/status", timeout=max(5.0, self.interval * 5))
        if st is not None:
            seen = {"on_disk": st.get("version"), "serving": st.get("serving_version")}
            last = self.changes[-1] if self.changes else {}
            if any(last.get(k) != v for k, v in seen.items()):
                self.changes.append({"t_s": round(time.perf_counter() - self.t0, 2), **seen})
                if self.journal is not None:
                    self.journal.write("index", self.changes[-1])
        if self.pid is not None:
            self.rss_peak = max(self.rss_peak, proc_status(self.pid, "VmRSS") or 0)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.poll()

    def start(self) -> None:
        self.poll()
        self._thread = threading.Thread(target=self._run, name="monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.poll()

    def switched_at(self, version: str | None) -> float | None:
        """When the monitor first saw the server serving ``version`` (an upper bound, to one interval)."""
        return next((c["t_s"] for c in self.changes if version and c["serving"] == version), None)

    def published_at(self, version: str | None) -> float | None:
        return next((c["t_s"] for c in self.changes if version and c["on_disk"] == version), None)


# -- the update -------------------------------------------------------------------------------------
def write_marker(folder: Path, stamp: str) -> Path:
    """One new document (our own words, no clinical content) for the update to publish."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"loadtest-{stamp}.md"
    path.write_text(
        "---\n"
        f"doc_id: loadtest-{stamp}\n"
        f"title: Load test marker {stamp}\n"
        "kind: guideline\n"
        "notice: written by eval/bench_load.py; not clinical content\n"
        "---\n"
        f"# Load test marker {stamp}\n\n"
        "This note was written by the serving load test so that an index update has something new to publish\n"
        "while clients are asking questions. It gives no clinical guidance and should not be cited.\n",
        encoding="utf-8")
    return path


def scratch_index(src: Path, dest: Path) -> Path:
    """A copy of the index root ``src`` (every version, the history and the embedding cache) at ``dest``."""
    from rag.index import current_version

    if current_version(src) is None:
        raise SystemExit(f"no index at {src}: build it first (e.g. `python app.py query \"...\"` builds the demo "
                         "index) or pass --index")
    shutil.copytree(src, dest, symlinks=True, ignore=shutil.ignore_patterns(".tmp-*", ".trash-*", ".CURRENT.*"))
    return dest


def index_sources(index: Path) -> list[str]:
    """The sources the current version was built from (its manifest), which must still exist."""
    from rag.index import read_manifest

    _, m = read_manifest(index)
    paths = [s["path"] for s in m.get("sources", [])]
    missing = [p for p in paths if not Path(p).exists()]
    if not paths or missing:
        raise SystemExit(f"{index}: the sources it was built from are not all here ({missing or 'none listed'}); "
                         "--update-during needs them")
    return paths


@dataclass
class Update:
    """``app.py index update`` run in a thread ``at`` seconds after ``t0``."""

    cmd: list[str]
    t0: float
    at: float
    start_s: float | None = None
    end_s: float | None = None
    returncode: int | None = None
    summary: dict[str, Any] | None = None
    stderr_tail: str = ""
    cpu_s: float | None = None
    _thread: threading.Thread | None = None
    _proc: subprocess.Popen[str] | None = None

    def _run(self) -> None:
        time.sleep(max(0.0, self.at - (time.perf_counter() - self.t0)))
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.start_s = round(time.perf_counter() - self.t0, 2)
        self._proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        stdout, stderr = self._proc.communicate()
        self.end_s = round(time.perf_counter() - self.t0, 2)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.cpu_s = round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 2)
        self.returncode = self._proc.returncode
        self.stderr_tail = stderr.strip()[-500:]
        lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
        if lines:
            with contextlib.suppress(ValueError):
                self.summary = json.loads(lines[-1])

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="update", daemon=True)
        self._thread.start()

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join()

    def stop(self) -> None:
        """End the update process if it is still running (the run was interrupted)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()

    def report(self) -> dict[str, Any]:
        s = self.summary or {}
        return {"started_s": self.start_s, "finished_s": self.end_s, "returncode": self.returncode,
                "cpu_s": self.cpu_s, "version": s.get("version"), "from": s.get("previous") or s.get("from"),
                "summary": self.summary, "stderr_tail": self.stderr_tail if self.returncode else ""}


# -- the run ----------------------------------------------------------------------------------------
def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest rank (no interpolation): the smallest value with at least ``q`` of the values at or below it."""
    if not sorted_values:
        return None
    return round(sorted_values[min(len(sorted_values), max(1, math.ceil(q * len(sorted_values)))) - 1], 2)


def summarize(rows: list[Row], wall: float) -> dict[str, Any]:
    """Failed: no answer for any reason but a 429 with Retry-After, which is counted as refused (an
    overloaded server's correct answer; still no answer: the issue's "0 failed" needs both at 0)."""
    ok = [r for r in rows if r.ok]
    lat = sorted(r.latency_s for r in ok)
    failed = [r for r in rows if not r.ok and not r.refused]
    refused = [r for r in rows if r.refused]
    retried = [r for r in rows if r.retries]
    added = sorted(r.attempt_start_s - r.start_s for r in retried if r.ok)
    served = sorted(r.end_s - r.attempt_start_s for r in ok)
    refusals = [r.refusal_s for r in rows if r.refusal_s]
    versions: dict[str, int] = {}
    for r in ok:
        versions[str(r.index_version)] = versions.get(str(r.index_version), 0) + 1
    return {"requests": len(rows), "failed": len(failed), "refused_429": len(refused),
            "not_answered": len(failed) + len(refused),
            "failures": [{"status": r.status, "error": r.error, "question": r.question[:80]} for r in failed][:20],
            "refusals": [{"retry_after": r.retry_after, "retries": r.retries, "error": r.error} for r in refused][:5],
            "retries": sum(r.retries for r in rows), "retried_requests": len(retried),
            "retry_wait_s": round(sum(r.retry_wait_s for r in rows), 1),
            "added_latency_p50_s": round(statistics.median(added), 2) if added else None,
            "added_latency_max_s": round(added[-1], 2) if added else None,
            "served_p50_s": round(statistics.median(served), 2) if served else None,
            "served_p95_s": percentile(served, 0.95),
            "refusal_max_s": round(max(refusals), 2) if refusals else None,
            "wall_s": round(wall, 1),
            "p50_s": round(statistics.median(lat), 2) if lat else None, "p95_s": percentile(lat, 0.95),
            "max_s": round(lat[-1], 2) if lat else None,
            "answers_per_min": round(60 * len(ok) / wall, 2) if wall > 0 else None,
            "generated_answers_per_min": round(60 * sum(1 for r in ok if r.generated) / wall, 2) if wall > 0 else None,
            "generated": sum(1 for r in ok if r.generated),
            "answered": sum(1 for r in ok if not r.abstained),
            "abstained_after_generation": sum(1 for r in ok if r.abstained and r.generated),
            "abstained_before_generation": sum(1 for r in ok if r.abstained and not r.generated),
            "answers_by_index_version": versions}


def across(rows: list[Row], t: float | None) -> dict[str, int] | None:
    """Requests in flight at time ``t`` (started before, ended after): how many, how many failed."""
    if t is None:
        return None
    spanning = [r for r in rows if r.start_s < t < r.end_s]
    return {"in_flight": len(spanning), "failed": sum(1 for r in spanning if not r.ok)}


def update_report(rows: list[Row], upd: Update, mon: Monitor, before: str | None) -> dict[str, Any]:
    """When the update ran, when the server switched, and what happened to the requests in flight."""
    rep = upd.report()
    new = rep["version"] if rep["version"] != before else None
    switched = mon.switched_at(new)
    published = mon.published_at(new)
    window = [r for r in rows if upd.start_s is not None and upd.end_s is not None
              and r.start_s < upd.end_s and r.end_s > upd.start_s]
    return {**rep, "serving_before": before, "new_version": new, "published_seen_s": published,
            "server_switched_s": switched, "switched": switched is not None,
            "during_update": {"requests": len(window), "failed": sum(1 for r in window if not r.ok)},
            "in_flight_at_publish": across(rows, published if published is not None else upd.end_s),
            "in_flight_at_switch": across(rows, switched),
            "answers_after_switch_from_new_version": sum(1 for r in rows if r.ok and switched is not None
                                                         and r.start_s > switched and r.index_version == new)}


def _common(args: argparse.Namespace) -> list[str]:
    out = ["--config", args.config] if args.config else []
    for s in args.set or []:
        out += ["--set", s]
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(cmd: list[str], log_path: Path, base: str, limit_s: float = 900
                 ) -> tuple[subprocess.Popen[bytes], float]:
    """Start ``app.py serve`` and wait for /readyz (its JSON log goes to ``log_path``)."""
    t = time.perf_counter()
    with open(log_path, "wb") as log:
        server = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log)
    while time.perf_counter() - t < limit_s:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with {server.returncode}; its log: {log_path}")
        try:
            with urllib.request.urlopen(base + "/readyz", timeout=2) as r:
                if r.status == 200:
                    return server, time.perf_counter() - t
        except OSError:
            time.sleep(0.5)
    server.terminate()
    raise SystemExit(f"the server was not ready within {limit_s:.0f} s; its log: {log_path}")


def batch_sizes(after: dict[str, float], before: dict[str, float]) -> dict[str, int]:
    """Generation calls by batch size, from the cumulative ``cds_generation_batch_size`` buckets."""
    d = delta(after, before, "cds_generation_batch_size_bucket")
    edges = sorted((float(k.split('le="')[1].rstrip('"}')), v) for k, v in d.items())
    out, lo, below = {}, 0.0, 0.0
    for edge, cum in edges:
        if cum > below:
            name = f"{lo + 1:g}" if edge == lo + 1 else (f"{lo + 1:g}-{edge:g}" if edge != float("inf") else f">{lo:g}")
            out[name] = int(cum - below)
        lo, below = edge, cum
    return out


def server_facts(after: dict[str, float], before: dict[str, float], mon: Monitor, pid: int,
                 cpu0: float | None) -> dict[str, Any]:
    """The server's side of one run: CPU, memory, generation calls, outcomes (from /metrics and /proc)."""
    cpu1 = cpu_seconds(pid)
    return {"server_cpu_s": round(cpu1 - cpu0, 1) if cpu0 is not None and cpu1 is not None else None,
            "server_rss_mb": round(after.get("cds_process_resident_bytes", 0) / 2**20),
            "server_rss_peak_sampled_mb": round(mon.rss_peak / 2**20),
            "server_rss_hwm_mb": round((proc_status(pid, "VmHWM") or 0) / 2**20),
            "generation_calls": int(after.get("cds_generation_batch_size_count", 0)
                                    - before.get("cds_generation_batch_size_count", 0)),
            "generation_batch_sizes": batch_sizes(after, before),
            "questions_generated_server": int(after.get("cds_generation_batch_size_sum", 0)
                                              - before.get("cds_generation_batch_size_sum", 0)),
            "answers_total": delta(after, before, "cds_answers_total"),
            "rejected_total": delta(after, before, "cds_rejected_total")}


def probe_switch(base: str, question: str, mon: Monitor, new: str | None) -> bool:
    """After the load, when no question arrived after the publish (a short run): one evidence-only question
    (no generation) makes the server pick up the new version; whether it did."""
    if not new or mon.switched_at(new) is not None:
        return False
    body = json.dumps({"question": question, "generate": False}).encode()
    req = urllib.request.Request(base + "/v1/query", data=body, headers={"Content-Type": "application/json"})
    with contextlib.suppress(OSError), urllib.request.urlopen(req, timeout=300) as r:
        r.read()
    mon.poll()
    return mon.switched_at(new) is not None


def start_update(args: argparse.Namespace, index: Path, folder: Path, t0: float) -> Update:
    write_marker(folder, datetime.now(UTC).strftime("%Y%m%dT%H%M%S"))
    upd = Update([sys.executable, str(ROOT / "app.py"), *_common(args), "index", "update", *index_sources(index),
                  str(folder), "--index", str(index), "--json", "-q"], t0, args.update_at)
    upd.start()
    return upd


def run_once(args: argparse.Namespace, plan: list[list[tuple[str, str | None]]], batch_size: int | None,
             work: Path, journal: Journal | None = None) -> dict[str, Any]:
    """One server on a fresh scratch index: the clients, and the update when asked (each step journalled)."""
    tag = f"bs{batch_size}" if batch_size else "config"
    index = scratch_index(Path(args.index or _config_index(args)).resolve(), work / f"index-{tag}")
    sets = _common(args) + (["--set", f"serve.batch_size={batch_size}"] if batch_size else [])
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, str(ROOT / "app.py"), *sets, "serve", "--port", str(port), "--index", str(index)]
    server, ready_s = start_server(cmd, work / f"server-{tag}.log", base)
    out: dict[str, Any] = {"batch_size": batch_size or _config_batch(args), "server_ready_s": round(ready_s, 1),
                           "server_log": str(work / f"server-{tag}.log")}
    if journal is not None:
        journal.write("run", out)
    upd: Update | None = None
    stopping = threading.Event()  # set when the run ends or is interrupted: the clients record nothing after
    try:
        before_m, cpu0 = metrics(base), cpu_seconds(server.pid)
        serving0 = (get_json(base, "/v1/index/status") or {}).get("serving_version")
        t0 = time.perf_counter()
        mon = Monitor(base, t0, server.pid, args.poll_s, journal=journal)
        mon.start()
        upd = start_update(args, index, work / f"sources-{tag}" / "loadtest", t0) if args.update_during else None
        load0 = os.getloadavg()
        rows = run_clients(base, plan, args.timeout_s, t0, args.retries, journal, stopping)
        wall = time.perf_counter() - t0
        if upd is not None:
            upd.join()
            if journal is not None:
                journal.write("update", upd.report())
        mon.stop()
        after_m = metrics(base)
        out.update(summarize(rows, wall))
        out["load_average"] = {"start": [round(x, 2) for x in load0], "end": [round(x, 2) for x in os.getloadavg()]}
        out.update(server_facts(after_m, before_m, mon, server.pid, cpu0))
        if upd is not None:
            rep = update_report(rows, upd, mon, serving0)
            rep["switched_by_probe_after_load"] = probe_switch(base, plan[0][0][0], mon, rep["new_version"])
            rep["switched"] = rep["switched"] or rep["switched_by_probe_after_load"]
            out["update"] = rep
        out["index_versions_seen"] = mon.changes
        if journal is not None:
            journal.write("end", out)
        out["rows"] = [row_json(r) for r in rows]
    finally:
        stopping.set()
        if upd is not None:
            upd.stop()
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
    return out


def _config_index(args: argparse.Namespace) -> str:
    from rag.config import load_config, resolve_path

    return str(resolve_path(load_config(args.config, overrides=args.set or []).index.dir))


def _config_batch(args: argparse.Namespace) -> int:
    from rag.config import load_config

    return load_config(args.config, overrides=args.set or []).serve.batch_size


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--index", help="index root to copy (default: index.dir of the config); only read")
    p.add_argument("--config")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="config override for the server and update")
    p.add_argument("--questions", type=Path, help="JSONL: question, optional patient_id (default: the demo dev set)")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--per-client", type=int, default=25)
    p.add_argument("--update-during", action="store_true", help="publish a new index version while the clients run")
    p.add_argument("--update-at", type=float, default=30.0, help="seconds after the clients start (default 30)")
    p.add_argument("--batch-sizes", help="comma-separated serve.batch_size values, one run each (A/B)")
    p.add_argument("--timeout-s", type=float, default=1200.0, help="client timeout per question (retries included)")
    p.add_argument("--retries", type=int, default=0, metavar="N",
                   help="after a 429 with Retry-After, wait that long and ask again, up to N times per question "
                        "(default 0: a 429 ends the question, counted as refused)")
    p.add_argument("--poll-s", type=float, default=1.0, help="seconds between index status polls")
    p.add_argument("--keep", action="store_true", help="keep the scratch folder (indexes, server logs)")
    p.add_argument("--output", help="write the summary JSON here")
    p.add_argument("--journal", type=Path, help="append every answered question and event here as it happens "
                   "(JSONL; default with --output: OUTPUT's name with .journal.jsonl)")
    p.add_argument("--summarize", type=Path, metavar="JOURNAL",
                   help="only report from a journal (e.g. of an interrupted run): the summary of each run so far")
    args = p.parse_args(argv)
    if args.clients < 1 or args.per_client < 1:
        p.error("--clients and --per-client must be at least 1")
    if args.retries < 0:
        p.error("--retries must be 0 or more")
    return args


def journal_path(args: argparse.Namespace) -> Path | None:
    if args.journal:
        return Path(args.journal)
    return Path(args.output).with_suffix(".journal.jsonl") if args.output else None


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.summarize:
        print(json.dumps(summarize_journal(args.summarize), indent=1))
        return 0
    # A SIGTERM (a job runner's timeout) unwinds like Ctrl-C: the server is stopped, the scratch folder kept.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    qs = load_questions(args.questions) if args.questions else default_questions()
    plan = cycle(qs, args.clients, args.per_client)
    sizes = [int(x) for x in args.batch_sizes.split(",")] if args.batch_sizes else [None]
    summary: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": len(os.sched_getaffinity(0)), "cpu_count": os.cpu_count(),
                    "python": platform.python_version()},
        "command": "python -m eval.bench_load " + " ".join(argv if argv is not None else sys.argv[1:]),
        "questions": {"source": str(args.questions or DEMO_QUESTIONS), "distinct": len(qs),
                      "asked": args.clients * args.per_client},
        "runs": []}
    work = Path(tempfile.mkdtemp(prefix="cds-bench-load-"))
    jpath = journal_path(args)
    journal = Journal(jpath) if jpath is not None else None
    if journal is not None:
        journal.write("start", {k: v for k, v in summary.items() if k != "runs"})
    bad = True  # until every run has finished cleanly: the scratch folder (server logs) is kept for a look
    try:
        for bs in sizes:
            run = run_once(args, plan, bs, work, journal)
            summary["runs"].append(run)
            print(json.dumps({k: v for k, v in run.items() if k != "rows"}), flush=True)
            if args.output:  # after each run, so an A/B interrupted later keeps what it has
                Path(args.output).parent.mkdir(parents=True, exist_ok=True)
                Path(args.output).write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
        bad = any(r["not_answered"] or ("update" in r and (r["update"]["returncode"] != 0
                                                            or not r["update"]["switched"]))
                  for r in summary["runs"])
    finally:
        if args.keep or bad:
            print(f"scratch folder kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
