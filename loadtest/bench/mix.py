"""``python -m loadtest.bench mix``: the Locust user mix against all of Sweden with 30% booked.

Serves a seeded data directory (``--data DIR``, e.g. one ``bench restart --keep DIR`` left; by
default a fresh ``tandtid seed --scale sweden --booked 0.3``), runs ``python -m loadtest.run
--host ... --users 200 --seconds 120`` against it, and reads the server's event-loop lag
histogram (``tandtid_event_loop_lag_seconds``) from ``/metrics`` before and after the run. One
JSON line: each endpoint's p50/p99 (Locust's, in ms), the server's own p99 per route template
(from its ``tandtid_http_request_seconds`` histogram: the bucket bound), the server's CPU
seconds over the run and per HTTP request (all threads, and the event loop's thread alone;
load-robust where latency is not), the failures by request and cause (Locust's error report:
``failures_by_cause``), the loop lag p99 and p99.9 of the run (the upper bound of the histogram
bucket they fall in: "at most"), the invariant (double bookings, missing), and the 1-minute load
average at start and end (the machine is shared: read the figures beside it).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

from loadtest import instance
from loadtest.bench.http import cpu_seconds, tree_cpu_seconds
from loadtest.bench.restart import load_avg, seed, tandtid, wait_ready
from loadtest.redis_server import free_port

LAG = "tandtid_event_loop_lag_seconds_bucket"
STALL_MS = 40  # the server logs each event-loop stall longer than this with where the loop was
OWN_CODE = ("/engine/", "/persistence/", "/server/")
HTTP = "tandtid_http_request_seconds_bucket"


def histograms(url: str, metric: str) -> dict[str, dict[float, float]]:
    """Cumulative counts of a histogram by upper bound (seconds; inf last), per ``route`` label
    ("" for a histogram without one)."""
    out: dict[str, dict[float, float]] = {}
    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        if line.startswith(metric + "{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            route = line.split('route="', 1)[1].split('"', 1)[0] if 'route="' in line else ""
            bounds = out.setdefault(route, {})
            bounds[float("inf") if le == "+Inf" else float(le)] = float(line.rsplit(" ", 1)[1])
    return out


def lag_buckets(url: str) -> dict[float, float]:
    """Cumulative counts of the loop lag histogram by upper bound (seconds; inf last)."""
    return histograms(url, LAG).get("", {})


def quantile_bound(before: dict[float, float], after: dict[float, float], q: float) -> float | None:
    """The upper bound (ms) of the bucket holding quantile ``q`` of what was observed in between."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    if not counts or counts[-1] <= 0:
        return None
    for bound, cumulative in zip(bounds, counts, strict=True):
        if cumulative >= q * counts[-1]:
            return bound * 1000
    return None


def stall_places(log: str, top: int = 8) -> list[dict[str, Any]]:
    """The stalls the server logged (``tandtid.stall``), grouped by where the loop was: the
    innermost frame, and the innermost frame of our own code when that is a library's; with how
    many and how long they held the loop in all (ms, from each stall's closing line), longest first."""
    places: dict[str, list[int]] = {}
    for line in log.splitlines():
        if "event loop held for" not in line or " at: " not in line:
            continue
        frames = line.split(" at: ", 1)[1].split(" <- ")
        own = next((f for f in frames if any(part in f for part in OWN_CODE)), None)
        place = frames[0] if own in (None, frames[0]) else f"{frames[0]} in {own}"
        seen = places.setdefault(place, [0, 0, 0])  # stalls, ms in all, longest ms
        if " ms in all" in line:
            held = int(line.split("event loop held for ", 1)[1].split(" ms", 1)[0])
            seen[1] += held
            seen[2] = max(seen[2], held)
        else:
            seen[0] += 1
    ranked = sorted(places.items(), key=lambda item: (-item[1][1], -item[1][0]))[:top]
    return [{"at": at, "n": n, "ms": ms, "longest_ms": longest} for at, (n, ms, longest) in ranked]


