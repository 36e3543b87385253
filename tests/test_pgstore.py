"""The PostgreSQL + pgvector store against a real server (the ``pgserver`` wheel, in a temporary folder).

Skipped, with the reason, when pgserver or psycopg is missing or the server does not start."""

from __future__ import annotations

import re
import tempfile

import numpy as np
import pytest

from rag.errors import IndexCorruptError
from rag.index import HybridIndex, read_manifest, verify_index
from rag.update import list_versions, read_sources, rollback, update_index
from rag.vectorstore import DenseSettings, StoreUnavailableError
from tests.fakes import HashEmbedder
from tests.index_helpers import CHUNKING, edit, make_sources

PATIENTS = ("P001", "P002", "P003", "P004", "P005")


def start_server(folder=None, cleanup_mode="delete"):
    """A PostgreSQL server in a new temporary folder. Not under pytest's tmp_path: as root, pgserver
    runs the server as its own user, which cannot enter pytest's private (0700) tmp root."""
    pgserver = pytest.importorskip("pgserver", reason="pgserver not installed (pip install pgserver)")
    pytest.importorskip("psycopg", reason="psycopg 3 not installed (pip install 'psycopg[binary]')")
    pytest.importorskip("pgvector", reason="pgvector helper not installed (pip install pgvector)")
    try:
        return pgserver.get_server(folder or tempfile.mkdtemp(prefix="cds-pg-"), cleanup_mode=cleanup_mode)
    except Exception as e:  # any failure to start is an environment problem, not a test failure
        pytest.skip(f"pgserver could not start PostgreSQL: {type(e).__name__}: {e}")


@pytest.fixture(scope="module")
def pg():
    srv = start_server()
    yield srv.get_uri()
    srv.cleanup()


def _update(src, root, url, dense="hnsw", **kw):
    s = read_sources([src / "guidelines", src / "ehr"])
    settings = DenseSettings(store="postgres", dense=dense, hnsw_m=16, hnsw_ef_construction=40, hnsw_ef_search=40,
                             postgres_url=url)
    return update_index(s.documents, HashEmbedder(), root, CHUNKING, skipped=s.skipped, per_source=s.per_source,
                        dense=settings, **kw)


