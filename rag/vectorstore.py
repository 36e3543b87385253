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

Shards. ``index.hnsw_shards`` > 1 splits the shared rows over that many HNSW graphs (row ``i`` of
the shared rows goes to graph ``i % shards``; an update adds new passages to the smallest graphs).
A query searches every graph with the same ``ef_search`` (in parallel on the process's search pool,
:mod:`rag.threads`, one thread per CPU this process may use: FAISS releases the GIL) and merges the
hits by exact score. Each graph is smaller,
so the same recall needs a much smaller ``ef_search``: at 1M passages of the scale corpus, one graph
did not reach dense recall@10 0.97 of exact search even at efSearch 2048 (BENCHMARKS.md, "Scale").
"""

from __future__ import annotations

import hashlib
import heapq
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from rag.errors import CDSError, IndexCorruptError, InputError
from rag.threads import available_cpus, search_pool

log = logging.getLogger(__name__)

FAISS_FILE = "dense.faiss"
FAISS_EHR_FILE = "dense-ehr.faiss"  # HNSW versions: the patient records, searched exactly
FAISS_SHARD_FILE = "dense-shard{}.faiss"  # HNSW graphs 1.. of a sharded version (graph 0 is FAISS_FILE)
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
    hnsw_shards: int = 1
    postgres_url: str | None = None
    postgres_build_mem_mb: int = 0  # maintenance_work_mem of the index builds; 0: sized from the largest graph
    connect_timeout_s: int = 5
    statement_timeout_ms: int = 30_000

    @classmethod
    def from_config(cls, cfg: Any) -> DenseSettings:
        return cls(store=cfg.store, dense=cfg.dense, hnsw_m=cfg.hnsw_m, hnsw_ef_construction=cfg.hnsw_ef_construction,
                   hnsw_ef_search=cfg.hnsw_ef_search, hnsw_shards=cfg.hnsw_shards, postgres_url=cfg.postgres_url,
                   postgres_build_mem_mb=cfg.postgres_build_mem_mb)


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
    """FAISS in memory. ``flat``: one ``IndexFlatIP`` over all rows (exact). ``hnsw``: ``IndexHNSWFlat``
    graphs (one, or ``shards``) over the shared (non-EHR) rows only and an ``IndexFlatIP`` over the
    patient records, each in an ``IndexIDMap2`` keyed by row, like pgvector's partial index.

    Filtering inside the graph walk lost recall on real questions: with the patient records
    (18% of the trust index) masked by an ID selector, recall@30 of the shared rows fell to 0.82
    at efSearch 64, against 0.93 for a graph built over the shared rows alone (BENCHMARKS.md, "Scale").
    ``index`` is one FAISS index, or the list of a sharded version's graphs (``self.index`` is then
    the first; ``self.graphs`` all of them).
    """

    def __init__(self, index: Any, spec: dict[str, Any], is_ehr: np.ndarray | None = None, ehr: Any = None):
        self.graphs: list[Any] = list(index) if isinstance(index, list | tuple) else [index]
        self.index = self.graphs[0]
        self.ehr = ehr
        self.spec = spec
        self.hnsw = spec.get("type") == "hnsw"
        ids = self._graph_ids() if self.hnsw else np.zeros(0, np.int64)
        self.tombstones = int((ids >= TOMBSTONE_BASE).sum())
        n = self.graph_entries - self.tombstones + (int(ehr.ntotal) if ehr is not None else 0)
        self.is_ehr = is_ehr if is_ehr is not None else np.zeros(n, dtype=bool)
        self.shard_of: np.ndarray | None = None  # row -> graph, for reconstruct (sharded versions only)
        if len(self.graphs) > 1:
            self.shard_of = np.full(n, -1, dtype=np.int16)
            sizes = [int(g.ntotal) for g in self.graphs]
            owner = np.repeat(np.arange(len(sizes), dtype=np.int16), sizes)
            live = ids < TOMBSTONE_BASE
            self.shard_of[ids[live]] = owner[live]
        # > 1: the graphs go to the process's search pool (rag.threads); 1: searched one after another
        self.threads = min(len(self.graphs), available_cpus())

    def _graph_ids(self) -> np.ndarray:
        """Row id of each graph entry, graph after graph, in insertion order (tombstones included)."""
        import faiss

        return np.concatenate([faiss.vector_to_array(g.id_map) for g in self.graphs]).astype(np.int64)

    @property
    def graph_entries(self) -> int:
        """Entries of the graph(s), tombstones included (a flat store: its rows)."""
        return sum(int(g.ntotal) for g in self.graphs)

    @property
    def ntotal(self) -> int:
        """Live rows (the graph's tombstones are not rows)."""
        return self.graph_entries - self.tombstones + (int(self.ehr.ntotal) if self.ehr is not None else 0)

    @property
    def d(self) -> int:
        return int(self.index.d)

    def reconstruct(self, row: int) -> np.ndarray:
        if self.hnsw and self.is_ehr[int(row)]:
            return np.asarray(self.ehr.reconstruct(int(row)))
        graph = self.graphs[int(self.shard_of[int(row)])] if self.shard_of is not None else self.index
        return np.asarray(graph.reconstruct(int(row)))

    def reconstruct_n(self, start: int, n: int) -> np.ndarray:
        if n == 0:
            return np.zeros((0, self.d), np.float32)
        if not self.hnsw:
            return np.asarray(self.index.reconstruct_n(start, n))
        import faiss

        out = np.zeros((self.ntotal, self.d), np.float32)
        for part in (*self.graphs, self.ehr):
            if part is not None and part.ntotal:
                ids = faiss.vector_to_array(part.id_map)
                live = ids < TOMBSTONE_BASE
                out[ids[live]] = faiss.downcast_index(part.index).reconstruct_n(0, part.ntotal)[live]
        return out[start:start + n]

    def _exact_rows(self, qv: np.ndarray, rows: np.ndarray, k: int) -> list[tuple[int, float]]:
        vecs = np.stack([np.asarray(self.ehr.reconstruct(int(r)), dtype=np.float32) for r in rows])
        return _top(rows, vecs @ qv.astype(np.float32), k)

    def _map(self, fn: Any, graphs: list[Any]) -> list[Any]:
        """``fn`` over the graphs, on the search pool when there are several and CPUs to run them
        (queued behind a BM25 search the retriever may have handed it: one pool, so the threads that
        run never outnumber the CPUs)."""
        if self.threads <= 1 or len(graphs) <= 1:
            return [fn(g) for g in graphs]
        return list(search_pool().map(fn, graphs))

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
        q, kk = qv.reshape(1, -1), min(k, n_allowed)
        if not self.hnsw:
            scores, rows = self.index.search(q, kk, params=faiss.SearchParameters(sel=sel))  # type: ignore[call-arg]
            return [(int(r), float(s)) for s, r in zip(scores[0], rows[0], strict=True) if r >= 0]
        # A subset of the graphs' entries (tombstones, or an evaluation's arbitrary mask): filter in
        # the walk. Tombstones are few (MAX_TOMBSTONE_SHARE), so the walk loses little.
        filtered = n_allowed < self.graph_entries

        def one(graph: Any) -> tuple[np.ndarray, np.ndarray]:
            params = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]  # missing from faiss's stubs
            params.efSearch = max(int(self.spec["ef_search"]), k)
            if filtered:
                params.sel = sel
            scores, rows = graph.search(q, kk, params=params)
            return scores[0], rows[0]

        hits: list[tuple[int, float]] = []
        for scores, rows in self._map(one, self.graphs):
            hits = merge_hits(hits, [(int(r), float(s)) for s, r in zip(scores, rows, strict=True) if r >= 0], kk)
        return hits

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
        parts = (("graph", self._graph_ids(), ~self.is_ehr),
                 ("patient records", faiss.vector_to_array(self.ehr.id_map) if self.ehr is not None
                  else np.zeros(0, np.int64), self.is_ehr))
        for name, ids, want in parts:
            have = np.sort(ids)
            if not np.array_equal(have[have < TOMBSTONE_BASE], np.flatnonzero(want)):
                out.append(f"dense {name} index holds other rows than the passages of its kind")
        if len(self.graphs) != int(self.spec.get("shards", 1)):
            out.append(f"dense store has {len(self.graphs)} graphs, the manifest says {self.spec.get('shards', 1)}")
        if self.tombstones != int(self.spec.get("tombstones", 0)):
            out.append(f"dense graph holds {self.tombstones} removed passages, the manifest says "
                       f"{int(self.spec.get('tombstones', 0))}")
        return out

    def close(self) -> None:
        """Nothing to release: the graphs are freed with the store, the search pool is the process's."""