def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench mix")
    parser.add_argument("--data", default=None, help="a seeded data directory to serve (default: seed one)")
    parser.add_argument("--scale", default="sweden")
    parser.add_argument("--booked", type=float, default=0.3)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--server-log", default=None, help="keep the server's log (its stalls' stacks) here")
    args = parser.parse_args(argv)
    load_start = load_avg()
    scratch = Path(tempfile.mkdtemp(prefix="tandtid-bench-mix-"))
    data = Path(args.data) if args.data else scratch / "data"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc: subprocess.Popen[bytes] | None = None
    try:
        if args.data is None:
            seed(data, args.scale, args.booked)
        # A seed or a copy made just before leaves the store's pages dirty, and the kernel writes them
        # back ~30 s later (vm.dirty_expire_centisecs), in the middle of the run, with every journal
        # fsync waiting behind it: 2-29 answers over 100 ms at seconds 23-27 of nearly every run.
        os.sync()
        name = instance.new_name()
        env = {
            **os.environ,
            "TANDTID_RATE_PER_S": "0",
            "TANDTID_WS_MAX_CONNECTIONS_PER_IP": "1000000",
            "TANDTID_STALL_MS": str(STALL_MS),
            instance.ENV: name,
        }
        env.pop("TANDTID_REDIS_URL", None)
        with (scratch / "server.log").open("wb") as log:
            proc = subprocess.Popen(
                tandtid("serve", "--host", "127.0.0.1", "--port", str(port), "--data", str(data))
                + ["--log-level", "warning"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_ready(url, proc, name=name)
        before = lag_buckets(url)
        http_before = histograms(url, HTTP)
        log_start = (scratch / "server.log").stat().st_size  # stalls of the run, not of the start
        cpu_before = cpu_seconds(proc.pid)
        tree_before = tree_cpu_seconds(proc.pid)  # with the consumers' own process
        locust_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        run = subprocess.run(
            [sys.executable, "-m", "loadtest.run", "--host", url]
            + ["--users", str(args.users), "--seconds", str(args.seconds)],
            capture_output=True,
            text=True,
        )
        cpu_after = cpu_seconds(proc.pid)
        tree_after = tree_cpu_seconds(proc.pid)
        locust_after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the run has been waited for
        locust_cpu = sum(
            getattr(locust_after, f) - getattr(locust_before, f) for f in ("ru_utime", "ru_stime")
        )
        server_cpu, loop_cpu = (a - b for a, b in zip(cpu_after, cpu_before, strict=True))
        after = lag_buckets(url)
        http_after = histograms(url, HTTP)
        lines = run.stdout.splitlines()
        start = max((i for i, line in enumerate(lines) if line == "{"), default=None)
        if start is None:
            raise SystemExit(f"loadtest.run printed no report: {run.stderr[-2000:]}")
        report = json.loads("\n".join(lines[start:]))
        with (scratch / "server.log").open("rb") as server_log:
            server_log.seek(log_start)
            run_log = server_log.read().decode(errors="replace")
        invariant = report["invariant"]
        http_requests = sum(r["requests"] for r in report["requests"] if r["type"] != "WS")
        result = {
            "bench": "mix",
            "users": args.users,
            "seconds": report["seconds"],
            "requests_per_s": report["total"]["rps"],
            "failures": report["total"]["failures"],
            "endpoints": {
                f"{r['type']} {r['name']}": {
                    "p50_ms": r["median_ms"],
                    "p99_ms": r["p99_ms"],
                    "n": r["requests"],
                }
                for r in report["requests"]
            },
            # Locust's failure report: which requests failed and why (most frequent first)
            "failures_by_cause": sorted(
                (
                    {"request": f"{e['type']} {e['name']}", "error": e["error"][:300], "n": e["occurrences"]}
                    for e in report.get("errors", [])
                ),
                key=lambda e: -e["n"],
            ),
            # client answers slower than slow_ms, by the second of the run they came in
            "load_generator_gc_pauses": report.get("load_generator_gc_pauses", []),
            "slow_ms": report.get("slow_ms"),
            "slow_by_second": report.get("slow_by_second", []),
            # in the server, from the route's start to its last byte (the loop's lag before a
            # request is read is not in it): per route template, the bucket bound p99 falls in
            "server_p99_ms_at_most": {
                route: quantile_bound(http_before.get(route, {}), counts, 0.99)
                for route, counts in sorted(http_after.items())
                if counts.get(float("inf"), 0) - http_before.get(route, {}).get(float("inf"), 0) >= 20
            },
            # what the server spent (all threads): on a shared machine more telling than latency
            "server_cpu_s": round(server_cpu, 1),
            "server_cpu_ms_per_http_request": round(1000 * server_cpu / max(1, http_requests), 2),
            "consumers_cpu_s": round((tree_after - tree_before) - server_cpu, 1),
            # the Locust users' process on the same 2 cores: what the server did not get
            "load_generator_cpu_s": round(locust_cpu, 1),
            "loop_cpu_s": round(loop_cpu, 1),  # the event loop's thread alone
            "loop_cpu_ms_per_http_request": round(1000 * loop_cpu / max(1, http_requests), 2),
            "loop_lag_p99_ms_at_most": quantile_bound(before, after, 0.99),
            "loop_lag_p999_ms_at_most": quantile_bound(before, after, 0.999),
            # each stall past STALL_MS the server logged, by where its loop was held
            "stalls_over_ms": STALL_MS,
            "stalls": sum(places["n"] for places in stall_places(run_log, top=10_000)),
            "stall_longest_ms": max((p["longest_ms"] for p in stall_places(run_log, top=10_000)), default=0),
            "stall_places": stall_places(run_log),
            "invariant_ok": invariant.get("ok"),
            "double_bookings": len(invariant.get("double_bookings", [])),
            "missing": len(invariant.get("missing", [])),
            "unexpected": len(invariant.get("unexpected", [])),
            "invariant_error": invariant.get("error", ""),
            "load_avg": [load_start, load_avg()],
        }
        print(json.dumps(result), flush=True)
        return result
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc is not None and proc.returncode not in (0, -15):
            print((scratch / "server.log").read_text(errors="replace")[-4000:], file=sys.stderr)
        if args.server_log and (scratch / "server.log").exists():
            shutil.copyfile(scratch / "server.log", args.server_log)
        shutil.rmtree(scratch, ignore_errors=True)
