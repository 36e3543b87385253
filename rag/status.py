"""What ``index status`` reports: the current version, its counts and sources, the last change,
the retained versions, the writer lock and the embedding cache. Reads only; takes no lock."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rag.embed_cache import EmbeddingCache
from rag.index import current_version, list_versions, read_manifest
from rag.lock import lock_holder
from rag.update import read_history
from rag.vectorstore import dense_spec


def _version_row(root: Path, name: str, current: str | None) -> dict[str, Any]:
    row: dict[str, Any] = {"version": name, "current": name == current}
    try:
        m = json.loads((root / "versions" / name / "manifest.json").read_text(encoding="utf-8"))
        row.update(created=m.get("created"), parent_version=m.get("parent_version"),
                   documents=m.get("counts", {}).get("documents"),
                   mode=m.get("update", {}).get("mode"),
                   bytes=sum(f["bytes"] for f in m.get("files", {}).values()))
    except (OSError, ValueError, KeyError, TypeError):
        row["error"] = "manifest unreadable"
    return row


def index_status(root: Path) -> dict[str, Any]:
    _, m = read_manifest(root)
    current = current_version(root)
    status: dict[str, Any] = {k: m.get(k) for k in ("version", "parent_version", "created", "embedder", "chunking",
                                                    "counts")}
    status["index"] = str(root)
    status["dense"] = {k: v for k, v in dense_spec(m).items() if k != "vectors_sha256"}
    status["patients"] = m.get("patients", [])
    status["patient_count"] = len(status["patients"])
    status["collection_kinds"] = {d.get("collection", ""): d.get("kind", "")
                                  for d in m.get("documents", {}).values()}
    status["sources"] = m.get("sources", [])
    status["files"] = {k: v["bytes"] for k, v in m.get("files", {}).items()}
    status["bytes"] = sum(status["files"].values())
    status["last_update"] = m.get("update")
    status["versions"] = [_version_row(root, v, current) for v in list_versions(root)]
    status["history"] = read_history(root, last=10)
    status["lock"] = lock_holder(root)
    status["cache_bytes"] = EmbeddingCache(root, m["embedder"]).bytes()
    return status
