"""Dense vector stores behind one interface: FAISS (embedded, flat or HNSW) and PostgreSQL + pgvector.

The index jobs (:mod:`rag.update`) write a version's vectors through :func:`write_dense`, which
returns the ``dense`` entry of the manifest; readers (:class:`rag.index.HybridIndex`) open it with
:func:`open_dense`. Row ``i`` of a store is child passage ``i`` of ``chunks.jsonl``.

Patient scoping is the same in every store. ``search`` gets the rows a query may see (all shared,
non-EHR passages plus one patient's records) and splits them:

- the patient's EHR rows are searched **exactly** (one patient has tens to thousands of passages);
- the shared rows by the store's own search: exact (flat), or an approximate graph (HNSW) built
  over the shared rows only (FAISS: an ``IndexIDMap2`` graph keyed by row, the records in an exact
  index beside it; PostgreSQL: a partial index ``WHERE kind <> 'ehr'``), so the graph walk never
  has to skip a row. Masking rows inside the walk lost recall on real questions (FAISS ID
  selector), and pgvector 0.6.2 filters after taking ``ef_search`` candidates (iterative scans
  came in 0.8.0). A mask that is not "every shared row" (evaluation only) is searched with a
  filter (FAISS) or exactly (PostgreSQL).

So a patient's own records are never lost to an approximate search, whatever the backend.

Updates. A flat store is rebuilt for every version (copying the vectors costs less than any
bookkeeping). An HNSW graph is updated in place when the previous version's store is at hand
(:func:`update_faiss`): kept passages are renumbered (the ``IndexIDMap2`` row ids), new shared
passages are added to the graph, and removed ones stay in it as *tombstones* (ids at
``TOMBSTONE_BASE`` and above, which every search filters out), until they exceed
``MAX_TOMBSTONE_SHARE`` of the graph and the next version is rebuilt from scratch (compaction).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from rag.errors import CDSError, IndexCorruptError, InputError

log = logging.getLogger(__name__)

FAISS_FILE = "dense.faiss"
FAISS_EHR_FILE = "dense-ehr.faiss"  # HNSW versions: the patient records, searched exactly
# Graph entries of passages removed by an incremental update: an id no row can have (a scope
# bitmap holds one bit per row, so these are never members) and unique per graph entry.
TOMBSTONE_BASE = 1 << 40
MAX_TOMBSTONE_SHARE = 0.1  # past this share of dead graph entries, the next version rebuilds the graph
URL_ENV = "CDS_POSTGRES_URL"
VERSIONS_TABLE = "cds_index_versions"


class StoreUnavailableError(CDSError):
    """The database holding the vectors cannot be reached or answered with an error (exit 1)."""


@dataclass(frozen=True)
class DenseSettings:
    """How a new version's vectors are stored (``index.*`` in the config)."""

    store: Literal["faiss", "postgres"] = "faiss"
    dense: Literal["flat", "hnsw"] = "flat"
    hnsw_m: int = 32
    hnsw_ef_construction: int = 80
    hnsw_ef_search: int = 64
    postgres_url: str | None = None
    connect_timeout_s: int = 5
    statement_timeout_ms: int = 30_000

    @classmethod
    def from_config(cls, cfg: Any) -> DenseSettings:
        return cls(store=cfg.store, dense=cfg.dense, hnsw_m=cfg.hnsw_m, hnsw_ef_construction=cfg.hnsw_ef_construction,
                   hnsw_ef_search=cfg.hnsw_ef_search, postgres_url=cfg.postgres_url)


class VectorStore(Protocol):
    """What the retriever and the index jobs need from a dense store (row i = child passage i)."""

    spec: dict[str, Any]  # the manifest's ``dense`` entry

    @property
    def ntotal(self) -> int: ...

    @property
    def d(self) -> int: ...

    def search(self, qv: np.ndarray, k: int, allowed: np.ndarray) -> list[tuple[int, float]]:
        """The best ``k`` (row, inner product) among ``allowed`` rows, best first."""
        ...

    def reconstruct(self, row: int) -> np.ndarray: ...

    def reconstruct_n(self, start: int, n: int) -> np.ndarray: ...

    def problems(self) -> list[str]:
        """What is wrong with the stored vectors against ``spec`` (empty: healthy)."""
        ...

    def close(self) -> None: ...


