"""Shared fixtures. Offline always: no test may reach a model hub."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_var, "1")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # app.py and tests.fakes importable from any cwd
DEMO = ROOT / "corpora" / "demo"


@pytest.fixture(scope="session")
def demo_sources() -> list[str]:
    return [str(DEMO / "guidelines"), str(DEMO / "ehr")]


@pytest.fixture(scope="session")
def hash_index(tmp_path_factory: pytest.TempPathFactory, demo_sources: list[str]):
    """The demo corpus indexed with the hash embedder (no model needed)."""
    from corpora import load_sources
    from rag.config import load_config
    from rag.index import HybridIndex
    from rag.update import build_index
    from tests.fakes import HashEmbedder

    root = tmp_path_factory.mktemp("hash-index")
    cfg = load_config()
    build_index(load_sources(demo_sources).documents, HashEmbedder(), root, cfg.chunking.model_dump())
    return root, HybridIndex.load(root)


@pytest.fixture(scope="session")
def tiny_generator(tmp_path_factory: pytest.TempPathFactory, demo_sources: list[str]):
    from corpora import load_sources
    from rag.generate import Generator
    from tests.fakes import build_tiny_qwen2

    words = {w for d in load_sources(demo_sources).documents for w in d.text.split()[:200]}
    folder = build_tiny_qwen2(tmp_path_factory.mktemp("tiny-qwen2"), sorted(words)[:3000])
    return Generator(folder, "test/tiny-qwen2")