def faiss_spec(settings: DenseSettings) -> dict[str, Any]:
    spec: dict[str, Any] = {"store": "faiss", "type": settings.dense, "metric": "inner_product", "file": FAISS_FILE}
    if settings.dense == "hnsw":
        spec.update(m=settings.hnsw_m, ef_construction=settings.hnsw_ef_construction,
                    ef_search=settings.hnsw_ef_search, ehr_file=FAISS_EHR_FILE,
                    graph="shared (non-EHR) passages; patient records searched exactly")
        if settings.hnsw_shards > 1:  # one graph: the spec versions before shards had
            spec.update(shards=settings.hnsw_shards,
                        shard_files=[FAISS_SHARD_FILE.format(i) for i in range(1, settings.hnsw_shards)])
    return spec


def _new_graph(dim: int, spec: dict[str, Any]) -> Any:
    import faiss

    graph: Any = faiss.IndexHNSWFlat(dim, int(spec["m"]), faiss.METRIC_INNER_PRODUCT)
    graph.hnsw.efConstruction = int(spec["ef_construction"])
    graph.hnsw.efSearch = int(spec["ef_search"])
    return faiss.IndexIDMap2(graph)


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
    n_graphs = int(spec.get("shards", 1))
    graphs = [_new_graph(dim, spec) for _ in range(n_graphs)]
    shared = np.flatnonzero(~is_ehr)
    for i, graph in enumerate(graphs):
        rows = shared[i::n_graphs]
        if rows.size:
            graph.add_with_ids(vectors[rows], rows.astype(np.int64))
    ehr = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    rows = np.flatnonzero(is_ehr)
    if rows.size:
        ehr.add_with_ids(vectors[rows], rows.astype(np.int64))
    return FaissStore(graphs, spec, is_ehr, ehr)