def _top(rows: np.ndarray, scores: np.ndarray, k: int) -> list[tuple[int, float]]:
    if rows.size == 0:
        return []
    k = min(k, rows.size)
    top = np.argpartition(-scores, k - 1)[:k]
    top = top[np.lexsort((rows[top], -scores[top]))]
    return [(int(rows[i]), float(scores[i])) for i in top]


def merge_hits(a: list[tuple[int, float]], b: list[tuple[int, float]], k: int) -> list[tuple[int, float]]:
    """Best ``k`` of two hit lists over disjoint rows (ties by row, so the order is deterministic)."""
    return sorted(a + b, key=lambda h: (-h[1], h[0]))[:k]


def vectors_sha256(vectors: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(vectors, dtype=np.float32).tobytes()).hexdigest()


# -- FAISS -------------------------------------------------------------------------------------
class FaissStore:
    """FAISS in memory. ``flat``: one ``IndexFlatIP`` over all rows (exact). ``hnsw``: an
    ``IndexHNSWFlat`` graph over the shared (non-EHR) rows only and an ``IndexFlatIP`` over the
    patient records, each in an ``IndexIDMap2`` keyed by row, like pgvector's partial index.

    Filtering inside the graph walk lost recall on real questions: with the patient records
    (18% of the trust index) masked by an ID selector, recall@30 of the shared rows fell to 0.82
    at efSearch 64, against 0.93 for a graph built over the shared rows alone (BENCHMARKS.md, "Scale").
    """

    def __init__(self, index: Any, spec: dict[str, Any], is_ehr: np.ndarray | None = None, ehr: Any = None):
        self.index = index
        self.ehr = ehr
        self.spec = spec
        self.hnsw = spec.get("type") == "hnsw"
        self.tombstones = int((self._graph_ids() >= TOMBSTONE_BASE).sum()) if self.hnsw else 0
        n = int(index.ntotal) - self.tombstones + (int(ehr.ntotal) if ehr is not None else 0)
        self.is_ehr = is_ehr if is_ehr is not None else np.zeros(n, dtype=bool)

    def _graph_ids(self) -> np.ndarray:
        """Row id of each graph entry, in insertion order (tombstones included)."""
        import faiss

        return faiss.vector_to_array(self.index.id_map)

    @property
    def ntotal(self) -> int:
        """Live rows (the graph's tombstones are not rows)."""
        return int(self.index.ntotal) - self.tombstones + (int(self.ehr.ntotal) if self.ehr is not None else 0)

    @property
    def d(self) -> int:
        return int(self.index.d)

    def reconstruct(self, row: int) -> np.ndarray:
        if self.hnsw and self.is_ehr[int(row)]:
            return np.asarray(self.ehr.reconstruct(int(row)))
        return np.asarray(self.index.reconstruct(int(row)))

    def reconstruct_n(self, start: int, n: int) -> np.ndarray:
        if n == 0:
            return np.zeros((0, self.d), np.float32)
        if not self.hnsw:
            return np.asarray(self.index.reconstruct_n(start, n))
        import faiss

        out = np.zeros((self.ntotal, self.d), np.float32)
        for part in (self.index, self.ehr):
            if part is not None and part.ntotal:
                ids = faiss.vector_to_array(part.id_map)
                live = ids < TOMBSTONE_BASE
                out[ids[live]] = faiss.downcast_index(part.index).reconstruct_n(0, part.ntotal)[live]
        return out[start:start + n]

    def _exact_rows(self, qv: np.ndarray, rows: np.ndarray, k: int) -> list[tuple[int, float]]:
        vecs = np.stack([np.asarray(self.ehr.reconstruct(int(r)), dtype=np.float32) for r in rows])
        return _top(rows, vecs @ qv.astype(np.float32), k)

    def _selector_search(self, qv: np.ndarray, k: int, allowed: np.ndarray) -> list[tuple[int, float]]:
        import faiss

        n_allowed = int(allowed.sum())
        if n_allowed == 0:
            return []
        # A bitmap selector costs one packbits per query (IDSelectorBatch would hash every allowed id).
        # It is passed even when everything is allowed: for one query, FAISS's selector path was 4x
        # faster than its default path on 115k flat vectors (multi-threading overhead; BENCHMARKS.md).
        bitmap = np.packbits(allowed, bitorder="little")
        sel = faiss.IDSelectorBitmap(bitmap.size, faiss.swig_ptr(bitmap))  # size in bytes
        params: Any
        if self.hnsw:
            params = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]  # missing from faiss's stubs
            params.efSearch = max(int(self.spec["ef_search"]), k)
            # A subset of the graph's entries (tombstones, or an evaluation's arbitrary mask): filter in
            # the walk. Tombstones are few (MAX_TOMBSTONE_SHARE), so the walk loses little.
            if n_allowed < int(self.index.ntotal):
                params.sel = sel
        else:
            params = faiss.SearchParameters(sel=sel)  # type: ignore[call-arg]
        scores, rows = self.index.search(qv.reshape(1, -1), min(k, n_allowed), params=params)
        return [(int(r), float(s)) for s, r in zip(scores[0], rows[0], strict=True) if r >= 0]

    def search(self, qv: np.ndarray, k: int, allowed: np.ndarray) -> list[tuple[int, float]]:
        qv = np.asarray(qv, dtype=np.float32).reshape(-1)
        if not self.hnsw:
            return self._selector_search(qv, k, allowed)
        ehr_rows = np.flatnonzero(allowed & self.is_ehr)
        shared = allowed & ~self.is_ehr
        hits = self._selector_search(qv, k, shared) if shared.any() else []
        return merge_hits(hits, self._exact_rows(qv, ehr_rows, k) if ehr_rows.size else [], k)

    def problems(self) -> list[str]:
        """The files' checksums are in the manifest; here: each row is in the part its kind says."""
        if not self.hnsw:
            return []
        import faiss

        out = []
        for name, part, want in (("graph", self.index, ~self.is_ehr), ("patient records", self.ehr, self.is_ehr)):
            have = np.sort(faiss.vector_to_array(part.id_map)) if part is not None else np.zeros(0, np.int64)
            if not np.array_equal(have[have < TOMBSTONE_BASE], np.flatnonzero(want)):
                out.append(f"dense {name} index holds other rows than the passages of its kind")
        if self.tombstones != int(self.spec.get("tombstones", 0)):
            out.append(f"dense graph holds {self.tombstones} removed passages, the manifest says "
                       f"{int(self.spec.get('tombstones', 0))}")
        return out

    def close(self) -> None:
        pass


