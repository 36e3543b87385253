"""On-disk hybrid index: chunks + FAISS (dense) + BM25, versioned and published atomically.

Layout of an index root::

    CURRENT                 name of the published version (replaced atomically)
    versions/<version>/     immutable once published
        manifest.json       embedder, chunking, per-document hashes, counts, file checksums
        chunks.jsonl        parents then children (JSON, never pickle)
        dense.faiss         IndexFlatIP over normalised child vectors (row i = child i)
        bm25/               bm25s arrays (.npy without pickle) and JSON vocabulary

A version is written into a temporary directory, fsynced, renamed into ``versions/``, and
only then named in ``CURRENT``; a crash at any point leaves the previous version current.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from corpora.document import Document
from rag.chunk import Chunk, HierarchicalChunker
from rag.embed import Embedder
from rag.errors import EmbedderMismatchError, IndexCorruptError, IndexMissingError, InputError
from rag.text import tokenize as bm25_tokenize

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
BM25_TOKENIZER = "rag.text.tokenize/1"
DATA_FILES = ("chunks.jsonl", "dense.faiss")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_tree(path: Path) -> None:
    for p in sorted(path.rglob("*")):
        if p.is_file():
            with p.open("rb") as f:
                os.fsync(f.fileno())
    _fsync_dir(path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def embedder_manifest(embedder: Embedder) -> dict[str, Any]:
    s = embedder.spec
    return {"model_id": embedder.model_id, "dim": embedder.dim, "normalize": s.normalize, "pooling": s.pooling,
            "query_prefix": s.query_prefix, "passage_prefix": s.passage_prefix, "max_length": s.max_length,
            "dtype": getattr(embedder, "dtype", "float32")}


def current_version(root: Path) -> str | None:
    cur = root / "CURRENT"
    if not cur.exists():
        return None
    name = cur.read_text(encoding="utf-8").strip()
    return name or None


def _next_version(root: Path) -> str:
    existing = [p.name for p in (root / "versions").glob("v*") if p.is_dir()]
    nums = [int(n[1:5]) for n in existing if n[1:5].isdigit()]
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"v{(max(nums) + 1) if nums else 1:04d}-{stamp}"


def _publish(root: Path, tmp: Path, version: str) -> Path:
    """Move a fully written version into place, then point CURRENT at it (atomic rename)."""
    versions = root / "versions"
    final = versions / version
    _fsync_tree(tmp)
    os.replace(tmp, final)
    _fsync_dir(versions)
    fd, cur_tmp = tempfile.mkstemp(prefix=".CURRENT.", dir=root)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(version + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(cur_tmp, root / "CURRENT")
    _fsync_dir(root)
    return final


def clean_leftovers(root: Path) -> int:
    """Remove temporary directories of builds that died before publishing."""
    n = 0
    for p in list((root / "versions").glob(".tmp-*")) + list(root.glob(".CURRENT.*")):
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        n += 1
    return n


@dataclass
class BuildStats:
    documents: int
    parents: int
    children: int
    seconds: dict[str, float] = field(default_factory=dict)


def chunk_documents(docs: list[Document], chunker: HierarchicalChunker, progress: bool = False
                    ) -> tuple[list[Chunk], list[Chunk]]:
    parents: list[Chunk] = []
    children: list[Chunk] = []
    it: Any = docs
    if progress:
        from tqdm import tqdm

        it = tqdm(docs, desc="chunking", unit="doc", disable=None)
    for doc in it:
        p, c = chunker.chunk(doc)
        parents.extend(p)
        children.extend(c)
    return parents, children


def _import_bm25s() -> Any:
    import bm25s

    # bm25s sets its own logger to DEBUG at import, which prints through any root handler.
    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return bm25s


def build_index(docs: list[Document], embedder: Embedder, root: Path, chunking: dict[str, int],
                progress: bool = False) -> tuple[str, dict[str, Any]]:
    """Chunk, embed and index ``docs`` as a new published version under ``root``."""
    import faiss

    bm25s = _import_bm25s()

    if not docs:
        raise InputError("nothing to index: no documents were read from the sources")
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    chunker = HierarchicalChunker(embedder.tokenize, chunking["parent_max_tokens"], chunking["child_tokens"],
                                  chunking["child_overlap"])
    parents, children = chunk_documents(docs, chunker, progress)
    seconds["chunk"] = time.perf_counter() - t

    t = time.perf_counter()
    texts = [c.context_text() for c in children]
    vectors = embedder.encode_passages(texts, progress=progress)
    seconds["embed"] = time.perf_counter() - t

    t = time.perf_counter()
    dense = faiss.IndexFlatIP(embedder.dim)
    dense.add(np.ascontiguousarray(vectors, dtype=np.float32))
    tokens: Any = texts
    if progress:
        from tqdm import tqdm

        tokens = tqdm(texts, desc="bm25 tokens", unit="passage", disable=None)
    bm25 = bm25s.BM25()
    bm25.index([bm25_tokenize(x) for x in tokens], show_progress=False)
    seconds["index"] = time.perf_counter() - t

    root.mkdir(parents=True, exist_ok=True)
    (root / "versions").mkdir(exist_ok=True)
    clean_leftovers(root)
    previous = current_version(root)
    version = _next_version(root)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root / "versions"))
    try:
        t = time.perf_counter()
        with (tmp / "chunks.jsonl").open("w", encoding="utf-8") as f:
            for c in parents + children:
                f.write(json.dumps(c.to_dict(), ensure_ascii=False) + "\n")
        faiss.write_index(dense, str(tmp / "dense.faiss"))
        bm25.save(str(tmp / "bm25"), show_progress=False)
        files = {p.relative_to(tmp).as_posix(): {"sha256": _sha256(p), "bytes": p.stat().st_size}
                 for p in sorted(tmp.rglob("*")) if p.is_file()}
        by_kind = Counter(d.kind for d in docs)
        coll = {d.doc_id: str(d.meta.get("collection", "")) for d in docs}
        manifest = {
            "format_version": FORMAT_VERSION,
            "version": version,
            "parent_version": previous,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "embedder": embedder_manifest(embedder),
            "chunking": dict(chunking),
            "bm25": {"impl": "bm25s", "tokenizer": BM25_TOKENIZER},
            "documents": {d.doc_id: {"title": d.title, "kind": d.kind, "source": d.source, "collection": coll[d.doc_id],
                                     "patient_id": d.patient_id, "hash": d.version} for d in docs},
            "counts": {"documents": len(docs), "parents": len(parents), "children": len(children),
                       "documents_by_kind": dict(sorted(by_kind.items())),
                       "children_by_kind": dict(sorted(Counter(c.kind for c in children).items())),
                       "documents_by_collection": dict(sorted(Counter(coll.values()).items())),
                       "parents_by_collection": dict(sorted(Counter(coll[c.doc_id] for c in parents).items())),
                       "children_by_collection": dict(sorted(Counter(coll[c.doc_id] for c in children).items()))},
            "patients": sorted({d.patient_id for d in docs if d.patient_id}),
            "files": files,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False), encoding="utf-8")
        _publish(root, tmp, version)
        seconds["write"] = time.perf_counter() - t
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    manifest["seconds"] = seconds
    log.info("published index version %s: %d docs, %d parents, %d children", version, len(docs),
             len(parents), len(children))
    return version, manifest


def read_manifest(root: Path, version: str | None = None) -> tuple[Path, dict[str, Any]]:
    """The version directory and its manifest; raise an actionable error if absent or unreadable."""
    if not root.exists() or (version is None and current_version(root) is None):
        raise IndexMissingError(
            f"no index at {root}; build one with `python app.py index build SOURCE...` "
            "(or run `python app.py query ...` to build the demo index)"
        )
    version = version or current_version(root)
    vdir = root / "versions" / str(version)
    mpath = vdir / "manifest.json"
    if not mpath.exists():
        raise IndexCorruptError(f"index version {version} at {root} has no manifest.json; "
                                "rebuild with `python app.py index build ...`")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise IndexCorruptError(f"{mpath} is not valid JSON; rebuild the index with `python app.py index build`"
                                ) from None
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        raise IndexCorruptError(f"{mpath}: unsupported index format (expected format_version "
                                f"{FORMAT_VERSION}); rebuild with `python app.py index build`")
    return vdir, manifest


def verify_index(root: Path, version: str | None = None) -> list[str]:
    """Every problem found with a version's files (empty list = healthy)."""
    vdir, manifest = read_manifest(root, version)
    problems = []
    for rel, meta in manifest.get("files", {}).items():
        p = vdir / rel
        if not p.exists():
            problems.append(f"missing file {rel}")
        elif p.stat().st_size != meta["bytes"]:
            problems.append(f"{rel}: size {p.stat().st_size} != {meta['bytes']}")
        elif _sha256(p) != meta["sha256"]:
            problems.append(f"{rel}: checksum mismatch")
    if not problems:
        try:
            idx = HybridIndex.load(root, version=version)
            if idx.dense.ntotal != manifest["counts"]["children"]:
                problems.append(f"dense.faiss has {idx.dense.ntotal} vectors, manifest says "
                                f"{manifest['counts']['children']}")
            if idx.dense.d != manifest["embedder"]["dim"]:
                problems.append(f"dense.faiss dimension {idx.dense.d} != embedder dimension "
                                f"{manifest['embedder']['dim']}")
        except IndexCorruptError as e:
            problems.append(str(e))
    return problems


