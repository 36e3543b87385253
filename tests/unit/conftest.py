"""Shared helpers for the fast, offline unit tests (no models, no network)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rag.chunk import Chunk


def whitespace_tokenize(text: str) -> list[str]:
    return text.split()


@pytest.fixture
def ws() -> Callable[[str], list[str]]:
    """A whitespace tokenizer: token counts are easy to reason about in chunking tests."""
    return whitespace_tokenize


def _make_chunk(
    chunk_id: str,
    level: str = "child",
    parent_id: str | None = None,
    child_ids: list[str] | None = None,
    text: str = "",
    doc_id: str = "doc",
) -> Chunk:
    return Chunk(
        chunk_id=chunk_id,
        doc_id=doc_id,
        level=level,
        text=text or chunk_id,
        start=0,
        end=len(text or chunk_id),
        section="S",
        title="T",
        kind="guideline",
        source="t.md",
        parent_id=parent_id,
        child_ids=list(child_ids or []),
    )


@pytest.fixture
def make_chunk() -> Callable[..., Any]:
    """make_chunk(id, level=, parent_id=, child_ids=) -> a hand-built Chunk."""
    return _make_chunk


@pytest.fixture
def write(tmp_path: Path) -> Callable[..., Path]:
    """write('a/b.md', text) -> path under tmp_path (folders created); bytes are written as-is."""

    def _write(rel: str, content: str | bytes) -> Path:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content, encoding="utf-8")
        return p

    return _write
