"""Index update jobs: incremental diff, embedding cache, retention, rollback, bad input, embedder change.

All with the hash embedder on a small copy of the demo corpus (no models)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from corpora import load_sources
from rag.embed_cache import EmbeddingCache
from rag.errors import EmbedderMismatchError, IndexCorruptError, InputError, SourceError
from rag.index import HybridIndex, current_version, embedder_manifest, read_manifest, verify_index
from rag.update import build_index, list_versions, read_history, read_sources, rollback, update_index
from tests.fakes import HashEmbedder
from tests.index_helpers import CHUNKING, CountingEmbedder, check_index, edit, leftovers, make_sources, vectors_of


def _update(src, root, emb=None, **kw):
    s = read_sources([src / "guidelines", src / "ehr"], strict=kw.pop("strict", False))
    return update_index(s.documents, emb or HashEmbedder(), root, CHUNKING, skipped=s.skipped,
                        per_source=s.per_source, **kw)


def _chunks(root, version=None):
    vdir, _ = read_manifest(root, version)
    return (vdir / "chunks.jsonl").read_text(encoding="utf-8")


@pytest.fixture
def src(tmp_path):
    return make_sources(tmp_path / "src")


def test_first_update_builds_and_second_is_a_no_op(src, tmp_path):
    root = tmp_path / "idx"
    res = _update(src, root)
    assert res.published and res.previous is None and res.documents["added"]
    assert res.embeddings == {"computed": res.chunks["total"], "cached": 0}
    check_index(root)
    again = _update(src, root)
    assert not again.published and again.version is None and again.previous == res.version
    assert list_versions(root) == [res.version] and current_version(root) == res.version


def test_one_changed_document_re_embeds_only_its_changed_passages(src, tmp_path):
    root = tmp_path / "idx"
    v1 = _update(src, root).version
    before = HybridIndex.load(root)
    edit(src / "guidelines" / "lipids-statins.md", "one")
    emb = CountingEmbedder()
    res = _update(src, root, emb)
    assert res.documents == {"added": [], "changed": ["demo-lipids-statins"], "removed": [], "kept": []}
    assert res.previous == v1 and res.version != v1
    # Only the edited section's passage(s) were embedded; everything else came from v1.
    assert 1 <= len(emb.encoded) <= 2 and all("Revision note one" in t for t in emb.encoded)
    assert res.embeddings["computed"] == len(emb.encoded)
    after = HybridIndex.load(root)
    # Chunk ids and texts of untouched documents are exactly the same.
    old = {c.chunk_id: c for c in before.children if c.doc_id != "demo-lipids-statins"}
    new = {c.chunk_id: c for c in after.children if c.doc_id != "demo-lipids-statins"}
    assert old == new
    m = after.manifest
    assert m["parent_version"] == v1 and m["update"]["documents"]["changed"] == ["demo-lipids-statins"]
    check_index(root)


def test_update_result_is_identical_to_a_full_build(src, tmp_path):
    root = tmp_path / "idx"
    _update(src, root)
    edit(src / "guidelines" / "sepsis.md", "two")
    (src / "guidelines" / "cap.md").unlink()
    shutil.copy(make_sources(tmp_path / "more", ["aki.md"], ()) / "guidelines" / "aki.md", src / "guidelines")
    res = _update(src, root)
    assert res.documents["added"] == ["demo-aki"] and res.documents["removed"] == ["demo-cap"]
    assert res.documents["changed"] == ["demo-sepsis"]
    full = tmp_path / "full"
    s = read_sources([src / "guidelines", src / "ehr"])
    build_index(s.documents, HashEmbedder(), full, CHUNKING)
    assert _chunks(root) == _chunks(full)
    np.testing.assert_allclose(vectors_of(root), vectors_of(full), atol=1e-6)
    _, m = read_manifest(root)
    _, fm = read_manifest(full)
    assert m["documents"] == fm["documents"] and m["counts"] == fm["counts"]


def test_removed_document_disappears_from_both_retrievers(src, tmp_path):
    root = tmp_path / "idx"
    _update(src, root)
    (src / "guidelines" / "af-anticoagulation.md").unlink()
    res = _update(src, root)
    assert res.documents["removed"] == ["demo-af-anticoagulation"] and res.chunks["removed"] > 0
    idx = HybridIndex.load(root)
    assert all(c.doc_id != "demo-af-anticoagulation" for c in [*idx.children, *idx.parents.values()])
    assert idx.bm25.scores["num_docs"] == len(idx.children)
    check_index(root)


def test_embedding_cache_resumes_an_interrupted_run_and_survives_damage(src, tmp_path, monkeypatch):
    import rag.update

    monkeypatch.setattr(rag.update, "EMBED_BATCH", 16)
    root = tmp_path / "idx"

    class DiesAfterTwoBatches(CountingEmbedder):
        def encode_passages(self, texts, progress=False):
            if len(self.encoded) >= 32:
                raise RuntimeError("killed")
            return super().encode_passages(texts)

    with pytest.raises(RuntimeError):
        _update(src, root, DiesAfterTwoBatches())
    assert current_version(root) is None and leftovers(root) == []
    emb = CountingEmbedder()
    res = _update(src, root, emb)
    assert res.embeddings["cached"] == 32 and res.embeddings["computed"] == res.chunks["total"] - 32
    # A damaged cache segment is dropped and recomputed; the index stays right.
    cache = EmbeddingCache(root, embedder_manifest(HashEmbedder()))
    segs = sorted(cache.dir.glob("seg-*.npz"))
    segs[0].write_bytes(b"not a zip")
    shutil.rmtree(root / "versions")  # force every vector to come from the (damaged) cache
    (root / "CURRENT").unlink()
    emb = CountingEmbedder()
    res = _update(src, root, emb)
    assert not segs[0].exists() and 0 < res.embeddings["computed"] < res.chunks["total"]
    full = tmp_path / "full"
    build_index(read_sources([src / "guidelines", src / "ehr"]).documents, HashEmbedder(), full, CHUNKING)
    np.testing.assert_allclose(vectors_of(root), vectors_of(full), atol=1e-6)
    # Deleting the whole cache is safe: unchanged passages come from the current version.
    shutil.rmtree(root / "cache")
    edit(src / "guidelines" / "cap.md", "three")
    emb = CountingEmbedder()
    _update(src, root, emb)
    assert 1 <= len(emb.encoded) <= 2
    check_index(root)


def test_cache_compaction_keeps_current_vectors(src, tmp_path, monkeypatch):
    import rag.update

    monkeypatch.setattr(rag.update, "EMBED_BATCH", 4)  # > 16 small segments -> compaction runs
    root = tmp_path / "idx"
    res = _update(src, root)
    cache = EmbeddingCache(root, embedder_manifest(HashEmbedder()))
    assert len(list(cache.dir.glob("seg-*.npz"))) == 1 and len(cache) == res.chunks["total"]


def test_embedder_change_is_refused_unless_rebuild(src, tmp_path):
    root = tmp_path / "idx"
    v1 = _update(src, root).version
    other = HashEmbedder(dim=128)
    with pytest.raises(EmbedderMismatchError, match="--rebuild"):
        _update(src, root, other)
    assert current_version(root) == v1
    res = _update(src, root, other, full=True, mode="rebuild")
    assert res.published and res.embeddings["cached"] == 0 and res.embeddings["computed"] == res.chunks["total"]
    assert read_manifest(root)[1]["embedder"]["dim"] == 128
    with pytest.raises(InputError, match="chunking changed"):
        update_index(read_sources([src / "guidelines"]).documents, other, root,
                     {**CHUNKING, "child_tokens": 64}, max_removed=1.0)


def test_bad_file_is_skipped_and_reported_strict_aborts(src, tmp_path):
    root = tmp_path / "idx"
    v1 = _update(src, root).version
    (src / "guidelines" / "new-bad.md").write_text("---\nnot key value\n---\n# Bad\n\ntext\n", encoding="utf-8")
    with pytest.raises(SourceError, match=r"new-bad\.md"):
        _update(src, root, strict=True)
    assert current_version(root) == v1
    edit(src / "guidelines" / "cap.md", "four")
    res = _update(src, root)
    assert res.published and res.documents["changed"] == ["demo-cap"]
    assert [p for p, _ in res.skipped] == [str(src / "guidelines" / "new-bad.md")]
    assert "front matter" in res.skipped[0][1]
    assert read_manifest(root)[1]["update"]["skipped"][0]["path"].endswith("new-bad.md")


def test_previously_indexed_document_that_became_unreadable_is_kept(src, tmp_path):
    root = tmp_path / "idx"
    _update(src, root)
    before = {c.chunk_id for c in HybridIndex.load(root).children if c.doc_id == "demo-sepsis"}
    (src / "guidelines" / "sepsis.md").write_bytes(b"\xff\xfe not utf-8 \xff")
    edit(src / "guidelines" / "cap.md", "five")
    res = _update(src, root)
    assert res.documents["kept"] == ["demo-sepsis"] and res.documents["removed"] == []
    assert res.skipped and "sepsis.md" in res.skipped[0][0]
    after = {c.chunk_id for c in HybridIndex.load(root).children if c.doc_id == "demo-sepsis"}
    assert after == before
    check_index(root)


def test_mass_removal_is_refused(src, tmp_path):
    root = tmp_path / "idx"
    v1 = _update(src, root).version
    s = read_sources([src / "ehr"])  # the guidelines folder forgotten: most documents would go
    with pytest.raises(InputError, match="would remove"):
        update_index(s.documents, HashEmbedder(), root, CHUNKING, max_removed=0.5)
    assert current_version(root) == v1
    res = update_index(s.documents, HashEmbedder(), root, CHUNKING, max_removed=1.0)
    assert len(res.documents["removed"]) == 6


def test_retention_prunes_old_versions_but_never_current_or_previous(src, tmp_path):
    root = tmp_path / "idx"
    versions = []
    for i in range(5):
        edit(src / "guidelines" / "cap.md", f"r{i}")
        versions.append(_update(src, root, keep_versions=3).version)
    assert list_versions(root) == versions[-3:]
    # After a rollback to an old version, a publish keeps the version it replaced.
    rollback(root, versions[2])
    edit(src / "guidelines" / "cap.md", "after-rollback")
    res = _update(src, root, keep_versions=2)
    assert res.previous == versions[2] and set(res.pruned) == {versions[3]}
    assert list_versions(root) == [versions[2], versions[4], res.version]
    assert read_manifest(root)[1]["parent_version"] == versions[2]


def test_rollback(src, tmp_path):
    root = tmp_path / "idx"
    v1 = _update(src, root).version
    edit(src / "guidelines" / "cap.md", "x")
    v2 = _update(src, root).version
    assert rollback(root) == (v2, v1) and current_version(root) == v1
    check_index(root)
    assert rollback(root, to="2") == (v1, v2)
    with pytest.raises(InputError, match="no index version"):
        rollback(root, to="v0099")
    with pytest.raises(InputError, match="already the current"):
        rollback(root, to=v2)
    # Never roll back to a damaged version.
    with (root / "versions" / v1 / "dense.faiss").open("r+b") as f:
        f.seek(60)
        f.write(b"\x00\x01\x02")
    with pytest.raises(IndexCorruptError):
        rollback(root, to=v1)
    assert current_version(root) == v2
    assert [e["action"] for e in read_history(root)] == ["publish", "publish", "rollback", "rollback"]


def test_damaged_current_version_is_not_built_upon(src, tmp_path):
    root = tmp_path / "idx"
    v1 = _update(src, root).version
    with (root / "versions" / v1 / "chunks.jsonl").open("r+b") as f:
        f.seek(20)
        f.write(b"#")
    edit(src / "guidelines" / "cap.md", "y")
    with pytest.raises(IndexCorruptError, match="--rebuild"):
        _update(src, root)
    assert _update(src, root, full=True, mode="rebuild").published
    check_index(root)


def test_verify_catches_count_and_dimension_mismatches(src, tmp_path):
    from rag.index import file_sha256

    root = tmp_path / "idx"
    _update(src, root)
    vdir, m = read_manifest(root)
    m["counts"]["children"] += 1
    m["embedder"]["dim"] = 999
    (vdir / "manifest.json").write_text(json.dumps(m), encoding="utf-8")
    problems = verify_index(root)
    assert any("dense.faiss" in p for p in problems) and any("dimension" in p for p in problems)
    assert file_sha256(vdir / "chunks.jsonl") == m["files"]["chunks.jsonl"]["sha256"]


def test_duplicate_ids_across_sources_are_an_error(src, tmp_path):
    shutil.copytree(src / "guidelines", tmp_path / "copy")
    with pytest.raises(SourceError, match="duplicate doc_id"):
        read_sources([src / "guidelines", tmp_path / "copy"])


def test_per_source_counts_in_manifest(src, tmp_path):
    root = tmp_path / "idx"
    _update(src, root)
    _, m = read_manifest(root)
    assert [(s["documents"], s["by_kind"]) for s in m["sources"]] == [(6, {"guideline": 6}), (5, {"ehr": 5})]
    assert m["counts"]["documents"] == len(load_sources([src]).documents) == 11


def test_rebuild_reports_changes_against_the_current_version(src, tmp_path):
    root = tmp_path / "idx"
    _update(src, root)
    (src / "guidelines" / "cap.md").unlink()
    edit(src / "guidelines" / "sepsis.md", "rebuilt")
    res = _update(src, root, full=True, mode="rebuild")
    assert res.documents["removed"] == ["demo-cap"] and res.documents["changed"] == ["demo-sepsis"]
    assert res.embeddings["cached"] == 0
    with pytest.raises(InputError, match="would remove"):
        update_index(read_sources([src / "ehr"]).documents, HashEmbedder(), root, CHUNKING, full=True,
                     max_removed=0.4)


def test_logs_name_documents_but_never_patient_text(src, tmp_path, caplog):
    import logging

    root = tmp_path / "idx"
    note = next((src / "ehr" / "P002").glob("*progress.md"))
    with caplog.at_level(logging.DEBUG):
        _update(src, root)
        edit(note, "potassium 5.9 mmol/L after spironolactone")
        res = _update(src, root)
    assert res.documents["changed"] and res.documents["changed"][0].startswith("demo-ehr-p002")
    logged = caplog.text
    assert res.documents["changed"][0] in logged
    body = [line.strip() for d in read_sources([src / "ehr"]).documents for line in d.text.splitlines()
            if len(line.strip()) > 25 and not line.startswith("#")]
    assert body and not [line for line in body if line in logged]
    assert "spironolactone" not in logged


def test_document_without_passages_survives_updates(src, tmp_path):
    (src / "guidelines" / "empty-sections.md").write_text("# Only headings\n\n## Nothing here\n", encoding="utf-8")
    root = tmp_path / "idx"
    _update(src, root)
    edit(src / "guidelines" / "cap.md", "z")
    res = _update(src, root)
    assert res.documents["changed"] == ["demo-cap"] and verify_index(root) == []