class HybridIndex:
    """A loaded index version: chunks, FAISS and BM25, plus scope masks for patient filtering."""

    def __init__(self, root: Path, version: str, manifest: dict[str, Any], parents: dict[str, Chunk],
                 children: list[Chunk], dense: Any, bm25: Any):
        self.root = root
        self.version = version
        self.manifest = manifest
        self.parents = parents
        self.children = children
        self.dense = dense
        self.bm25 = bm25
        self.child_pos = {c.chunk_id: i for i, c in enumerate(children)}
        kinds = np.array([c.kind for c in children])
        self.is_ehr = kinds == "ehr"
        self.patient_of = np.array([c.patient_id or "" for c in children])
        self.patients = set(manifest.get("patients", []))
        rows: dict[str, list[int]] = {}
        for i, c in enumerate(children):
            if c.patient_id:
                rows.setdefault(c.patient_id, []).append(i)
        self.patient_rows = {p: np.asarray(r, dtype=np.int64) for p, r in rows.items()}

    @classmethod
    def load(cls, root: Path, version: str | None = None, expect_embedder: dict[str, Any] | None = None
             ) -> HybridIndex:
        import faiss

        bm25s = _import_bm25s()

        vdir, manifest = read_manifest(root, version)
        if expect_embedder is not None:
            check_embedder(manifest, expect_embedder, root)
        for rel, meta in manifest.get("files", {}).items():
            p = vdir / rel
            if not p.exists() or p.stat().st_size != meta["bytes"]:
                raise IndexCorruptError(f"index file {p} is missing or truncated; run `python app.py index verify`"
                                        " and rebuild with `python app.py index build`")
        parents: dict[str, Chunk] = {}
        children: list[Chunk] = []
        try:
            with (vdir / "chunks.jsonl").open(encoding="utf-8") as f:
                for line in f:
                    c = Chunk.from_dict(json.loads(line))
                    if c.level == "parent":
                        parents[c.chunk_id] = c
                    else:
                        children.append(c)
            dense = faiss.read_index(str(vdir / "dense.faiss"))
            bm25 = bm25s.BM25.load(str(vdir / "bm25"), mmap=False, show_progress=False)
        except (ValueError, TypeError, KeyError, RuntimeError, OSError) as e:
            raise IndexCorruptError(f"index at {vdir} cannot be read ({type(e).__name__}); rebuild with "
                                    "`python app.py index build`") from e
        if dense.ntotal != len(children):
            raise IndexCorruptError(f"index at {vdir}: {dense.ntotal} vectors for {len(children)} passages; "
                                    "rebuild with `python app.py index build`")
        return cls(root, str(manifest["version"]), manifest, parents, children, dense, bm25)

    def allowed_mask(self, patient_id: str | None) -> np.ndarray:
        """Children a query may see: all non-EHR, plus the given patient's records (never another's)."""
        mask = ~self.is_ehr
        if patient_id is not None:
            mask[self.patient_rows.get(patient_id, [])] = True
        return mask


def check_embedder(manifest: dict[str, Any], expected: dict[str, Any], root: Path) -> None:
    """Refuse an index built with another embedder: its vectors live in a different space."""
    have = manifest.get("embedder", {})
    for key in ("model_id", "dim", "normalize", "pooling", "query_prefix", "passage_prefix"):
        if have.get(key) != expected.get(key):
            raise EmbedderMismatchError(
                f"index at {root} was built with embedder {have.get('model_id')} ({key}={have.get(key)!r}) but the "
                f"config uses {expected.get('model_id')} ({key}={expected.get(key)!r}); use the matching config "
                "or rebuild with `python app.py index build ...`"
            )
