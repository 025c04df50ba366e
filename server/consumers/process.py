"""The journal consumers (notifier, webhooks) in a process of their own, beside ``tandtid serve``.

The server's one event loop and GIL belong to its bookings: the region actors, HTTP, WebSockets.
Composing a confirmation e-mail, recording it, looking up its patient and delivering a webhook
cost about a third of the server's CPU a booking under load, and inside the server's process
every microsecond of it is taken from the bookings (``bench http --spread uniform`` on 2 cores:
~2,700 bookings/s with the consumers inside, ~3,900/s with them in their own process).

``tandtid serve`` (``--consumers process``, the default) runs ``python -m server.consumers``
and keeps it running (``ConsumerProcess``):

- the child follows the journal read-only as any reader does: its own ``Feed``, a
  ``BookingsReplica`` per region made from the snapshots the actors write and the entries after
  them. Appends stay the server's alone;
- it starts with the regions to follow (``--regions``); later the server tells it on its stdin, one
  JSON object a line: ``{"follow": "AB"}``, ``{"unfollow": "AB"}`` (a cluster node: the regions
  it owns, as leases move), ``{"metrics": true}``, and every few seconds ``{"ping": true}``;
- the child tells the server on its stdout: ``{"started": true}``; ``{"caught_up": seconds}``
  once it has reached the journal's end as of its start (the server logs it); every change of its health,
  ``{"down": [part, region, why]}``, ``{"up": [part, region]}``, ``{"note": [part, region,
  why]}``, which the server's ``Health`` shows on ``/ready``; its metrics when asked
  (``{"metrics": "<exposition>"}``), which the server's ``/metrics`` serves with its own
  (``merged_exposition``); ``{"pong": true}`` to each ping. Its log goes where the server's goes (stderr);
- the child stops when its stdin closes (the server is gone, even by SIGKILL) or on SIGTERM. It
  runs in a session of its own, so a terminal's Ctrl-C reaches the server only, which stops it.
  A child that exits on its own, or answers no ping for ``hung_s`` (30 s; then it is killed: a
  stuck loop is a dead consumer that still has a pid), is reported down (``consumers`` / ``*``)
  and started again after a backoff; it resumes from its durable cursors, so nothing is lost and
  nothing repeated.

``--consumers in-process`` keeps them on the server's own loop and threads.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from persistence.journal import Journal
from server.health import Health

log = logging.getLogger("tandtid.consumers.process")

PART = "consumers"
STOP_GRACE_S = 10.0  # a child that has not stopped this long after SIGTERM is killed
PING_S = 5.0  # how often the server asks a started child to answer
METRICS_WAIT_S = 2.0  # /metrics serves the server's own figures alone past this
_LINE_LIMIT = 64 * 1024 * 1024  # a metrics answer is one line
CONSUMER_METRICS = "tandtid_consumer_"
# Below the server on a busy machine: a request never waits for the CPU an e-mail takes. E-mails
# only wait, and catch up when the CPU is free (their cursors are durable).
NICENESS = 10  # what the server's /metrics takes from the child's


# -- the server's side ----------------------------------------------------------------------------


class ConsumerProcess:
    """Starts the consumers' process, tells it its regions, reports its health, starts it again."""

    def __init__(
        self,
        argv: list[str],
        health: Health,
        *,
        regions: Iterable[str] = (),
        backoff_s: tuple[float, float] = (0.5, 30.0),
        hung_s: float = 30.0,
    ) -> None:
        self.argv = argv
        self.health = health
        self.regions: set[str] = set(regions)
        self.backoff_s = backoff_s
        self.hung_s = hung_s  # a child that answers no ping this long is hung: killed, started again
        self.started = asyncio.Event()  # the running child has started its feed
        self.exits = 0  # children that exited on their own
        self._proc: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._reported: set[tuple[str, str]] = set()  # parts the running child reported down
        self._metrics: asyncio.Future[str] | None = None

    @classmethod
    def of_store(
        cls, data_dir: Path, redis_url: str | None, health: Health, log_level: str, hung_s: float = 30.0
    ) -> ConsumerProcess:
        argv = [sys.executable, "-m", "server.consumers", "--data", str(data_dir), "--log-level", log_level]
        if redis_url:
            argv += ["--redis", redis_url]
        return cls(argv, health, hung_s=hung_s)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.returncode is None else None

    async def start(self, regions: Iterable[str]) -> None:
        self.regions = set(regions)
        self._task = asyncio.create_task(self._keep_running(), name="consumer-process")

    def follow(self, region: str) -> None:
        self.regions.add(region)
        self._send({"follow": region})

    def unfollow(self, region: str) -> None:
        self.regions.discard(region)
        self._send({"unfollow": region})

    async def metrics_text(self, wait_s: float = METRICS_WAIT_S) -> str | None:
        """The child's metrics exposition; None when it is not running or does not answer in time."""
        if self.pid is None or not self.started.is_set():
            return None
        if self._metrics is None or self._metrics.done():
            self._metrics = asyncio.get_running_loop().create_future()
            self._send({"metrics": True})
        try:
            return await asyncio.wait_for(asyncio.shield(self._metrics), wait_s)
        except TimeoutError:
            log.warning("the consumer process did not send its metrics within %.1f s", wait_s)
            return None

    async def stop(self) -> None:
        self._stopping = True
        proc = self._proc
        if proc is not None and proc.returncode is None:
            if proc.stdin is not None:
                proc.stdin.close()
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), STOP_GRACE_S)
            except TimeoutError:
                log.error("the consumer process did not stop within %.0f s of SIGTERM: killed", STOP_GRACE_S)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # -- running the child --------------------------------------------------------------------

    async def _keep_running(self) -> None:
        delay = self.backoff_s[0]
        while not self._stopping:
            began = time.monotonic()
            why = await self._run_child()
            if self._stopping:
                return
            self.exits += 1
            self.started.clear()
            for part, region in self._reported:  # the child's own troubles ended with it
                self.health.up(part, region)
            self._reported.clear()
            self.health.down(PART, "*", why)
            if time.monotonic() - began > 60:
                delay = self.backoff_s[0]
            log.error("the consumer process %s; starting it again in %.1f s", why, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.backoff_s[1])

    async def _run_child(self) -> str:
        """Run one child until it exits; what ended it, for ``/ready``."""
        told = set(self.regions)
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.argv,
                "--regions",
                ",".join(sorted(told)),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                start_new_session=True,
                limit=_LINE_LIMIT,
            )
        except OSError as exc:
            return f"could not start: {type(exc).__name__}"
        self._proc = proc
        self._hung = False
        watching = asyncio.create_task(self._watch(proc), name="consumer-process-pings")
        try:
            for region in sorted(self.regions - told):  # moved while it was being started
                self._send({"follow": region})
            for region in sorted(told - self.regions):
                self._send({"unfollow": region})
            assert proc.stdout is not None
            while line := await proc.stdout.readline():
                self._on_line(line)
            code = await proc.wait()
        except asyncio.CancelledError:
            if proc.returncode is None:
                proc.kill()
            raise
        finally:
            watching.cancel()
            if self._metrics is not None and not self._metrics.done():
                self._metrics.set_result("")
        if self._hung:
            return f"hung: no answer for {self.hung_s:.0f} s, killed"
        return f"exited with {code}" if code >= 0 else f"killed by signal {-code}"

    async def _watch(self, proc: asyncio.subprocess.Process) -> None:
        """Ping the child from its start; one that answers none for ``hung_s`` (a stuck loop or
        start, a stopped process) is killed, and ``_keep_running`` reports it and starts another."""
        self._answered = time.monotonic()
        while proc.returncode is None:
            self._send({"ping": True})
            await asyncio.sleep(min(PING_S, self.hung_s / 3))
            if time.monotonic() - self._answered > self.hung_s and proc.returncode is None:
                log.error("the consumer process has answered no ping for %.0f s: killing it", self.hung_s)
                self._hung = True
                proc.kill()
                return

    def _on_line(self, line: bytes) -> None:
        try:
            message = orjson.loads(line)
            kind, value = next(iter(message.items()))
        except (orjson.JSONDecodeError, AttributeError, StopIteration):
            log.warning("the consumer process wrote a line that is not a message (%d bytes)", len(line))
            return
        if kind == "started":
            self.health.up(PART, "*")
            self.started.set()
        elif kind == "pong":
            self._answered = time.monotonic()
        elif kind == "caught_up":
            log.info("the consumer process has caught up with the journal, %.1f s after it started", value)
        elif kind == "down":
            part, region, why = value
            self._reported.add((part, region))
            self.health.down(part, region, why)
        elif kind == "up":
            part, region = value
            self._reported.discard((part, region))
            self.health.up(part, region)
        elif kind == "note":
            self.health.note(*value)
        elif kind == "metrics":
            if self._metrics is not None and not self._metrics.done():
                self._metrics.set_result(value)
        else:
            log.warning("the consumer process sent a message of an unknown kind: %s", kind)

    def _send(self, message: dict[str, Any]) -> None:
        proc = self._proc
        if proc is None or proc.returncode is not None or proc.stdin is None or proc.stdin.is_closing():
            return  # the next child is told the regions when it starts
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            proc.stdin.write(orjson.dumps(message) + b"\n")


