"""A bounded, headless load test: ``python -m loadtest.run --seconds 120 --users 200 --scale small``.

Without ``--host`` it starts its own server in a temporary directory (``tandtid serve --seed
--scale SCALE --booked SHARE`` on a free 127.0.0.1 port, rate limits off: every simulated user shares one IP),
creates clinic API keys for a few busy clinics, runs the fixed user mix of ``loadtest/users.py``
for ``--seconds`` with Locust as a library (one process, so the invariant check sees every
user), stops the server, and prints one JSON document: the run, Locust's statistics per request
(WebSocket diff latency included) and the invariant check. Exit status 1 when the invariant
fails (or could not be checked), 0 otherwise.

With ``--host URL`` it drives that server instead (127.0.0.1 only); the clinic keys are created
through its admin API (``loadtest/clinic_keys.py``), or the clinic users sit the run out.
"""

from __future__ import annotations

# Locust monkey-patches the standard library for gevent on import: it must come first.
from locust import events  # isort: skip
from locust.env import Environment  # isort: skip
from locust.stats import print_error_report, print_percentile_stats, print_stats  # isort: skip

import argparse
import gc
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import gevent
import httpx

from loadtest import instance
from loadtest.clinic_keys import NoClinicKeys, keys_through_api
from loadtest.redis_server import free_port
from loadtest.users import config

SERVER_READY_TIMEOUT_S = (
    1200.0  # all of Sweden with 30% pre-booked: ~1 CPU-minute of seeding, longer on a loaded machine
)
LOCAL_HOSTS = ("127.0.0.1", "localhost")


def tandtid(*args: str) -> list[str]:
    return [sys.executable, "-m", "server.cli", *args]


