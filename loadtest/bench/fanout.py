"""``tandtid bench fanout``: the live hub under load, against ``websockets.broadcast``.

Starts a real server as a subprocess (all 21 region actors over a FileJournal in a temp dir,
bench clinics per region in proportion to population, the real app with the hub at /ws,
uvicorn), opens ``--clients`` WebSocket clients from ``--client-procs`` processes, and:

1. spread: every client watches one topic -- half region summaries, half clinics, regions
   weighted by population -- while the server books ``--rate`` bookings/s (also weighted by
   population) for ``--seconds``;
2. hot: every client watches ONE clinic and every booking lands there;
3. reference: a plain ``websockets`` server ``broadcast()``-ing same-size frames to the same
   number of clients as fast as they take them.

Latency is commit -> arrival (``committed_at`` in the frame vs the client's clock: same
machine). RSS per connection is the server's RSS growth from 0 to N subscribed clients / N.
Clients and server share the machine's cores: on 2 cores the client processes compete with
the server, so frames/s is a floor for the server, not a ceiling.

``--nodes N`` (``python -m loadtest.bench fanout --nodes 2``): the same spread on a cluster
instead (``loadtest.cluster``: redis-server, N ``tandtid serve --redis`` nodes seeded with
``--scale``). Each topic's subscribers alternate between the node that owns its region and
the other nodes, which serve it from their read replicas; bookings are POSTed at ``--rate`` to
the owner of their region. Commit -> arrival is printed for each side (``on_owner``,
``on_replica``): ``committed_at`` is the journal's time of the write on every node, so the
replica side includes the replication delay. Then the same reference as above.
Prints one JSON line and returns the same dict.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from typing import Any, Protocol, runtime_checkable

from loadtest.redis_server import free_port

# approximate population (thousands) per län: topics and bookings follow it
POPULATION: dict[str, int] = {
    "AB": 2450,
    "C": 400,
    "D": 300,
    "E": 470,
    "F": 370,
    "G": 205,
    "H": 247,
    "I": 61,
    "K": 160,
    "M": 1420,
    "N": 340,
    "O": 1750,
    "S": 283,
    "T": 307,
    "U": 280,
    "W": 288,
    "X": 288,
    "Y": 243,
    "Z": 132,
    "AC": 275,
    "BD": 249,
}
HOT_CLINIC = "AB-c1"
DRIVE_CONCURRENCY = 64  # --nodes: booking requests in flight at most
TAIL_S = 0.5  # --nodes: frames counted this long after the last booking's answer
NODES_DAYS = 14  # --nodes: free times drawn from the next two weeks (the seed opens them), subscribed to
LATENCY_BINS = 30_000  # 1 ms bins


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# -- the server subprocess ------------------------------------------------------------------------


def _open_starts(clinic: Any, day: int) -> list[int]:
    """Cells where a 30-minute check-up fits inside the clinic's hours that day."""
    from datetime import date

    step = clinic.cell_minutes
    starts: list[int] = []
    for open_m, close_m in clinic.hours.get(date.fromordinal(day).isoweekday(), ()):
        starts.extend(m // step for m in range(open_m, close_m - 30 + 1, 30))
    return starts


def _clinics_per_region(total: int) -> dict[str, int]:
    people = sum(POPULATION.values())
    return {r: max(2, round(total * p / people)) for r, p in POPULATION.items()}


async def _serve(port: int, total_clinics: int, days: int, ws: str) -> None:
    from engine.commands import Book, OpenDays, RegisterClinic
    from loadtest.bench.catalog import bench_catalog, bench_now
    from server.runtime import tune_gc
    from server.serve import build_server
    from server.settings import Settings

    # "hub": as served; "stock": uvicorn's default protocol and options (every frame via ASGI send)
    ws_options: dict[str, Any] = {} if ws == "hub" else {"ws": "auto", "ws_per_message_deflate": True}
    _raise_nofile()
    with tempfile.TemporaryDirectory(prefix="tandtid-fanout-") as tmp:
        settings = Settings.from_env(  # every client comes from 127.0.0.1: no per-IP limits
            port=port,
            data_dir=tmp,
            log_level="warning",
            rate_per_s=1e9,
            rate_burst=1_000_000_000,
            ws_max_connections=1_000_000,
            ws_max_connections_per_ip=1_000_000,
        )
        first_day = bench_catalog("AB", 1, 1, days)[1]
        now = bench_now(first_day)
        built = await build_server(settings, clock=lambda: now, backlog=4096, **ws_options)
        regions, app, server = built.regions, built.app, built.server
        slots: dict[str, list[tuple[str, int, int]]] = {}
        for region, n in _clinics_per_region(total_clinics).items():
            clinics, first, _ = bench_catalog(region, n, 4, days)
            if region == "AB":  # the hot clinic: many chairs, so it never runs out of times
                hot, _, _ = bench_catalog("AB", 1, 24, days)
                clinics[0] = hot[0]
            commands: list[Any] = []
            for clinic, res in clinics:
                commands.append(RegisterClinic(clinic, res))
                commands.extend(OpenDays(r.id, first, days) for r in res)
            for command in commands:
                await regions.submit(command)
            slots[region] = [
                (r.id, d, c)
                for clinic, res in clinics
                for r in res
                for d in range(first, first + days)
                for c in _open_starts(clinic, d)
            ]
        tune_gc()
        serving = asyncio.create_task(server.serve())
        while not server.started:  # noqa: ASYNC110 - uvicorn exposes a flag, not an event
            await asyncio.sleep(0.05)
        rng = random.Random(1)
        for region_slots in slots.values():
            rng.shuffle(region_slots)
        hot_slots = [s for s in slots["AB"] if s[0].startswith(HOT_CLINIC + "-")]
        print("READY", flush=True)
        seq = 0
        while True:
            line = await asyncio.to_thread(sys.stdin.readline)
            if not line or line.startswith("quit"):
                break
            _, mode, rate_s, seconds_s = line.split()
            rate, seconds = float(rate_s), float(seconds_s)
            pools = {"AB": hot_slots} if mode == "hot" else slots
            weights = [POPULATION[r] for r in pools]
            names = list(pools)
            ok = refused = 0
            pending: set[asyncio.Task[Any]] = set()

            def done(task: asyncio.Task[Any], pending: set[asyncio.Task[Any]] = pending) -> None:
                nonlocal ok, refused
                pending.discard(task)
                if task.exception() is None:
                    ok += 1
                else:
                    refused += 1

            started = time.perf_counter()
            sent = 0
            while (elapsed := time.perf_counter() - started) < seconds:
                due = int(elapsed * rate) - sent
                for _ in range(max(0, due)):
                    region = rng.choices(names, weights)[0]
                    pool = pools[region]
                    if not pool:
                        continue
                    resource_id, day, cell = pool.pop()
                    seq += 1
                    task = asyncio.create_task(
                        regions.submit(
                            Book(f"{region}-bk{seq}", f"bench-p{seq}", resource_id, "checkup", day, cell)
                        )
                    )
                    pending.add(task)
                    task.add_done_callback(done)
                    sent += 1
                await asyncio.sleep(0.005)
            if pending:
                await asyncio.wait(pending)
            hub = app.state.hub
            print(
                "DONE",
                json.dumps(
                    {
                        "booked": ok,
                        "refused": refused,
                        "seconds": time.perf_counter() - started,
                        "hub": hub.stats() if hub is not None else {},
                    }
                ),
                flush=True,
            )
        server.should_exit = True
        await serving
        await built.close()


# -- the reference: websockets' own broadcast ---------------------------------------------------


def _broadcast_server(port: int, pipe: Connection) -> None:
    async def run() -> None:
        from websockets.asyncio.server import ServerConnection, broadcast, serve

        _raise_nofile()
        clients: set[ServerConnection] = set()

        async def handler(ws: ServerConnection) -> None:
            clients.add(ws)
            try:
                await ws.wait_closed()
            finally:
                clients.discard(ws)

        async with serve(handler, "127.0.0.1", port, backlog=4096, ping_interval=None):
            pipe.send("ready")
            while True:
                command = await asyncio.to_thread(pipe.recv)
                if command == "quit":
                    return
                seconds, size = command
                sent = 0
                started = time.perf_counter()
                pad = "x" * max(0, size - 110)
                while time.perf_counter() - started < seconds:
                    frame = (
                        f'{{"type":"diff","topic":"clinic:AB-c1","seq":{sent},'
                        f'"committed_at":{int(time.time() * 1000)},'
                        f'"data":{{"cells":[["AB-c1-r1","2027-01-11",36,2,3]]}},"pad":"{pad}"}}'
                    )
                    broadcast(clients, frame)
                    sent += 1
                    # like the hub, never let a slow reader grow memory: wait for the buffers
                    while sent % 8 == 0 and any(  # noqa: ASYNC110 - polling transport buffers
                        c.transport.get_write_buffer_size() > 64 * 1024 for c in clients
                    ):
                        await asyncio.sleep(0.001)
                    await asyncio.sleep(0)
                pipe.send(sent)

    asyncio.run(run())


# -- client processes ---------------------------------------------------------------------------


# One client connection: the server's WebSocket URL, the topic it watches (None: none, for the
# reference server) and the group its figures are counted in (e.g. 0: on the region's owner).
Target = tuple[str, str | None, int]


def _client_proc(targets: list[Target], first: str, pipe: Connection) -> None:
    with contextlib.suppress(ImportError):  # the load generator must not be the bottleneck
        import uvloop

        uvloop.install()
    asyncio.run(_clients(targets, first, pipe))


@runtime_checkable
class _Wire(Protocol):
    """What a reader needs of its transport: asyncio's stream transports and uvloop's (which
    subclass no asyncio transport class) both have these."""

    def write(self, data: bytes | bytearray | memoryview, /) -> None: ...

    def close(self) -> None: ...


class _Reader(asyncio.Protocol):
    """A minimal WebSocket client: hand-made handshake (no compression), a frame reader that
    only counts frames and reads ``committed_at``; replies to pings. Much cheaper per frame
    than a full client library, so the client processes keep up and the bench measures the server."""

    def __init__(self, request: bytes, sink: _Sink, subscribing: bool, group: int = 0) -> None:
        self.request = request
        self.subscribing = subscribing
        self.sink = sink
        self.group = group
        self.buf = bytearray()
        self.handshaken = False
        self.first: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: _Wire | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, _Wire), type(transport)
        self.transport = transport
        transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.first.done():
            self.first.set_exception(ConnectionError("closed before the first frame"))
        self.sink.stats["closed"] += 1

    def send_text(self, text: str) -> None:
        assert self.transport is not None
        data = text.encode()
        # client frames are masked; an all-zero mask leaves the payload as it is
        header = (
            bytes([0x81, 0x80 | len(data)])
            if len(data) < 126
            else bytes([0x81, 0xFE]) + len(data).to_bytes(2)
        )
        self.transport.write(header + b"\0\0\0\0" + data)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.handshaken:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                assert self.transport is not None
                self.transport.close()
                return
            self.handshaken = True
            del buf[: end + 4]
            if not self.first.done() and not self.subscribing:
                self.first.set_result(None)
        pos, size = 0, len(buf)
        sink = self.sink
        while size - pos >= 2:
            opcode, n = buf[pos] & 0x0F, buf[pos + 1] & 0x7F
            head = 2
            if n == 126:
                if size - pos < 4:
                    break
                n, head = int.from_bytes(buf[pos + 2 : pos + 4]), 4
            elif n == 127:
                if size - pos < 10:
                    break
                n, head = int.from_bytes(buf[pos + 2 : pos + 10]), 10
            if size - pos < head + n:
                break
            start = pos + head
            pos = start + n
            if opcode == 0x9:  # ping -> pong (masked, zero mask)
                assert self.transport is not None
                self.transport.write(bytes([0x8A, 0x80 | n]) + b"\0\0\0\0" + bytes(buf[start:pos]))
                continue
            if not self.first.done():
                self.first.set_result(None)
                continue
            if sink.counting and opcode in (0x1, 0x2):
                sink.frame(buf, start, pos, self.group)
        del buf[:pos]


