"""The log level of the ``tandtid`` command: the flag, else TANDTID_LOG_LEVEL, else info (the README's table)."""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from server.cli import CommandError, log_level


def test_the_flag_wins_over_the_environment() -> None:
    args = argparse.Namespace(log_level="debug")
    assert log_level(args, {"TANDTID_LOG_LEVEL": "error"}) == logging.DEBUG


def test_the_environment_sets_the_level_when_no_flag_is_given() -> None:
    args = argparse.Namespace(log_level=None)
    assert log_level(args, {"TANDTID_LOG_LEVEL": "warning"}) == logging.WARNING
    assert log_level(argparse.Namespace(), {"TANDTID_LOG_LEVEL": "ERROR"}) == logging.ERROR


def test_info_when_neither_is_given() -> None:
    assert log_level(argparse.Namespace(log_level=None), {}) == logging.INFO


def test_an_unknown_level_is_refused() -> None:
    with pytest.raises(CommandError, match="unknown log level 'loud'"):
        log_level(argparse.Namespace(log_level=None), {"TANDTID_LOG_LEVEL": "loud"})


def test_an_unknown_level_from_the_environment_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "server.cli", "journal", "check", "--data", str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "TANDTID_LOG_LEVEL": "loud"},
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "tandtid journal: unknown log level 'loud': use debug, info, warning, error or critical"
    ]