def faiss_spec(settings: DenseSettings) -> dict[str, Any]:
    spec: dict[str, Any] = {"store": "faiss", "type": settings.dense, "metric": "inner_product", "file": FAISS_FILE}
    if settings.dense == "hnsw":
        spec.update(m=settings.hnsw_m, ef_construction=settings.hnsw_ef_construction,
                    ef_search=settings.hnsw_ef_search, ehr_file=FAISS_EHR_FILE,
                    graph="shared (non-EHR) passages; patient records searched exactly")
    return spec


def build_faiss(vectors: np.ndarray, spec: dict[str, Any], is_ehr: np.ndarray | None = None) -> FaissStore:
    import faiss

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    dim = vectors.shape[1]
    is_ehr = np.zeros(len(vectors), dtype=bool) if is_ehr is None else np.asarray(is_ehr, dtype=bool)
    if spec.get("type") != "hnsw":
        flat = faiss.IndexFlatIP(dim)
        if len(vectors):
            flat.add(vectors)
        return FaissStore(flat, spec, is_ehr)
    graph: Any = faiss.IndexHNSWFlat(dim, int(spec["m"]), faiss.METRIC_INNER_PRODUCT)
    graph.hnsw.efConstruction = int(spec["ef_construction"])
    graph.hnsw.efSearch = int(spec["ef_search"])
    shared = faiss.IndexIDMap2(graph)
    ehr = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    for part, mask in ((shared, ~is_ehr), (ehr, is_ehr)):
        rows = np.flatnonzero(mask)
        if rows.size:
            part.add_with_ids(vectors[rows], rows.astype(np.int64))
    return FaissStore(shared, spec, is_ehr, ehr)


