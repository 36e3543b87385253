"""On-disk hybrid index: chunks + FAISS (dense) + BM25, versioned and published atomically.

Layout of an index root::

    CURRENT                 name of the published version (replaced atomically)
    versions/<version>/     immutable once published
        manifest.json       embedder, chunking, per-document hashes, counts, file checksums
        chunks.jsonl        parents then children (JSON, never pickle)
        dense.faiss         FAISS IndexFlatIP over normalised child vectors (row i = child i), or an HNSW
                            graph over the shared passages (+ dense-ehr.faiss: the patient records);
                            with ``index.store: postgres`` the vectors live in a table instead
                            (:mod:`rag.vectorstore`, the manifest's ``dense`` entry says which)
        bm25/               bm25s arrays (.npy without pickle) and JSON vocabulary

    LOCK                    the writers' lock (:mod:`rag.lock`); readers never take it
    history.jsonl           one line per publish / rollback
    cache/embeddings/       passage vectors by embedder + text hash (:mod:`rag.embed_cache`)

A version is written into a temporary directory, fsynced, renamed into ``versions/``, and
only then named in ``CURRENT``; a crash at any point leaves the previous version current.
Writers (build, update, rollback, retention) live in :mod:`rag.update`, which imports this module
(never the other way); this module holds the format, the publish primitives, verification and loading.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from corpora.document import Document
from rag.chunk import Chunk, HierarchicalChunker
from rag.coverage import TermStats
from rag.embed import Embedder
from rag.errors import EmbedderMismatchError, IndexCorruptError, IndexMissingError
from rag.fsutil import fsync_dir
from rag.lexical import import_bm25s
from rag.vectorstore import VectorStore, open_dense, required_files

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
BM25_TOKENIZER = "rag.text.tokenize/1"
DATA_FILES = ("chunks.jsonl",)  # plus the dense store's file, if it has one (vectorstore.required_files)
# A version name as next_version_name writes it: nothing that could leave versions/ ("../", "/").
VERSION_NAME = re.compile(r"v\d{4}-[0-9A-Za-z]+")
MAX_MANIFEST_BYTES = 256 << 20  # a 50k-document manifest is ~20 MB; never read an unbounded file


def file_sha256(path: Path) -> str:
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
    for d in sorted((p for p in path.rglob("*") if p.is_dir()), reverse=True):
        fsync_dir(d)
    fsync_dir(path)


def embedder_manifest(embedder: Embedder) -> dict[str, Any]:
    s = embedder.spec
    return {"model_id": embedder.model_id, "dim": embedder.dim, "normalize": s.normalize, "pooling": s.pooling,
            "query_prefix": s.query_prefix, "passage_prefix": s.passage_prefix, "max_length": s.max_length,
            "dtype": getattr(embedder, "dtype", "float32")}


def _rebuild_hint(root: Path) -> str:
    return f"roll back with `python app.py index rollback --to VERSION --index {root}` or rebuild with " \
           "`python app.py index build`"


def current_version(root: Path) -> str | None:
    """The version CURRENT names (None: no index yet). A CURRENT that is not a plain file holding a
    version name (a folder, a path such as ``../../elsewhere``) is refused, never followed."""
    cur = root / "CURRENT"
    if not cur.exists() and not cur.is_symlink():
        return None
    if cur.is_symlink() or not cur.is_file():
        raise IndexCorruptError(f"{cur} is not a plain file; remove it and {_rebuild_hint(root)}")
    try:
        with cur.open("rb") as f:
            raw = f.read(256)
    except OSError as e:
        raise IndexCorruptError(f"{cur} cannot be read ({e.strerror}); check its permissions") from None
    name = raw.decode("utf-8", errors="replace").strip()
    if not name:
        return None
    if not VERSION_NAME.fullmatch(name):
        shown = name.splitlines()[0][:60] if name.splitlines() else name[:60]
        raise IndexCorruptError(f"{cur} names {shown!r}, not a version in {root / 'versions'}; "
                                f"{_rebuild_hint(root)}")
    return name


def list_versions(root: Path) -> list[str]:
    """Published version directories, oldest first (by number)."""
    vdir = Path(root) / "versions"
    if not vdir.is_dir():
        return []
    vs = [p.name for p in vdir.glob("v*") if p.is_dir() and not p.is_symlink() and VERSION_NAME.fullmatch(p.name)]
    return sorted(vs, key=lambda n: int(n[1:5]))


def next_version_name(root: Path) -> str:
    # Count every directory, published or not (a crash can leave a complete version never made
    # current), so a number is never reused.
    existing = [p.name for p in versions_dir(root).iterdir() if p.is_dir()]
    nums = [int(n[1:5]) for n in (x.removeprefix(".trash-") for x in existing) if n[1:5].isdigit()]
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"v{(max(nums) + 1) if nums else 1:04d}-{stamp}"


def write_current(root: Path, version: str) -> None:
    """Point CURRENT at ``version``: write a temporary file, fsync, rename over CURRENT (atomic)."""
    fd, cur_tmp = tempfile.mkstemp(prefix=".CURRENT.", dir=root)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(version + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(cur_tmp, root / "CURRENT")
    except BaseException:
        with contextlib.suppress(OSError):  # cleanup must not hide the first cause
            Path(cur_tmp).unlink(missing_ok=True)
        raise
    fsync_dir(root)


def publish_version(root: Path, tmp: Path, version: str) -> Path:
    """Move a fully written version into place, then point CURRENT at it (atomic rename)."""
    versions = root / "versions"
    final = versions / version
    _fsync_tree(tmp)
    os.replace(tmp, final)
    fsync_dir(versions)
    write_current(root, version)
    return final


def clean_leftovers(root: Path) -> int:
    """Remove what a writer killed before finishing left behind: temporary and half-pruned versions.

    Only call it while holding the index lock (:mod:`rag.lock`): a live writer's temporary
    directory looks exactly like a dead one's.
    """
    n = 0
    vdir = root / "versions"
    for p in list(vdir.glob(".tmp-*")) + list(vdir.glob(".trash-*")) + list(root.glob(".CURRENT.*")):
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        n += 1
    return n


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


def versions_dir(root: Path) -> Path:
    """``root/versions``, refusing one that is not a folder (a file or a link put in its place)."""
    vdir = Path(root) / "versions"
    if vdir.is_symlink() or (vdir.exists() and not vdir.is_dir()):
        raise IndexCorruptError(f"{vdir} is not a folder; move it away, or use another --index folder")
    return vdir


def read_manifest(root: Path, version: str | None = None) -> tuple[Path, dict[str, Any]]:
    """The version directory and its manifest; raise an actionable error if absent, unreadable,
    malformed, or not this index's own (a version directory that holds another version's manifest)."""
    if root.exists() and not root.is_dir():
        raise IndexMissingError(f"index folder {root} is a file; pass a folder with --index")
    if not root.exists() or (version is None and current_version(root) is None):
        raise IndexMissingError(
            f"no index at {root}; build one with `python app.py index build SOURCE...` "
            "(or run `python app.py query ...` to build the demo index)"
        )
    version = version or current_version(root)
    vdir = versions_dir(root) / str(version)
    if not VERSION_NAME.fullmatch(str(version)) or vdir.is_symlink():
        raise IndexCorruptError(f"index version {version!r} at {root} is not a version folder of this index; "
                                f"{_rebuild_hint(root)}")
    mpath = vdir / "manifest.json"
    if not mpath.is_file():
        raise IndexCorruptError(f"index version {version} at {root} has no manifest.json; {_rebuild_hint(root)}")
    try:
        if mpath.stat().st_size > MAX_MANIFEST_BYTES:
            raise IndexCorruptError(f"{mpath} is over {MAX_MANIFEST_BYTES >> 20} MB, not a manifest; "
                                    f"{_rebuild_hint(root)}")
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise IndexCorruptError(f"{mpath} is not valid JSON; {_rebuild_hint(root)}") from None
    except OSError as e:
        raise IndexCorruptError(f"{mpath} cannot be read ({e.strerror}); check the index folder's permissions"
                                ) from None
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        raise IndexCorruptError(f"{mpath}: unsupported index format (expected format_version "
                                f"{FORMAT_VERSION}); rebuild with `python app.py index build`")
    problem = manifest_problem(manifest, str(version))
    if problem:
        raise IndexCorruptError(f"{mpath}: {problem}; {_rebuild_hint(root)}")
    return vdir, manifest


def manifest_problem(manifest: dict[str, Any], version: str) -> str | None:
    """What is wrong with a manifest's structure (the keys readers rely on), or None."""
    if manifest.get("version") != version:
        return f"it belongs to version {str(manifest.get('version'))[:40]!r}, not {version} (copied from elsewhere?)"
    emb = manifest.get("embedder")
    if not isinstance(emb, dict) or not isinstance(emb.get("model_id"), str) or not isinstance(emb.get("dim"), int):
        return "'embedder' is missing or lacks model_id/dim"
    for key in ("documents", "counts", "files"):
        if not isinstance(manifest.get(key), dict):
            return f"'{key}' is missing or not a mapping"
    counts = manifest["counts"]
    if not all(isinstance(counts.get(k), int) for k in ("documents", "parents", "children")):
        return "'counts' lacks documents/parents/children"
    if not all(isinstance(d, dict) for d in manifest["documents"].values()):
        return "'documents' has entries that are not mappings"
    for rel, meta in manifest["files"].items():
        if not isinstance(meta, dict) or not isinstance(meta.get("sha256"), str) \
                or not isinstance(meta.get("bytes"), int):
            return f"file entry {rel[:60]!r} lacks sha256/bytes"
        if rel.startswith("/") or ".." in Path(rel).parts or "\\" in rel:
            return f"file entry {rel[:60]!r} points outside its version folder"
    if not isinstance(manifest.get("patients", []), list):
        return "'patients' is not a list"
    return None


