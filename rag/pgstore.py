"""PostgreSQL + pgvector vector store: one immutable table per index version.

Tables (``psycopg`` 3, the ``vector`` extension; any PostgreSQL with pgvector >= 0.5)::

    cds_index_versions   (namespace, version, table_name, rows, dim, created, manifest)  one row per version
    cds_<ns>_<version>   (pos, chunk_id, doc_id, kind, patient_id, text, embedding vector(dim))

``ns`` identifies the index folder, so one database can hold several indexes. A version's table
is created, filled (binary COPY), indexed and registered in ``cds_index_versions`` in **one
transaction**: it exists complete or not at all, and is never modified afterwards. The index
folder's CURRENT names the published version (the same atomic swap as FAISS), so a reader
only ever queries one complete table: rollback moves CURRENT back, retention drops the table of
a pruned version, and ``index verify`` checks the row count, the dimension and a sha256 over
the vectors against the manifest.

Shards. With ``index.dense=hnsw`` and ``index.hnsw_shards`` N > 1 the table is partitioned
``PARTITION BY HASH (pos)`` into ``<table>_p0`` .. ``<table>_p{N-1}``, each with its own partial HNSW
index (built one after the other, with the config's M and efConstruction, in the same transaction).
The shared-rows query is unchanged: the planner runs it as a Merge Append of the partitions' ordered
HNSW index scans (each takes ``hnsw.ef_search`` candidates), the counterpart of FAISS's shards searched
and merged by exact score. Hash on ``pos`` keeps the primary key ``(pos)`` (a partitioned table's keys
must contain the partition key), lets reads by row prune to one partition, and balances the partitions
within a few tenths of a percent. ``maintenance_work_mem`` is sized so the largest graph fits
(``index.postgres_build_mem_mb``): pgvector finishes a graph that outgrows it on disk, several times slower.

Search (see :mod:`rag.vectorstore` for the scoping rule): the shared (non-EHR) rows through a
partial HNSW index ``WHERE kind <> 'ehr'`` (no filter inside the graph walk: pgvector 0.6.2 has no
iterative scan and filters after taking ``ef_search`` candidates); one patient's records exactly,
by primary key. Connections time out (``connect_timeout``, ``statement_timeout``), so a server
that is down or restarting gives a one-line error, not a hang.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from rag.errors import InputError
from rag.vectorstore import VERSIONS_TABLE, DenseSettings, StoreUnavailableError, _top, merge_hits, table_name

log = logging.getLogger(__name__)

COPY_BATCH = 5000
BUILD_MEM_FLOOR_MB = 512  # maintenance_work_mem for a version's index builds: at least this
BUILD_MEM_AUTO_CAP_MB = 4096  # ... and the automatic size at most this (index.postgres_build_mem_mb overrides)


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise InputError("index.store is postgres but psycopg is not installed; "
                         "`pip install 'psycopg[binary]>=3.2' pgvector`") from None
    return psycopg


def redact(url: str) -> str:
    """The URL without its password (it is written into the manifest and logs)."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1@", url)


def connect(url: str, settings: DenseSettings | None = None, autocommit: bool = True) -> Any:
    """A connection with pgvector's types registered; any failure is one line naming the server."""
    psycopg = _psycopg()
    from pgvector.psycopg import register_vector

    s = settings or DenseSettings()
    try:
        conn = psycopg.connect(url, autocommit=autocommit, connect_timeout=s.connect_timeout_s,
                               options=f"-c statement_timeout={s.statement_timeout_ms}")
        if autocommit:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        register_vector(conn)
    except psycopg.Error as e:
        raise StoreUnavailableError(f"cannot use PostgreSQL at {redact(url)} ({_first_line(e)}); check that the "
                                    "server is running, the URL (index.postgres_url) and that pgvector is "
                                    "installed") from None
    return conn