def merged_exposition(theirs: str | None, registry: Collector = REGISTRY) -> bytes:
    """The server's metrics with the consumer process's own: its ``tandtid_consumer_`` families
    (every metric of the consumers is named so). The rest of what the child's registry holds are
    the server's metrics it never feeds (zeros under the server's names: an event-loop lag of
    nothing, no HTTP requests) and its process and Python figures: left out, the server's stand. A
    sample whose labels the server has too gets ``process="consumers"``."""
    if not theirs:
        return generate_latest(registry)
    others = {
        f.name: f
        for f in text_string_to_metric_families(theirs)
        # the text format's ``_created`` lines parse as families of their own; the child's start times say nothing
        if f.name.startswith(CONSUMER_METRICS) and not f.name.endswith("_created")
    }

    class Merged:
        def collect(self) -> Iterator[Any]:
            for family in registry.collect():
                other = others.pop(family.name, None)
                if other is not None:
                    own = {(s.name, tuple(sorted(s.labels.items()))) for s in family.samples}
                    for sample in other.samples:
                        if (sample.name, tuple(sorted(sample.labels.items()))) in own:
                            sample = sample._replace(labels={**sample.labels, "process": PART})
                        family.samples.append(sample)
                yield family
            yield from others.values()

    return generate_latest(Merged())


