"""``python -m loadtest.bench http``: bookings per second through the real HTTP stack, beside the machine's limits.

Starts ``tandtid serve`` (file journal, ``--seed --scale sweden`` by default) in a temp dir,
registers patients, collects free times from the public availability API and writes one
request per line for ``wrk`` (C, with ``http_load.lua``), which drives ``POST /api/bookings``
over ``--connections`` keep-alive connections for ``--seconds``. ``--spread``:

* ``uniform`` (default): every request books a distinct free time drawn at random from all
  free times of the country (each clinic's share in proportion to its free times);
* ``region``: the same, within one region (``--region``, default Stockholm);
* ``hot``: every request aims at one of 10 times; 10 bookings, the rest are refusals.

In the same run it measures the two limits the figures should be read against: raw
``write + fsync`` per second on the data directory (the storage limit: one durable write per
batch) and requests per second of a trivial Starlette POST endpoint served by uvicorn the same
way (uvloop, httptools, no access log) and driven by the same wrk command (the framework limit).
It prints one JSON line with bookings/s, requests/s, p50, p99, the durable journal writes per
second and region appends per write the server made (its ``/metrics``: group commit at work),
both limits and the ratios.

Throughput swings with what else runs on the machine, so it also prints what the server spent:
its CPU microseconds per request during the run (all threads, and the event loop's thread
alone), the share of a core it got, and the CPU per booking once the journal consumers have
caught up after the run (the e-mails and webhooks of the run's bookings are composed then:
until the process idles, at most ``CATCH_UP_S``). Read from ``/proc`` (Linux). ``catch_up_s`` is
how long that took and ``bookings_per_s_all_work_done`` the bookings over the run and the catch-up
together: a server whose consumers fall behind books faster for 20 s than it can keep up with.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import resource as rusage
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from loadtest import instance
from loadtest.bench.restart import wait_ready
from loadtest.cluster import LocalCluster
from loadtest.redis_server import free_port

LUA = Path(__file__).with_name("http_load.lua")
SERVICE = "child_checkup"
SPREADS = ("uniform", "region", "hot")
HOT_TIMES = 10
PER_PATIENT_AND_CLINIC = 3  # the clinic's default hoarding limit
CATCH_UP_S = 120  # the longest wait for the consumers after the run
IDLE_CPU_SHARE = 0.05  # a process using less of a core than this has caught up
SERVER_ENV = {"TANDTID_RATE_PER_S": "1000000", "TANDTID_RATE_BURST": "1000000"}  # no rate limit


def start_server(data: str, port: int, scale: str, consumers: str = "process") -> subprocess.Popen[bytes]:
    name = instance.new_name()
    env = {
        **os.environ,
        **SERVER_ENV,
        "TANDTID_LOG_LEVEL": "warning",
        "TANDTID_CONSUMERS": consumers,
        instance.ENV: name,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "server.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
        + ["--data", data, "--seed", "--scale", scale, "--log-level", "warning"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_ready(f"http://127.0.0.1:{port}", proc, timeout_s=180, name=name)
    return proc


# -- the framework limit: a trivial endpoint, served the way tandtid serves ------------------


def _trivial_app() -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def book(request: Request) -> JSONResponse:
        body = await request.body()
        return JSONResponse({"id": "AB-bxxxxxxxxxxxxxx", "bytes": len(body)}, status_code=201)

    async def ready(_request: Request) -> JSONResponse:
        return JSONResponse({"ready": True})

    return Starlette(routes=[Route("/api/bookings", book, methods=["POST"]), Route("/ready", ready)])


def serve_trivial(port: int) -> None:
    """Run the trivial app like ``tandtid serve`` runs its app (uvloop, uvicorn, no access log)."""
    import uvicorn

    from server.cli import run_server_loop

    config = uvicorn.Config(
        _trivial_app(), host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="off"
    )
    run_server_loop(uvicorn.Server(config).serve())


def start_trivial(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-c", f"from loadtest.bench.http import serve_trivial; serve_trivial({port})"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_ready(f"http://127.0.0.1:{port}", proc, timeout_s=180, name=None)  # not tandtid: no name echoed
    return proc


# -- the storage limit -----------------------------------------------------------------------


def raw_fsync_per_s(directory: str, seconds: float = 3.0, size: int = 512) -> float:
    """Sequential ``write`` + ``fsync`` of ``size`` bytes to a fresh file in ``directory``."""
    path = Path(directory) / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    data = os.urandom(size)
    n = 0
    try:
        started = time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds:
            os.write(fd, data)
            os.fsync(fd)
            n += 1
    finally:
        os.close(fd)
        path.unlink()
    return n / elapsed


# -- the work --------------------------------------------------------------------------------


async def _register(client: httpx.AsyncClient, patients: int) -> list[str]:
    run = time.time_ns()

    async def one(i: int) -> str:
        r = await client.post(
            "/api/auth/register",
            json={"email": f"bench-{i}-{run}@bench.test", "password": "bench-password", "name": "Bench"},
        )
        r.raise_for_status()
        token: str = r.json()["token"]
        return token

    sem = asyncio.Semaphore(4)

    async def bounded(i: int) -> str:
        async with sem:
            return await one(i)

    return list(await asyncio.gather(*(bounded(i) for i in range(patients))))


async def _clinic_ids(client: httpx.AsyncClient, region: str | None) -> list[str]:
    """Every clinic of the country (or of ``region``): the list API caps at 500 rows, so the
    ids come from the per-region counts (the seed numbers clinics ``<REGION>-c1..N``)."""
    regions = (await client.get("/api/regions")).json()
    ids = []
    for r in regions:
        if region is None or r["code"] == region:
            ids += [f"{r['code']}-c{i}" for i in range(1, int(r["clinics"]) + 1)]
    return ids


async def _free_times(
    client: httpx.AsyncClient, clinics: list[str], days: int, keep: int, rng: random.Random
) -> dict[str, tuple[int, list[tuple[str, str]]]]:
    """Per clinic: how many free times of ``SERVICE`` it has in the next ``days``, and a random
    sample of at most ``keep`` of them as (resource, start)."""
    out: dict[str, tuple[int, list[tuple[str, str]]]] = {}
    sem = asyncio.Semaphore(8)

    async def one(clinic: str) -> None:
        async with sem:
            r = await client.get(
                f"/api/clinics/{clinic}/availability", params={"service": SERVICE, "days": days}
            )
        if r.status_code != 200:
            return
        # times that start within the hour could pass (422) before wrk reaches them
        soon = datetime.now(UTC) + timedelta(hours=1)
        times = [
            (t["resource"], t["start"])
            for d in r.json()["days"]
            for t in d["times"]
            if datetime.fromisoformat(t["start"]) > soon
        ]
        out[clinic] = (len(times), rng.sample(times, min(keep, len(times))))

    await asyncio.gather(*(one(c) for c in clinics))
    return out


def _draw(
    times: dict[str, tuple[int, list[tuple[str, str]]]], wanted: int, rng: random.Random
) -> list[tuple[str, str, str]]:
    """About ``wanted`` distinct (clinic, resource, start), each clinic's share in proportion to
    its free times (a multinomial draw over the clinics, then that many from its sample)."""
    clinics = [c for c, (count, _) in times.items() if count]
    picks: dict[str, int] = {}
    for clinic in rng.choices(clinics, weights=[times[c][0] for c in clinics], k=wanted):
        picks[clinic] = picks.get(clinic, 0) + 1
    drawn = [(clinic, *slot) for clinic, n in picks.items() for slot in times[clinic][1][:n]]
    rng.shuffle(drawn)
    return drawn


def _assign(
    slots: list[tuple[str, str, str]], tokens: list[str], rng: random.Random
) -> list[tuple[str, str, str, str]]:
    """(token, clinic, resource, start): a patient for each slot, at most 3 per patient and clinic."""
    used: dict[tuple[str, int], int] = {}
    out = []
    for clinic, resource, start in slots:
        p = rng.randrange(len(tokens))
        for _ in range(len(tokens)):
            if used.get((clinic, p), 0) < PER_PATIENT_AND_CLINIC:
                break
            p = (p + 1) % len(tokens)
        else:
            continue
        used[(clinic, p)] = used.get((clinic, p), 0) + 1
        out.append((tokens[p], clinic, resource, start))
    return out


async def prepare(base: str, spread: str, region: str, patients: int, wanted: int, days: int) -> list[str]:
    """The request lines for wrk (method, path, token, body; tab-separated)."""
    rng = random.Random(14)
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        tokens = await _register(client, patients)
        clinics = await _clinic_ids(client, region if spread == "region" else None)
        if spread == "hot":
            clinics = rng.sample(clinics, min(len(clinics), 50))
        keep = 4 * wanted // max(len(clinics), 1) + 20
        times = await _free_times(client, clinics, days, keep, rng)
    if spread == "hot":
        targets = _draw(times, HOT_TIMES, rng)
        # every patient asks for every hot time, in random order; the file is replayed round and round
        work = [(token, *rng.choice(targets)) for token in tokens for _ in range(HOT_TIMES * 10)]
        rng.shuffle(work)
    else:
        work = _assign(_draw(times, wanted, rng), tokens, rng)
    lines = []
    for token, clinic, resource, start in work:
        body = json.dumps({"clinic": clinic, "resource": resource, "service": SERVICE, "start": start})
        lines.append(f"POST\t/api/bookings\t{token}\t{body}")
    return lines


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(CPU seconds of the whole process, of its main thread: the event loop) so far."""
    tick = os.sysconf("SC_CLK_TCK")

    def of(stat: str) -> float:
        fields = Path(stat).read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick  # utime + stime

    return of(f"/proc/{pid}/stat"), of(f"/proc/{pid}/task/{pid}/stat")


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds so far of the process and its children (nginx: the master and its workers)."""
    total = 0.0
    try:
        total = cpu_seconds(pid)[0]
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                total += tree_cpu_seconds(int(child))
    except (FileNotFoundError, ProcessLookupError):
        pass  # gone meanwhile
    return total


def caught_up(pid: int, timeout_s: float = CATCH_UP_S, step_s: float = 0.25) -> tuple[float, float]:
    """Wait until the server and its children idle (the consumers, in the server's process or
    their own, have done the run's work): their CPU seconds then, and how long after the call they
    were still busy (to ``step_s``)."""
    started = time.monotonic()
    before = tree_cpu_seconds(pid)
    busy_until = started
    while time.monotonic() - started < timeout_s:
        time.sleep(step_s)
        now = tree_cpu_seconds(pid)
        if now - before < IDLE_CPU_SHARE * step_s:
            return now, busy_until - started
        before, busy_until = now, time.monotonic()
    return before, busy_until - started


def server_cpu(
    start: tuple[float, float, float],
    end: tuple[float, float, float],
    settled: tuple[float, float],
    seconds: float,
    raw: dict[str, Any],
) -> dict[str, Any]:
    """What the server spent (``start``/``end``: its process, its event loop's thread, the process
    and its children). Its journal consumers (e-mails, webhooks), in its process or their own, may
    fall behind during the run and do the rest after it: ``catch_up_s`` is how long that took, and
    ``bookings_per_s_all_work_done`` the run's bookings over the run and that time together (the
    rate the server keeps up with, e-mails included). ``server_cpu_us_per_booking_caught_up``
    counts the consumers' process too."""
    requests = max(int(raw["requests"]), 1)
    booked = max(int(raw["statuses"].get("201", 0)), 1)
    return {
        "catch_up_s": round(settled[1], 2),
        "bookings_per_s_all_work_done": round(booked / (seconds + settled[1])),
        "server_cpu_us_per_request": round((end[0] - start[0]) * 1e6 / requests),
        "server_loop_cpu_us_per_request": round((end[1] - start[1]) * 1e6 / requests),
        "consumer_process_cpu_us_per_request": round(
            ((end[2] - end[0]) - (start[2] - start[0])) * 1e6 / requests
        ),
        "server_cpu_share_of_a_core": round((end[0] - start[0]) / seconds, 2),
        "consumer_process_cpu_share_of_a_core": round(
            ((end[2] - end[0]) - (start[2] - start[0])) / seconds, 2
        ),
        # per booking only where bookings are the work (the hot spread makes 10: the rest are refusals)
        "server_cpu_us_per_booking_caught_up": (
            round((settled[0] - start[2]) * 1e6 / booked) if booked > HOT_TIMES else None
        ),
    }


