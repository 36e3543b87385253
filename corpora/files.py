"""Walking source folders safely: bounded file sizes, and no symbolic link out of the folder.

A source folder is a trust boundary: whatever is under it becomes retrievable text. A
symbolic link inside it that points elsewhere (``/etc/passwd``, another patient's export)
would pull that file in, so links whose target lies outside the folder are skipped and
reported, never followed. Every file read whole is checked against a size limit first, so
a 50 MB file (or ``/dev/zero`` behind a link) is a one-line report, not an out-of-memory
crash later in the tokenizer.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from corpora.errors import SourceError

DEFAULT_MAX_FILE_MB = 32.0


@dataclass(frozen=True)
class ReadOptions:
    """Limits every reader applies (``index.max_file_mb`` in the config)."""

    max_file_mb: float = DEFAULT_MAX_FILE_MB

    @property
    def max_bytes(self) -> int:
        return int(self.max_file_mb * 1024 * 1024)


DEFAULT_READ = ReadOptions()


def size_problem(path: Path, options: ReadOptions) -> str | None:
    """Why ``path`` may not be read whole (not a regular file, too large), or None."""
    try:
        st = path.stat()
    except OSError as e:
        return f"cannot read ({e.strerror})"
    import stat

    if not stat.S_ISREG(st.st_mode):
        return "not a regular file (a device, pipe or socket); give a file or a folder of files"
    if st.st_size > options.max_bytes:
        return (f"file is {st.st_size / 2**20:.1f} MB, over the {options.max_file_mb:g} MB limit; split it into "
                f"smaller documents, or raise the limit with --set index.max_file_mb={st.st_size // 2**20 + 1}")
    return None


def check_file(path: Path, options: ReadOptions) -> None:
    """Raise :class:`SourceError` when ``path`` may not be read whole."""
    problem = size_problem(path, options)
    if problem:
        raise SourceError(f"{path}: {problem}")


def walk(root: Path, keep: Callable[[Path], bool]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files under ``root`` that ``keep`` accepts (sorted), and the links skipped because they leave it.

    Symbolic links are followed only when their target lies inside ``root``; a linked folder
    is never descended (its files are reached through their real path when they are inside).
    """
    real_root = root.resolve()
    files: list[Path] = []
    skipped: list[tuple[str, str]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        for name in sorted(dirnames):
            p = here / name
            if p.is_symlink() and not _inside(p, real_root):
                skipped.append((str(p), _escape_reason(p)))
        for name in filenames:
            p = here / name
            if not keep(p):
                continue
            if p.is_symlink() and not _inside(p, real_root):
                skipped.append((str(p), _escape_reason(p)))
                continue
            if p.is_file():
                files.append(p)
    return sorted(files), sorted(skipped)


def _inside(link: Path, real_root: Path) -> bool:
    try:
        return link.resolve().is_relative_to(real_root)
    except (OSError, RuntimeError):  # a link loop
        return False


def _escape_reason(link: Path) -> str:
    return ("symbolic link leaving the source folder, not followed; copy the file into the folder if it "
            "belongs in the index")
