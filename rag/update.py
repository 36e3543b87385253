"""Index writer jobs: full build, incremental update, rollback and retention.

Every write goes through :func:`update_index` under the index lock (:mod:`rag.lock`):

1. read the current version's manifest; refuse a different embedder or chunking (``full``
   rebuilds instead) and a current version whose files fail their checksums;
2. diff the documents by fingerprint (text, title, kind, patient, source) into added,
   changed, removed and unchanged; a source file that cannot be read now but was indexed
   before keeps its previous version (reported as ``kept``), so a bad file never silently
   deletes a good document;
3. reuse the chunks of unchanged documents verbatim (stable chunk ids), chunk the rest;
4. take vectors from the current version and the embedding cache (keyed by embedder
   fingerprint + passage text hash) and embed only what is new, saving to the cache as it
   goes, so an interrupted run resumes;
5. rebuild the dense store (:mod:`rag.vectorstore`: FAISS flat/HNSW file, or a PostgreSQL table
   committed in one transaction) and BM25 over all passages, write the version into a temporary
   directory, fsync, rename into ``versions/`` and swap ``CURRENT`` (see :mod:`rag.index`);
6. prune versions beyond ``keep_versions`` and compact the cache.

A SIGKILL at any point leaves the previous version current and loadable; the next writer
removes the leftovers. Logs name documents by id, never their text.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from corpora import Kind, ReadOptions, load_sources
from corpora.document import Document, content_hash
from rag.chunk import Chunk, HierarchicalChunker
from rag.embed import Embedder
from rag.embed_cache import EmbeddingCache, clean_cache_leftovers, text_key
from rag.errors import EmbedderMismatchError, IndexCorruptError, IndexMissingError, InputError, SourceError
from rag.index import (
    BM25_TOKENIZER,
    FORMAT_VERSION,
    check_embedder,
    clean_leftovers,
    current_version,
    damaged_message,
    embedder_manifest,
    file_sha256,
    list_versions,
    next_version_name,
    publish_version,
    read_manifest,
    verify_files,
    versions_dir,
    write_current,
)
from rag.lexical import build_bm25
from rag.lock import IndexLock
from rag.vectorstore import DenseSettings, VectorStore, dense_spec, drop_dense, open_dense, write_dense

log = logging.getLogger(__name__)

HISTORY = "history.jsonl"
EMBED_BATCH = 512  # passages per cache segment while embedding: the unit of resumption


# -- reading sources -------------------------------------------------------------------------
@dataclass
class SourceSet:
    """Documents read from the sources, files skipped (path, reason), and counts per source."""

    documents: list[Document]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    per_source: list[dict[str, Any]] = field(default_factory=list)
    stats: Counter[str] = field(default_factory=Counter)  # what readers passed over on purpose, by format


def read_sources(sources: Sequence[str | Path], kind: Kind | None = None, strict: bool = True,
                 options: ReadOptions | None = None) -> SourceSet:
    """Read each source (file or folder); doc ids must be unique across all of them."""
    out = SourceSet(documents=[])
    seen: dict[str, str] = {}
    for s in sources:
        rep = load_sources([s], kind=kind, strict=strict, options=options)
        for d in rep.documents:
            if d.doc_id in seen:
                raise SourceError(f"duplicate doc_id '{d.doc_id}' in {s} and {seen[d.doc_id]}; make ids unique")
            seen[d.doc_id] = str(s)
        out.documents.extend(rep.documents)
        out.skipped.extend(rep.skipped)
        out.stats.update(rep.stats)
        out.per_source.append({"path": str(Path(s).resolve()), "documents": len(rep.documents),
                               "skipped": len(rep.skipped),
                               "by_kind": dict(sorted(Counter(d.kind for d in rep.documents).items()))})
    return out


def doc_fingerprint(d: Document) -> str:
    """Everything of a document that ends up in its chunks: a change here means re-chunking."""
    return content_hash(d.text, d.title, d.kind, d.patient_id or "", d.source)


def _collection_counts(documents_meta: dict[str, Any], parents: list[Chunk], children: list[Chunk]
                       ) -> dict[str, dict[str, int]]:
    """Documents, sections and passages per source collection (medquad, ngc, mtsamples, ...)."""
    coll = {i: str(m.get("collection", "")) for i, m in documents_meta.items()}
    return {"documents_by_collection": dict(sorted(Counter(coll.values()).items())),
            "parents_by_collection": dict(sorted(Counter(coll.get(c.doc_id, "") for c in parents).items())),
            "children_by_collection": dict(sorted(Counter(coll.get(c.doc_id, "") for c in children).items()))}


# -- results ---------------------------------------------------------------------------------
@dataclass
class UpdateResult:
    version: str | None  # the published version; None when nothing changed
    previous: str | None
    mode: str  # "build" | "update" | "rebuild"
    documents: dict[str, list[str]]  # added, changed, removed, kept (unreadable now, previous version kept)
    chunks: dict[str, int]  # added, removed, reused, total (child passages)
    embeddings: dict[str, int]  # computed, cached
    skipped: list[tuple[str, str]]
    pruned: list[str]
    seconds: dict[str, float]
    manifest: dict[str, Any] | None
    load_stats: dict[str, int] = field(default_factory=dict)  # readers' counts (pairs without answer, ...)

    @property
    def published(self) -> bool:
        return self.version is not None

    def summary(self) -> dict[str, Any]:
        """The one-line JSON an operator's job logs (``--json``)."""
        return {
            "published": self.published, "version": self.version, "previous": self.previous, "mode": self.mode,
            "documents": {k: len(v) for k, v in self.documents.items()},
            # Ids of what changed (a first build's full "added" list is left out above 100).
            "changed_ids": {k: v for k, v in self.documents.items() if v and (k != "added" or len(v) <= 100)},
            "chunks": self.chunks, "embeddings": self.embeddings,
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
            "pruned": self.pruned, "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
        }


