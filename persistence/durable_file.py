"""Durable files: bytes that are on disk when the call returns, whole or not at all.

Every write here loops until all the bytes are written and ends in an fsync. A file that
appears under a name (created, or renamed into place) survives a crash only once its
directory is fsynced too: ``write_atomically`` does that itself, unless the caller writes
many files into one directory and fsyncs it once (``sync_directory=False``, then
``fsync_directory``). The temp file of an atomic write is ``.<name>.<pid>.tmp`` beside its
target; ``remove_stale_temp_files`` takes away those of processes that died before their
rename. Everything here blocks on the disk: call it from a worker thread, never on the loop.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path


def write_all(fd: int, data: bytes) -> None:
    """Write every byte of ``data`` at ``fd``'s position (``os.write`` may write fewer)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def pwrite_all(fd: int, data: bytes, offset: int) -> None:
    """Write every byte of ``data`` at ``offset``; OSError when the disk takes none."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        if written <= 0:
            raise OSError("pwrite wrote nothing")
        view = view[written:]
        offset += written


def fsync_directory(path: Path) -> None:
    """Make the names created, renamed or removed in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(
    path: Path,
    data: bytes | Sequence[bytes],
    *,
    mode: int = 0o644,
    keep_previous_as: Path | None = None,
    sync_directory: bool = True,
) -> None:
    """Temp file, write, fsync, rename over ``path``, fsync the directory: a crash leaves
    either the old file or the new one. A failed write removes its temp file (a full disk
    must not stay full of half files). With ``keep_previous_as`` the file being replaced is
    renamed there first (a crash between the two renames leaves only the previous one). With
    ``sync_directory=False`` the caller must ``fsync_directory(path.parent)`` before it
    counts the file as durable. ``data`` may be a sequence of parts, written one after another
    (a large payload behind a small header is not copied into one buffer first)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        for part in (data,) if isinstance(data, bytes) else data:
            write_all(fd, part)
        os.fsync(fd)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)
    if keep_previous_as is not None:
        with contextlib.suppress(FileNotFoundError):
            os.replace(path, keep_previous_as)
    os.replace(tmp, path)
    if sync_directory:
        fsync_directory(path.parent)


def remove_stale_temp_files(directory: Path) -> list[Path]:
    """The ``.<name>.<pid>.tmp`` files in ``directory`` left by a process that died before its
    rename, removed; returns them. Those of live processes are theirs to finish."""
    removed = []
    for path in directory.glob(".*.tmp"):
        try:
            pid = int(path.name.rsplit(".", 2)[-2])
        except (ValueError, IndexError):
            continue
        if pid == os.getpid() or _alive(pid):
            continue
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