def cpu_now(pid: int) -> tuple[float, float, float]:
    """(the process, its main thread, the process and its children) CPU seconds so far."""
    own, loop = cpu_seconds(pid)
    return own, loop, tree_cpu_seconds(pid)


def emails_written(store: str) -> int:
    """Messages in the store's local outbox (the notifier writes one a booking and change)."""
    from server.consumers.notify.outbox import Outbox

    outbox = Outbox(Path(store) / "outbox")
    try:
        return len(outbox.names())
    finally:
        outbox.close()


def journal_counts(*ports: int) -> tuple[float, float]:
    """(durable journal writes, region appends) so far, from the servers' /metrics (summed)."""
    rounds = appends = 0.0
    for port in ports:
        for line in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text.splitlines():
            if line.startswith("tandtid_journal_rounds "):
                rounds += float(line.split()[-1])
            elif line.startswith("tandtid_journal_append_seconds_count{"):
                appends += float(line.split()[-1])
    return rounds, appends


def wrk(port: int, requests_file: str, connections: int, seconds: int, threads: int) -> dict[str, Any]:
    """One wrk run; the Lua script prints one JSON line of figures."""
    cmd = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA),
        f"http://127.0.0.1:{port}",
        "--",
        requests_file,
        str(threads),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            result: dict[str, Any] = json.loads(line)
            return result
    raise SystemExit(f"wrk printed no figures: {proc.stdout[-500:]} {proc.stderr[-500:]}")