class _Stages:
    """Times each stage and logs its start (the kill -9 tests and benchmark key on these lines)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        log.info("stage %s", name)
        t = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t


# -- the writer ------------------------------------------------------------------------------
def update_index(docs: list[Document], embedder: Embedder, root: Path, chunking: dict[str, int], *,
                 full: bool = False, mode: str | None = None, skipped: Sequence[tuple[str, str]] = (),
                 per_source: list[dict[str, Any]] | None = None, keep_versions: int | None = None,
                 lock_timeout: float = 300.0, max_removed: float = 1.0, progress: bool = False,
                 dense: DenseSettings | None = None) -> UpdateResult:
    """Bring the index at ``root`` to exactly ``docs`` and publish a new version if anything changed.

    ``full`` re-chunks and re-embeds everything (no cache reads) and always publishes; it is
    what ``index build`` and ``index update --rebuild`` do, and the only way to change the
    embedder or the chunking of an existing index. ``max_removed`` refuses an update that
    would remove more than that fraction of the indexed documents (a mistyped source list).
    ``dense`` chooses where and how the vectors are stored (default: FAISS flat).
    """
    mode = mode or ("build" if full else "update")
    if not docs:
        raise InputError("nothing to index: no documents were read from the sources; check the source paths and "
                         "the files skipped above")
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise InputError(f"index folder {root} is a file; pass a folder with --index")
    root.mkdir(parents=True, exist_ok=True)
    versions_dir(root).mkdir(exist_ok=True)
    with IndexLock(root, timeout=lock_timeout, command=f"index {mode}"):
        settings = dense or DenseSettings()
        n = clean_leftovers(root) + clean_cache_leftovers(root)
        if settings.store == "postgres":
            from rag.pgstore import clean_pg_leftovers

            n += clean_pg_leftovers(settings, root, set(list_versions(root)))
        if n:
            log.warning("removed %d leftover(s) of an interrupted index job", n)
        return _update_locked(docs, embedder, root, chunking, full=full, mode=mode, skipped=list(skipped),
                              per_source=per_source or [], keep_versions=keep_versions, max_removed=max_removed,
                              progress=progress, settings=settings)


def build_index(docs: list[Document], embedder: Embedder, root: Path, chunking: dict[str, int],
                progress: bool = False, **kwargs: Any) -> tuple[str, dict[str, Any]]:
    """Chunk, embed and index ``docs`` from scratch as a new published version under ``root``.

    A thin wrapper over :func:`update_index` with ``full=True`` (the one writer path,
    under the index lock); ``kwargs`` go to it (``keep_versions``, ``lock_timeout``, ...).
    """
    res = update_index(docs, embedder, root, chunking, full=True, progress=progress, **kwargs)
    assert res.version is not None and res.manifest is not None  # a full build always publishes
    return res.version, res.manifest


def _load_previous(root: Path, version: str, url: str | None = None, keep_graph: bool = False
                   ) -> tuple[dict[str, Any], list[Chunk], np.ndarray, VectorStore | None]:
    """The current version's manifest, chunks (in file order) and child vectors, checksums verified;
    with ``keep_graph``, also its FAISS HNSW store (else None), which the next version updates in place."""
    vdir, manifest = read_manifest(root, version)
    problems = verify_files(vdir, manifest)
    if problems:
        raise IndexCorruptError(damaged_message(root, version, problems[0]) + " (or re-embed everything with "
                                "`index update --rebuild ...`)")
    with (vdir / "chunks.jsonl").open(encoding="utf-8") as f:
        chunks = [Chunk.from_dict(json.loads(line)) for line in f]
    is_ehr = np.array([c.kind == "ehr" for c in chunks if c.level == "child"], dtype=bool)
    store = open_dense(vdir, manifest, is_ehr, url)
    spec = dense_spec(manifest)
    keep = keep_graph and spec["store"] == "faiss" and spec.get("type") == "hnsw"
    try:
        vectors = store.reconstruct_n(0, store.ntotal)
    finally:
        if not keep:
            store.close()
    return manifest, chunks, vectors, store if keep else None


def _kept_documents(skipped: list[tuple[str, str]], prev_docs: dict[str, Any], present: set[str]) -> list[str]:
    """Previously indexed documents whose source file is present but unreadable now."""
    kept = []
    for doc_id, meta in prev_docs.items():
        if doc_id in present:
            continue
        src = str(meta.get("source", "")).split("#", 1)[0]
        if src and any(Path(p).as_posix() == src or Path(p).as_posix().endswith("/" + src) for p, _ in skipped):
            kept.append(doc_id)
    return kept


@dataclass
class _Diff:
    """What the current version holds and how ``docs`` differ from it (stage "diff")."""

    previous: str | None
    manifest: dict[str, Any] | None  # the current version's manifest (None: no index, or unreadable and full)
    prev_chunks: list[Chunk]  # loaded only for an incremental update
    prev_vectors: np.ndarray
    prev_store: VectorStore | None  # the previous HNSW store, updated in place by the next version
    prev_docs: dict[str, Any]
    added: list[str]
    changed: list[str]
    unchanged: list[str]
    removed: list[str]
    kept: list[str]

    @property
    def documents(self) -> dict[str, list[str]]:
        return {"added": self.added, "changed": self.changed, "removed": self.removed, "kept": self.kept}


def _current_manifest(root: Path, previous: str | None, full: bool) -> dict[str, Any] | None:
    if previous is None:
        return None
    try:
        return read_manifest(root, previous)[1]
    except IndexCorruptError:
        if not full:
            raise
        log.warning("current version %s is unreadable; building from scratch", previous)
        return None


def _check_compatible(m: dict[str, Any], previous: str, facts: dict[str, Any], chunking: dict[str, int],
                      root: Path) -> None:
    """An incremental update reuses vectors and chunks: the embedder and chunking must not have changed."""
    try:
        check_embedder(m, facts, root)
    except EmbedderMismatchError:
        raise EmbedderMismatchError(
            f"index {root} version {previous} was built with embedder {m['embedder'].get('model_id')} "
            f"(dim {m['embedder'].get('dim')}); this update uses {facts['model_id']} (dim {facts['dim']}). "
            "Re-embed everything into a new version with `index update --rebuild ...`") from None
    if m.get("chunking") != dict(chunking):
        raise InputError(f"chunking changed since version {previous} ({m.get('chunking')} -> "
                         f"{dict(chunking)}); re-chunk everything with `index update --rebuild ...`")


def _diff(docs: list[Document], embedder: Embedder, root: Path, chunking: dict[str, int], full: bool,
          skipped: list[tuple[str, str]], max_removed: float, url: str | None = None, keep_graph: bool = False
          ) -> _Diff:
    facts = embedder_manifest(embedder)
    previous = current_version(root)
    m = _current_manifest(root, previous, full)
    prev_manifest: dict[str, Any] | None = None
    prev_chunks: list[Chunk] = []
    prev_vectors = np.zeros((0, embedder.dim), np.float32)
    prev_store: VectorStore | None = None
    if m is not None and previous is not None and not full:
        _check_compatible(m, previous, facts, chunking, root)
        prev_manifest, prev_chunks, prev_vectors, prev_store = _load_previous(root, previous, url, keep_graph)
    # A full build reuses nothing, but still reports what changed against the current version.
    prev_docs: dict[str, Any] = m.get("documents", {}) if m is not None else {}
    new_ids = {d.doc_id for d in docs}
    kept = _kept_documents(skipped, prev_docs, new_ids) if prev_manifest else []
    added, changed, unchanged = [], [], []
    for d in docs:
        old = prev_docs.get(d.doc_id)
        if old is None:
            added.append(d.doc_id)
        elif old.get("fingerprint") == doc_fingerprint(d):
            unchanged.append(d.doc_id)
        else:
            changed.append(d.doc_id)
    removed = [i for i in prev_docs if i not in new_ids and i not in kept]
    if prev_docs and removed and len(removed) > max_removed * len(prev_docs):
        raise InputError(f"this update would remove {len(removed)} of {len(prev_docs)} indexed documents "
                         f"(more than {max_removed:.0%}); check the source list, or allow it with "
                         "--max-removed 1")
    return _Diff(previous, m, prev_chunks, prev_vectors, prev_store, prev_docs, added, changed, unchanged, removed,
                 kept)


def _chunk(docs: list[Document], diff: _Diff, embedder: Embedder, chunking: dict[str, int], full: bool,
           progress: bool) -> tuple[list[Chunk], list[Chunk], int, int]:
    """(parents, children, passages reused, passages of the previous version) (stage "chunk")."""
    by_doc: dict[str, list[Chunk]] = {}
    for c in diff.prev_chunks:
        by_doc.setdefault(c.doc_id, []).append(c)
    reuse = set() if full else set(diff.unchanged) | set(diff.kept)
    fresh = [d for d in docs if d.doc_id not in reuse]
    chunker = HierarchicalChunker(embedder.tokenize, chunking["parent_max_tokens"], chunking["child_tokens"],
                                  chunking["child_overlap"])
    it: Any = fresh
    if progress and fresh:
        from tqdm import tqdm

        it = tqdm(fresh, desc="chunking", unit="doc", disable=None)
    for d in it:
        d_parents, d_children = chunker.chunk(d)
        by_doc[d.doc_id] = d_parents + d_children
    order = [d.doc_id for d in docs] + diff.kept
    # .get: a document with headings but no text has no chunks, here or in the previous version.
    parents = [c for i in order for c in by_doc.get(i, []) if c.level == "parent"]
    children = [c for i in order for c in by_doc.get(i, []) if c.level == "child"]
    n_reused = sum(1 for i in reuse for c in by_doc.get(i, []) if c.level == "child")
    if full:  # nothing was loaded from the previous version: count its passages from its manifest
        n_prev = int((diff.manifest or {}).get("counts", {}).get("children", 0)) if diff.previous else 0
    else:
        n_prev = sum(1 for c in diff.prev_chunks if c.level == "child")
    return parents, children, n_reused, n_prev


def _build_manifest(version: str, diff: _Diff, docs: list[Document], facts: dict[str, Any],
                    chunking: dict[str, int], parents: list[Chunk], children: list[Chunk], mode: str,
                    per_source: list[dict[str, Any]], skipped: list[tuple[str, str]], chunk_counts: dict[str, int],
                    emb_counts: dict[str, int], files: dict[str, Any], dense: dict[str, Any]) -> dict[str, Any]:
    documents_meta: dict[str, Any] = {}
    for d in docs:
        documents_meta[d.doc_id] = {"title": d.title, "kind": d.kind, "source": d.source,
                                    "collection": str(d.meta.get("collection", "")),
                                    "patient_id": d.patient_id, "hash": d.version, "fingerprint": doc_fingerprint(d)}
    for i in diff.kept:
        documents_meta[i] = diff.prev_docs[i]
    all_meta = list(documents_meta.values())
    return {
        "format_version": FORMAT_VERSION,
        "version": version,
        "parent_version": diff.previous,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "embedder": facts,
        "chunking": dict(chunking),
        "bm25": {"impl": "bm25s", "tokenizer": BM25_TOKENIZER},
        "dense": dense,
        "documents": documents_meta,
        "counts": {"documents": len(all_meta), "parents": len(parents), "children": len(children),
                   "documents_by_kind": dict(sorted(Counter(m["kind"] for m in all_meta).items())),
                   "children_by_kind": dict(sorted(Counter(c.kind for c in children).items())),
                   **_collection_counts(documents_meta, parents, children)},
        "patients": sorted({m["patient_id"] for m in all_meta if m.get("patient_id")}),
        "sources": per_source,
        "update": {"mode": mode, "documents": diff.documents, "chunks": chunk_counts, "embeddings": emb_counts,
                   "skipped": [{"path": p, "reason": r} for p, r in skipped]},
        "files": files,
    }


def _write_and_publish(root: Path, stage: _Stages, parents: list[Chunk], children: list[Chunk],
                       vectors: np.ndarray, bm25: Any, settings: DenseSettings, make_manifest: Any,
                       previous: tuple[VectorStore, np.ndarray] | None = None) -> tuple[str, dict[str, Any]]:
    """Write the version into a temporary folder, then publish it (stages "write" and "publish").

    ``previous``: the previous version's HNSW store and each passage's row in it (-1: new), so the
    graph is updated instead of rebuilt (:func:`rag.vectorstore.update_faiss`)."""
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root / "versions"))
    dense: dict[str, Any] | None = None
    try:
        with stage("write"):
            version = next_version_name(root)
            with (tmp / "chunks.jsonl").open("w", encoding="utf-8") as f:
                for c in parents + children:
                    f.write(json.dumps(c.to_dict(), ensure_ascii=False) + "\n")
            dense = write_dense(settings, tmp, vectors, children, version, root, previous)
            bm25.save(str(tmp / "bm25"), show_progress=False)
            files = {p.relative_to(tmp).as_posix(): {"sha256": file_sha256(p), "bytes": p.stat().st_size}
                     for p in sorted(tmp.rglob("*")) if p.is_file()}
            manifest = make_manifest(version, files, dense)
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False), encoding="utf-8")
        with stage("publish"):
            publish_version(root, tmp, version)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if dense is not None and dense["store"] != "faiss":  # a table no version folder names
            try:
                drop_dense({"dense": dense}, settings.postgres_url)
            except Exception as e:  # the next writer removes it (clean_pg_leftovers)
                log.warning("could not drop the unpublished table (%s); the next index job removes it", e)
        raise
    return version, manifest


def _update_locked(docs: list[Document], embedder: Embedder, root: Path, chunking: dict[str, int], *, full: bool,
                   mode: str, skipped: list[tuple[str, str]], per_source: list[dict[str, Any]],
                   keep_versions: int | None, max_removed: float, progress: bool,
                   settings: DenseSettings) -> UpdateResult:
    """The stages of :func:`update_index` under its lock: diff, chunk, embed, index, write, publish, prune."""
    stage = _Stages()
    facts = embedder_manifest(embedder)
    with stage("diff"):
        diff = _diff(docs, embedder, root, chunking, full, skipped, max_removed, settings.postgres_url,
                     keep_graph=settings.store == "faiss" and settings.dense == "hnsw")
    previous = diff.previous
    _log_diff(diff)
    if not full and previous is not None and not (diff.added or diff.changed or diff.removed):
        log.info("no changes against version %s: nothing published", previous)
        n = len([c for c in diff.prev_chunks if c.level == "child"])
        return UpdateResult(None, previous, mode, {"added": [], "changed": [], "removed": [], "kept": diff.kept},
                            {"added": 0, "removed": 0, "reused": n, "total": n},
                            {"computed": 0, "cached": 0}, skipped, [], stage.seconds, None)

    with stage("chunk"):
        parents, children, n_reused, n_prev = _chunk(docs, diff, embedder, chunking, full, progress)
    with stage("embed"):
        vectors, n_computed, n_cached = _vectors(children, embedder, root, facts, diff.prev_chunks,
                                                 diff.prev_vectors, full, progress)
    with stage("index"):  # the dense store is built while writing (rag.vectorstore.write_dense)
        bm25 = build_bm25(c.context_text() for c in children)  # token ids in one array, not lists of str

    documents = diff.documents
    # Passages of added/changed documents are "added", those they replace or removed documents had are
    # "removed"; total = reused + added, and the previous total = reused + removed.
    chunk_counts = {"added": len(children) - n_reused, "removed": n_prev - n_reused, "reused": n_reused,
                    "total": len(children)}
    emb_counts = {"computed": n_computed, "cached": n_cached}
    previous_graph = _previous_graph(diff, children, vectors)
    try:
        version, manifest = _write_and_publish(
            root, stage, parents, children, vectors, bm25, settings,
            lambda v, files, dense: _build_manifest(v, diff, docs, facts, chunking, parents, children, mode,
                                                    per_source, skipped, chunk_counts, emb_counts, files, dense),
            previous_graph)
    finally:
        if diff.prev_store is not None:
            diff.prev_store.close()
    append_history(root, {"action": "publish", "version": version, "from": previous, "mode": mode,
                          "documents": {k: len(v) for k, v in documents.items()}})
    log.info("published index version %s (%s): +%d ~%d -%d documents, %d passages (%d embedded, %d cached)",
             version, mode, len(diff.added), len(diff.changed), len(diff.removed), len(children), n_computed, n_cached)
    with stage("prune"):
        protect = {v for v in (version, previous) if v}
        pruned = prune_versions(root, keep_versions, protect, settings.postgres_url) if keep_versions else []
        try:
            EmbeddingCache(root, facts).compact(text_key(c.context_text()) for c in children)
        except OSError as e:  # the version is published; a cache that cannot be compacted is only a cache
            log.warning("embedding cache compaction failed (%s); continuing", e)
    manifest["seconds"] = dict(stage.seconds)
    return UpdateResult(version, previous, mode, documents, chunk_counts, emb_counts, skipped, pruned,
                        stage.seconds, manifest)


def _log_diff(diff: Any) -> None:
    for label, ids in (("added", diff.added), ("changed", diff.changed), ("removed", diff.removed),
                       ("kept (unreadable now)", diff.kept)):
        for i in ids:
            log.info("%s %s", label, i)


def _previous_graph(diff: Any, children: list[Chunk], vectors: np.ndarray) -> tuple[Any, np.ndarray] | None:
    """The previous HNSW graph and each passage's row in it, for an in-place update (None: rebuild).
    Kept passages take exactly the vectors the graph holds (``vectors`` is changed in place)."""
    if diff.prev_store is None:
        return None
    prev_rows = previous_rows(children, diff.prev_chunks)
    kept = prev_rows >= 0
    vectors[kept] = diff.prev_vectors[prev_rows[kept]]
    return diff.prev_store, prev_rows


def previous_rows(children: list[Chunk], prev_chunks: list[Chunk]) -> np.ndarray:
    """Each passage's row in the previous version, or -1. A passage is kept when ``_chunk`` reused
    it from the previous version (the same object: its document did not change)."""
    row = {id(c): i for i, c in enumerate(c for c in prev_chunks if c.level == "child")}
    return np.array([row.get(id(c), -1) for c in children], dtype=np.int64)


def _vectors(children: list[Chunk], embedder: Embedder, root: Path, facts: dict[str, Any], prev_chunks: list[Chunk],
             prev_vectors: np.ndarray, full: bool, progress: bool) -> tuple[np.ndarray, int, int]:
    """Vectors for ``children``: reused from the previous version or the cache, the rest embedded."""
    texts = [c.context_text() for c in children]
    keys = [text_key(t) for t in texts]
    found: dict[bytes, np.ndarray] = {}
    cache = EmbeddingCache(root, facts)
    if not full:
        prev_children = [c for c in prev_chunks if c.level == "child"]
        for c, v in zip(prev_children, prev_vectors, strict=True):
            found[text_key(c.context_text())] = v
        missing = [k for k in dict.fromkeys(keys) if k not in found]
        found.update(cache.get(missing))
    todo: dict[bytes, str] = {}
    for k, t in zip(keys, texts, strict=True):
        if k not in found:
            todo[k] = t
    n_cached = sum(1 for k in keys if k in found)
    # Sorted by length across all segments, as the raw encoder does within one call: segments of
    # similar lengths waste little compute on padding (build throughput was 67% of raw without it).
    items = sorted(todo.items(), key=lambda kv: len(kv[1]))
    batches = [items[i:i + EMBED_BATCH] for i in range(0, len(items), EMBED_BATCH)]
    bar: Any = None
    if progress and len(items) > 0:
        from tqdm import tqdm

        bar = tqdm(total=len(items), desc="embedding", unit="passage", disable=None)
    for batch in batches:
        vecs = np.asarray(embedder.encode_passages([t for _, t in batch]), dtype=np.float32)
        if vecs.shape != (len(batch), embedder.dim):
            raise RuntimeError(f"embedder returned shape {vecs.shape} for {len(batch)} passages")
        cache.put([k for k, _ in batch], vecs)
        for (k, _), v in zip(batch, vecs, strict=True):
            found[k] = v
        if bar is not None:
            bar.update(len(batch))
    if bar is not None:
        bar.close()
    out = np.stack([found[k] for k in keys]) if keys else np.zeros((0, embedder.dim), np.float32)
    return out.astype(np.float32, copy=False), len(items), n_cached


# -- history, retention, rollback --------------------------------------------------------------
def append_history(root: Path, event: dict[str, Any]) -> None:
    """One JSON line per publish or rollback. A torn last line (crash) is skipped by the reader."""
    event = {"time": datetime.now(UTC).isoformat(timespec="seconds"), **event}
    with (root / HISTORY).open("a", encoding="utf-8") as f:
        f.write(json.dumps(event) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_history(root: Path, last: int = 20) -> list[dict[str, Any]]:
    path = Path(root) / HISTORY
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out[-last:]


def prune_versions(root: Path, keep: int, protect: set[str], url: str | None = None) -> list[str]:
    """Delete all but the newest ``keep`` versions, never one in ``protect`` (current, previous).

    A version is first renamed to ``.trash-*`` (atomic), then deleted: a crash in between never
    leaves a half-deleted version that could be rolled back to. A version's database table is
    dropped after its folder is gone (a crash in between leaves a table the next writer removes).
    """
    versions = list_versions(root)
    doomed = [v for v in versions[:-keep] if v not in protect] if keep > 0 else []
    for v in doomed:
        try:
            spec = dense_spec(read_manifest(root, v)[1])
        except IndexCorruptError:
            spec = dense_spec({})
        trash = root / "versions" / f".trash-{v}"
        os.replace(root / "versions" / v, trash)
        shutil.rmtree(trash, ignore_errors=True)
        if spec["store"] != "faiss":
            drop_dense({"dense": spec}, url)
        log.info("pruned index version %s", v)
    return doomed


def resolve_version(root: Path, ref: str) -> str:
    """``v0003-20261122T...``, ``v0003`` or ``3`` -> the version directory name."""
    versions = list_versions(root)
    if ref in versions:
        return ref
    num = ref[1:] if ref.startswith("v") else ref
    if num.isdigit():
        hits = [v for v in versions if int(v[1:5]) == int(num)]
        if hits:
            return hits[0]
    shown = ref.splitlines()[0][:40] if ref.strip() else repr(ref)
    raise InputError(f"no index version '{shown}' in {root}; pick one of: {', '.join(versions) or 'none'} "
                     "(`python app.py index status`)")


def rollback(root: Path, to: str | None = None, lock_timeout: float = 300.0, store_url: str | None = None
             ) -> tuple[str, str]:
    """Make an earlier version current again (default: the current version's parent). Returns (from, to)."""
    root = Path(root)
    if to is None:
        read_manifest(root)  # no index here: say so before creating a lock file
    elif not list_versions(root):
        raise IndexMissingError(f"no index versions at {root}; build one with `python app.py index build SOURCE...`")
    with IndexLock(root, timeout=lock_timeout, command="index rollback"):
        clean_leftovers(root)
        if to is not None:
            # An explicit target is how a damaged current version (or a broken CURRENT) is left behind.
            target = resolve_version(root, to)
            try:
                cur = current_version(root) or "-"
            except IndexCorruptError as e:
                log.warning("current version unreadable (%s); rolling back to %s", e, target)
                cur = "-"
            return _rollback_to(root, cur, target, store_url)
        _, m = read_manifest(root)
        cur = str(m["version"])
        parent = m.get("parent_version")
        versions = list_versions(root)
        if isinstance(parent, str) and parent in versions:
            return _rollback_to(root, cur, parent, store_url)
        older = [v for v in versions if int(v[1:5]) < int(cur[1:5])]
        if not older:
            raise InputError(f"no earlier version to roll back to from {cur}; see `index status` "
                             "(a build or update makes new versions)")
        return _rollback_to(root, cur, older[-1], store_url)


def _rollback_to(root: Path, cur: str, target: str, url: str | None = None) -> tuple[str, str]:
    """Verify ``target`` and make it current (the caller holds the lock)."""
    if target == cur:
        raise InputError(f"{target} is already the current version; name another with --to (`index status`)")
    from rag.index import verify_index

    problems = verify_index(root, target, store_url=url)
    if problems:
        raise IndexCorruptError(f"version {target} fails verification ({problems[0]}); not rolling back to it; "
                                "pick another with --to or rebuild with `python app.py index build`")
    write_current(root, target)
    append_history(root, {"action": "rollback", "version": target, "from": cur})
    log.info("rolled back index %s from %s to %s", root, cur, target)
    return cur, target
