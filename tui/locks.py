"""Locks between the zootui processes that share a data dir.

A ``ProcessLock`` is an exclusive ``flock`` on a file under ``<data dir>/locks/``: held while a
process does something, and released by the kernel when that process ends, however it ends (a kill
-9 included), so a lock nobody holds always means nobody is doing it any more.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCKS_DIR = "locks"


def locks_dir(data_dir: Path) -> Path:
    return data_dir / LOCKS_DIR


class ProcessLock:
    """An exclusive lock on ``path``, taken without waiting."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds it."""
        return self._fd is not None

    def acquire(self) -> bool:
        """Take the lock; False when another holder (a process, or another ProcessLock here) has it."""
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def is_held(path: Path) -> bool:
    """Whether anyone (another process, or another ProcessLock in this one) holds the lock at ``path``."""
    if not path.exists():
        return False
    probe = ProcessLock(path)
    if not probe.acquire():
        return True
    probe.release()
    return False