def _vec(v: Any) -> np.ndarray:
    """A fetched ``vector`` as float32 (pgvector's loader gives a Vector object or an array by version)."""
    return np.asarray(v.to_numpy() if hasattr(v, "to_numpy") else v, dtype=np.float32)


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


@contextmanager
def _db_errors(url: str, what: str) -> Iterator[None]:
    psycopg = _psycopg()
    try:
        yield
    except psycopg.Error as e:
        raise StoreUnavailableError(f"PostgreSQL at {redact(url)} failed while {what} ({_first_line(e)}); "
                                    "retry when the server is up, or run `python app.py index verify`") from None


def _ensure_versions_table(conn: Any) -> None:
    conn.execute(f"""CREATE TABLE IF NOT EXISTS {VERSIONS_TABLE} (
        namespace text NOT NULL, version text NOT NULL, table_name text NOT NULL UNIQUE,
        rows integer NOT NULL, dim integer NOT NULL, vectors_sha256 text NOT NULL,
        created timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (namespace, version))""")


def graph_mem_mb(rows: int, dim: int, m: int) -> float:
    """pgvector's in-memory HNSW graph for ``rows`` vectors: each element holds its vector and, on the
    bottom layer, 2M neighbour candidates of 16 bytes, plus ~256 bytes of element and allocation overhead
    (2,816 bytes at 384-d, M 32; pgvector 0.6.2's own notice gives 2,765: BENCHMARKS.md, "Scale")."""
    return rows * (dim * 4 + 2 * m * 16 + 256) / 2**20


def build_mem_mb(settings: DenseSettings, vectors: np.ndarray, children: list[Any], shards: int) -> int:
    """``maintenance_work_mem`` for the build: ``index.postgres_build_mem_mb``, or (0) enough for the largest
    partition's graph with a quarter to spare, between 512 MB and 4 GB. A graph that outgrows it is finished
    on disk, several times slower (pgvector says so in a notice, logged as a warning)."""
    if settings.postgres_build_mem_mb:
        return int(settings.postgres_build_mem_mb)
    if settings.dense != "hnsw":
        return BUILD_MEM_FLOOR_MB
    shared = sum(1 for c in children if c.kind != "ehr")
    largest = shared / shards * (1.02 if shards > 1 else 1.0)  # hash partitions differ by a few 0.1%
    need = 1.25 * graph_mem_mb(int(largest), int(vectors.shape[1]), int(settings.hnsw_m))
    return int(min(BUILD_MEM_AUTO_CAP_MB, max(BUILD_MEM_FLOOR_MB, np.ceil(need / 64) * 64)))


