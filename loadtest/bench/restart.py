"""``python -m loadtest.bench restart --scale sweden --booked 0.3``: seed, then start from what was seeded.

Seeds a fresh data directory with ``tandtid seed`` (timed: ``seed_s``, and the CPU-seconds it
printed), then starts ``tandtid serve`` on it (no seeding) and times process start to the first
``/ready`` 200 (``ready_s``). RSS of the server (``/proc/PID/status``) at ready and
``--steady-s`` later. For ``bytes_per_booking`` the same catalogue with nothing booked is seeded
and served the same way; the difference of the two steady RSS over the bookings is what the
bookings cost (``bytes_per_booking_whole_process``: the whole RSS over the bookings, for
comparison). One JSON line; ``--keep DIR`` leaves the booked data directory there (``bench mix``
can serve it) and the baseline in ``DIR.empty``; a later run with the same ``--keep`` serves them
again without seeding (``seed_reused``: the seed figures are the recorded ones).

The machine is shared: read ``load_avg`` (1-minute load average at start and end) beside the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from loadtest import instance
from loadtest.redis_server import free_port


def wait_ready(
    url: str,
    proc: subprocess.Popen[bytes],
    timeout_s: float = 600,
    interval_s: float = 0.2,
    *,
    name: str | None,
) -> None:
    """Until ``url``/ready answers 200 from the process named ``name`` (``loadtest.instance``; None:
    any process); SystemExit if the server exits or takes longer than ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    others: set[str | None] = set()
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            also = f" (another process answers /ready there: {sorted(map(str, others))})" if others else ""
            raise SystemExit(f"the server exited with {proc.returncode}{also}")
        try:
            answer = httpx.get(f"{url}/ready", timeout=2)
        except httpx.HTTPError:
            answer = None
        if answer is not None:
            if instance.ready_as(answer, name):
                return
            if name is not None and instance.answering(answer) != name:
                others.add(instance.answering(answer))
        time.sleep(interval_s)
    proc.kill()
    raise SystemExit(f"the server at {url} was not ready within {timeout_s:.0f}s")


def tandtid(*args: str) -> list[str]:
    return [sys.executable, "-m", "server.cli", *args]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def children_rss_mb(pid: int) -> float:
    """RSS of the process's children (the consumers' process of ``tandtid serve``)."""
    total = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            with contextlib.suppress(FileNotFoundError):  # gone meanwhile
                total += rss_mb(int(child))
    return total


def load_avg() -> float:
    return round(os.getloadavg()[0], 2)


def seed(data: Path, scale: str, booked: float) -> tuple[float, dict[str, float]]:
    """``tandtid seed``: its wall time, and what it printed (clinics, bookings, CPU-seconds).
    A directory this seeded before (``bench-seed.json`` in it, same scale and share) is reused:
    its recorded figures come back with ``reused`` 1."""
    record = data / "bench-seed.json"
    if record.exists():
        seeded = json.loads(record.read_text())
        if seeded.get("scale") == scale and seeded.get("booked") == booked:
            return float(seeded["seed_s"]), {**seeded["figures"], "reused": 1}
    started = time.perf_counter()
    out = subprocess.run(
        tandtid("seed", "--data", str(data), "--scale", scale, "--booked", str(booked)),
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "TANDTID_LOG_LEVEL": "warning"},
    )
    wall = time.perf_counter() - started
    found = re.search(r"seeded (\d+) clinics, (\d+) bookings .* \(([\d.]+) CPU-seconds\)", out.stdout)
    if found is None:
        raise SystemExit(f"unexpected seed output: {out.stdout!r} {out.stderr[-500:]!r}")
    clinics, bookings, cpu = found.groups()
    figures = {"clinics": int(clinics), "bookings": int(bookings), "cpu_s": float(cpu)}
    record.write_text(json.dumps({"scale": scale, "booked": booked, "seed_s": wall, "figures": figures}))
    return wall, figures


def serve(data: Path, steady_s: float) -> dict[str, float]:
    """Start ``tandtid serve`` on ``data``: seconds to /ready 200, RSS then and ``steady_s`` later."""
    port = free_port()
    name = instance.new_name()
    env = {**os.environ, "TANDTID_LOG_LEVEL": "warning", instance.ENV: name}
    env.pop("TANDTID_REDIS_URL", None)
    started = time.perf_counter()
    proc = subprocess.Popen(
        tandtid(
            "serve", "--host", "127.0.0.1", "--port", str(port), "--data", str(data), "--log-level", "warning"
        ),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc, interval_s=0.05, name=name)
        ready_s = time.perf_counter() - started
        at_ready = rss_mb(proc.pid)
        time.sleep(steady_s)
        return {
            "ready_s": ready_s,
            "rss_mb_ready": at_ready,
            "rss_mb_steady": rss_mb(proc.pid),
            "consumers_rss_mb_steady": children_rss_mb(proc.pid),
        }
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench restart")
    parser.add_argument("--scale", default="sweden")
    parser.add_argument("--booked", type=float, default=0.3)
    parser.add_argument("--steady-s", type=float, default=60.0, help="seconds after /ready for rss_mb_steady")
    parser.add_argument("--no-baseline", action="store_true", help="skip the run with nothing booked")
    parser.add_argument(
        "--keep",
        default=None,
        help="leave the booked data directory here (and the baseline in DIR.empty); a later run with "
        "the same --keep serves them again without seeding (seed_reused)",
    )
    args = parser.parse_args(argv)
    load_start = load_avg()
    scratch = Path(tempfile.mkdtemp(prefix="tandtid-bench-restart-"))
    try:
        booked_dir = Path(args.keep) if args.keep else scratch / "booked"
        seed_s, seeded = seed(booked_dir, args.scale, args.booked)
        served = serve(booked_dir, args.steady_s)
        result: dict[str, Any] = {
            "bench": "restart",
            "scale": args.scale,
            "booked": args.booked,
            "seed_s": round(seed_s, 1),
            "seed_cpu_s": seeded["cpu_s"],
            "seed_reused": bool(seeded.get("reused")),
            "ready_s": round(served["ready_s"], 2),
            "rss_mb_ready": round(served["rss_mb_ready"], 1),
            "rss_mb_steady": round(served["rss_mb_steady"], 1),
            # the consumers' own process (e-mails, webhooks): replicas of the region snapshots
            "consumers_rss_mb_steady": round(served["consumers_rss_mb_steady"], 1),
            "bookings": int(seeded["bookings"]),
            "bytes_per_booking_whole_process": round(
                served["rss_mb_steady"] * 2**20 / max(1, seeded["bookings"])
            ),
        }
        if not args.no_baseline and seeded["bookings"]:
            empty_dir = Path(f"{args.keep}.empty") if args.keep else scratch / "empty"
            seed(empty_dir, args.scale, 0.0)
            empty = serve(empty_dir, min(args.steady_s, 10.0))
            result["rss_mb_steady_nothing_booked"] = round(empty["rss_mb_steady"], 1)
            result["bytes_per_booking"] = round(
                (served["rss_mb_steady"] - empty["rss_mb_steady"]) * 2**20 / seeded["bookings"]
            )
        result["load_avg"] = [load_start, load_avg()]
        print(json.dumps(result), flush=True)
        return result
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