def verify_files(vdir: Path, manifest: dict[str, Any]) -> list[str]:
    """Size and sha256 of every file the manifest lists, and of every data file loading reads."""
    problems = []
    files = manifest.get("files", {})
    for rel in DATA_FILES + required_files(manifest):
        if files and rel not in files:
            problems.append(f"{rel} is not listed in the manifest")
    bm25 = vdir / "bm25"
    if bm25.is_dir():
        problems.extend(f"unlisted file {p.relative_to(vdir).as_posix()}" for p in sorted(bm25.rglob("*"))
                        if p.is_file() and p.relative_to(vdir).as_posix() not in files)
    for rel, meta in files.items():
        p = vdir / rel
        if p.is_symlink() or (p.exists() and not p.is_file()):
            problems.append(f"{rel} is not a plain file")
        elif not p.exists():
            problems.append(f"missing file {rel}")
        elif p.stat().st_size != meta["bytes"]:
            problems.append(f"{rel}: size {p.stat().st_size} != {meta['bytes']}")
        elif file_sha256(p) != meta["sha256"]:
            problems.append(f"{rel}: checksum mismatch")
    if not manifest.get("files"):
        problems.append("manifest lists no files")
    return problems


def verify_index(root: Path, version: str | None = None, store_url: str | None = None) -> list[str]:
    """Every problem found with a version: checksums, counts, embedder dimension, and the dense
    store's own check (a database table's rows and vector checksum) (empty list = healthy)."""
    version = version or current_version(root)
    vdir, manifest = read_manifest(root, version)
    problems = verify_files(vdir, manifest)
    if not problems:
        try:
            # the checksums were just checked
            idx = HybridIndex.load(root, version=version, verify=False, store_url=store_url)
            counts = manifest.get("counts", {})
            problems.extend(idx.dense.problems())
            spec = idx.dense.spec
            where = spec.get("file", "dense.faiss") if spec["store"] == "faiss" else f"table {spec.get('table')}"
            checks = [(f"vectors in {where}", idx.dense.ntotal, counts.get("children")),
                      ("passages in chunks.jsonl", len(idx.children), counts.get("children")),
                      ("sections in chunks.jsonl", len(idx.parents), counts.get("parents")),
                      ("documents in the manifest", len(manifest.get("documents", {})), counts.get("documents")),
                      (f"{where} dimension (embedder dimension)", idx.dense.d, manifest["embedder"]["dim"])]
            num_docs = getattr(idx.bm25, "scores", {}).get("num_docs")
            if num_docs is not None:
                checks.append(("passages in the BM25 index", int(num_docs), counts.get("children")))
            for what, have, want in checks:
                if have != want:
                    problems.append(f"{what}: {have}, manifest says {want}")
            if {c.chunk_id for c in idx.children} - {i for p in idx.parents.values() for i in p.child_ids}:
                problems.append("chunks.jsonl has passages that no section lists")
        except IndexCorruptError as e:
            problems.append(str(e))
    return problems


