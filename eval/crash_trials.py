"""kill -9 trials for `index update`: start the job, SIGKILL it at a random point, check the index.

Used by ``tests/test_index_crash.py`` (20 trials, hash embedder) and ``eval/bench_update.py``
(100 trials, the real CLI and embedder). Each trial changes the sources a little, starts the
job, waits for a stage line in its log (``stage diff`` ... ``stage prune``, or ``ready``), sleeps
a random delay and kills it. Then the current version must load, verify and answer, and hold
either exactly the documents before the trial or exactly those after it, never a mix.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MARKERS = ("ready", "stage diff", "stage chunk", "stage embed", "stage index", "stage write", "stage publish",
           "stage prune")
EXTRA = "crash-trial-extra.md"


def _fingerprints(root: Path) -> dict[str, str] | None:
    from rag.index import current_version, read_manifest

    if current_version(root) is None:
        return None
    _, m = read_manifest(root)
    return {k: v.get("fingerprint", "") for k, v in m["documents"].items()}


def _expected(sources: Sequence[Path]) -> dict[str, str]:
    from rag.update import doc_fingerprint, read_sources

    return {d.doc_id: doc_fingerprint(d) for d in read_sources(list(sources)).documents}


def mutate_sources(folder: Path, k: int, rng: random.Random) -> None:
    """Edit one document; every fourth trial add or remove an extra one."""
    files = sorted(p for p in folder.rglob("*.md") if p.name != EXTRA)
    p = rng.choice(files)
    p.write_text(p.read_text(encoding="utf-8").rstrip("\n") + f"\n\nRevision note of trial {k}.\n", encoding="utf-8")
    if k % 4 == 3:
        extra = folder / EXTRA
        if extra.exists():
            extra.unlink()
        else:
            extra.write_text(f"# Crash trial extra {k}\n\n## Note\n\nAn extra guideline added by trial {k}.\n",
                             encoding="utf-8")


@dataclass
class Trial:
    n: int
    marker: str
    delay_s: float
    killed: bool  # False: the job finished before the kill
    last_stage: str
    outcome: str  # "old" | "new" | "none" | "MIXED"
    problems: list[str] = field(default_factory=list)


def kill_once(cmd: Sequence[str], marker: str, delay: float, cwd: Path, env: dict[str, str] | None = None,
              timeout: float = 600) -> tuple[bool, str]:
    """Run ``cmd``; once ``marker`` appears in its output ("start": at once), wait ``delay`` s, SIGKILL it.

    Returns (killed, the last stage the job logged before the kill).
    """
    proc = subprocess.Popen(list(cmd), cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1, start_new_session=True)
    state = {"last": "start"}
    seen = threading.Event()
    if marker == "start":
        seen.set()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "stage " in line:
                state["last"] = line.strip().rsplit("stage ", 1)[1]
            elif line.strip() == "ready":
                state["last"] = "ready"
            if marker in line:
                seen.set()
        seen.set()  # the job ended without reaching the marker

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    seen.wait(timeout)
    time.sleep(delay)
    killed = proc.poll() is None
    last = state["last"]
    if killed:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    reader.join(10)
    return killed, last


def run_trials(cmd: Sequence[str], root: Path, sources: Sequence[Path], mutable: Path, trials: int,
               check: Callable[[Path], list[str]], seed: int = 0, max_delay: float = 0.05, cwd: Path | None = None,
               env: dict[str, str] | None = None, log: Callable[[str], None] | None = None,
               markers: Sequence[str] = MARKERS) -> list[Trial]:
    """``trials`` kill -9 trials; ``check(root)`` returns problems with the current version (empty = fine).

    Trial k waits for ``markers[k % len(markers)]``, then a random delay up to ``max_delay``
    (ten times that after "start" or "ready", to spread kills over the whole job).
    """
    rng = random.Random(seed)
    out: list[Trial] = []
    for k in range(trials):
        before = _fingerprints(root)
        mutate_sources(mutable, k, rng)
        after = _expected(sources)
        marker = markers[k % len(markers)]
        delay = rng.uniform(0, max_delay * (10 if marker in ("start", "ready") else 1))
        killed, last = kill_once(cmd, marker, delay, cwd or Path.cwd(), env)
        now = _fingerprints(root)
        outcome = "none" if now is None else "old" if now == before else "new" if now == after else "MIXED"
        problems = [] if now is None and before is None else check(root)
        if outcome == "MIXED":
            problems.append("the current version is neither the state before nor after the trial")
        t = Trial(k, marker, round(delay, 4), killed, last, outcome, problems)
        out.append(t)
        if log:
            log(json.dumps(t.__dict__))
    return out


def summarize(trials: list[Trial]) -> dict[str, Any]:
    return {"trials": len(trials), "failures": sum(1 for t in trials if t.problems),
            "killed": sum(t.killed for t in trials),
            "killed_in_stage": dict(Counter(t.last_stage for t in trials if t.killed)),
            "outcome": dict(Counter(t.outcome for t in trials))}
