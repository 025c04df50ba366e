"""One writer per data directory: an exclusive ``flock`` on ``<data>/lock``.

``tandtid serve``, ``tandtid seed`` and ``tandtid journal repair`` take it before they
touch the journal; a second one on the same directory gets ``DataDirectoryInUse`` (one
clear line for the operator) instead of appending to the same files at its own offsets.
The kernel drops the lock when the process ends, however it ends: no stale lock files.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from engine.errors import TandtidError


class DataDirectoryInUse(TandtidError):
    """Another process holds the data directory."""


@contextlib.contextmanager
def data_directory_lock(directory: Path) -> Iterator[None]:
    """Hold the directory's lock for the ``with`` block; raises DataDirectoryInUse at once."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise DataDirectoryInUse(
                f"data directory {directory} is in use by another tandtid process (pid {holder}); "
                "stop it first or choose another --data"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
