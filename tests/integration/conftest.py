"""Integration fixtures: the real offline models (skip with the fix when they are not fetched)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.config import load_config, resolve_path
from rag.errors import ModelNotAvailableError
from rag.models import resolve


def _require(ref: str) -> None:
    try:
        resolve(ref, resolve_path(load_config().models.cache_dir))
    except ModelNotAvailableError as e:
        pytest.skip(f"{e} (`make test` fetches it)")


@pytest.fixture(scope="session")
def real_index(tmp_path_factory: pytest.TempPathFactory, demo_sources: list[str]) -> Path:
    """The demo corpus indexed through the CLI with the real default embedder."""
    import app

    _require(load_config().embedder.model)
    root = tmp_path_factory.mktemp("real-index") / "idx"
    assert app.main(["index", "build", *demo_sources, "--index", str(root), "-q"]) == 0
    return root


@pytest.fixture(scope="session")
def real_assistant(real_index: Path):
    from rag import Assistant

    _require(load_config().generator.model)
    return Assistant(load_config(overrides=[f"index.dir={real_index}", "index.auto_build_demo=false"]))