# -- the child's side -----------------------------------------------------------------------------


def _emit(message: dict[str, Any]) -> None:
    sys.stdout.buffer.write(orjson.dumps(message) + b"\n")
    sys.stdout.buffer.flush()


class ReportedHealth(Health):
    """The child's ``Health``: every change is also told to the server on stdout."""

    def __init__(self, tell: Callable[[dict[str, Any]], None] = _emit) -> None:
        super().__init__()
        self._tell = tell

    def down(self, part: str, region: str, why: str) -> None:
        super().down(part, region, why)
        self._tell({"down": [part, region, why]})

    def up(self, part: str, region: str) -> None:
        if self.is_down(part, region):
            self._tell({"up": [part, region]})
        super().up(part, region)

    def note(self, part: str, region: str, why: str) -> None:
        super().note(part, region, why)
        self._tell({"note": [part, region, why]})


def open_reader_journal(data_dir: Path, redis_url: str | None) -> Journal:
    """The journal as a process that only reads and follows it sees it (unopened)."""
    if redis_url:
        from persistence.redis_journal import RedisStreamJournal

        return RedisStreamJournal(redis_url)
    from persistence.file_journal import FileJournal

    return FileJournal(data_dir, read_only=True)


async def run_child(data_dir: Path, redis_url: str | None, regions: list[str]) -> int:
    from server.consumers.follow import Feed
    from server.consumers.notify.notifier import Notifier
    from server.consumers.webhooks.dispatcher import WebhookDispatcher
    from server.runtime import tune_gc

    journal = open_reader_journal(data_dir, redis_url)
    feed = Feed(journal, health=ReportedHealth())  # no states here: replicas of the snapshots
    notifier = Notifier.from_env(feed, data_dir, redis_url=redis_url)
    webhooks = WebhookDispatcher.open(feed, data_dir, redis_url)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    commands = asyncio.StreamReader(limit=_LINE_LIMIT)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(commands), sys.stdin)
    running = asyncio.Event()
    # Pings are answered from the first moment (a start that hangs is found too); the other
    # commands wait until the consumers run.
    reading = asyncio.create_task(_obey(commands, feed, running))
    started = time.monotonic()
    telling: asyncio.Task[None] | None = None
    try:
        await journal.open()
        await notifier.start()
        await webhooks.start()
        await feed.start(regions)
        running.set()
        _emit({"started": True})

        async def tell_caught_up() -> None:
            await feed.wait_caught_up()
            tune_gc()  # the replicas are loaded: their long-lived objects frozen, the heap trimmed
            _emit({"caught_up": round(time.monotonic() - started, 1)})

        telling = asyncio.create_task(tell_caught_up())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({reading, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if reading.done() and not reading.cancelled() and reading.exception() is not None:
            raise reading.exception()  # type: ignore[misc]
    finally:
        reading.cancel()
        if telling is not None:
            telling.cancel()
        await feed.stop()
        await notifier.stop()
        await webhooks.stop()
        await journal.close()
    return 0


async def _obey(commands: asyncio.StreamReader, feed: Any, running: asyncio.Event) -> None:
    """The server's commands until it closes our stdin."""
    while line := await commands.readline():
        message = orjson.loads(line)
        if "ping" in message:
            _emit({"pong": True})
            continue
        await running.wait()
        if "follow" in message:
            feed.follow(message["follow"])
        elif "unfollow" in message:
            await feed.unfollow(message["unfollow"])
        elif "metrics" in message:
            _emit({"metrics": generate_latest().decode()})
        else:
            log.warning("an unknown command from the server: %s", sorted(message))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m server.consumers",
        description="The journal consumers, started and told their regions by tandtid serve "
        "(--consumers process). Commands on stdin, reports on stdout.",
    )
    parser.add_argument("--data", default=os.environ.get("TANDTID_DATA_DIR", "./data"))
    parser.add_argument("--redis", default=os.environ.get("TANDTID_REDIS_URL") or None)
    parser.add_argument("--regions", default="", help="comma-separated region codes to follow at the start")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    os.nice(NICENESS)
    from server.cli import run_server_loop  # uvloop, as the server's

    regions = [r for r in args.regions.split(",") if r]
    return run_server_loop(run_child(Path(args.data), args.redis, regions))
