"""Integration test: a second ``tandtid serve`` on a data directory in use is refused with
one clear line (a real second process; the first holder is this test process)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from server.data_lock import DataDirectoryInUse, data_directory_lock
from tests.support import free_port

REPO = Path(__file__).resolve().parents[2]


def test_a_second_writer_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with data_directory_lock(data):
        done = subprocess.run(
            [sys.executable, "-m", "server.cli", "serve", "--port", str(free_port()), "--data", str(data)],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 1
        message = [line for line in done.stderr.splitlines() if "in use" in line]
        assert len(message) == 1 and f"pid {os.getpid()}" in message[0], done.stderr
        assert "Traceback" not in done.stderr
        with pytest.raises(DataDirectoryInUse), data_directory_lock(data):
            pass
    with data_directory_lock(data):  # released when the holder let go
        pass
    assert not (data / "journal").exists()  # the refused process touched nothing
