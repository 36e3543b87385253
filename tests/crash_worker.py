"""Subprocess for the kill -9 and lock tests: the real CLI (`app.main`) with the hash embedder.

    python tests/crash_worker.py index update SRC... --index ROOT   # prints "ready" once imports are done
    python tests/crash_worker.py --hold-lock ROOT                     # takes the writer lock and sleeps

Imports happen before "ready", so a kill timed from "ready" lands in the job, not in imports.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import faiss  # noqa: F401  (warm imports before "ready")
from llama_index.core.node_parser import SentenceSplitter  # noqa: F401

import app
import rag.update  # noqa: F401
from rag.assistant import Assistant
from rag.lock import IndexLock
from tests.fakes import HashEmbedder


def main(argv: list[str]) -> int:
    if argv[:1] == ["--hold-lock"]:
        IndexLock(Path(argv[1]), timeout=5, command="test holder").acquire()
        print("locked", flush=True)
        time.sleep(3600)
        return 0
    Assistant.embedder = property(lambda self: HashEmbedder())  # type: ignore[method-assign,assignment]
    print("ready", flush=True)
    return app.main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
