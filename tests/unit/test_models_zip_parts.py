"""A model folder shipped as a zip split over several wheels (rag.models, layout "zip-parts")."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from rag import models
from rag.errors import ModelNotAvailableError


def _split_zip(tmp: Path, n: int = 3) -> list[Path]:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("some-model/config.json", '{"model_type": "mpnet"}')
        z.writestr("some-model/vocab.txt", "a\nb\n" * 500)
        z.writestr("some-model/desktop.ini", "[.ShellClassInfo]")
        z.writestr("some-model/1_Pooling/desktop.ini", "x")
    data = buf.getvalue()
    size = len(data) // n + 1
    parts = []
    for i in range(n):
        p = tmp / f"model.zip.{i + 1:03d}"
        p.write_bytes(data[i * size:(i + 1) * size])
        parts.append(p)
    return parts


def test_the_parts_join_into_one_complete_folder(tmp_path: Path) -> None:
    folder = tmp_path / "cache" / "some-model"
    models.unzip_parts(_split_zip(tmp_path), folder)
    assert (folder / "config.json").read_text() == '{"model_type": "mpnet"}'
    assert (folder / models.COMPLETE_MARKER).exists()
    assert not list(folder.rglob("desktop.ini"))  # Windows folder settings are not model files
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["some-model"]  # no work folder left


def test_a_missing_part_leaves_no_folder(tmp_path: Path) -> None:
    parts = _split_zip(tmp_path)
    folder = tmp_path / "cache" / "some-model"
    with pytest.raises(ModelNotAvailableError, match="reinstall"):
        models.unzip_parts(parts[:-1], folder)
    assert not folder.exists() and not list((tmp_path / "cache").iterdir())


def test_an_uninstalled_bundle_says_how_to_fetch_it(tmp_path: Path) -> None:
    b = models.Bundle("no-such-model", "org/no-such-model", "embedder", ("no-such-package-part-001",), "zip-parts")
    with pytest.raises(ModelNotAvailableError, match="models fetch no-such-model"):
        models._zip_parts(b)
    assert not models._bundle_installed(b)
    with pytest.raises(ModelNotAvailableError, match="not fetched"):
        models.resolve("bundle:all-mpnet-base-v2", tmp_path)
