"""Embedding cache: passage vectors keyed by (embedder fingerprint, sha256 of the passage text).

Layout under ``<index root>/cache/embeddings/<fingerprint>/``::

    embedder.json           the embedder facts the fingerprint was computed from
    seg-<stamp>-<pid>.npz   immutable segments: ``keys`` (n, 32) uint8, ``vectors`` (n, dim) float32

A segment is written to a ``.tmp-`` file, fsynced and renamed, so a killed writer leaves at
most a temporary file (removed by :func:`clean_cache_leftovers`), never a torn segment.
Segments are written while embedding, so an interrupted update keeps what it had embedded and
the next run resumes from there. The cache is only an accelerator: a segment that cannot be
read is deleted with a warning and its vectors are computed again, and removing the whole
``cache/`` folder is always safe.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rag.fsutil import fsync_dir

log = logging.getLogger(__name__)

CACHE_DIR = Path("cache") / "embeddings"


def fingerprint(embedder_facts: dict[str, Any]) -> str:
    """A stable id for everything that changes a passage vector (model, dim, pooling, prefixes, length)."""
    return hashlib.sha256(json.dumps(embedder_facts, sort_keys=True).encode()).hexdigest()[:16]


def text_key(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def clean_cache_leftovers(root: Path) -> int:
    n = 0
    base = Path(root) / CACHE_DIR
    for p in base.glob("*/.tmp-*"):
        p.unlink(missing_ok=True)
        n += 1
    return n


class EmbeddingCache:
    """Vectors of one embedder. Not safe for concurrent writers: callers hold the index lock."""

    def __init__(self, root: Path, embedder_facts: dict[str, Any]):
        self.dir = Path(root) / CACHE_DIR / fingerprint(embedder_facts)
        self.dim = int(embedder_facts["dim"])
        self.facts = embedder_facts
        self._index: dict[bytes, tuple[int, int]] | None = None  # key -> (segment number, row)
        self._segments: list[np.ndarray] = []

    def _load(self) -> dict[bytes, tuple[int, int]]:
        if self._index is not None:
            return self._index
        self._index = {}
        for seg in sorted(self.dir.glob("seg-*.npz")):
            try:
                with np.load(seg, allow_pickle=False) as z:
                    keys, vecs = np.asarray(z["keys"]), np.asarray(z["vectors"])
                if keys.ndim != 2 or keys.shape[1] != 32 or vecs.shape != (len(keys), self.dim):
                    raise ValueError(f"shapes {keys.shape} / {vecs.shape}")
            except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as e:
                log.warning("embedding cache segment %s is unreadable (%s); deleting it, its vectors will be "
                            "recomputed", seg.name, type(e).__name__)
                seg.unlink(missing_ok=True)
                continue
            n = len(self._segments)
            self._segments.append(vecs.astype(np.float32, copy=False))
            for row, k in enumerate(keys):
                self._index[k.tobytes()] = (n, row)
        return self._index

    def __len__(self) -> int:
        return len(self._load())

    def get(self, keys: Sequence[bytes]) -> dict[bytes, np.ndarray]:
        index = self._load()
        out: dict[bytes, np.ndarray] = {}
        for k in keys:
            loc = index.get(k)
            if loc is not None:
                out[k] = self._segments[loc[0]][loc[1]]
        return out

    def put(self, keys: Sequence[bytes], vectors: np.ndarray) -> None:
        """Persist a batch as a new immutable segment (atomic: temp file, fsync, rename)."""
        if not len(keys):
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        karr = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), 32)
        index = self._load()  # before writing: the new segment is added below, not read back
        self._write_segment(karr, vectors)
        n = len(self._segments)
        self._segments.append(vectors)
        for row, k in enumerate(keys):
            index[k] = (n, row)

    def _write_segment(self, keys: np.ndarray, vectors: np.ndarray) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        facts = self.dir / "embedder.json"
        if not facts.exists():
            facts.write_text(json.dumps(self.facts, indent=2), encoding="utf-8")
        name = f"seg-{time.time_ns():020d}-{os.getpid()}.npz"
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=self.dir)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, keys=keys, vectors=vectors)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.dir / name)
        except BaseException:
            with contextlib.suppress(OSError):  # cleanup must not hide the first cause
                Path(tmp).unlink(missing_ok=True)
            raise
        fsync_dir(self.dir)
        return self.dir / name

    def compact(self, keep: Iterable[bytes], max_segments: int = 16) -> None:
        """Merge segments into one holding only ``keep`` once there are more than ``max_segments``.

        Crash-safe: the merged segment is published before the old ones are deleted, so a crash
        in between only leaves duplicates, which are harmless.
        """
        old = sorted(self.dir.glob("seg-*.npz"))
        if len(old) <= max_segments:
            return
        wanted = list(dict.fromkeys(keep))
        found = self.get(wanted)
        keys = [k for k in wanted if k in found]
        vecs = np.stack([found[k] for k in keys]) if keys else np.zeros((0, self.dim), np.float32)
        karr = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), 32)
        new = self._write_segment(karr, vecs)
        for p in old:
            if p != new:
                p.unlink(missing_ok=True)
        self._index = None
        self._segments = []
        log.info("compacted embedding cache: %d segments -> 1 (%d vectors)", len(old), len(keys))

    def bytes(self) -> int:
        return sum(p.stat().st_size for p in self.dir.glob("seg-*.npz")) if self.dir.exists() else 0