def write_pg(settings: DenseSettings, vectors: np.ndarray, children: list[Any], version: str, root: Path
             ) -> dict[str, Any]:
    """Create, fill and index the version's table in one transaction; returns the manifest entry.

    Long: one transaction from CREATE TABLE to the versions row is the publish guarantee (readers never
    see a half-built table); splitting it would hand the open connection between helpers."""
    from rag.vectorstore import vectors_sha256

    if not settings.postgres_url:
        raise InputError("index.store is postgres but index.postgres_url is not set; "
                         "--set index.postgres_url=postgresql://user@host:5432/db")
    url = settings.postgres_url
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = vectors.shape
    table = table_name(root, version)
    digest = vectors_sha256(vectors)
    ns = table.rsplit("_", 2)[0]
    with connect(url, settings) as conn:
        _ensure_versions_table(conn)
    shards = int(settings.hnsw_shards) if settings.dense == "hnsw" else 1
    if len(f"{table}_p{shards - 1}_patient") > 63:  # PostgreSQL would truncate (and clash) longer names
        raise InputError(f"table {table} is too long a name for {shards} partitions; use a shorter index version name")
    mem_mb = build_mem_mb(settings, vectors, children, shards)
    with connect(url, settings, autocommit=False) as conn, _db_errors(url, f"writing table {table}"):
        notices: list[str] = []
        conn.add_notice_handler(lambda d: notices.append(str(d.message_primary)))
        conn.execute("SET LOCAL statement_timeout = 0")  # index builds take minutes at millions of rows
        conn.execute(f"SET LOCAL maintenance_work_mem = '{mem_mb}MB'")
        conn.execute(f"""CREATE TABLE {table} (pos integer PRIMARY KEY, chunk_id text NOT NULL, doc_id text NOT NULL,
            kind text NOT NULL, patient_id text, text text NOT NULL, embedding vector({dim}) NOT NULL)"""
                     + (" PARTITION BY HASH (pos)" if shards > 1 else ""))
        for i in range(shards if shards > 1 else 0):
            conn.execute(f"CREATE TABLE {table}_p{i} PARTITION OF {table} "
                         f"FOR VALUES WITH (MODULUS {shards}, REMAINDER {i})")
        with conn.cursor() as cur, cur.copy(
                f"COPY {table} (pos, chunk_id, doc_id, kind, patient_id, text, embedding) FROM STDIN "
                "WITH (FORMAT BINARY)") as copy:
            copy.set_types(["int4", "text", "text", "text", "text", "text", "vector"])
            for i, (c, v) in enumerate(zip(children, vectors, strict=True)):
                copy.write_row((i, c.chunk_id, c.doc_id, c.kind, c.patient_id, c.text, v))
        if settings.dense == "hnsw":
            m, efc = int(settings.hnsw_m), int(settings.hnsw_ef_construction)
            for part in ([f"{table}_p{i}" for i in range(shards)] if shards > 1 else [table]):
                conn.execute(f"CREATE INDEX {part}_hnsw ON {part} USING hnsw (embedding vector_ip_ops) "
                             f"WITH (m = {m}, ef_construction = {efc}) WHERE kind <> 'ehr'")
        conn.execute(f"CREATE INDEX {table}_patient ON {table} (patient_id) WHERE patient_id IS NOT NULL")
        conn.execute(f"INSERT INTO {VERSIONS_TABLE} (namespace, version, table_name, rows, dim, vectors_sha256) "
                     "VALUES (%s, %s, %s, %s, %s, %s)", (ns, version, table, n, dim, digest))
        conn.execute(f"ANALYZE {table}")
        conn.commit()
    for note in notices:  # e.g. pgvector's "hnsw graph no longer fits into maintenance_work_mem": a slow build
        (log.warning if "maintenance_work_mem" in note else log.info)(
            "PostgreSQL while building %s: %s%s", table, note,
            " (raise index.postgres_build_mem_mb, or index.hnsw_shards)" if "maintenance_work_mem" in note else "")
    log.info("wrote %d vectors to PostgreSQL table %s (%s)", n, table, settings.dense)
    spec: dict[str, Any] = {"store": "postgres", "type": settings.dense, "metric": "inner_product", "table": table,
                            "namespace": ns, "rows": n, "dim": dim, "vectors_sha256": digest, "url": redact(url),
                            "shared_index": "hnsw, partial: kind <> 'ehr'" if settings.dense == "hnsw" else "none",
                            "patient_search": "exact", "build_mem_mb": mem_mb}
    if settings.dense == "hnsw":
        spec.update(m=settings.hnsw_m, ef_construction=settings.hnsw_ef_construction,
                    ef_search=settings.hnsw_ef_search)
        if shards > 1:  # one table and one HNSW index: the spec versions before shards had
            spec.update(shards=shards, partitions="hash (pos)")
    return spec


def drop_pg(url: str, spec: dict[str, Any]) -> None:
    table = spec["table"]
    with connect(url) as conn, _db_errors(url, f"dropping table {table}"), conn.transaction():
        conn.execute(f"DROP TABLE IF EXISTS {table}")
        _ensure_versions_table(conn)
        conn.execute(f"DELETE FROM {VERSIONS_TABLE} WHERE table_name = %s", (table,))
    log.info("dropped PostgreSQL table %s", table)


