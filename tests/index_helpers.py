"""Shared helpers for the index job tests: a small copied source set, a counting hash embedder,
and the check every test runs after a job: the current version loads, verifies and answers."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from tests.fakes import HashEmbedder

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "corpora" / "demo"
GUIDELINES = ["hfref-gdmt.md", "hypertension-treatment.md", "lipids-statins.md", "af-anticoagulation.md",
              "sepsis.md", "cap.md"]
CHUNKING = {"parent_max_tokens": 384, "child_tokens": 96, "child_overlap": 16}


class CountingEmbedder(HashEmbedder):
    """The hash embedder, recording every passage it was asked to embed."""

    def __init__(self, dim: int = 256):
        super().__init__(dim)
        self.encoded: list[str] = []

    def encode_passages(self, texts, progress=False):
        self.encoded.extend(texts)
        return super().encode_passages(texts)


def make_sources(dest: Path, guidelines: list[str] | None = None, patients: tuple[str, ...] = ("P002",)) -> Path:
    """Copy a few demo guidelines and one patient's notes into ``dest`` (guidelines/, ehr/)."""
    (dest / "guidelines").mkdir(parents=True, exist_ok=True)
    for name in guidelines or GUIDELINES:
        shutil.copy(DEMO / "guidelines" / name, dest / "guidelines" / name)
    for p in patients:
        shutil.copytree(DEMO / "ehr" / p, dest / "ehr" / p, dirs_exist_ok=True)
    return dest


def edit(path: Path, marker: str) -> None:
    """Append a sentence to the last section of a document (changes one section's passages)."""
    path.write_text(path.read_text(encoding="utf-8").rstrip("\n") + f"\n\nRevision note {marker}.\n",
                    encoding="utf-8")


def check_index(root: Path) -> str:
    """Assert the current version loads, verifies and answers; return its version."""
    from rag.assistant import Assistant
    from rag.config import load_config
    from rag.index import HybridIndex, verify_index

    assert verify_index(root) == [], verify_index(root)
    idx = HybridIndex.load(root, expect_embedder=None)
    assert idx.dense.ntotal == len(idx.children) > 0
    a = Assistant(load_config(overrides=[f"index.dir={root}", "index.auto_build_demo=false"]),
                  embedder=HashEmbedder())
    ans = a.ask("Which drug classes reduce mortality in heart failure?", generate=False)
    assert ans.citations and ans.index_version == idx.version
    return idx.version


def leftovers(root: Path) -> list[str]:
    found = [*root.glob("versions/.tmp-*"), *root.glob("versions/.trash-*"), *root.glob(".CURRENT.*"),
             *root.glob("cache/embeddings/*/.tmp-*")]
    return sorted(str(p.relative_to(root)) for p in found)


def vectors_of(root: Path) -> np.ndarray:
    from rag.index import HybridIndex

    idx = HybridIndex.load(root)
    return idx.dense.reconstruct_n(0, idx.dense.ntotal)