def update_faiss(prev: Any, prev_rows: np.ndarray, vectors: np.ndarray, spec: dict[str, Any],
                 is_ehr: np.ndarray) -> FaissStore | None:
    """The next version's HNSW store made from the previous one's, or None when it must be rebuilt.

    ``prev_rows[i]`` is the previous row of new row ``i`` when that passage is kept with the same
    vector (-1: new). Kept graph entries are renumbered, new shared passages added to the graph,
    dropped ones left in it as tombstones; the patient records' exact index is rebuilt (a copy).
    None (rebuild) for a flat store, another store or graph shape, or when the tombstones would
    pass ``MAX_TOMBSTONE_SHARE`` of the graph. ``prev`` is changed in place: pass a store loaded
    for this job, never one that serves queries.
    """
    import faiss

    if not (isinstance(prev, FaissStore) and prev.hnsw and spec.get("type") == "hnsw"):
        return None
    if any(int(prev.spec.get(k, -1)) != int(spec[k]) for k in ("m", "ef_construction")) or prev.d != vectors.shape[1]:
        return None
    prev_rows = np.asarray(prev_rows, dtype=np.int64)
    is_ehr = np.asarray(is_ehr, dtype=bool)
    kept = prev_rows >= 0
    if kept.any() and (int(prev_rows.max()) >= prev.ntotal or np.any(prev.is_ehr[prev_rows[kept]] != is_ehr[kept])):
        raise ValueError("prev_rows names rows the previous store does not hold, or of another kind")
    new_of_prev = np.full(prev.ntotal, -1, dtype=np.int64)
    new_of_prev[prev_rows[kept]] = np.flatnonzero(kept)
    old = prev._graph_ids()
    live = old < TOMBSTONE_BASE
    ids = np.full(old.size, -1, dtype=np.int64)
    ids[live] = new_of_prev[old[live]]
    dead = ids < 0
    ids[dead] = TOMBSTONE_BASE + np.flatnonzero(dead)  # unique: the entry's position
    add = np.flatnonzero(~kept & ~is_ehr)
    tombstones = int(dead.sum())
    if tombstones > MAX_TOMBSTONE_SHARE * (old.size + add.size):
        return None
    graph = prev.index
    faiss.copy_array_to_vector(ids, graph.id_map)
    graph.construct_rev_map()
    hnsw: Any = faiss.downcast_index(graph.index)
    hnsw.hnsw.efSearch = int(spec["ef_search"])
    if add.size:
        graph.add_with_ids(np.ascontiguousarray(vectors[add], dtype=np.float32), add)
    ehr = faiss.IndexIDMap2(faiss.IndexFlatIP(vectors.shape[1]))
    rows = np.flatnonzero(is_ehr)
    if rows.size:
        ehr.add_with_ids(np.ascontiguousarray(vectors[rows], dtype=np.float32), rows.astype(np.int64))
    return FaissStore(graph, {**spec, "tombstones": tombstones}, is_ehr, ehr)


