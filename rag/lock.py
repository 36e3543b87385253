"""One writer per index: an exclusive lock on ``<index root>/LOCK``.

The lock itself is a kernel ``flock`` on the file, so it is released the moment its holder
exits, however it exits (SIGKILL, OOM, power loss). The file's content only describes the
holder (pid, host, start time, what it is doing) for the message a waiting writer prints.
A dead holder therefore never blocks anyone: the next writer takes the lock at once and logs
that it replaced the stale holder record. The file is never deleted: deleting a locked file
would let a second writer lock a new file of the same name.

Readers (queries, ``index status``/``verify``) take no lock: published versions are immutable.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from rag.errors import CDSError, InputError

log = logging.getLogger(__name__)

LOCK_NAME = "LOCK"


class IndexBusyError(CDSError):
    """Another writer holds the index lock and did not release it within the timeout."""

    # EX_TEMPFAIL from sysexits.h: "try again later", which schedulers understand.
    exit_code = 75


def _holder(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _describe(h: dict[str, Any]) -> str:
    if not h:
        return "another process"
    return (f"pid {h.get('pid')} on {h.get('host')} ({h.get('command', '?')}, started {h.get('started')})")


class IndexLock:
    """``with IndexLock(root, timeout=60, command="index update"):`` — waits, then raises IndexBusyError."""

    def __init__(self, root: Path, timeout: float = 300.0, command: str = "write", poll: float = 0.1):
        self.path = Path(root) / LOCK_NAME
        self.timeout = timeout
        self.command = command
        self.poll = poll
        self._fd: int | None = None
        self.stale: dict[str, Any] | None = None  # holder record left by a writer that died

    def _open(self) -> int:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except IsADirectoryError:
            raise InputError(f"{self.path} is a folder, not the index's lock file; remove it and retry") from None
        except PermissionError:
            raise InputError(f"cannot write {self.path} (permission denied): the index folder is read-only for this "
                             "user; run the job as the index's owner or make the folder writable") from None
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise InputError(f"{self.path} is a symbolic link; remove it (the lock file is created by the "
                                 "writers) and retry") from None
            raise CDSError(f"cannot open {self.path} ({e.strerror}); check the index folder") from None

    def acquire(self) -> IndexLock:
        fd = self._open()
        deadline = time.monotonic() + self.timeout
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    os.close(fd)
                    raise CDSError(f"cannot lock {self.path} ({e.strerror}); move the index to a filesystem with "
                                   "file locking (a local disk, or NFSv4 with working locks)") from None
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise IndexBusyError(
                        f"index {self.path.parent} is locked by {_describe(_holder(self.path))}; waited "
                        f"{self.timeout:g} s. Retry later or raise --lock-timeout (a dead holder's lock is "
                        "released automatically)") from None
                if not waited:
                    log.warning("index is locked by %s; waiting up to %g s", _describe(_holder(self.path)),
                             self.timeout)
                    waited = True
                time.sleep(self.poll)
        previous = _holder(self.path)
        if previous:
            # We hold the flock, so whoever wrote this record is gone without releasing it cleanly.
            self.stale = previous
            log.warning("previous index writer %s did not clear its lock record (it died, or could not write "
                        "the index folder); taking over", _describe(previous))
        record = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
                  "started": datetime.now(UTC).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        """Clear the holder record and unlock; the kernel lock is released even if clearing fails."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            try:
                os.ftruncate(fd, 0)  # an empty record = released cleanly
            except OSError as e:
                log.warning("could not clear the lock record in %s (%s); the next writer will report it as left "
                            "behind", self.path, e.strerror)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> IndexLock:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            self.release()
        except OSError as e:
            if exc is None:
                raise CDSError(f"could not release the lock {self.path} ({e.strerror}); it is freed when this "
                               "process exits, retry the next job then") from None
            # Never let cleanup hide why the job failed: the first cause is what the user must fix.
            log.warning("could not release the lock %s (%s) after the job failed", self.path, e.strerror)


def lock_holder(root: Path) -> dict[str, Any] | None:
    """Who holds the writer lock now (None when free); for ``index status``."""
    path = Path(root) / LOCK_NAME
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return _holder(path) or {"pid": None}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