def _share_out(sizes: list[int], n: int) -> np.ndarray:
    """The graph each of ``n`` new entries goes to: always the smallest graph (ties: the first)."""
    heap = [(size, i) for i, size in enumerate(sizes)]
    heapq.heapify(heap)
    out = np.empty(n, dtype=np.int64)
    for j in range(n):
        size, i = heapq.heappop(heap)
        out[j] = i
        heapq.heappush(heap, (size + 1, i))
    return out


def update_faiss(prev: Any, prev_rows: np.ndarray, vectors: np.ndarray, spec: dict[str, Any],
                 is_ehr: np.ndarray) -> FaissStore | None:
    """The next version's HNSW store made from the previous one's, or None when it must be rebuilt.

    ``prev_rows[i]`` is the previous row of new row ``i`` when that passage is kept with the same
    vector (-1: new). Kept graph entries are renumbered, new shared passages added to the graph
    (sharded: to the smallest graphs), dropped ones left in it as tombstones; the patient records'
    exact index is rebuilt (a copy). None (rebuild) for a flat store, another store or graph shape
    (M, efConstruction, shards), or when the tombstones would pass ``MAX_TOMBSTONE_SHARE`` of the
    graph. ``prev`` is changed in place: pass a store loaded for this job, never one that serves queries.
    """
    import faiss

    if not (isinstance(prev, FaissStore) and prev.hnsw and spec.get("type") == "hnsw"):
        return None
    if any(int(prev.spec.get(k, 1)) != int(spec.get(k, 1)) for k in ("m", "ef_construction", "shards")) \
            or prev.d != vectors.shape[1]:
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
    ids[dead] = TOMBSTONE_BASE + np.flatnonzero(dead)  # unique: the entry's position over all graphs
    add = np.flatnonzero(~kept & ~is_ehr)
    tombstones = int(dead.sum())
    if tombstones > MAX_TOMBSTONE_SHARE * (old.size + add.size):
        return None
    sizes = [int(g.ntotal) for g in prev.graphs]
    for graph, part in zip(prev.graphs, np.split(ids, np.cumsum(sizes)[:-1]), strict=True):
        faiss.copy_array_to_vector(part, graph.id_map)
        graph.construct_rev_map()
        hnsw: Any = faiss.downcast_index(graph.index)
        hnsw.hnsw.efSearch = int(spec["ef_search"])
    if add.size:
        to = _share_out(sizes, add.size)
        for i, graph in enumerate(prev.graphs):
            rows = add[to == i]
            if rows.size:
                graph.add_with_ids(np.ascontiguousarray(vectors[rows], dtype=np.float32), rows)
    ehr = faiss.IndexIDMap2(faiss.IndexFlatIP(vectors.shape[1]))
    rows = np.flatnonzero(is_ehr)
    if rows.size:
        ehr.add_with_ids(np.ascontiguousarray(vectors[rows], dtype=np.float32), rows.astype(np.int64))
    return FaissStore(prev.graphs, {**spec, "tombstones": tombstones}, is_ehr, ehr)


# -- writing and opening -----------------------------------------------------------------------
def graph_files(spec: dict[str, Any]) -> list[str]:
    """The files of a FAISS version's graphs (or flat index), the first one first."""
    return [FAISS_FILE, *[FAISS_SHARD_FILE.format(i) for i in range(1, int(spec.get("shards", 1)))]]


def write_dense(settings: DenseSettings, vdir: Path, vectors: np.ndarray, children: list[Any], version: str,
                root: Path, previous: tuple[Any, np.ndarray] | None = None) -> dict[str, Any]:
    """Store a version's vectors; returns the manifest's ``dense`` entry.

    FAISS writes ``dense.faiss`` (and a sharded version's other graphs) into the (temporary) version
    folder; with ``previous`` (the previous version's store, loaded for this job, and each new row's
    previous row or -1) an HNSW graph is updated instead of rebuilt when it can be (:func:`update_faiss`).
    PostgreSQL creates the version's table, fills it and builds its indexes in one transaction,
    committed before the folder is published: a version that CURRENT names always has a complete table.
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
    for graph, name in zip(store.graphs, graph_files(spec), strict=True):
        faiss.write_index(graph, str(vdir / name))
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
    return (*graph_files(spec), FAISS_EHR_FILE) if spec.get("type") == "hnsw" else (FAISS_FILE,)


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

    if spec.get("type") != "hnsw":
        return FaissStore(faiss.read_index(str(vdir / FAISS_FILE)), spec, is_ehr)
    graphs: list[Any] = [faiss.read_index(str(vdir / name)) for name in graph_files(spec)]
    for graph in graphs:
        hnsw: Any = faiss.downcast_index(graph.index)
        hnsw.hnsw.efSearch = int(spec["ef_search"])
    return FaissStore(graphs, spec, is_ehr, faiss.read_index(str(vdir / FAISS_EHR_FILE)))


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
