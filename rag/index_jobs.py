"""Index jobs: build, update, roll back, verify and inspect one index root.

:class:`~rag.assistant.Assistant` answers from an index; these jobs make and check it. Writers take
the index lock, build a new version beside the current one and publish it (``rag/update.py``);
``verify`` and ``status`` only read. Usable on their own::

    jobs = IndexJobs(load_config(), progress=True)
    jobs.build(["corpora/demo/guidelines", "corpora/demo/ehr"])

or with an assistant's embedder (:meth:`IndexJobs.of`), so one model serves both and the assistant
drops the version it had loaded when a job publishes another.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from corpora import Kind, ReadOptions
from rag.config import AppConfig, resolve_path
from rag.embed import Embedder, load_embedder
from rag.index import current_version, verify_index
from rag.update import UpdateResult, read_sources, rollback, update_index
from rag.vectorstore import DenseSettings

if TYPE_CHECKING:
    from rag.assistant import Assistant

log = logging.getLogger(__name__)


class IndexJobs:
    """The jobs on ``config.index.dir``: ``build``, ``update``, ``rollback``, ``verify``, ``status``, ``build_demo``.

    ``embedder`` may be injected (tests pass a hash embedder); otherwise the configured one loads on
    the first job that embeds.
    """

    def __init__(self, config: AppConfig, embedder: Embedder | None = None, progress: bool = False):
        self.config = config
        self.progress = progress
        self.root = resolve_path(config.index.dir)
        self._embedder = embedder
        self._embedder_of: Callable[[], Embedder] | None = None
        self._changed: Callable[[], None] = lambda: None

    @classmethod
    def of(cls, assistant: Assistant) -> IndexJobs:
        """Jobs on the assistant's index with its embedder; a publish or rollback makes it load the new version."""
        jobs = cls(assistant.config, progress=assistant.progress)
        jobs._embedder_of = lambda: assistant.embedder
        jobs._changed = assistant.forget_index
        return jobs

    @property
    def embedder(self) -> Embedder:
        if self._embedder_of is not None:
            return self._embedder_of()
        if self._embedder is None:
            cfg = self.config.embedder
            self._embedder = load_embedder(cfg.model, resolve_path(self.config.models.cache_dir), cfg.batch_size,
                                           cfg.max_length, cfg.dtype)
        return self._embedder

    def exists(self) -> bool:
        """Whether the index root has a current version."""
        return current_version(self.root) is not None

    def build_demo(self) -> dict[str, Any] | None:
        """Build the demo index (``index.demo_sources``) when there is none and ``index.auto_build_demo`` allows it.

        Returns the new version's manifest, or None when nothing was built. The explicit first-run
        step of ``python app.py query`` and the server: opening an assistant never builds by itself.
        """
        if self.exists() or not self.config.index.auto_build_demo:
            return None
        log.warning("no index at %s: building the demo index first (one-time)", self.root)
        return self.build([str(resolve_path(s)) for s in self.config.index.demo_sources])

    def build(self, sources: list[str], kind: Kind | None = None, strict: bool = True,
              lock_timeout: float | None = None) -> dict[str, Any]:
        """Read sources, build and publish a new index version from scratch; returns its manifest."""
        res = self.update(sources, kind=kind, strict=strict, rebuild=True, mode="build", lock_timeout=lock_timeout,
                          max_removed=1.0)  # a build replaces the index by design
        assert res.manifest is not None
        manifest = res.manifest
        manifest["skipped"] = res.skipped
        manifest["load_stats"] = res.load_stats
        return manifest

    def update(self, sources: list[str], kind: Kind | None = None, strict: bool = False, rebuild: bool = False,
               lock_timeout: float | None = None, max_removed: float | None = None, mode: str | None = None
               ) -> UpdateResult:
        """Bring the index up to date with ``sources`` (the complete set), publishing only if anything changed.

        Unreadable files are skipped and reported (``strict`` raises instead, publishing nothing).
        ``rebuild`` re-chunks and re-embeds everything, e.g. after changing the embedder.
        """
        cfg = self.config.index
        t = time.perf_counter()
        src = read_sources(sources, kind=kind, strict=strict, options=ReadOptions(max_file_mb=cfg.max_file_mb))
        read_s = time.perf_counter() - t
        res = update_index(src.documents, self.embedder, self.root, self.config.chunking.model_dump(),
                           full=rebuild, mode=mode or ("rebuild" if rebuild else "update"), skipped=src.skipped,
                           per_source=src.per_source, keep_versions=cfg.keep_versions,
                           lock_timeout=cfg.lock_timeout if lock_timeout is None else lock_timeout,
                           max_removed=cfg.max_removed if max_removed is None else max_removed,
                           progress=self.progress, dense=DenseSettings.from_config(cfg))
        res.seconds = {"read": read_s, **res.seconds}
        res.load_stats = dict(src.stats)
        if res.manifest is not None:
            res.manifest["seconds"] = dict(res.seconds)
        if res.published:
            self._changed()
        return res

    def rollback(self, to: str | None = None, lock_timeout: float | None = None) -> tuple[str, str]:
        """Make an earlier version current again (default: the current version's parent); (old, new)."""
        t = self.config.index.lock_timeout if lock_timeout is None else lock_timeout
        moved = rollback(self.root, to, lock_timeout=t, store_url=self.config.index.postgres_url)
        self._changed()
        return moved

    def verify(self) -> list[str]:
        """Problems found checking the current version's files against its manifest (empty: intact)."""
        return verify_index(self.root, store_url=self.config.index.postgres_url)

    def status(self) -> dict[str, Any]:
        """What ``index status`` reports (reads only; takes no lock)."""
        from rag.status import index_status

        return index_status(self.root)


__all__ = ["IndexJobs"]