class HybridIndex:
    """A loaded index version: chunks, FAISS and BM25, plus scope masks for patient filtering."""

    def __init__(self, root: Path, version: str, manifest: dict[str, Any], parents: dict[str, Chunk],
                 children: list[Chunk], dense: VectorStore, bm25: Any):
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

    @functools.cached_property
    def term_stats(self) -> TermStats | None:
        """Document frequencies of the BM25 tokens (once per loaded version; None without bm25s scores)."""
        return TermStats.from_bm25(self.bm25)

    @classmethod
    def load(cls, root: Path, version: str | None = None, expect_embedder: dict[str, Any] | None = None,
             verify: bool = True, store_url: str | None = None) -> HybridIndex:
        """Load ``version`` (default: the current one) fully into memory.

        With ``verify`` (the default) every file is checked against the manifest's sha256 first:
        a damaged or tampered version is refused, naming the newest version that passes, instead
        of being served. Long-lived readers load once per version switch, so this is paid once.
        Loading the current version can race with a writer that publishes and then prunes it;
        if the files vanish and CURRENT has moved on meanwhile, load the new current version.
        ``store_url`` is the database of a PostgreSQL-backed version (default: ``$CDS_POSTGRES_URL``,
        then the URL it was written to).
        """
        if version is not None:
            return cls._load(root, version, expect_embedder, verify, store_url)
        for _ in range(3):
            want = current_version(root)
            try:
                return cls._load(root, want, expect_embedder, verify, store_url)
            except IndexCorruptError:
                if want is None or current_version(root) == want:
                    raise
                log.info("index version %s was replaced while loading; loading the new current version", want)
        return cls._load(root, current_version(root), expect_embedder, verify, store_url)

    @classmethod
    def _load(cls, root: Path, version: str | None, expect_embedder: dict[str, Any] | None, verify: bool = True,
              store_url: str | None = None) -> HybridIndex:
        bm25s = import_bm25s()

        vdir, manifest = read_manifest(root, version)
        if expect_embedder is not None:
            check_embedder(manifest, expect_embedder, root)
        if verify:
            problems = verify_files(vdir, manifest)
            if problems:
                raise IndexCorruptError(damaged_message(root, str(manifest["version"]), problems[0]))
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
            is_ehr = np.array([c.kind == "ehr" for c in children], dtype=bool)
            dense = open_dense(vdir, manifest, is_ehr, store_url)
            bm25 = bm25s.BM25.load(str(vdir / "bm25"), mmap=False, show_progress=False)
        except (ValueError, TypeError, KeyError, RuntimeError, OSError) as e:
            raise IndexCorruptError(f"index at {vdir} cannot be read ({type(e).__name__}); rebuild with "
                                    "`python app.py index build`") from e
        ntotal = dense.ntotal
        if ntotal != len(children):
            dense.close()
            raise IndexCorruptError(f"index at {vdir}: {ntotal} vectors for {len(children)} passages; "
                                    "rebuild with `python app.py index build`")
        return cls(root, str(manifest["version"]), manifest, parents, children, dense, bm25)

    def allowed_mask(self, patient_id: str | None) -> np.ndarray:
        """Children a query may see: all non-EHR, plus the given patient's records (never another's)."""
        mask = ~self.is_ehr
        if patient_id is not None:
            mask[self.patient_rows.get(patient_id, [])] = True
        return mask


def last_good_version(root: Path, exclude: str) -> str | None:
    """The newest version other than ``exclude`` whose files pass their checksums (None: none left)."""
    for v in reversed(list_versions(root)):
        if v == exclude:
            continue
        try:
            vdir, m = read_manifest(root, v)
        except IndexCorruptError:
            continue
        if not verify_files(vdir, m):
            return v
    return None


def damaged_message(root: Path, version: str, problem: str) -> str:
    """One line: which version is refused and why, and the previous good version to roll back to."""
    good = last_good_version(root, version)
    fix = (f"the last good version is {good}: run `python app.py index rollback --to {good} --index {root}`"
           if good else "no good version is left: rebuild with `python app.py index build SOURCE...`")
    return f"index version {version} at {root} is damaged ({problem}); not serving it. {fix[0].upper()}{fix[1:]}"


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