def clean_pg_leftovers(settings: DenseSettings, root: Path, versions: set[str]) -> int:
    """Drop this index's tables that no version folder names (a writer killed after its commit).

    Only call it while holding the index lock, like :func:`rag.index.clean_leftovers`.
    """
    if not settings.postgres_url:
        return 0
    ns = table_name(root, "v0000-x").rsplit("_", 2)[0]
    with connect(settings.postgres_url, settings) as conn:
        _ensure_versions_table(conn)
        rows = conn.execute(f"SELECT version, table_name FROM {VERSIONS_TABLE} WHERE namespace = %s",
                            (ns,)).fetchall()
    n = 0
    for version, table in rows:
        if version not in versions:
            drop_pg(settings.postgres_url, {"table": table})
            n += 1
    return n


class PgStore:
    """A version's vectors in PostgreSQL; nothing is loaded, every search is a query."""

    def __init__(self, url: str, spec: dict[str, Any], is_ehr: np.ndarray, settings: DenseSettings | None = None):
        self.url = url
        self.spec = spec
        self.table = str(spec["table"])
        if not re.fullmatch(r"[a-z0-9_]{1,63}", self.table):
            raise InputError(f"manifest names table {self.table[:70]!r}, not one this index writes")
        self.is_ehr = is_ehr
        self.settings = settings
        self.conn = connect(url, settings)
        self._ef_set = 0
        self._all_shared = ~is_ehr
        # One connection per loaded version; the server's query threads share it. The lock keeps
        # "SET hnsw.ef_search" and the query it is for together.
        self._lock = threading.Lock()

    @property
    def ntotal(self) -> int:
        with _db_errors(self.url, "counting vectors"):
            row = self.conn.execute(
                "SELECT to_regclass(%s) IS NOT NULL", (self.table,)).fetchone()
            if not row[0]:
                return 0
            return int(self.conn.execute(f"SELECT count(*) FROM {self.table}").fetchone()[0])

    @property
    def d(self) -> int:
        with _db_errors(self.url, "reading the dimension"):
            row = self.conn.execute(f"SELECT vector_dims(embedding) FROM {self.table} LIMIT 1").fetchone()
        return int(row[0]) if row else int(self.spec.get("dim", 0))

    def reconstruct(self, row: int) -> np.ndarray:
        with _db_errors(self.url, "reading a vector"):
            got = self.conn.execute(f"SELECT embedding FROM {self.table} WHERE pos = %s", (int(row),)).fetchone()
        if got is None:
            raise KeyError(row)
        return _vec(got[0])

    def reconstruct_n(self, start: int, n: int) -> np.ndarray:
        with _db_errors(self.url, "reading vectors"):
            rows = self.conn.execute(f"SELECT embedding FROM {self.table} WHERE pos >= %s AND pos < %s ORDER BY pos",
                                     (start, start + n)).fetchall()
        if not rows:
            return np.zeros((0, int(self.spec.get("dim", 0))), np.float32)
        return np.stack([_vec(r[0]) for r in rows])

    @property
    def ef_search(self) -> int:
        return int(self.spec.get("ef_search", 40))  # read per query: a benchmark may change the spec's

    def _set_ef(self, k: int) -> None:
        # pgvector's HNSW returns at most ef_search rows (per partition: each partition's index scan
        # takes its own ef_search candidates, as each FAISS shard does)
        ef = max(self.ef_search, k)
        if ef != self._ef_set:
            self.conn.execute(f"SET hnsw.ef_search = {int(ef)}")
            self._ef_set = ef

    def _query(self, sql: str, params: tuple[Any, ...]) -> list[tuple[int, float]]:
        return [(int(r), float(s)) for r, s in self.conn.execute(sql, params).fetchall()]

    def search(self, qv: np.ndarray, k: int, allowed: np.ndarray) -> list[tuple[int, float]]:
        """Scoped search; a connection lost since the last query (server restarted, failover) is
        reopened once, so a long-lived reader recovers; a server still down is a one-line error."""
        with self._lock:
            try:
                return self._search(qv, k, allowed)
            except StoreUnavailableError:
                if not (self.conn.closed or self.conn.broken):
                    raise
            log.warning("PostgreSQL connection to %s was lost; reconnecting once", redact(self.url))
            self.conn = connect(self.url, self.settings)
            self._ef_set = 0
            return self._search(qv, k, allowed)

    def _search(self, qv: np.ndarray, k: int, allowed: np.ndarray) -> list[tuple[int, float]]:
        qv = np.asarray(qv, dtype=np.float32).reshape(-1)
        ehr_rows = np.flatnonzero(allowed & self.is_ehr)
        shared = allowed & ~self.is_ehr
        hits: list[tuple[int, float]] = []
        with _db_errors(self.url, "searching"):
            # <#> is the negative inner product: ascending order = best first.
            if shared.any() and np.array_equal(shared, self._all_shared):
                if self.spec.get("type") == "hnsw":
                    self._set_ef(k)
                hits = self._query(f"SELECT pos, -(embedding <#> %s) FROM {self.table} WHERE kind <> 'ehr' "
                                   "ORDER BY embedding <#> %s LIMIT %s", (qv, qv, k))
            elif shared.any():  # an arbitrary subset (evaluation): exact
                hits = self._query(f"SELECT pos, -(embedding <#> %s) AS s FROM {self.table} WHERE pos = ANY(%s) "
                                   "ORDER BY s DESC, pos LIMIT %s", (qv, np.flatnonzero(shared).tolist(), k))
            if ehr_rows.size:
                own = self._query(f"SELECT pos, -(embedding <#> %s) AS s FROM {self.table} WHERE pos = ANY(%s) "
                                  "ORDER BY s DESC, pos LIMIT %s", (qv, ehr_rows.tolist(), k))
                hits = merge_hits(hits, own, k)
        return hits

    def explain_shared(self, qv: np.ndarray, k: int = 10) -> str:
        """The plan of the shared-rows query (tests check that it uses the HNSW index)."""
        self._set_ef(k)
        rows = self.conn.execute(f"EXPLAIN SELECT pos FROM {self.table} WHERE kind <> 'ehr' "
                                 "ORDER BY embedding <#> %s LIMIT %s", (np.asarray(qv, np.float32), k)).fetchall()
        return "\n".join(r[0] for r in rows)

    def exact_search(self, qv: np.ndarray, k: int, allowed: np.ndarray) -> list[tuple[int, float]]:
        """Exact search over ``allowed`` in numpy (the reference the benchmarks compare against)."""
        rows = np.flatnonzero(allowed)
        vecs = self.reconstruct_n(0, len(allowed))[rows]
        return _top(rows, vecs @ np.asarray(qv, np.float32).reshape(-1), k)

    def problems(self) -> list[str]:
        """Table present, rows and dimension as written, vectors' sha256 as in the manifest."""
        from rag.vectorstore import vectors_sha256

        with _db_errors(self.url, "verifying"):
            if not self.conn.execute("SELECT to_regclass(%s) IS NOT NULL", (self.table,)).fetchone()[0]:
                return [f"PostgreSQL table {self.table} is missing at {redact(self.url)}"]
            n = self.ntotal
            out = []
            if n != self.spec.get("rows"):
                out.append(f"PostgreSQL table {self.table}: {n} rows, manifest says {self.spec.get('rows')}")
            elif vectors_sha256(self.reconstruct_n(0, n)) != self.spec.get("vectors_sha256"):
                out.append(f"PostgreSQL table {self.table}: vectors checksum mismatch")
        return out

    def close(self) -> None:
        self.conn.close()