def _figures(raw: dict[str, Any]) -> dict[str, Any]:
    seconds = raw["duration_us"] / 1e6
    statuses = {str(k): v for k, v in sorted(raw["statuses"].items())}
    return {
        "bookings_per_s": round(statuses.get("201", 0) / seconds),
        "requests_per_s": round(raw["requests"] / seconds),
        "p50_ms": round(raw["p50_us"] / 1000, 2),
        "p99_ms": round(raw["p99_us"] / 1000, 2),
        "max_ms": round(raw["max_us"] / 1000, 1),
        "requests": raw["requests"],
        "statuses": statuses,
        "socket_errors": raw["socket_errors"],
        "replayed_list": raw["wrapped"] > 0,
    }


def framework_limit(req_file: str, args: argparse.Namespace) -> dict[str, Any]:
    """The trivial endpoint's figures, driven by the same wrk command."""
    trivial_port = free_port()
    trivial = start_trivial(trivial_port)
    try:
        return _figures(wrk(trivial_port, req_file, args.connections, args.framework_seconds, args.threads))
    finally:
        trivial.terminate()
        trivial.wait(timeout=30)


def on_nodes(args: argparse.Namespace, nodes: int, root: Path, req_file: str) -> dict[str, Any]:
    """The same load through nginx in front of ``nodes`` cluster nodes on a fresh Redis (seeded
    with ``--scale``): the figures, the durable writes the nodes made and the load average."""
    cluster = LocalCluster(root, nodes, env=SERVER_ENV, log_level="warning")
    try:
        cluster.start(scale=args.scale)
        lines = asyncio.run(
            prepare(cluster.url, args.spread, args.region, args.patients, args.bookings, args.days)
        )
        Path(req_file).write_text("\n".join(lines) + "\n")
        ports = [node.port for node in cluster.nodes]
        pids = {node.name: node.process.pid for node in cluster.nodes if node.process is not None}
        before = journal_counts(*ports)
        # a node with its consumers' process
        cpu_before = {name: tree_cpu_seconds(pid) for name, pid in pids.items()}
        # what else the 2 cores ran for the run: the load generator, the balancer, the journal
        others = {
            "redis": cluster.redis.pid,
            "nginx": cluster.nginx.process.pid if cluster.nginx.process else None,
        }
        others_before = {name: tree_cpu_seconds(pid) for name, pid in others.items() if pid is not None}
        wrk_before = rusage.getrusage(rusage.RUSAGE_CHILDREN)
        load = os.getloadavg()[0]
        raw = wrk(cluster.port, req_file, args.connections, args.seconds, args.threads)
        cpu = {name: tree_cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
        wrk_after = rusage.getrusage(rusage.RUSAGE_CHILDREN)
        beside = {name: tree_cpu_seconds(pid) - others_before[name] for name, pid in others.items() if pid}
        beside["wrk"] = (wrk_after.ru_utime + wrk_after.ru_stime) - (
            wrk_before.ru_utime + wrk_before.ru_stime
        )
        after = journal_counts(*ports)
        figures = _figures(raw)
        owned = {node.name: len(node.writes()) for node in cluster.nodes}
    finally:
        cluster.stop()
    return {
        **figures,
        "regions_written": owned,
        "nodes_cpu_us_per_request": round(sum(cpu.values()) * 1e6 / max(int(raw["requests"]), 1)),
        "node_cpu_share_of_a_core": {
            name: round(c / (raw["duration_us"] / 1e6), 2) for name, c in cpu.items()
        },
        "beside_cpu_share_of_a_core": {
            name: round(c / (raw["duration_us"] / 1e6), 2) for name, c in beside.items()
        },
        "durable_writes_per_s": round((after[0] - before[0]) / args.seconds),
        "loadavg_1m_before": round(load, 2),
        "loadavg_1m_after": round(os.getloadavg()[0], 2),
    }


def run_nodes(args: argparse.Namespace) -> dict[str, Any]:
    """``--nodes 1 2``: each count in turn, same load, same run; their ratio to the first."""
    figure = "requests_per_s" if args.spread == "hot" else "bookings_per_s"
    with tempfile.TemporaryDirectory(prefix="tandtid-bench-http-nodes-") as data:
        req_file = str(Path(data) / "requests.tsv")
        by_count = {str(n): on_nodes(args, n, Path(data) / f"nodes-{n}", req_file) for n in args.nodes}
        framework = framework_limit(req_file, args)
    first = by_count[str(args.nodes[0])]
    return {
        "bench": "http",
        "through": "nginx",
        "journal": "redis",
        "spread": args.spread,
        "scale": args.scale,
        "connections": args.connections,
        "seconds": args.seconds,
        "cores": os.cpu_count(),
        "nodes": by_count,
        "ratio": {n: round(f[figure] / max(first[figure], 1), 2) for n, f in by_count.items()},
        "ratio_last_to_first": round(by_count[str(args.nodes[-1])][figure] / max(first[figure], 1), 2),
        "p99_ms": {n: f["p99_ms"] for n, f in by_count.items()},
        figure: {n: f[figure] for n, f in by_count.items()},
        "framework_requests_per_s": framework["requests_per_s"],
        "framework_p99_ms": framework["p99_ms"],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        raise SystemExit("bench http needs wrk (apt-get install wrk)")
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="tandtid-bench-http-") as data:
        fsyncs = raw_fsync_per_s(data)
        req_file = str(Path(data) / "requests.tsv")

        port = free_port()
        store = str(Path(data) / "store")
        server = start_server(store, port, args.scale, args.consumers)
        try:
            lines = asyncio.run(
                prepare(
                    f"http://127.0.0.1:{port}",
                    args.spread,
                    args.region,
                    args.patients,
                    args.bookings,
                    args.days,
                )
            )
            Path(req_file).write_text("\n".join(lines) + "\n")
            before = journal_counts(port)
            emails_before = emails_written(store)
            cpu_before = cpu_now(server.pid)
            raw = wrk(port, req_file, args.connections, args.seconds, args.threads)
            cpu_after = cpu_now(server.pid)
            after = journal_counts(port)
            tandtid = _figures(raw)
            cpu = server_cpu(cpu_before, cpu_after, caught_up(server.pid), raw["duration_us"] / 1e6, raw)
            cpu["emails_written"] = emails_written(store) - emails_before
        finally:
            server.terminate()
            server.wait(timeout=60)

        framework = framework_limit(req_file, args)
    figure = "requests_per_s" if args.spread == "hot" else "bookings_per_s"
    return {
        "bench": "http",
        "spread": args.spread,
        **({"region": args.region} if args.spread == "region" else {}),
        "scale": args.scale,
        "consumers": args.consumers,
        "connections": args.connections,
        "seconds": args.seconds,
        **tandtid,
        **cpu,
        "durable_writes_per_s": round((after[0] - before[0]) / args.seconds),
        "region_appends_per_durable_write": round((after[1] - before[1]) / max(after[0] - before[0], 1), 2),
        "raw_fsync_per_s": round(fsyncs),
        "framework_requests_per_s": framework["requests_per_s"],
        "framework_p99_ms": framework["p99_ms"],
        "ratio_to_framework": round(tandtid[figure] / max(framework["requests_per_s"], 1), 3),
        "bookings_per_fsync": round(tandtid["bookings_per_s"] / max(fsyncs, 1), 2),
        "loadavg_1m_before": round(load, 2),
        "loadavg_1m_after": round(os.getloadavg()[0], 2),
    }


def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench http")
    parser.add_argument("--spread", choices=SPREADS, default="uniform")
    parser.add_argument("--region", default="AB", help="the region of --spread region")
    parser.add_argument("--scale", default="sweden")
    parser.add_argument("--connections", type=int, default=128)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--framework-seconds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--bookings", type=int, default=200_000, help="distinct times prepared")
    parser.add_argument("--patients", type=int, default=100)
    parser.add_argument("--days", type=int, default=14, help="how far ahead free times are drawn from")
    parser.add_argument(
        "--consumers",
        choices=("process", "in-process"),
        default="process",
        help="where the server runs its e-mails and webhooks (tandtid serve --consumers)",
    )
    parser.add_argument(
        "--nodes",
        type=int,
        nargs="+",
        default=None,
        help="cluster node counts to run in turn, e.g. --nodes 1 2: Redis journal, nginx in front, "
        "a fresh seeded Redis each (default: one plain server on the file journal)",
    )
    args = parser.parse_args(argv)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if args.nodes and shutil.which("wrk") is None:
        raise SystemExit("bench http needs wrk (apt-get install wrk)")
    result = run_nodes(args) if args.nodes else run(args)
    print(json.dumps(result), flush=True)
    return result
