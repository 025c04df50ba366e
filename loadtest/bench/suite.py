"""``python -m loadtest.bench all`` (``make bench``): every benchmark, each in its own process, one JSON file,
a short table, and one line appended to ``bench/history.jsonl`` with the commit id, so a
regression shows up next to the runs before it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# (name, extra arguments, the figure to show, the reference it is compared with)
PLAN: list[tuple[str, list[str], str, str]] = [
    ("engine", [], "commands_per_s", "bare_loop_per_s"),
    ("journal", ["--journal", "file"], "appends_per_s", "raw_fsync_per_s"),
    ("journal", ["--journal", "redis"], "appends_per_s", "raw_xadd_batch_per_s"),
    ("actor", ["--journal", "file"], "bookings_per_s", ""),
    ("actor", ["--journal", "redis"], "bookings_per_s", ""),
    ("recovery", [], "recovery_s", ""),
    # one confirmation e-mail: composing it (the bytes), then writing it to the local outbox
    ("mail", [], "compose_cpu_us", ""),
    ("memory", [], "rss_mb", ""),
    ("http", [], "bookings_per_s", ""),
    # one node, then two, behind nginx on Redis: how the second node scales bookings/s
    ("http", ["--nodes", "1", "2", "--scale", "small"], "ratio_last_to_first", ""),
    # the owner of AB SIGKILLed under load on three nodes: seconds its regions took no booking
    ("failover", [], "unavailable_s", ""),
    # the hot case (every client on one clinic) against websockets' broadcast() to the same clients
    ("fanout", [], "ratio", ""),
]


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run_one(name: str, args: list[str], timeout_s: float) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "loadtest.bench", name, *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"bench": name, "args": args, "error": f"timed out after {timeout_s:.0f}s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            result: dict[str, Any] = json.loads(line)
            result["args"] = args
            return result
    return {"bench": name, "args": args, "error": (proc.stderr.strip().splitlines() or ["no output"])[-1]}


def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench all")
    parser.add_argument("--out", default="bench/results.json")
    parser.add_argument("--history", default="bench/history.jsonl")
    parser.add_argument("--only", nargs="*", default=None, help="benchmark names to run")
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args(argv)
    results = []
    for name, extra, figure, reference in PLAN:
        if args.only and name not in args.only:
            continue
        started = time.perf_counter()
        result = run_one(name, extra, args.timeout)
        result["wall_s"] = round(time.perf_counter() - started, 1)
        if reference and figure in result and result.get(reference):
            result["ratio_to_reference"] = round(result[figure] / result[reference], 3)
        results.append(result)
        print(json.dumps(result), flush=True)
    record = {
        "commit": git_commit(),
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "results": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    with Path(args.history).open("a") as history:
        history.write(json.dumps(record) + "\n")
    print(f"\n{'benchmark':28s} {'figure':>16s} {'value':>12s} {'vs reference':>13s}")
    for (name, extra, figure, _reference), result in zip(
        [p for p in PLAN if not args.only or p[0] in args.only], results, strict=True
    ):
        label = " ".join([name, *extra[1:2]])
        value = result.get(figure, result.get("error", "?"))
        ratio = result.get("ratio_to_reference", "")
        print(f"{label:28s} {figure:>16s} {value!s:>12.12s} {ratio!s:>13s}")
    return record