def _tables(url):
    from rag.pgstore import connect

    with connect(url) as conn:
        return {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE tablename LIKE 'cds_%'")}


def _retriever(idx, dense_k=10, bm25_weight=0.0):
    from rag.retrieve import HybridRetriever

    return HybridRetriever(idx, HashEmbedder(), dense_k, 10, 60, 1.0, bm25_weight, 0.5, 8)


def test_postgres_index_answers_like_faiss_flat_and_scopes_patients(pg, tmp_path):
    src = make_sources(tmp_path / "src", patients=PATIENTS)
    pg_root, faiss_root = tmp_path / "pg", tmp_path / "faiss"
    res = _update(src, pg_root, pg, dense="flat")
    update_index(read_sources([src / "guidelines", src / "ehr"]).documents, HashEmbedder(), faiss_root, CHUNKING)
    _, m = read_manifest(pg_root)
    assert m["dense"]["store"] == "postgres" and m["dense"]["rows"] == m["counts"]["children"]
    assert "dense.faiss" not in m["files"] and m["dense"]["table"] in _tables(pg)
    assert verify_index(pg_root) == []
    a, b = HybridIndex.load(pg_root), HybridIndex.load(faiss_root)
    assert a.dense.ntotal == b.dense.ntotal == len(a.children)
    assert np.allclose(a.dense.reconstruct_n(0, a.dense.ntotal), b.dense.reconstruct_n(0, b.dense.ntotal))
    for q, p in [("beta blocker heart failure mortality", None), ("latest ejection fraction", "P002"),
                 ("potassium creatinine medication", "P004")]:
        ra, rb = _retriever(a).retrieve(q, patient_id=p), _retriever(b).retrieve(q, patient_id=p)
        # Exact in both: the same scores, the same passages (those tied with the 10th may differ).
        assert np.allclose([s for _, s in ra.dense], [s for _, s in rb.dense], atol=1e-5)
        last = ra.dense[-1][1] + 1e-5
        assert {c for c, s in ra.dense if s > last} == {c for c, s in rb.dense if s > last}
        seen = [a.children[a.child_pos[c]] for c, _ in ra.dense]
        assert not any(c.kind == "ehr" and c.patient_id != p for c in seen)
    assert res.version


def test_hnsw_scoping_uses_the_partial_index_and_keeps_the_patients_records(pg, tmp_path):
    src = make_sources(tmp_path / "src", patients=PATIENTS)
    root = tmp_path / "idx"
    _update(src, root, pg)
    idx = HybridIndex.load(root)
    plan = idx.dense.explain_shared(HashEmbedder().encode_queries(["heart failure"])[0])
    assert "_hnsw" in plan, plan  # the shared rows go through the HNSW index, not a sequential scan
    r = _retriever(idx, dense_k=30)
    for p in PATIENTS:
        ret = r.retrieve("ejection fraction potassium creatinine blood pressure medication", patient_id=p)
        seen = [idx.children[idx.child_pos[c]] for c, _ in ret.dense]
        assert not any(c.kind == "ehr" and c.patient_id != p for c in seen)
        # Every one of the patient's records that belongs in the exact top 30 is there.
        allowed = idx.allowed_mask(p)
        want = idx.dense.exact_search(ret.query_vector, 30, allowed)
        own = {idx.children[row].chunk_id for row, _ in want if idx.children[row].kind == "ehr"}
        assert own <= {c for c, _ in ret.dense}
    assert verify_index(root) == []


def test_update_rollback_retention_and_verify(pg, tmp_path):
    src = make_sources(tmp_path / "src")
    root = tmp_path / "idx"
    v1 = _update(src, root, pg).version
    edit(src / "guidelines" / "cap.md", "one")
    r2 = _update(src, root, pg, keep_versions=2)
    assert r2.published and r2.embeddings["computed"] < r2.chunks["total"]  # vectors reused from the table
    edit(src / "guidelines" / "cap.md", "two")
    r3 = _update(src, root, pg, keep_versions=2)
    assert list_versions(root) == [r2.version, r3.version]  # v1 pruned: its folder and its table
    from rag.vectorstore import table_name

    assert table_name(root, str(v1)) not in _tables(pg)
    assert table_name(root, str(r3.version)) in _tables(pg)
    assert rollback(root) == (r3.version, r2.version)
    assert verify_index(root) == []
    # A table changed behind the index's back is caught by verify and refused by rollback.
    from rag.pgstore import connect

    m3 = read_manifest(root, r3.version)[1]
    with connect(pg) as conn:
        conn.execute(f"DELETE FROM {m3['dense']['table']} WHERE pos = 0")
    assert any("vectors" in p for p in verify_index(root, r3.version))
    with pytest.raises(IndexCorruptError, match="fails verification"):
        rollback(root, to=r3.version)


def test_unpublished_table_is_removed_by_the_next_writer(pg, tmp_path):
    src = make_sources(tmp_path / "src")
    root = tmp_path / "idx"
    _update(src, root, pg)
    before = _tables(pg)
    # A writer killed after committing its table but before publishing the folder leaves a table
    # that no version names; simulate it by registering one by hand.
    from rag.pgstore import write_pg

    orphan = write_pg(DenseSettings(store="postgres", dense="flat", postgres_url=pg), np.eye(3, 256, dtype=np.float32),
                      [type("C", (), {"chunk_id": f"x{i}", "doc_id": "x", "kind": "guideline", "patient_id": None,
                                      "text": "x"})() for i in range(3)], "v0099-20990101T000000Z", root)
    assert orphan["table"] in _tables(pg)
    edit(src / "guidelines" / "cap.md", "z")
    _update(src, root, pg)
    assert orphan["table"] not in _tables(pg) and before <= _tables(pg)


def test_a_stopped_server_gives_a_one_line_error_and_a_restarted_one_is_reconnected(tmp_path):
    import shutil

    folder = tempfile.mkdtemp(prefix="cds-pg-")
    srv = start_server(folder, cleanup_mode="stop")
    try:
        url = srv.get_uri()
        src = make_sources(tmp_path / "src")
        root = tmp_path / "idx"
        _update(src, root, url)
        r = _retriever(HybridIndex.load(root))
        before = r.retrieve("heart failure").dense
        assert before
        srv.cleanup()  # stop the server under a loaded reader
        with pytest.raises(StoreUnavailableError) as e:
            r.retrieve("heart failure")
        assert "\n" not in str(e.value) and "PostgreSQL" in str(e.value)
        with pytest.raises(StoreUnavailableError):
            HybridIndex.load(root)
        srv = start_server(folder, cleanup_mode="stop")  # the same data, restarted
        assert r.retrieve("heart failure").dense == before  # the reader reconnects by itself
    finally:
        srv.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


def test_a_server_stopped_during_a_query_fails_that_query_in_one_line_not_a_hang(tmp_path, monkeypatch):
    """The statement is running when PostgreSQL stops (fast shutdown ends its session): the query
    fails within seconds with one line, and after a restart the same reader answers again."""
    import shutil
    import threading
    import time

    from rag.pgstore import PgStore

    folder = tempfile.mkdtemp(prefix="cds-pg-")
    srv = start_server(folder, cleanup_mode="stop")
    try:
        src = make_sources(tmp_path / "src")
        root = tmp_path / "idx"
        _update(src, root, srv.get_uri())
        r = _retriever(HybridIndex.load(root))
        before = r.retrieve("heart failure").dense
        slow = threading.Event()
        real_query = PgStore._query

        def query(self, sql, params):  # a slow statement: the server stops while it runs
            if slow.is_set():
                slow.clear()
                self.conn.execute("SELECT pg_sleep(20)")
            return real_query(self, sql, params)

        monkeypatch.setattr(PgStore, "_query", query)
        outcome: list[BaseException | None] = []

        def ask():
            try:
                r.retrieve("heart failure")
                outcome.append(None)
            except BaseException as e:  # the test inspects what the caller would see
                outcome.append(e)

        slow.set()
        t0 = time.monotonic()
        worker = threading.Thread(target=ask)
        worker.start()
        time.sleep(1.0)
        srv.cleanup()  # stops the server while pg_sleep runs inside the query
        worker.join(30)
        assert not worker.is_alive(), "the query hung after the server stopped"
        assert time.monotonic() - t0 < 20, "the query waited for the statement instead of failing"
        err = outcome[0]
        print(f"query failed {time.monotonic() - t0 - 1.0:.2f} s after the stop: {err}")
        assert isinstance(err, StoreUnavailableError) and "\n" not in str(err) and "PostgreSQL" in str(err)
        srv = start_server(folder, cleanup_mode="stop")
        assert r.retrieve("heart failure").dense == before
    finally:
        srv.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


def test_assistant_with_postgres_store_from_config(pg, tmp_path):
    from rag.assistant import Assistant
    from rag.config import load_config
    from rag.index_jobs import IndexJobs

    src = make_sources(tmp_path / "src", patients=("P001", "P002"))
    cfg = load_config(overrides=[f"index.dir={tmp_path / 'idx'}", "index.auto_build_demo=false",
                                 "index.store=postgres", "index.dense=hnsw", f"index.postgres_url={pg}"])
    a = Assistant(cfg, embedder=HashEmbedder())
    m = IndexJobs.of(a).build([str(src / "guidelines"), str(src / "ehr")])
    assert m["dense"]["store"] == "postgres" and m["dense"]["type"] == "hnsw"
    ans = a.ask("What is the latest ejection fraction?", patient_id="P002", generate=False)
    assert ans.citations and not any(c.kind == "ehr" and c.patient_id != "P002" for c in ans.citations)


def test_kill_9_during_a_postgres_backed_update_never_breaks_the_index(pg, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from eval.crash_trials import run_trials, summarize
    from rag.errors import CDSError
    from tests.index_helpers import check_index, leftovers

    root_dir = Path(__file__).resolve().parent.parent
    src = make_sources(tmp_path / "src", ["hfref-gdmt.md", "cap.md", "sepsis.md"], ())
    root = tmp_path / "idx"
    cmd = [sys.executable, str(root_dir / "tests" / "crash_worker.py"), "--set", "index.store=postgres",
           "--set", f"index.postgres_url={pg}", "index", "update", str(src / "guidelines"), "--index", str(root),
           "--lock-timeout", "30", "-v"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]

    def problems(r: Path) -> list[str]:
        try:
            check_index(r)
        except (AssertionError, CDSError) as e:
            return [f"{type(e).__name__}: {e}"]
        return []

    trials = run_trials(cmd, root, [src / "guidelines"], src / "guidelines", trials=10, check=problems, seed=7,
                        cwd=root_dir)
    s = summarize(trials)
    print("kill -9 trials of a PostgreSQL-backed update:", s)  # what BENCHMARKS.md records (pytest -s)
    assert s["failures"] == 0, [t for t in trials if t.problems]
    assert s["killed"] >= 5, s
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert leftovers(root) == []
    check_index(root)
    # Every table of this index is named by a version folder: the killed writers' tables were removed.
    from rag.update import list_versions
    from rag.vectorstore import table_name

    mine = {t for t in _tables(pg) if t.startswith(table_name(root, "v0000-x").rsplit("_", 2)[0])}
    assert mine == {table_name(root, v) for v in list_versions(root)}


def _rows(n, ehr_every=5):
    from eval.bench_scale import Row

    return [Row(f"c{i}", f"d{i // 4}", "ehr" if i % ehr_every == 0 else "guideline",
                f"P{i % 7}" if i % ehr_every == 0 else None, "") for i in range(n)]


def test_sharded_hnsw_is_a_partitioned_table_searched_by_a_merge_of_its_partitions_indexes(pg, tmp_path):
    from rag.pgstore import PgStore, connect, drop_pg, write_pg

    rng = np.random.default_rng(3)
    n, shards = 6000, 4
    x = rng.normal(size=(n, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    rows = _rows(n)
    is_ehr = np.array([r.kind == "ehr" for r in rows])
    s = DenseSettings(store="postgres", dense="hnsw", hnsw_m=16, hnsw_ef_construction=64, hnsw_ef_search=64,
                      hnsw_shards=shards, postgres_url=pg)
    spec = write_pg(s, x, rows, "v0001-20990101T000000Z", tmp_path / "idx")
    assert spec["shards"] == shards and spec["build_mem_mb"] >= 512
    try:
        with connect(pg) as conn:
            parts = conn.execute("SELECT inhrelid::regclass::text, "
                                 "(SELECT count(*) FROM pg_index i WHERE i.indrelid = inhrelid) "
                                 "FROM pg_inherits WHERE inhparent = %s::regclass ORDER BY 1",
                                 (spec["table"],)).fetchall()
            sizes = [conn.execute(f"SELECT count(*) FROM {p}").fetchone()[0] for p, _ in parts]
        assert [p for p, _ in parts] == [f"{spec['table']}_p{i}" for i in range(shards)]
        assert sum(sizes) == n and min(sizes) > 0.8 * n / shards  # hash partitions, roughly even
        store = PgStore(pg, spec, is_ehr)
        q = x[:40] + rng.normal(size=(40, 32)).astype(np.float32) * 0.1
        plan = store.explain_shared(q[0], 10)
        # One ordered HNSW index scan per partition, merged by distance: no sequential scan, no sort.
        assert "Merge Append" in plan, plan
        assert sorted(set(re.findall(r"using (\S+_hnsw) on", plan))) == sorted(
            f"{spec['table']}_p{i}_hnsw" for i in range(shards)), plan
        assert "Seq Scan" not in plan and "Sort" not in plan.replace("Sort Key", ""), plan
        # hnsw.ef_search applies to each partition's scan: with ef_search 3 each returns at most 3 rows.
        store.conn.execute("SET hnsw.ef_search = 3")
        got = store.conn.execute(f"SELECT pos FROM {spec['table']} WHERE kind <> 'ehr' ORDER BY embedding <#> %s "
                                 "LIMIT 50", (q[0],)).fetchall()
        assert len(got) == 3 * shards
        store._ef_set = 0
        # Recall of the merged search against exact search, shared rows and a patient's scope.
        recall = []
        for i, qv in enumerate(q):
            allowed = ~is_ehr if i % 2 else (~is_ehr | np.array([r.patient_id == "P3" for r in rows]))
            hits = store.search(qv, 10, allowed)
            assert all(allowed[r] for r, _ in hits)
            want = {r for r, _ in store.exact_search(qv, 10, allowed)}
            recall.append(len({r for r, _ in hits} & want) / 10)
        assert np.mean(recall) >= 0.95, np.mean(recall)
        assert store.problems() == [] and store.ntotal == n
        assert np.allclose(store.reconstruct_n(0, n), x) and np.allclose(store.reconstruct(17), x[17])
        store.close()
    finally:
        drop_pg(pg, spec)
    assert spec["table"] not in _tables(pg) and not any(t.startswith(spec["table"]) for t in _tables(pg))


def test_build_memory_is_sized_for_the_largest_partition():
    from rag.pgstore import build_mem_mb, graph_mem_mb

    rows = _rows(1000)
    x = np.zeros((1000, 384), np.float32)
    s = DenseSettings(store="postgres", dense="hnsw", hnsw_m=32)
    assert build_mem_mb(s, x, rows, 1) == 512  # small: the floor
    assert graph_mem_mb(820_000, 384, 32) > 2000  # 1M passages, one graph: ~2.2 GB
    big = [rows[1]] * 820_000  # 820k shared rows
    x = np.zeros((1, 384), np.float32)
    assert build_mem_mb(s, x, big, 1) >= 1.25 * graph_mem_mb(820_000, 384, 32)
    assert build_mem_mb(s, x, big, 8) == 512  # 8 partitions of ~102k fit in the floor
    assert build_mem_mb(DenseSettings(store="postgres", dense="hnsw", postgres_build_mem_mb=3000), x, big, 1) == 3000