# -- writing and opening -----------------------------------------------------------------------
def write_dense(settings: DenseSettings, vdir: Path, vectors: np.ndarray, children: list[Any], version: str,
                root: Path, previous: tuple[Any, np.ndarray] | None = None) -> dict[str, Any]:
    """Store a version's vectors; returns the manifest's ``dense`` entry.

    FAISS writes ``dense.faiss`` into the (temporary) version folder; with ``previous`` (the previous
    version's store, loaded for this job, and each new row's previous row or -1) an HNSW graph is
    updated instead of rebuilt when it can be (:func:`update_faiss`). PostgreSQL creates the
    version's table, fills it and builds its indexes in one transaction, committed before the
    folder is published: a version that CURRENT names always has a complete table.
    """
    if settings.store == "postgres":
        from rag.pgstore import write_pg

        return write_pg(settings, vectors, children, version, root)
    import faiss

    spec = faiss_spec(settings)
    is_ehr = np.array([c.kind == "ehr" for c in children], dtype=bool)
    store = update_faiss(previous[0], previous[1], vectors, spec, is_ehr) if previous is not None else None
    if store is not None:
        spec = store.spec
        log.info("dense graph updated in place: %d passages added, %d removed passages kept as tombstones",
                 int(((previous[1] if previous else np.zeros(0)) < 0).sum()), store.tombstones)
    else:
        store = build_faiss(vectors, spec, is_ehr)
    faiss.write_index(store.index, str(vdir / FAISS_FILE))
    if store.ehr is not None:
        faiss.write_index(store.ehr, str(vdir / FAISS_EHR_FILE))
    return spec


def dense_spec(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest's ``dense`` entry; versions written before it existed are FAISS flat."""
    spec = manifest.get("dense")
    if isinstance(spec, dict) and spec.get("store") in ("faiss", "postgres"):
        return spec
    return {"store": "faiss", "type": "flat", "metric": "inner_product", "file": FAISS_FILE}


def required_files(manifest: dict[str, Any]) -> tuple[str, ...]:
    spec = dense_spec(manifest)
    if spec["store"] != "faiss":
        return ()
    return (FAISS_FILE, FAISS_EHR_FILE) if spec.get("type") == "hnsw" else (FAISS_FILE,)


def resolve_url(spec: dict[str, Any], url: str | None) -> str:
    """The database URL: the given one (config), ``$CDS_POSTGRES_URL``, or the one the version was written to."""
    found = url or os.environ.get(URL_ENV) or spec.get("url")
    if not found:
        raise InputError(f"this index version keeps its vectors in PostgreSQL; set index.postgres_url or ${URL_ENV}")
    return str(found)


def open_dense(vdir: Path, manifest: dict[str, Any], is_ehr: np.ndarray, url: str | None = None) -> VectorStore:
    """Open a version's vector store (FAISS: read the file; PostgreSQL: connect, nothing loaded)."""
    spec = dense_spec(manifest)
    if spec["store"] == "postgres":
        from rag.pgstore import PgStore

        return PgStore(resolve_url(spec, url), spec, is_ehr)
    import faiss

    index: Any = faiss.read_index(str(vdir / FAISS_FILE))
    if spec.get("type") != "hnsw":
        return FaissStore(index, spec, is_ehr)
    graph: Any = faiss.downcast_index(index.index)
    graph.hnsw.efSearch = int(spec["ef_search"])
    return FaissStore(index, spec, is_ehr, faiss.read_index(str(vdir / FAISS_EHR_FILE)))


def drop_dense(manifest: dict[str, Any], url: str | None = None) -> None:
    """Remove what a pruned version keeps outside its folder (a PostgreSQL table)."""
    spec = dense_spec(manifest)
    if spec["store"] == "postgres":
        from rag.pgstore import drop_pg

        drop_pg(resolve_url(spec, url), spec)


def table_name(root: Path, version: str) -> str:
    """One table per index folder and version (a database may hold several indexes)."""
    ns = hashlib.sha1(str(Path(root).resolve()).encode()).hexdigest()[:10]
    name = f"cds_{ns}_{version.lower().replace('-', '_')}"
    if not re.fullmatch(r"[a-z0-9_]{1,63}", name):
        raise IndexCorruptError(f"version name {version!r} cannot name a table")
    return name
