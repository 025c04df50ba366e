"""``tandtid bench http``: bookings per second through the real HTTP stack, with p50/p99.

Starts ``tandtid serve`` (file journal, ``--seed --scale small``) in a temp dir, registers
patients, collects free times from the public availability API, then drives
``POST /api/bookings`` from worker processes over keep-alive connections (a minimal HTTP/1.1
client on asyncio streams, so the load generator spends little of the machine's 2 cores).
Every request is a real booking of a distinct free time: a 201 is a durable booking.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

import httpx

from loadtest.redis_server import free_port


def start_server(data: str, port: int, scale: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "TANDTID_RATE_PER_S": "1000000",
        "TANDTID_RATE_BURST": "1000000",
        "TANDTID_LOG_LEVEL": "warning",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "server.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--data",
            data,
            "--seed",
            "--scale",
            scale,
            "--log-level",
            "warning",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not become ready")


def prepare(base: str, patients: int, wanted: int) -> tuple[list[str], list[tuple[str, bytes]]]:
    """Tokens for ``patients`` new patients and ``wanted`` (token, body) booking requests,
    each a distinct free time, at most 3 per patient per clinic (the clinic's hoarding limit)."""
    with httpx.Client(base_url=base, timeout=30) as client:
        tokens = []
        for i in range(patients):
            r = client.post(
                "/api/auth/register",
                json={
                    "email": f"bench-{i}-{time.time_ns()}@bench.test",
                    "password": "bench-password",
                    "name": "Bench",
                },
            )
            r.raise_for_status()
            tokens.append(r.json()["token"])
        clinics = []
        for region in [r["code"] for r in client.get("/api/regions").json()]:
            clinics += [
                c["id"] for c in client.get("/api/clinics", params={"region": region, "limit": 500}).json()
            ]
        slots: list[tuple[str, str, str]] = []
        for clinic in clinics:
            days = client.get(
                f"/api/clinics/{clinic}/availability", params={"service": "child_checkup", "days": 31}
            ).json()["days"]
            # each patient may hold 3 upcoming bookings per clinic: spread the load over clinics
            slots += [(clinic, t["resource"], t["start"]) for d in days for t in d["times"]][: 3 * patients]
            if len(slots) >= wanted:
                break
    per_clinic_patient: dict[tuple[str, int], int] = {}
    requests: list[tuple[str, bytes]] = []
    p = 0
    for clinic, resource, start in slots:
        for _ in range(patients):
            p = (p + 1) % patients
            if per_clinic_patient.get((clinic, p), 0) < 3:
                break
        else:
            continue
        per_clinic_patient[(clinic, p)] = per_clinic_patient.get((clinic, p), 0) + 1
        body = json.dumps(
            {"clinic": clinic, "resource": resource, "service": "child_checkup", "start": start}
        )
        requests.append((tokens[p], body.encode()))
        if len(requests) >= wanted:
            break
    return tokens, requests


async def _drive(
    port: int, work: list[tuple[str, bytes]], connections: int
) -> tuple[list[float], dict[int, int]]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    queue = list(reversed(work))

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while queue:
            token, body = queue.pop()
            request = (
                f"POST /api/bookings HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode() + body
            t0 = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            latencies.append(time.perf_counter() - t0)
            status = int(head[9:12])
            statuses[status] = statuses.get(status, 0) + 1
        writer.close()

    await asyncio.gather(*(connection() for _ in range(connections)))
    return latencies, statuses


def _worker(port: int, work: list[tuple[str, bytes]], connections: int, out: Any) -> None:
    out.put(asyncio.run(_drive(port, work, connections)))


def run(bookings: int, workers: int, connections: int, patients: int, scale: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="tandtid-bench-http-") as data:
        port = free_port()
        server = start_server(data, port, scale)
        try:
            _tokens, work = prepare(f"http://127.0.0.1:{port}", patients, bookings)
            ctx = mp.get_context("spawn")
            out = ctx.Queue()
            procs = [
                ctx.Process(target=_worker, args=(port, work[i::workers], connections, out))
                for i in range(workers)
            ]
            started = time.perf_counter()
            for proc in procs:
                proc.start()
            results = [out.get() for _ in procs]
            elapsed = time.perf_counter() - started
            for proc in procs:
                proc.join()
        finally:
            server.terminate()
            server.wait(timeout=30)
    latencies = sorted(x for lat, _ in results for x in lat)
    statuses: dict[int, int] = {}
    for _, st in results:
        for code, n in st.items():
            statuses[code] = statuses.get(code, 0) + n
    created = statuses.get(201, 0)
    return {
        "bench": "http",
        "requests": len(latencies),
        "bookings": created,
        "bookings_per_s": round(created / elapsed),
        "requests_per_s": round(len(latencies) / elapsed),
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "workers": workers,
        "connections": workers * connections,
    }


def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="tandtid bench http")
    parser.add_argument("--bookings", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=1, help="load generator processes")
    parser.add_argument("--connections", type=int, default=32, help="keep-alive connections per worker")
    parser.add_argument("--patients", type=int, default=40)
    parser.add_argument("--scale", default="small")
    args = parser.parse_args(argv)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    result = run(args.bookings, args.workers, args.connections, args.patients, args.scale)
    print(json.dumps(result), flush=True)
    return result
