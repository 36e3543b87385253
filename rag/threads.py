"""The search threads of a process: one small pool that every query's parallel work shares.

A hybrid search works in parallel in two ways: a sharded HNSW store searches its graphs on several
threads (:mod:`rag.vectorstore`), and the retriever runs the BM25 search beside the dense one
(:mod:`rag.retrieve`). Both hand their work to this one pool, one thread per CPU the process may use,
so a search never has more of its threads running than there are CPUs: a pool of the store's and
another of the retriever's would run three threads on two cores while BM25 and two graphs overlap.
FAISS's search and numpy's work on large arrays (BM25's ``np.add.at``, masks, ``partition``)
release the GIL, so the threads really run at once.

The rule that keeps it free of deadlocks: a task in this pool never waits for another task of it.
Query threads (the CLI's, the server's) submit and wait; the tasks only compute.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask: ``taskset`` limits it)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def search_pool() -> ThreadPoolExecutor:
    """The process's search pool (started on first use, one thread per CPU available then; kept)."""
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(available_cpus(), thread_name_prefix="cds-search")
        return _pool


def _forget_after_fork() -> None:
    """A forked child has none of the parent's threads: it starts its own pool when it needs one."""
    global _pool, _lock
    _pool, _lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)