class _Sink:
    """What one client process counts: frames, bytes, a commit -> arrival latency histogram and
    the frames per group of connections."""

    def __init__(self, groups: int = 1) -> None:
        self.groups = groups
        self.hists = [[0] * LATENCY_BINS for _ in range(groups)]
        self.stats = {"frames": 0, "diffs": 0, "bytes": 0, "closed": 0, "max_ms": 0}
        self.group_frames = [0] * groups
        self.counting = False

    def reset(self) -> None:
        for key in self.stats:
            self.stats[key] = 0
        self.hists = [[0] * LATENCY_BINS for _ in range(self.groups)]
        self.group_frames = [0] * self.groups

    def frame(self, buf: bytearray, start: int, end: int, group: int) -> None:
        stats = self.stats
        stats["frames"] += 1
        self.group_frames[group] += 1
        stats["bytes"] += end - start
        i = buf.find(b'"committed_at":', start, end)
        if i < 0:
            return
        j = buf.find(b",", i, end)
        latency = max(0, int(time.time() * 1000 - int(buf[i + 15 : j])))
        self.hists[group][min(latency, LATENCY_BINS - 1)] += 1
        stats["diffs"] += 1
        if latency > stats["max_ms"]:
            stats["max_ms"] = latency


async def _clients(targets: list[Target], first: str, pipe: Connection) -> None:
    import base64
    from urllib.parse import urlsplit

    _raise_nofile()
    sink = _Sink(max((group for _, _, group in targets), default=0) + 1)
    loop = asyncio.get_running_loop()

    def upgrade(url: str) -> tuple[str, int, bytes]:
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        request = (
            f"GET {parts.path or '/'} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        return host, port, request

    upgrades = {url: upgrade(url) for url in {url for url, _, _ in targets}}

    async def open_one(target: Target) -> _Reader:
        url, topic, group = target
        host, port, request = upgrades[url]
        for attempt in range(5):
            try:
                _, reader = await loop.create_connection(
                    lambda: _Reader(request, sink, topic is not None, group), host, port
                )
                break
            except OSError:
                if attempt == 4:
                    raise
                await asyncio.sleep(0.2 * (attempt + 1))
        if topic is not None:
            while not reader.handshaken:  # noqa: ASYNC110 - the handshake is a flag on a protocol
                await asyncio.sleep(0.005)
            reader.send_text(json.dumps({"op": "subscribe", "topic": topic, "from": first, "days": 14}))
            await asyncio.wait_for(reader.first, 60)  # the snapshot
        return reader

    readers: list[_Reader] = []
    for i in range(0, len(targets), 200):
        readers += await asyncio.gather(*(open_one(t) for t in targets[i : i + 200]))
    pipe.send(("ready", len(readers)))
    while True:
        command = await asyncio.to_thread(pipe.recv)
        if command == "start":
            sink.reset()
            sink.counting = True
        elif command == "stop":
            sink.counting = False
            pipe.send(("result", sink.hists, dict(sink.stats), sink.group_frames))
        elif command == "quit":
            break
    for reader in readers:
        if reader.transport is not None:
            reader.transport.close()


class _ClientPool:
    def __init__(self, targets: list[Target], procs: int, first: str) -> None:
        ctx = mp.get_context("spawn")
        self.groups = max((group for _, _, group in targets), default=0) + 1
        self.pipes: list[Connection] = []
        self.procs: list[Any] = []
        for k in range(procs):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_client_proc, args=(targets[k::procs], first, child), daemon=True)
            proc.start()
            self.pipes.append(parent)
            self.procs.append(proc)
        self.connected = sum(pipe.recv()[1] for pipe in self.pipes)

    def start(self) -> None:
        for pipe in self.pipes:
            pipe.send("start")

    def stop(self) -> tuple[list[int], dict[str, int]]:
        """The latency histogram of every connection and the counts, summed over the processes."""
        hists, total, _ = self.stop_groups()
        return [sum(counts) for counts in zip(*hists, strict=True)], total

    def stop_groups(self) -> tuple[list[list[int]], dict[str, int], list[int]]:
        """Per group: the latency histogram and the frames; the counts of every connection."""
        hists = [[0] * LATENCY_BINS for _ in range(self.groups)]
        frames = [0] * self.groups
        total: dict[str, int] = {}
        for pipe in self.pipes:
            pipe.send("stop")
        for pipe in self.pipes:
            _, proc_hists, stats, proc_frames = pipe.recv()
            for g, h in enumerate(proc_hists):
                hists[g] = [a + b for a, b in zip(hists[g], h, strict=True)]
                frames[g] += proc_frames[g]
            for key, value in stats.items():
                total[key] = max(total.get(key, 0), value) if key == "max_ms" else total.get(key, 0) + value
        return hists, total, frames

    def close(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(Exception):
                pipe.send("quit")
        for proc in self.procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()


def _percentile(hist: list[int], q: float) -> float:
    total = sum(hist)
    if total == 0:
        return 0.0
    rank, seen = q * total, 0
    for ms, count in enumerate(hist):
        seen += count
        if seen >= rank:
            return float(ms)
    return float(len(hist) - 1)


def _spread_topics(n: int, clinics: dict[str, int], rng: random.Random) -> list[str | None]:
    regions, weights = list(POPULATION), list(POPULATION.values())
    topics: list[str | None] = []
    for i in range(n):
        region = rng.choices(regions, weights)[0]
        if i % 2 == 0:
            topics.append(f"region:{region}")
        else:
            topics.append(f"clinic:{region}-c{rng.randint(1, clinics[region])}")
    return topics


def _rss(pid: int) -> int:
    import psutil

    return int(psutil.Process(pid).memory_info().rss)


def _phase(
    server: subprocess.Popen[str], pool: _ClientPool, mode: str, rate: float, seconds: float
) -> dict[str, Any]:
    assert server.stdin is not None and server.stdout is not None
    pool.start()
    server.stdin.write(f"book {mode} {rate} {seconds}\n")
    server.stdin.flush()
    line = server.stdout.readline()
    while not line.startswith("DONE"):
        if not line:
            raise RuntimeError("the bench server died")
        line = server.stdout.readline()
    done = json.loads(line.split(" ", 1)[1])
    time.sleep(0.5)  # let the last frames arrive
    hist, stats = pool.stop()
    return {
        "bookings": done["booked"],
        "refused": done["refused"],
        "bookings_per_s": round(done["booked"] / done["seconds"], 1),
        "p50_ms": _percentile(hist, 0.50),
        "p99_ms": _percentile(hist, 0.99),
        "max_ms": float(stats["max_ms"]),
        "frames": stats["frames"],
        "frames_per_s": round(stats["frames"] / seconds, 1),
        "frame_bytes": round(stats["bytes"] / max(1, stats["frames"])),
        "closed_by_server": stats["closed"],
        "hub": done["hub"],
    }


def broadcast_limit(
    clients: int, seconds: float, frame_bytes: int, args: argparse.Namespace
) -> dict[str, Any]:
    """A plain ``websockets`` server ``broadcast()``-ing ``frame_bytes`` frames to ``clients``
    clients (opened the same way as the bench's) for ``seconds``: frames/s and latency."""
    from loadtest.bench.catalog import FIRST_DATE

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    bport = free_port()
    ref = ctx.Process(target=_broadcast_server, args=(bport, child), daemon=True)
    ref.start()
    parent.recv()
    bpool = _ClientPool(
        [(f"ws://127.0.0.1:{bport}/", None, 0)] * clients, args.client_procs, FIRST_DATE.isoformat()
    )
    bpool.start()
    parent.send((seconds, frame_bytes))
    broadcasts = parent.recv()
    time.sleep(0.5)
    bhist, bstats = bpool.stop()
    bpool.close()
    parent.send("quit")
    ref.join(timeout=30)
    return {
        "frames_per_s": round(bstats["frames"] / seconds, 1),
        "broadcasts": broadcasts,
        "p50_ms": _percentile(bhist, 0.5),
        "p99_ms": _percentile(bhist, 0.99),
    }


# -- on several nodes: subscribers on the owner of their region and on the other nodes ----------


class _HttpConnection:
    """One keep-alive HTTP/1.1 connection for the booking driver: much cheaper per request than
    a client library, so the driver takes little of the cores the nodes and subscribers share."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.used = time.monotonic()

    async def post(self, head: bytes, body: bytes) -> int:
        self.writer.write(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        header = await self.reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in header.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await self.reader.readexactly(length)
        self.used = time.monotonic()
        return int(header[9:12])


async def _drive(bookings: list[tuple[str, str, str]], rate: float, seconds: float) -> dict[str, Any]:
    """POST ``bookings`` ((node URL, Bearer token, JSON body)) at ``rate`` per second for at
    most ``seconds``, at most ``DRIVE_CONCURRENCY`` in flight per node; the answers' statuses
    and how long until the last answer."""
    from urllib.parse import urlsplit

    idle: dict[str, list[_HttpConnection]] = {url: [] for url in {b[0] for b in bookings}}
    slots = {url: asyncio.Semaphore(DRIVE_CONCURRENCY) for url in idle}
    statuses: dict[str, int] = {}

    async def book(url: str, token: str, body: str) -> None:
        parts = urlsplit(url)
        head = (
            f"POST /api/bookings HTTP/1.1\r\nHost: {parts.netloc}\r\nAuthorization: Bearer {token}\r\n"
            "Content-Type: application/json\r\n"
        ).encode()
        async with slots[url]:
            pool = idle[url]
            # uvicorn ends a connection idle for 5 s: never send on one idle for 2 s
            while pool and time.monotonic() - pool[-1].used > 2.0:
                pool.pop().writer.close()
            try:
                conn = (
                    pool.pop()
                    if pool
                    else _HttpConnection(*await asyncio.open_connection(parts.hostname, parts.port))
                )
                status = str(await conn.post(head, body.encode()))
                pool.append(conn)
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                status = type(exc).__name__
        statuses[status] = statuses.get(status, 0) + 1

    tasks: list[asyncio.Task[None]] = []
    started = time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds and len(tasks) < len(bookings):
        due = min(len(bookings), int(elapsed * rate))
        tasks += [asyncio.create_task(book(*b)) for b in bookings[len(tasks) : due]]
        await asyncio.sleep(0.005)
    sent_s = time.perf_counter() - started
    await asyncio.gather(*tasks)
    for pool in idle.values():
        for conn in pool:
            conn.writer.close()
    return {
        "sent": len(tasks),
        "statuses": dict(sorted(statuses.items())),
        "sent_s": sent_s,
        "seconds": time.perf_counter() - started,
    }


def _side(hist: list[int], frames: int, subscribers: int, seconds: float) -> dict[str, Any]:
    return {
        "subscribers": subscribers,
        "p50_ms": _percentile(hist, 0.50),
        "p99_ms": _percentile(hist, 0.99),
        "frames_per_s": round(frames / seconds, 1),
    }


def run_nodes(args: argparse.Namespace) -> dict[str, Any]:
    """``--nodes N``: redis-server and N ``tandtid serve --redis`` nodes (``loadtest.cluster``,
    seeded with ``--scale``); each topic's subscribers alternate between the node that owns its
    region and the other nodes (their read replicas); bookings are POSTed to the owner of their
    region at ``--rate``; commit -> arrival for each side, frames/s, then the reference."""
    from datetime import datetime
    from pathlib import Path
    from zoneinfo import ZoneInfo

    import httpx

    from loadtest.bench.http import SERVER_ENV, cpu_seconds, prepare
    from loadtest.cluster import LocalCluster

    env = {
        **SERVER_ENV,
        "TANDTID_WS_MAX_CONNECTIONS": "1000000",
        "TANDTID_WS_MAX_CONNECTIONS_PER_IP": "1000000",
    }
    today = datetime.now(ZoneInfo("Europe/Stockholm")).date().isoformat()
    result: dict[str, Any] = {
        "bench": "fanout",
        "nodes": args.nodes,
        "journal": "redis",
        "scale": args.scale,
        "clients": args.clients,
        "rate": args.rate,
        "seconds": args.seconds,
    }
    with tempfile.TemporaryDirectory(prefix="tandtid-bench-fanout-nodes-") as data:
        cluster = LocalCluster(Path(data), args.nodes, env=env, log_level="warning")
        pool: _ClientPool | None = None
        try:
            cluster.start(scale=args.scale)
            owners = cluster.owners()
            urls = {node.name: node.url for node in cluster.nodes}
            wanted = int(args.rate * args.seconds * 1.2) + 100
            lines = asyncio.run(prepare(cluster.url, "uniform", "AB", args.patients, wanted, NODES_DAYS))
            bookings = []
            for line in lines:
                _, _, token, body = line.split("\t")
                region = json.loads(body)["clinic"].rsplit("-c", 1)[0]
                bookings.append((urls[owners[region]], token, body))
            clinics = {r["code"]: int(r["clinics"]) for r in httpx.get(f"{cluster.url}/api/regions").json()}
            topics = _spread_topics(args.clients, clinics, random.Random(2))
            targets: list[Target] = []
            for k, topic in enumerate(topics):
                assert topic is not None
                owner = owners[topic.split(":", 1)[1].rsplit("-c", 1)[0]]
                others = [name for name in urls if name != owner]
                # every other subscriber of a kind (region and clinic topics alternate) on the owner
                name = owner if (k // 2) % 2 == 0 or not others else others[k % len(others)]
                targets.append(
                    (urls[name].replace("http://", "ws://") + "/ws", topic, 0 if name == owner else 1)
                )
            pool = _ClientPool(targets, args.client_procs, today)
            time.sleep(1.0)
            pids = {node.name: node.process.pid for node in cluster.nodes if node.process is not None}
            load = os.getloadavg()[0]
            cpu = {name: cpu_seconds(pid)[0] for name, pid in pids.items()}
            pool.start()
            done = asyncio.run(_drive(bookings, args.rate, args.seconds))
            time.sleep(TAIL_S)  # let the last frames arrive
            hists, stats, frames = pool.stop_groups()
            cpu = {name: cpu_seconds(pid)[0] - cpu[name] for name, pid in pids.items()}
            result["loadavg_1m_before"] = round(load, 2)
            result["loadavg_1m_after"] = round(os.getloadavg()[0], 2)
        finally:
            if pool is not None:
                pool.close()
            cluster.stop()
    on_owner = sum(1 for t in targets if t[2] == 0)
    everyone = [sum(counts) for counts in zip(*hists, strict=True)]
    window = done["seconds"] + TAIL_S  # from the first booking sent to the count's end
    result.update(
        {
            "bookings_per_s": round(done["statuses"].get("201", 0) / done["seconds"], 1),
            "statuses": done["statuses"],
            "last_answer_s": round(done["seconds"], 2),
            "on_owner": _side(hists[0], frames[0], on_owner, window),
            "on_replica": _side(
                hists[1] if len(hists) > 1 else [],
                frames[1] if len(frames) > 1 else 0,
                len(targets) - on_owner,
                window,
            ),
            "p50_ms": _percentile(everyone, 0.50),
            "p99_ms": _percentile(everyone, 0.99),
            "max_ms": float(stats["max_ms"]),
            "frames_per_s": round(stats["frames"] / window, 1),
            "frame_bytes": round(stats["bytes"] / max(1, stats["frames"])),
            "closed_by_server": stats["closed"],
            "node_cpu_share_of_a_core": {name: round(c / window, 2) for name, c in cpu.items()},
        }
    )
    reference = broadcast_limit(args.clients, args.seconds, int(result["frame_bytes"]) or 120, args)
    result["broadcast_frames_per_s"] = reference.pop("frames_per_s")
    result["broadcast"] = reference
    result["cores"] = os.cpu_count()
    result["client_procs"] = args.client_procs
    print(json.dumps(result), flush=True)
    return result


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tandtid bench fanout", description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=500.0, help="bookings per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--client-procs", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    parser.add_argument("--clinics", type=int, default=400, help="bench clinics across Sweden")
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument(
        "--ws",
        choices=("hub", "stock"),
        default="hub",
        help="server WebSocket protocol: the hub's (as served) or uvicorn's stock one",
    )
    parser.add_argument(
        "--nodes",
        type=int,
        default=0,
        help="N cluster nodes on one redis-server (seeded with --scale), subscribers split between each "
        "region's owner and the other nodes, bookings over HTTP to the owner (default: one in-process server)",
    )
    parser.add_argument("--scale", default="small", help="--nodes: the seed's scale")
    parser.add_argument("--patients", type=int, default=100, help="--nodes: patients booking")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str]) -> dict[str, Any]:
    args = _parse(argv)
    if args.serve:
        asyncio.run(_serve(args.port, args.clinics, args.days, args.ws))
        return {}
    _raise_nofile()
    if args.nodes:
        return run_nodes(args)
    from loadtest.bench.catalog import FIRST_DATE

    first = FIRST_DATE.isoformat()
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "loadtest.bench.fanout",
            "--serve",
            "--port",
            str(port),
            "--clinics",
            str(args.clinics),
            "--days",
            str(args.days),
            "--ws",
            args.ws,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    result: dict[str, Any] = {"bench": "fanout", "clients": args.clients, "ws": args.ws}
    try:
        assert server.stdout is not None
        while not server.stdout.readline().startswith("READY"):
            if server.poll() is not None:
                raise RuntimeError("the bench server did not start")
        url = f"ws://127.0.0.1:{port}/ws"
        time.sleep(1.0)
        rss_before = _rss(server.pid)
        clinics = _clinics_per_region(args.clinics)
        topics = _spread_topics(args.clients, clinics, random.Random(2))
        pool = _ClientPool([(url, t, 0) for t in topics], args.client_procs, first)
        time.sleep(1.0)
        rss_after = _rss(server.pid)
        spread = _phase(server, pool, "spread", args.rate, args.seconds)
        pool.close()
        hot_pool = _ClientPool([(url, f"clinic:{HOT_CLINIC}", 0)] * args.clients, args.client_procs, first)
        hot = _phase(server, hot_pool, "hot", args.rate, args.seconds)
        hot_pool.close()
        result.update(
            {
                "bookings_per_s": spread["bookings_per_s"],
                "p50_ms": spread["p50_ms"],
                "p99_ms": spread["p99_ms"],
                "max_ms": spread["max_ms"],
                "frames_per_s": spread["frames_per_s"],
                "rss_kb_per_conn": round((rss_after - rss_before) / 1024 / max(1, pool.connected), 1),
                "hot": {k: v for k, v in hot.items() if k != "hub"},
                "spread": {k: v for k, v in spread.items() if k != "hub"},
                "hub_after_hot": hot["hub"],
            }
        )
    finally:
        if server.poll() is None and server.stdin is not None:
            with contextlib.suppress(Exception):
                server.stdin.write("quit\n")
                server.stdin.flush()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()

    # the reference: websockets' broadcast() to as many clients, frames the size of the hot diffs
    reference = broadcast_limit(args.clients, args.seconds, int(result["hot"]["frame_bytes"]) or 120, args)
    result["broadcast_frames_per_s"] = reference.pop("frames_per_s")
    result["broadcast"] = reference
    result["ratio"] = round(result["hot"]["frames_per_s"] / max(1.0, result["broadcast_frames_per_s"]), 3)
    result["cores"] = os.cpu_count()
    result["client_procs"] = args.client_procs
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
