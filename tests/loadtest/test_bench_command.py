"""Integration: ``python -m loadtest.bench`` runs benchmarks by name in a real process, errors are
one line, and the product (engine, persistence, server) never imports ``loadtest``."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from tests.support import free_port

REPO = Path(__file__).resolve().parents[2]
PRODUCT = ("engine", "persistence", "server")


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loadtest.bench", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_product_never_imports_loadtest() -> None:
    offenders = []
    for package in PRODUCT:
        for path in sorted((REPO / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                offenders += [
                    f"{path.relative_to(REPO)}: {n}" for n in names if n.split(".")[0] == "loadtest"
                ]
    assert offenders == []


def test_a_benchmark_runs_by_name_and_prints_one_json_line() -> None:
    done = bench("engine", "--clinics", "2", "--days", "3", "--commands", "2000", "--repeat", "1")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["commands_per_s"] > 0


def test_the_mail_benchmark_composes_and_writes_to_an_outbox() -> None:
    done = bench("mail", "--messages", "10", "--batch", "4", "--repeat", "1")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["compose_cpu_us"] > 0 and result["outbox_cpu_us"] > 0 and result["bytes_per_message"] > 1000


def test_an_unknown_benchmark_is_one_line_naming_the_known_ones() -> None:
    done = bench("no-such-bench")
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("unknown benchmark 'no-such-bench'; one of: actor, engine, ")
    assert line.endswith(", all")


def test_an_unreachable_redis_is_one_line_not_a_traceback() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    done = bench("journal", "--journal", "redis", "--redis", url, "--seconds", "1")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("journal: the journal cannot be reached"), done.stderr
