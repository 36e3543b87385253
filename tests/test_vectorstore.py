"""The vector-store interface with FAISS behind it: flat and HNSW, patient scoping, manifest, jobs.

The PostgreSQL store has its own file (tests/test_pgstore.py: it starts a real server)."""

from __future__ import annotations

import numpy as np
import pytest

from rag.index import HybridIndex, read_manifest, verify_index
from rag.update import read_sources, rollback, update_index
from rag.vectorstore import DenseSettings, build_faiss, faiss_spec
from tests.fakes import HashEmbedder
from tests.index_helpers import CHUNKING, check_index, edit, make_sources

HNSW = DenseSettings(dense="hnsw", hnsw_m=16, hnsw_ef_construction=40, hnsw_ef_search=32)


def _update(src, root, dense=None, **kw):
    s = read_sources([src / "guidelines", src / "ehr"])
    return update_index(s.documents, HashEmbedder(), root, CHUNKING, skipped=s.skipped, per_source=s.per_source,
                        dense=dense, **kw)


def synthetic(n: int = 4000, dim: int = 32, ehr_share: float = 0.6, patients: int = 50, seed: int = 0
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clustered unit vectors; ``ehr_share`` of rows belong to one of ``patients`` patients."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(40, dim))
    x = centres[rng.integers(0, 40, n)] + 0.6 * rng.normal(size=(n, dim))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    is_ehr = rng.random(n) < ehr_share
    patient = np.where(is_ehr, rng.integers(0, patients, n), -1)
    return x, is_ehr, patient


def exact(x: np.ndarray, q: np.ndarray, allowed: np.ndarray, k: int) -> list[int]:
    s = np.where(allowed, x @ q, -np.inf)
    return [int(i) for i in np.argsort(-s, kind="stable")[:k] if np.isfinite(s[i])]


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_scoped_search_never_leaves_the_scope_and_finds_the_patients_own_records(kind):
    x, is_ehr, patient = synthetic()
    spec = faiss_spec(DenseSettings(dense=kind, hnsw_m=16, hnsw_ef_construction=40, hnsw_ef_search=32))
    store = build_faiss(x, spec, is_ehr)
    rng = np.random.default_rng(1)
    recall, own_recall = [], []
    for qi in rng.integers(0, len(x), 50):
        q = x[qi] + 0.1 * rng.normal(size=x.shape[1]).astype(np.float32)
        p = int(rng.integers(0, 50))
        allowed = ~is_ehr | (patient == p)
        hits = [r for r, _ in store.search(q, 10, allowed)]
        assert hits and all(allowed[r] for r in hits)
        want = exact(x, q, allowed, 10)
        recall.append(len(set(hits) & set(want)) / len(want))
        own = [r for r in want if is_ehr[r]]  # the patient's records that belong in the top 10
        own_recall.append(all(r in hits for r in own))
    assert all(own_recall)  # the patient's rows are searched exactly in both stores
    assert np.mean(recall) >= (1.0 if kind == "flat" else 0.95), np.mean(recall)


def test_hnsw_search_with_nothing_allowed_and_everything_allowed():
    x, is_ehr, _ = synthetic(n=500)
    spec = faiss_spec(HNSW)
    store = build_faiss(x, spec, is_ehr)
    assert store.search(x[0], 5, np.zeros(len(x), bool)) == []
    hits = store.search(x[0], 5, np.ones(len(x), bool))
    assert hits[0][0] == 0 and len(hits) == 5
    assert store.reconstruct_n(0, 3).shape == (3, x.shape[1]) and np.allclose(store.reconstruct(2), x[2])


def test_hnsw_index_is_recorded_in_the_manifest_and_jobs_behave_as_with_flat(tmp_path):
    src = make_sources(tmp_path / "src", patients=("P001", "P002"))
    root = tmp_path / "idx"
    v1 = _update(src, root, dense=HNSW).version
    _, m = read_manifest(root)
    assert {k: m["dense"][k] for k in ("store", "type", "file", "ehr_file", "m", "ef_construction", "ef_search")} == {
        "store": "faiss", "type": "hnsw", "file": "dense.faiss", "ehr_file": "dense-ehr.faiss", "m": 16,
        "ef_construction": 40, "ef_search": 32}
    assert {"dense.faiss", "dense-ehr.faiss"} <= set(m["files"])
    import faiss

    idx = HybridIndex.load(root)
    graph = faiss.downcast_index(idx.dense.index.index)
    assert type(graph).__name__ == "IndexHNSWFlat" and graph.hnsw.efSearch == 32
    # The graph holds the shared passages, the other file the patient records, each keyed by row.
    assert idx.dense.index.ntotal == int((~idx.is_ehr).sum()) and idx.dense.ehr.ntotal == int(idx.is_ehr.sum())
    assert np.allclose(idx.dense.reconstruct_n(0, idx.dense.ntotal)[5], idx.dense.reconstruct(5))
    check_index(root)
    # An update reuses the HNSW version's vectors (read back from the graph's storage).
    edit(src / "guidelines" / "cap.md", "hnsw")
    res = _update(src, root, dense=HNSW)
    assert res.published and res.embeddings["computed"] < res.chunks["total"]
    assert verify_index(root) == []
    # Patient scoping: P001's question never sees P002's records, in dense or fused results.
    from rag.retrieve import HybridRetriever

    idx = HybridIndex.load(root)
    r = HybridRetriever(idx, HashEmbedder(), 30, 30, 60, 1.0, 1.0, 0.5, 8)
    ret = r.retrieve("latest ejection fraction potassium creatinine", patient_id="P001")
    seen = [idx.children[idx.child_pos[c]] for c, _ in ret.dense]
    assert any(c.patient_id == "P001" for c in seen)
    assert not any(c.kind == "ehr" and c.patient_id != "P001" for c in seen)
    assert rollback(root) == (res.version, v1)
    check_index(root)


def test_flat_and_hnsw_versions_of_the_same_corpus_retrieve_nearly_the_same_dense_top_10(tmp_path):
    src = make_sources(tmp_path / "src")
    flat_root, hnsw_root = tmp_path / "flat", tmp_path / "hnsw"
    _update(src, flat_root)
    _update(src, hnsw_root, dense=HNSW)
    assert read_manifest(flat_root)[1]["dense"]["type"] == "flat"
    from rag.retrieve import HybridRetriever

    tops = []
    for root in (flat_root, hnsw_root):
        r = HybridRetriever(HybridIndex.load(root), HashEmbedder(), 10, 10, 60, 1.0, 0.0, 0.5, 8)
        tops.append(r.retrieve("beta blocker heart failure mortality").dense)
    # Approximate: at least 9 of the exact top 10, and the best hit the same.
    assert len({c for c, _ in tops[0]} & {c for c, _ in tops[1]}) >= 9 and tops[0][0] == tops[1][0]


def test_a_manifest_without_a_dense_entry_reads_as_faiss_flat(tmp_path):
    from rag.vectorstore import dense_spec, required_files

    assert dense_spec({})["type"] == "flat" and required_files({}) == ("dense.faiss",)
    assert required_files({"dense": {"store": "postgres", "table": "t"}}) == ()


def test_config_selects_the_store(tmp_path):
    from rag.config import load_config

    cfg = load_config(overrides=["index.dense=hnsw", "index.hnsw_ef_search=128", "index.store=postgres",
                                 "index.postgres_url=postgresql://u@db:5432/cds?sslmode=require"])
    s = DenseSettings.from_config(cfg.index)
    assert (s.store, s.dense, s.hnsw_ef_search, s.hnsw_shards, s.postgres_url) == (
        "postgres", "hnsw", 128, 1, "postgresql://u@db:5432/cds?sslmode=require")
    assert DenseSettings.from_config(load_config(overrides=["index.hnsw_shards=8"]).index).hnsw_shards == 8
    from rag.errors import ConfigError

    for bad in ("index.dense=ivf", "index.hnsw_shards=0"):
        with pytest.raises(ConfigError):
            load_config(overrides=[bad])


# -- incremental HNSW updates -----------------------------------------------------------------
EXACT_HNSW = DenseSettings(dense="hnsw", hnsw_m=16, hnsw_ef_construction=40, hnsw_ef_search=4000)


def _next_version(x, is_ehr, rng, n_remove, n_add):
    """A next version: some rows removed, some added, the rest kept in a new order."""
    keep = np.sort(rng.choice(len(x), len(x) - n_remove, replace=False))
    new_x, new_ehr, _ = synthetic(n=n_add, seed=7)
    order = rng.permutation(len(keep) + n_add)  # kept rows land anywhere among the new ones
    prev_rows = np.concatenate([keep, np.full(n_add, -1)])[order]
    vecs = np.concatenate([x[keep], new_x])[order]
    ehr = np.concatenate([is_ehr[keep], new_ehr])[order]
    return prev_rows, vecs, ehr


def test_an_updated_hnsw_graph_answers_as_a_rebuilt_one():
    from rag.vectorstore import TOMBSTONE_BASE, update_faiss

    rng = np.random.default_rng(3)
    x, is_ehr, _ = synthetic(n=1500)
    spec = faiss_spec(EXACT_HNSW)
    store = build_faiss(x, spec, is_ehr)
    for _ in range(2):  # twice: the second update renumbers the first one's tombstones too
        prev_rows, vecs, ehr = _next_version(x, is_ehr, rng, n_remove=40, n_add=60)
        upd = update_faiss(store, prev_rows, vecs, spec, ehr)
        assert upd is not None
        ref = build_faiss(vecs, spec, ehr)
        assert upd.ntotal == ref.ntotal == len(vecs)
        assert upd.tombstones == upd.spec["tombstones"] > 0 and upd.problems() == []
        assert np.array_equal(upd.reconstruct_n(0, upd.ntotal), vecs)
        graph_ids = upd._graph_ids()
        assert (graph_ids >= TOMBSTONE_BASE).sum() == upd.tombstones
        patients = np.flatnonzero(ehr)
        for qi in rng.integers(0, len(vecs), 40):
            q = vecs[qi] + 0.1 * rng.normal(size=vecs.shape[1]).astype(np.float32)
            mine = np.zeros(len(vecs), bool)
            mine[patients[:: 7]] = True  # one "patient": a subset of the records
            for allowed in (~ehr, ~ehr | mine, np.ones(len(vecs), bool)):
                got = [r for r, _ in upd.search(q, 10, allowed)]
                assert got == [r for r, _ in ref.search(q, 10, allowed)] == exact(vecs, q, allowed, 10)
        store, x, is_ehr = upd, vecs, ehr


def test_hnsw_update_falls_back_to_a_rebuild_when_it_must():
    from rag.vectorstore import update_faiss

    rng = np.random.default_rng(4)
    x, is_ehr, _ = synthetic(n=1000)
    hnsw = faiss_spec(EXACT_HNSW)
    prev_rows, vecs, ehr = _next_version(x, is_ehr, rng, n_remove=200, n_add=10)  # 200 of ~400 graph rows
    assert update_faiss(build_faiss(x, hnsw, is_ehr), prev_rows, vecs, hnsw, ehr) is None  # too many tombstones
    flat = faiss_spec(DenseSettings())
    prev_rows, vecs, ehr = _next_version(x, is_ehr, rng, n_remove=5, n_add=5)
    assert update_faiss(build_faiss(x, flat, is_ehr), prev_rows, vecs, hnsw, ehr) is None  # flat: rebuild
    other = faiss_spec(DenseSettings(dense="hnsw", hnsw_m=8, hnsw_ef_construction=40))
    assert update_faiss(build_faiss(x, other, is_ehr), prev_rows, vecs, hnsw, ehr) is None  # another graph shape
    with pytest.raises(ValueError):
        update_faiss(build_faiss(x, hnsw, is_ehr), prev_rows, vecs, hnsw, ~ehr)  # a kept row changed kind


def test_an_update_job_extends_the_previous_graph_and_matches_a_full_rebuild(tmp_path):
    from tests.index_helpers import DEMO

    # every demo guideline: one changed document stays under the tombstone limit (10% of the graph)
    src = make_sources(tmp_path / "src", guidelines=sorted(p.name for p in (DEMO / "guidelines").glob("*.md")),
                       patients=("P001", "P002"))
    root, fresh = tmp_path / "idx", tmp_path / "fresh"
    v1 = _update(src, root, dense=EXACT_HNSW).version
    edit(src / "guidelines" / "cap.md", "incremental")  # a changed section: passages removed and added
    edit(src / "guidelines" / "sepsis.md", "incremental")
    res = _update(src, root, dense=EXACT_HNSW)
    _, m = read_manifest(root)
    assert res.published and m["dense"]["tombstones"] > 0  # the graph was updated, not rebuilt
    check_index(root)
    _update(src, fresh, dense=EXACT_HNSW, full=True)
    assert read_manifest(fresh)[1]["dense"].get("tombstones") is None
    from rag.retrieve import HybridRetriever

    a, b = HybridIndex.load(root), HybridIndex.load(fresh)
    assert [c.chunk_id for c in a.children] == [c.chunk_id for c in b.children]
    assert np.allclose(a.dense.reconstruct_n(0, a.dense.ntotal), b.dense.reconstruct_n(0, b.dense.ntotal), atol=1e-6)
    ra, rb = (HybridRetriever(i, HashEmbedder(), 10, 10, 60, 1.0, 1.0, 0.5, 8) for i in (a, b))
    for q, p in (("beta blocker heart failure mortality", None), ("community acquired pneumonia antibiotics", None),
                 ("latest ejection fraction potassium", "P001"), ("creatinine", "P002")):
        assert [c for c, _ in ra.retrieve(q, patient_id=p).dense] == [c for c, _ in rb.retrieve(q, patient_id=p).dense]
    assert rollback(root)[1] == v1
    check_index(root)


# -- sharded HNSW (index.hnsw_shards) -----------------------------------------------------------
SHARDED = DenseSettings(dense="hnsw", hnsw_m=16, hnsw_ef_construction=40, hnsw_ef_search=4000, hnsw_shards=3)


def is_exact_top(got: list[tuple[int, float]], x: np.ndarray, q: np.ndarray, allowed: np.ndarray, k: int) -> bool:
    """``got`` is the exact top ``k`` (rows may differ only between scores tied to float precision)."""
    want = exact(x, q, allowed, k)
    rows = [r for r, _ in got]
    if rows == want:
        return True
    scores = np.array([s for _, s in got])
    return (len(rows) == len(set(rows)) == len(want) and all(allowed[r] for r in rows)
            and np.allclose(scores, x[rows] @ q, atol=1e-5) and np.allclose(scores, x[want] @ q, atol=1e-5))


@pytest.mark.parametrize("threads", [1, 3])
def test_sharded_graphs_answer_as_exact_search_in_every_scope(threads):
    x, is_ehr, patient = synthetic(n=3000, ehr_share=0.3)
    store = build_faiss(x, faiss_spec(SHARDED), is_ehr)
    store.threads = threads
    sizes = [g.ntotal for g in store.graphs]
    assert len(sizes) == 3 and sum(sizes) == int((~is_ehr).sum()) and max(sizes) - min(sizes) <= 1
    assert store.problems() == [] and store.ntotal == len(x)
    assert np.array_equal(store.reconstruct_n(0, store.ntotal), x)
    assert all(np.array_equal(store.reconstruct(r), x[r]) for r in (0, 1, 2, len(x) - 1))
    rng = np.random.default_rng(2)
    for qi in rng.integers(0, len(x), 30):
        q = x[qi] + 0.1 * rng.normal(size=x.shape[1]).astype(np.float32)
        for allowed in (~is_ehr, ~is_ehr | (patient == int(rng.integers(0, 50))), np.ones(len(x), bool),
                        rng.random(len(x)) < 0.2):  # the last: an arbitrary mask, filtered inside each graph
            got = store.search(q, 10, allowed)
            assert is_exact_top(got, x, q, allowed, 10)
            assert [s for _, s in got] == sorted((s for _, s in got), reverse=True)
    store.close()


def test_sharded_search_is_as_good_as_one_graph_at_a_small_ef_search():
    """At the same efSearch, graphs a third the size find at least as much of the exact top 10."""
    x, is_ehr, _ = synthetic(n=6000, dim=48, ehr_share=0.0)
    rng = np.random.default_rng(5)
    qs = x[rng.integers(0, len(x), 200)] + 0.3 * rng.normal(size=(200, x.shape[1])).astype(np.float32)
    allowed = np.ones(len(x), bool)
    recall = {}
    for shards in (1, 3):
        s = DenseSettings(dense="hnsw", hnsw_m=8, hnsw_ef_construction=20, hnsw_ef_search=10, hnsw_shards=shards)
        store = build_faiss(x, faiss_spec(s), is_ehr)
        recall[shards] = np.mean([len({r for r, _ in store.search(q, 10, allowed)} & set(exact(x, q, allowed, 10)))
                                  / 10 for q in qs])
    assert recall[3] >= recall[1], recall


def test_sharded_graphs_are_updated_in_place_and_answer_as_rebuilt_ones():
    from rag.vectorstore import TOMBSTONE_BASE, update_faiss

    rng = np.random.default_rng(6)
    x, is_ehr, _ = synthetic(n=1500)
    spec = faiss_spec(SHARDED)
    store = build_faiss(x, spec, is_ehr)
    for _ in range(2):
        prev_rows, vecs, ehr = _next_version(x, is_ehr, rng, n_remove=40, n_add=60)
        before = [g.ntotal for g in store.graphs]
        upd = update_faiss(store, prev_rows, vecs, spec, ehr)
        assert upd is not None and len(upd.graphs) == 3
        added = int(((prev_rows < 0) & ~ehr).sum())
        after = [g.ntotal for g in upd.graphs]
        assert sum(after) - sum(before) == added and max(after) - min(after) <= max(1, max(before) - min(before))
        assert upd.tombstones == upd.spec["tombstones"] > 0 and upd.problems() == []
        assert (upd._graph_ids() >= TOMBSTONE_BASE).sum() == upd.tombstones
        assert np.array_equal(upd.reconstruct_n(0, upd.ntotal), vecs)
        assert np.array_equal(upd.reconstruct(int(np.flatnonzero(~ehr)[-1])), vecs[np.flatnonzero(~ehr)[-1]])
        for qi in rng.integers(0, len(vecs), 30):
            q = vecs[qi] + 0.1 * rng.normal(size=vecs.shape[1]).astype(np.float32)
            for allowed in (~ehr, np.ones(len(vecs), bool)):
                assert is_exact_top(upd.search(q, 10, allowed), vecs, q, allowed, 10)
        store, x, is_ehr = upd, vecs, ehr
    # another shard count: rebuilt, never mixed
    prev_rows, vecs, ehr = _next_version(x, is_ehr, rng, n_remove=5, n_add=5)
    assert update_faiss(store, prev_rows, vecs, faiss_spec(EXACT_HNSW), ehr) is None


def test_an_update_job_writes_verifies_and_extends_a_sharded_version(tmp_path):
    from rag.retrieve import HybridRetriever
    from tests.index_helpers import DEMO

    src = make_sources(tmp_path / "src", guidelines=sorted(p.name for p in (DEMO / "guidelines").glob("*.md")),
                       patients=("P001", "P002"))
    root, flat = tmp_path / "idx", tmp_path / "flat"
    _update(src, root, dense=SHARDED)
    _update(src, flat)
    _, m = read_manifest(root)
    assert m["dense"]["shards"] == 3 and {"dense.faiss", "dense-shard1.faiss", "dense-shard2.faiss"} <= set(m["files"])
    check_index(root)
    edit(src / "guidelines" / "cap.md", "sharded")
    res = _update(src, root, dense=SHARDED)
    _update(src, flat)
    assert res.published and read_manifest(root)[1]["dense"]["tombstones"] > 0
    check_index(root)
    a, b = HybridIndex.load(root), HybridIndex.load(flat)
    assert len(a.dense.graphs) == 3
    ra, rb = (HybridRetriever(i, HashEmbedder(), 10, 10, 60, 1.0, 1.0, 0.5, 8) for i in (a, b))
    for q, p in (("beta blocker heart failure mortality", None), ("latest ejection fraction potassium", "P001")):
        assert [c for c, _ in ra.retrieve(q, patient_id=p).dense] == [c for c, _ in rb.retrieve(q, patient_id=p).dense]
    # a damaged shard file is caught like any other file of the version
    vdir = root / "versions" / read_manifest(root)[1]["version"]
    with (vdir / "dense-shard2.faiss").open("r+b") as f:
        f.seek(100)
        f.write(b"\0\1\2\3")
    assert any("dense-shard2.faiss" in p for p in verify_index(root))


def test_a_sharded_store_answers_concurrent_queries_from_several_threads():
    from concurrent.futures import ThreadPoolExecutor

    x, is_ehr, _ = synthetic(n=2000, ehr_share=0.2)
    store = build_faiss(x, faiss_spec(SHARDED), is_ehr)
    store.threads = 3
    rng = np.random.default_rng(8)
    qs = x[rng.integers(0, len(x), 40)] + 0.1 * rng.normal(size=(40, x.shape[1])).astype(np.float32)
    allowed = np.ones(len(x), bool)
    want = [[r for r, _ in store.search(q, 10, allowed)] for q in qs]
    with ThreadPoolExecutor(4) as callers:  # e.g. the server's query threads, all on one store
        got = list(callers.map(lambda q: [r for r, _ in store.search(q, 10, allowed)], qs))
    assert got == want
    store.close()
    assert [r for r, _ in store.search(qs[0], 10, allowed)] == want[0]  # a closed pool is made again


def test_bm25_beside_the_dense_search_gives_the_sequential_results(tmp_path, monkeypatch):
    """The retriever's concurrent path (BM25 on the search pool while the sharded graphs are searched)
    ranks exactly as the sequential one, also with several query threads at once."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from rag import retrieve
    from rag.retrieve import HybridRetriever
    from tests.index_helpers import DEMO

    src = make_sources(tmp_path / "src", guidelines=sorted(p.name for p in (DEMO / "guidelines").glob("*.md")),
                       patients=("P001", "P002"))
    _update(src, tmp_path / "idx", dense=SHARDED)
    idx = HybridIndex.load(tmp_path / "idx")
    idx.dense.threads = 3  # the graphs on the pool too, whatever this machine's CPUs
    seq, conc = (HybridRetriever(idx, HashEmbedder(), 10, 10, 60, 1.0, 1.0, 0.5, 8, patient_slots=2, overlap=o)
                 for o in (False, True))
    bm25_threads: set[str] = set()
    bm25 = conc._bm25

    def watched(*a):
        bm25_threads.add(threading.current_thread().name)
        return bm25(*a)

    conc._bm25 = watched  # type: ignore[method-assign]
    queries = [(q, p) for q in ("beta blocker heart failure mortality", "community acquired pneumonia antibiotics",
                                "latest ejection fraction potassium", "creatinine", "zzz unknownword")
               for p in (None, "P001", "P002")]

    def ranking(r: HybridRetriever, q: str, p: str | None) -> tuple:
        got = r.retrieve(q, patient_id=p)
        return (got.dense, got.bm25, [(f.chunk_id, f.score, f.ranks) for f in got.fused],
                [(u.chunk.chunk_id, u.score, u.merged) for u in got.units])

    want = [ranking(seq, q, p) for q, p in queries]
    assert any(w[0] for w in want) and any(w[1] for w in want) and not want[-3][1]  # both sides hit; "zzz": no BM25
    assert [ranking(conc, q, p) for q, p in queries] == want
    with ThreadPoolExecutor(4) as callers:  # the server's query threads, all on one pool
        assert list(callers.map(lambda qp: ranking(conc, *qp), queries * 3)) == want * 3
    assert bm25_threads and all(n.startswith("cds-search") for n in bm25_threads)
    # automatic: beside the dense search only when the process may use more than one CPU
    auto = HybridRetriever(idx, HashEmbedder(), 10, 10, 60, 1.0, 1.0, 0.5, 8)
    for cpus, expected in ((1, False), (2, True)):
        monkeypatch.setattr(retrieve, "available_cpus", lambda n=cpus: n)
        assert auto.overlapping() is expected


def test_an_error_in_either_concurrent_search_reaches_the_caller(tmp_path):
    from rag.retrieve import HybridRetriever

    src = make_sources(tmp_path / "src", patients=("P001",))
    _update(src, tmp_path / "idx", dense=SHARDED)
    r = HybridRetriever(HybridIndex.load(tmp_path / "idx"), HashEmbedder(), 10, 10, 60, 1.0, 1.0, 0.5, 8, overlap=True)
    for side in ("_bm25", "_dense"):
        def boom(*a, side=side):
            raise RuntimeError(f"{side} failed")
        setattr(r, side, boom)
        with pytest.raises(RuntimeError, match=f"{side} failed"):
            r.retrieve("heart failure")
        delattr(r, side)
    assert r.retrieve("heart failure").fused