class LocalServer:
    """``tandtid serve --seed`` in a temporary data directory; stopped with SIGTERM (then SIGKILL)."""

    def __init__(self, scale: str, data_dir: Path, booked: float = 0.0) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir / "server.log"
        # every simulated user comes from 127.0.0.1: no per-IP rate limit, no per-IP socket cap
        self.name = instance.new_name()  # /ready from this process, not another on the port
        env = {
            **os.environ,
            "TANDTID_RATE_PER_S": "0",
            "TANDTID_WS_MAX_CONNECTIONS_PER_IP": "1000000",
            instance.ENV: self.name,
        }
        env.pop("TANDTID_REDIS_URL", None)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                tandtid(
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--data",
                    str(data_dir),
                    "--seed",
                    "--scale",
                    scale,
                    "--booked",
                    str(booked),
                    "--log-level",
                    "warning",
                ),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )

    def wait_ready(self, timeout_s: float = SERVER_READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited ({self.proc.returncode}); see {self.log_path}")
            try:
                if instance.ready_as(httpx.get(f"{self.url}/ready", timeout=2), self.name):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the server was not ready within {timeout_s:.0f}s; see {self.log_path}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def stats_summary(env: Environment) -> dict[str, Any]:
    def row(entry: Any) -> dict[str, Any]:
        return {
            "type": entry.method,
            "name": entry.name,
            "requests": entry.num_requests,
            "failures": entry.num_failures,
            "avg_ms": round(entry.avg_response_time, 1),
            "median_ms": entry.median_response_time,
            "p95_ms": entry.get_response_time_percentile(0.95),
            "p99_ms": entry.get_response_time_percentile(0.99),
            "max_ms": round(entry.max_response_time, 1),
            "rps": round(entry.total_rps, 2),
        }

    stats = env.stats
    entries = sorted(stats.entries.values(), key=lambda e: (e.method or "", e.name))
    return {
        "total": row(stats.total),
        "requests": [row(e) for e in entries],
        "errors": [
            {"type": e.method, "name": e.name, "error": str(e.error), "occurrences": e.occurrences}
            for e in stats.errors.values()
        ],
    }


SLOW_MS = 100  # an answer slower than this is noted with the second it came in
SLOW_GC_S = 0.02  # a collection of this process longer than this is noted


def run_locust(
    host: str, users: int, spawn_rate: float, seconds: float, stop_timeout: float
) -> dict[str, Any]:
    from loadtest import locustfile  # registers the test_start/test_stop listeners
    from loadtest.users import ClinicSystemUser, FlashCrowd, KioskUser, PatientUser

    env = Environment(
        user_classes=[PatientUser, KioskUser, ClinicSystemUser, FlashCrowd],
        host=host,
        events=events,
        stop_timeout=stop_timeout,
    )
    runner = env.create_local_runner()
    started = time.monotonic()
    slow: dict[int, list[str]] = {}  # second of the run -> the requests slower than SLOW_MS in it

    def on_request(request_type: str, name: str, response_time: float, **_: Any) -> None:
        if response_time > SLOW_MS:
            slow.setdefault(int(time.monotonic() - started), []).append(f"{request_type} {name}")

    events.request.add_listener(on_request)  # type: ignore[no-untyped-call]  # unannotated in locust
    pauses: list[
        tuple[int, int, int]
    ] = []  # this process's own garbage collections: (second, ms, generation)
    gc_started = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_started[0] = time.perf_counter()
        elif (held := time.perf_counter() - gc_started[0]) >= SLOW_GC_S:
            pauses.append((int(time.monotonic() - started), round(held * 1000), info["generation"]))

    gc.callbacks.append(on_gc)

    def freeze_what_lived() -> None:
        """This process's full collections paused every request in flight: its heap (the ledger,
        the stats) grows through a run and they took 27 ms at the start, 80+ ms after 80 s, every
        ~4 s, each showing as 100-270 answers over 100 ms that the server had answered in time.
        What has lived a second is frozen (never walked again): a collection walks what is new."""
        while True:
            gevent.sleep(1.0)
            gc.freeze()

    freezer = gevent.spawn(freeze_what_lived)
    runner.start(users, spawn_rate=spawn_rate)
    gevent.spawn_later(seconds, runner.quit)
    runner.greenlet.join()
    elapsed = time.monotonic() - started
    gc.callbacks.remove(on_gc)
    freezer.kill()
    print_stats(env.stats, current=False)
    print_percentile_stats(env.stats)
    print_error_report(env.stats)
    return {
        "seconds": round(elapsed, 1),
        "user_classes": dict(runner.final_user_classes_count or {}),
        **stats_summary(env),
        "invariant": dict(locustfile.LAST_REPORT) or {"ok": False, "error": "the check did not run"},
        # when the slow answers came (together: a pause of the server or of this process; spread:
        # queueing), the seconds with the most first
        # the load generator's own pauses (every answer in flight then looks slow)
        "load_generator_gc_pauses": [
            {"second": second, "ms": ms, "generation": generation} for second, ms, generation in pauses
        ][:20],
        "slow_ms": SLOW_MS,
        "slow_by_second": [
            {"second": second, "n": len(names), "requests": sorted(set(names))[:6]}
            for second, names in sorted(slow.items(), key=lambda item: -len(item[1]))[:10]
        ],
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m loadtest.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=120)
    p.add_argument("--users", type=int, default=200)
    p.add_argument("--spawn-rate", type=float, default=10, help="users started per second")
    p.add_argument("--scale", default="small", help="seed scale of the server it starts")
    p.add_argument(
        "--booked", type=float, default=0.0, help="share of the seed's open times pre-booked (0..1)"
    )
    p.add_argument("--host", default=None, help="an already running server (127.0.0.1 only)")
    p.add_argument(
        "--clinic-keys", type=int, default=3, help="clinics given API keys (the first is the flash crowd's)"
    )
    p.add_argument("--regions", default="AB,O,M", help="regions the patients browse")
    p.add_argument("--stop-timeout", type=float, default=15, help="seconds users get to finish their task")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    server: LocalServer | None = None
    scratch: tempfile.TemporaryDirectory[str] | None = None
    try:
        if args.host:
            if urlparse(args.host).hostname not in LOCAL_HOSTS:
                print("loadtest.run only targets 127.0.0.1", file=sys.stderr)
                return 2
            host = args.host.rstrip("/")
        else:
            scratch = tempfile.TemporaryDirectory(prefix="tandtid-loadtest-")
            server = LocalServer(args.scale, Path(scratch.name), args.booked)
            print(
                f"starting a server ({args.scale}, {args.booked:.0%} pre-booked) at {server.url} ...",
                file=sys.stderr,
                flush=True,
            )
            server.wait_ready()
            host = server.url
        regions = [r.strip() for r in args.regions.split(",") if r.strip()]
        os.environ["TANDTID_LT_REGIONS"] = ",".join(regions)
        keys: dict[str, str] = {}
        if args.clinic_keys > 0:
            cfg = config()
            try:
                keys = keys_through_api(
                    host,
                    regions[0],
                    args.clinic_keys,
                    admin_email=cfg.admin_email,
                    admin_password=cfg.admin_password,
                )
            except NoClinicKeys as exc:
                print(f"no clinic keys, clinic systems and flash releases skipped: {exc}", file=sys.stderr)
        os.environ["TANDTID_LT_CLINIC_KEYS"] = ",".join(f"{c}={k}" for c, k in keys.items())
        os.environ["TANDTID_LT_FLASH_CLINIC"] = next(iter(keys), "")
        result = run_locust(host, args.users, args.spawn_rate, args.seconds, args.stop_timeout)
        result = {
            "host": host,
            "users": args.users,
            "scale": None if args.host else args.scale,
            "booked": None if args.host else args.booked,
            "clinic_keys": len(keys),
            **result,
        }
        print(json.dumps(result, indent=2, ensure_ascii=False), flush=True)
        return 0 if result["invariant"].get("ok") else 1
    finally:
        if server is not None:
            server.stop()
        if scratch is not None:
            scratch.cleanup()


if __name__ == "__main__":
    sys.exit(main())
