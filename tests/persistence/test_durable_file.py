"""persistence.durable_file (unit, real files in a temp directory): atomic replacement, the
previous file kept, a failed write leaving the old file and no temp file, stale temp files."""

from __future__ import annotations

import os
import resource
from pathlib import Path

import pytest

from persistence.durable_file import pwrite_all, remove_stale_temp_files, write_all, write_atomically


def test_write_atomically_replaces_the_file_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    write_atomically(path, b"first", mode=0o600)
    write_atomically(path, b"second" * 10_000, mode=0o600)
    assert path.read_bytes() == b"second" * 10_000
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["secret.key"]


def test_write_atomically_keeps_the_previous_file(tmp_path: Path) -> None:
    path, previous = tmp_path / "AB.snap", tmp_path / "AB.snap.prev"
    write_atomically(path, b"older", keep_previous_as=previous)
    assert not previous.exists()  # nothing was there to keep
    write_atomically(path, b"newer", keep_previous_as=previous)
    assert (path.read_bytes(), previous.read_bytes()) == (b"newer", b"older")


@pytest.mark.usefixtures("file_size_limit")
def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "AB.epoch"
    write_atomically(path, b"7\n")
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (100, hard))  # the disk takes 100 bytes, no more
    try:
        with pytest.raises(OSError):
            write_atomically(path, b"x" * 1000)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, hard))
    assert path.read_bytes() == b"7\n"
    assert [p.name for p in tmp_path.iterdir()] == ["AB.epoch"]


def test_writes_put_every_byte_where_asked(tmp_path: Path) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        write_all(fd, data)
        pwrite_all(fd, b"tail", len(data) - 2)
    finally:
        os.close(fd)
    assert (tmp_path / "f").read_bytes() == data[:-2] + b"tail"


def test_only_the_temp_files_of_dead_processes_are_removed(tmp_path: Path) -> None:
    dead_pid = 2**22 + 12345  # above pid_max on Linux: no such process
    dead = tmp_path / f".AB.snap.{dead_pid}.tmp"
    mine = tmp_path / f".AB.epoch.{os.getpid()}.tmp"
    live = tmp_path / f".M.snap.{os.getppid()}.tmp"
    not_ours = tmp_path / ".notes.tmp"
    for path in (dead, mine, live, not_ours):
        path.write_bytes(b"half")
    assert remove_stale_temp_files(tmp_path) == [dead]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in (mine, live, not_ours))
