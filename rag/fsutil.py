"""Small file-system helpers shared by the writers and the readers of user files."""

from __future__ import annotations

import os
import stat
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """fsync a directory, so a rename or a new file in it survives a power loss."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_small_text(path: Path, limit: int) -> str:
    """The UTF-8 text of a regular file of at most ``limit`` bytes.

    Raises ``IsADirectoryError`` for a folder, ``ValueError`` (with a reason a user can act on,
    worded to follow the path) for a device/pipe (``/dev/zero`` would be read until memory
    runs out), a file over the limit, or one that is not UTF-8 text (binary), and ``OSError``
    when it cannot be opened.
    """
    st = path.stat()
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(21, "is a folder", str(path))
    if not stat.S_ISREG(st.st_mode):
        raise ValueError("is not a regular file (a device or pipe); give a text file")
    with path.open("rb") as f:
        raw = f.read(limit + 1)
    if len(raw) > limit:
        raise ValueError(f"is larger than {limit // 1024} KB; give a smaller text file")
    if b"\0" in raw:
        raise ValueError("is a binary file, not text; give a UTF-8 text file")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError("is not UTF-8 text; convert it (e.g. iconv -t utf-8)") from None
