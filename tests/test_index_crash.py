"""Guarantees under crashes, concurrent writers and concurrent readers.

- kill -9 of `index update` at random points (20 trials): the current version always loads,
  verifies and answers, holds the old or the new documents (never a mix), and the next run
  cleans the leftovers;
- one writer: a second one waits, then fails with a clear message and exit code 75; the lock
  of a killed writer is taken over;
- readers: query threads and a query process keep answering while updates publish.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from eval.crash_trials import run_trials, summarize
from rag.errors import CDSError
from rag.index import current_version, read_manifest
from rag.lock import IndexBusyError, IndexLock, lock_holder
from rag.update import read_sources, update_index
from tests.fakes import HashEmbedder, LexicalVerifier
from tests.index_helpers import CHUNKING, check_index, edit, leftovers, make_sources

ROOT = Path(__file__).resolve().parent.parent
WORKER = [sys.executable, str(ROOT / "tests" / "crash_worker.py")]


def _problems(root: Path) -> list[str]:
    try:
        check_index(root)
    except (AssertionError, CDSError) as e:
        return [f"{type(e).__name__}: {e}"]
    return []


def test_kill_9_at_random_points_never_breaks_the_index(tmp_path):
    src = make_sources(tmp_path / "src", ["hfref-gdmt.md", "cap.md", "sepsis.md"], ())
    root = tmp_path / "idx"
    cmd = [*WORKER, "index", "update", str(src / "guidelines"), "--index", str(root), "--lock-timeout", "30", "-v"]
    assert subprocess.run(cmd, capture_output=True, timeout=300).returncode == 0
    trials = run_trials(cmd, root, [src / "guidelines"], src / "guidelines", trials=20, check=_problems, seed=4,
                        cwd=ROOT)
    s = summarize(trials)
    assert s["failures"] == 0, [t for t in trials if t.problems]
    assert s["killed"] >= 15, s  # the kills really landed inside the job
    assert {"old", "new"} <= set(s["outcome"]), s
    # The next run after the last kill removes every leftover and publishes the pending change.
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert leftovers(root) == []
    check_index(root)


def test_second_writer_waits_then_gives_up_with_a_clear_message(tmp_path):
    root = tmp_path / "idx"
    root.mkdir()
    with IndexLock(root, timeout=1, command="index update"):
        assert lock_holder(root)["pid"] == os.getpid()
        t = time.monotonic()
        with pytest.raises(IndexBusyError, match=f"pid {os.getpid()}.*index update.*--lock-timeout"):
            IndexLock(root, timeout=0.5).acquire()
        assert 0.4 < time.monotonic() - t < 5
        # Through the CLI: exit code 75 and one line on stderr.
        src = make_sources(tmp_path / "src", ["cap.md"], ())
        proc = subprocess.run([*WORKER, "index", "update", str(src), "--index", str(root), "--lock-timeout", "0.2"],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 75 and IndexBusyError.exit_code == 75
        # A warning when the wait starts (visible in cron logs), then the one-line error.
        lines = proc.stderr.strip().splitlines()
        assert lines[0].startswith("WARNING") and "waiting up to 0.2 s" in lines[0]
        assert len(lines) == 2 and lines[1].startswith("error: index") and "locked by pid" in lines[1]
    assert lock_holder(root) is None


def test_waiting_writer_proceeds_when_the_lock_is_released(tmp_path):
    root = tmp_path / "idx"
    lock = IndexLock(root, timeout=1).acquire()
    threading.Timer(0.3, lock.release).start()
    with IndexLock(root, timeout=10) as second:
        assert second.held and second.stale is None


def test_lock_of_a_killed_writer_is_taken_over(tmp_path):
    root = tmp_path / "idx"
    proc = subprocess.Popen([*WORKER, "--hold-lock", str(root)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    with pytest.raises(IndexBusyError):
        IndexLock(root, timeout=0.2).acquire()
    assert json.loads((root / "LOCK").read_text())["pid"] == proc.pid
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert lock_holder(root) is None  # the kernel released it with the process
    with IndexLock(root, timeout=1) as lock:
        assert lock.stale is not None and lock.stale["pid"] == proc.pid
        assert json.loads((root / "LOCK").read_text())["pid"] == os.getpid()


def test_concurrent_updates_never_interleave(tmp_path):
    """Two writers at once: both succeed one after the other, versions form a chain."""
    src = make_sources(tmp_path / "src", ["cap.md", "sepsis.md"], ())
    root = tmp_path / "idx"
    update_index(read_sources([src]).documents, HashEmbedder(), root, CHUNKING)
    results, errors = [], []

    def job(i: int) -> None:
        try:
            docs = read_sources([src]).documents
            docs[0].text += f"\n\nWriter {i} was here."
            docs[0].version = ""
            docs[0].__post_init__()
            results.append(update_index(docs, HashEmbedder(), root, CHUNKING, lock_timeout=60))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=job, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    published = sorted((r for r in results if r.published), key=lambda r: r.version)
    assert len(published) == 3
    assert [r.previous for r in published[1:]] == [r.version for r in published[:-1]]
    check_index(root)


def test_query_threads_keep_answering_while_updates_publish(tmp_path):
    from rag.assistant import Assistant
    from rag.config import load_config

    src = make_sources(tmp_path / "src")
    root = tmp_path / "idx"
    sources = [src / "guidelines", src / "ehr"]
    first = update_index(read_sources(sources).documents, HashEmbedder(), root, CHUNKING).version
    # The lexical verifier keeps each answer as fast as the versions it races against (the real one
    # is tested elsewhere): a reader checks the version it answered from before it is pruned.
    assistant = Assistant(load_config(overrides=[f"index.dir={root}", "index.auto_build_demo=false"]),
                          embedder=HashEmbedder(), verifier=LexicalVerifier())  # type: ignore[arg-type]
    assistant.ask("statin intensity", generate=False)
    seen: set[str] = set()
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        qs = [("Which drug classes reduce mortality in heart failure?", None), ("latest ejection fraction", "P002"),
              ("blood pressure target", None)]
        i = 0
        while not stop.is_set():
            q, pid = qs[i % len(qs)]
            i += 1
            try:
                ans = assistant.ask(q, patient_id=pid, generate=False)
                # Every citation resolves in the version the answer reports (never a mix of two).
                vdir, _ = read_manifest(root, ans.index_version)
                ids = {json.loads(line)["chunk_id"] for line in (vdir / "chunks.jsonl").open()}
                assert ans.citations and {c.chunk_id for c in ans.citations} <= ids
                seen.add(ans.index_version)
            except BaseException as e:
                errors.append(e)
                return

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    published = [first]
    for i in range(4):
        edit(src / "guidelines" / "hfref-gdmt.md", f"concurrent {i}")
        published.append(update_index(read_sources(sources).documents, HashEmbedder(), root, CHUNKING,
                                      keep_versions=2).version)
        time.sleep(0.15)
    time.sleep(0.3)
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert seen <= set(published) and len(seen) >= 2
    # The long-lived assistant is on the newest version without a restart.
    assert assistant.ask("statin intensity", generate=False).index_version == published[-1]


_READER = r"""
import sys, json
sys.path.insert(0, sys.argv[2])
from rag.index import HybridIndex, verify_index
from rag.retrieve import HybridRetriever
from tests.fakes import HashEmbedder
root, n, seen = sys.argv[1], 0, set()
emb = HashEmbedder()
print("ready", flush=True)
while True:
    idx = HybridIndex.load(__import__("pathlib").Path(root))
    r = HybridRetriever(idx, emb, 30, 30, 60, 1.0, 1.0, 0.5, 5).retrieve("heart failure mortality drug classes")
    assert r.units and idx.dense.ntotal == len(idx.children) == idx.manifest["counts"]["children"]
    seen.add(idx.version); n += 1
    if sys.stdin.readline().strip() == "stop":
        break
print(json.dumps({"queries": n, "versions": sorted(seen)}), flush=True)
"""


def test_a_reader_process_always_loads_a_whole_version(tmp_path):
    src = make_sources(tmp_path / "src", ["hfref-gdmt.md", "cap.md"], ())
    root = tmp_path / "idx"
    update_index(read_sources([src]).documents, HashEmbedder(), root, CHUNKING)
    proc = subprocess.Popen([sys.executable, "-c", _READER, str(root), str(ROOT)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
    assert proc.stdout is not None and proc.stdin is not None
    assert proc.stdout.readline().strip() == "ready"
    versions = [current_version(root)]
    for i in range(6):
        edit(src / "guidelines" / "cap.md", f"reader {i}")
        versions.append(update_index(read_sources([src]).documents, HashEmbedder(), root, CHUNKING,
                                     keep_versions=2).version)
        for _ in range(3):
            proc.stdin.write("go\n")
    proc.stdin.write("stop\n")
    proc.stdin.flush()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    got = json.loads(out.strip().splitlines()[-1])
    assert got["queries"] >= 10 and set(got["versions"]) <= set(versions)
