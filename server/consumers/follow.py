"""Following the journal: the ONE mechanism every consumer of facts uses (the notifier, the
webhook dispatcher, any later reader).

A ``Feed`` follows every region's journal into the process's one ``Projection`` (a view per
region, shared by all its readers) and hands each entry after a reader's durable cursor to
that reader, in order. A reader is anything with a ``name`` (a metric label), ``cursors()``
(its durable cursor per region; blocking, called in a worker thread) and ``async
handle(region, entries)`` (act on a run of consecutive entries, ``(position, facts)`` in order —
also ones without facts — and move the cursor past the last durably, in the same transaction as
the action or soon after when there is nothing to do). A reader is handed every entry queued for
it when it asks, up to ``batch_entries``: under load the runs grow, so one worker-thread call,
one write and one fsync serve many bookings.

Per region, one supervised pipeline:

1. the readers' cursors; the region's bookings to read: with ``states`` (inside ``tandtid
   serve``) the actor's own state, at the actor's position (no copy, nothing loaded); without,
   the bookings of the region snapshot the actors wrote (unpacked and decoded off the loop into
   a ``BookingsReplica``) — never a replay from position 0 when there is a snapshot; a reader
   with no cursor for the region starts at that position;
2. the journal from ``min(snapshot, cursors)`` on (``tail``): each entry is decoded and
   applied once, the event loop is yielded to every ``yield_every`` entries, and the facts
   are queued (bounded) to every reader whose cursor is before it; each reader works through
   its queue in its own task, so a slow reader slows the others only when its queue is full;
3. anything the feed meets — ``JournalUnavailable`` (a Redis blip), an ``Unplaced`` fact, a
   bug — stops the region's pipeline once the readers have finished what was queued before
   it, and it is restarted from step 1 after a backoff (``backoff_s``, doubling, reset after a
   good long run); a reader whose ``handle`` raises (a full disk or no file descriptors in its
   store) is restarted on that same entry with the same backoff while the other readers go on.
   Meanwhile ``Health`` names the reader and region (``/ready`` answers "degraded") and
   ``tandtid_consumer_restarts_total{consumer,region,kind}`` counts it. Nothing is skipped:
   every restart resumes from the durable cursors and the readers' keys drop what they did.

History already trimmed when a pipeline reads it (a reader more than the journal's retention
behind) cannot be had back: the gap is counted (``tandtid_consumer_lost_entries_total``),
logged and noted in ``Health`` for the rest of the process's life, never passed silently.

``supervise`` is the same restart-with-backoff for a reader's own loops (reminders, sending).

Consumers' blocking work runs on their own worker threads (``server.consumers.workers``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol, TypeVar

from engine.errors import TandtidError
from engine.model import REGIONS
from persistence.codec import unpack_snapshot
from persistence.journal import Journal, JournalError
from server import metrics
from server.cancelling import cancel_until_done
from server.consumers.feed import (
    BookingsReplica,
    Fact,
    Projection,
    RegionView,
    States,
    StateUnavailable,
    Unplaced,
    replica_of_snapshot,
)
from server.consumers.workers import in_consumer_thread
from server.health import Health

log = logging.getLogger("tandtid.consumers")

T = TypeVar("T")
Up = Callable[[], None]
HAND_OVER_GRACE_S = 30.0  # how long a stop waits for a hand-over in flight (SMTP/HTTP timeouts are less)
Entry = tuple[int, list[Fact]]  # a journal entry's position and its facts
Queued = Entry | Exception  # an entry for a reader, or the failure after the last one


class Reader(Protocol):
    name: str

    def cursors(self) -> dict[str, int]: ...

    async def handle(self, region: str, entries: list[Entry]) -> None: ...


class _Stopped(Exception):
    """A part of a region's pipeline stopped: ``part`` is a reader's name, or ``feed``."""

    def __init__(self, part: str, cause: BaseException) -> None:
        super().__init__(part)
        self.part = part
        self.cause = cause


def failure_kind(exc: BaseException) -> str:
    """A metric label for a stopped consumer: a fixed small set, never a message."""
    if isinstance(exc, Unplaced):
        return "unplaced"
    if isinstance(exc, StateUnavailable):
        return "state"
    if isinstance(exc, JournalError | ConnectionError):
        return "journal"
    if isinstance(exc, OSError | sqlite3.Error):
        return "disk"
    return "unexpected"


def why(exc: BaseException) -> str:
    """What ``/ready`` shows: our own errors' messages (kinds and positions), the type of others."""
    name = type(exc).__name__
    if isinstance(exc, TandtidError | sqlite3.Error):
        return f"{name}: {exc}"[:200]
    if isinstance(exc, OSError) and exc.strerror:
        return f"{name}: {exc.strerror}"
    return name


class Feed:
    def __init__(
        self,
        journal: Journal,
        *,
        regions: Iterable[str] | None = None,
        health: Health | None = None,
        backoff_s: tuple[float, float] = (0.2, 30.0),
        queue_entries: int = 4096,
        yield_every: int = 256,
        batch_entries: int = 64,
        states: States | None = None,
    ) -> None:
        self.journal = journal
        self.regions = tuple(regions) if regions is not None else tuple(r.code for r in REGIONS)
        self.health = health if health is not None else Health()
        self.backoff_s = backoff_s
        self.queue_entries = queue_entries
        self.yield_every = yield_every
        self.batch_entries = batch_entries
        self.projection = Projection(states)
        self.readers: list[Reader] = []
        self._caught_up: set[str] = set()
        self._all_caught_up = asyncio.Event()
        self._started = False
        self._tasks: dict[str, asyncio.Task[None]] = {}  # region -> its supervised pipeline

    def add(self, reader: Reader) -> None:
        """Before ``start``: ``reader`` gets every entry after its cursors."""
        if self._started:
            raise RuntimeError("add readers before the feed starts")
        self.readers.append(reader)

    async def start(self, regions: Iterable[str] | None = None) -> None:
        """Follow ``regions`` (default: all of ``self.regions``); ``follow`` and ``unfollow``
        change the set later (a node runs the consumers of the regions it owns only)."""
        self._started = True
        for region in self.regions if regions is None else regions:
            self.follow(region)
        if not self._tasks:
            self._all_caught_up.set()

    def follow(self, region: str) -> None:
        """Start the region's pipeline (from its snapshot and the readers' durable cursors)."""
        if region in self._tasks:
            return
        if region not in self.regions:
            raise ValueError(f"region {region} is not one this feed may follow")
        self._all_caught_up.clear()
        self._tasks[region] = self.supervise(
            tuple(r.name for r in self.readers),
            region,
            functools.partial(self._follow, region),
            name=f"feed-{region}",
        )

    async def unfollow(self, region: str) -> None:
        """Stop the region's pipeline and forget its view: its readers hear no more of it
        (another node's do). Cursors stay as durable as the readers made them."""
        task = self._tasks.pop(region, None)
        if task is None:
            return
        await cancel_until_done(task)
        with contextlib.suppress(asyncio.CancelledError):
            await task
        self.projection.views.pop(region, None)
        self._caught_up.discard(region)
        for reader in self.readers:
            self.health.up(reader.name, region)  # not down: not ours any more
        if self._caught_up >= set(self._tasks):
            self._all_caught_up.set()

    @property
    def following(self) -> set[str]:
        return set(self._tasks)

    async def stop(self) -> None:
        tasks, self._tasks = list(self._tasks.values()), {}
        for task in tasks:
            task.cancel()
        for task in tasks:
            await cancel_until_done(task)
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def wait_caught_up(self) -> None:
        """Until every followed region's projection has reached the journal's end as of its start."""
        await self._all_caught_up.wait()

    @property
    def all_caught_up(self) -> bool:
        return self._all_caught_up.is_set()

    # -- supervision ---------------------------------------------------------------------------

    def supervise(
        self, parts: tuple[str, ...], region: str, run: Callable[[Up], Awaitable[None]], *, name: str
    ) -> asyncio.Task[None]:
        """A task that runs ``run(up)`` for ever: whenever it raises, ``parts`` of ``region`` are
        reported down (``Health``, metrics, log) and it runs again after a backoff; ``up()``
        (called by ``run`` once it works) reports them up and resets the backoff."""
        task = asyncio.create_task(self._keep_running(parts, region, run), name=name)
        task.add_done_callback(self._supervisor_ended)
        return task

    @staticmethod
    def _supervisor_ended(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:  # a bug here: never quiet
            log.critical("supervisor %s died", task.get_name(), exc_info=task.exception())

    async def _keep_running(
        self, parts: tuple[str, ...], region: str, run: Callable[[Up], Awaitable[None]]
    ) -> None:
        low, high = self.backoff_s
        delay = low

        def up() -> None:
            for part in parts:
                self._up(part, region)

        while True:
            started = time.monotonic()
            try:
                await run(up)
                raise RuntimeError("a supervised consumer returned")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if time.monotonic() - started > high:
                    delay = low  # it ran well for a while: this is a new spell of trouble
                part, cause = _culprit(exc)
                down = parts if part == "feed" or part not in parts else (part,)
                for name in down:
                    self._report(name, region, cause, delay)
                await asyncio.sleep(delay)
                delay = min(high, delay * 2)

    def _up(self, part: str, region: str) -> None:
        self.health.up(part, region)
        metrics.CONSUMER_UP.labels(consumer=part, region=region).set(1)

    # -- one region's pipeline -----------------------------------------------------------------

    async def _follow(self, region: str, _up: Up) -> None:
        """Snapshot + cursors, then the journal for ever (returns only by raising)."""
        readers = list(self.readers)
        stored = [await in_consumer_thread(reader.cursors) for reader in readers]
        view = await self._load(region)
        cursors = [s.get(region, view.base) for s in stored]
        for reader, s in zip(readers, stored, strict=True):
            if region not in s and view.base:
                log.warning(
                    "%s has no cursor for region %s: starting at the snapshot (position %d)",
                    reader.name,
                    region,
                    view.base,
                )
        start = min([view.base, *cursors])
        end = await self.journal.last_position(region)
        queues: list[asyncio.Queue[Queued]] = [asyncio.Queue(maxsize=self.queue_entries) for _ in readers]
        if end <= start:
            self._reached_end(region, list(zip(readers, queues, strict=True)))
        async with asyncio.TaskGroup() as group:
            for reader, queue in zip(readers, queues, strict=True):
                group.create_task(self._deliver(reader, region, queue))
            group.create_task(self._read(region, view, start, end, readers, cursors, queues))

    async def _load(self, region: str) -> RegionView:
        """The region's view, in the projection from now on: at the position of the process's
        state of the region (``states``), or from the actors' snapshot (empty at 0 when there
        is none)."""
        states = self.projection.states
        try:
            if states is not None:
                found = states(region)
                if found is None:
                    raise StateUnavailable(f"region {region}: no state to read in this process now")
                view = RegionView(region, base=found[1])
            else:
                snapshot = await self.journal.load_snapshot(region)
                if snapshot is None:
                    view = RegionView(region, replica=BookingsReplica())
                else:
                    replica = await in_consumer_thread(_replica_of, snapshot.payload)
                    view = RegionView(region, base=snapshot.position, replica=replica)
        except Exception as exc:
            raise _Stopped("feed", exc) from exc
        self.projection.views[region] = view
        return view

    async def _read(
        self,
        region: str,
        view: RegionView,
        start: int,
        end: int,
        readers: list[Reader],
        cursors: list[int],
        queues: list[asyncio.Queue[Queued]],
    ) -> None:
        expected = start + 1
        reached = end <= start
        count = 0
        try:
            async for entry in self.journal.tail(region, after=start):
                _honour_cancel()
                position = entry.position
                if position > expected:
                    self._lost(region, expected, position - 1, readers, cursors)
                expected = position + 1
                incomplete = view.incomplete
                facts = self.projection.facts(region, position, entry.payload)
                if view.incomplete > incomplete:
                    metrics.CONSUMER_INCOMPLETE.labels(region=region).inc(view.incomplete - incomplete)
                    log.warning(
                        "region %s position %d: a reschedule recorded without its previous time "
                        "(a version 1 record); the previous time is left out",
                        region,
                        position,
                    )
                for cursor, queue in zip(cursors, queues, strict=True):
                    if position > cursor:
                        await queue.put((position, facts))
                count += 1
                if count % self.yield_every == 0:
                    await asyncio.sleep(0)  # a long replay must not hold the event loop
                if not reached and position >= end:
                    reached = True
                    self._reached_end(region, list(zip(readers, queues, strict=True)))
        except Exception as exc:
            # The readers first finish the entries queued before the failure (facts before an
            # unplaced one are told), then stop with it.
            for queue in queues:
                await queue.put(exc)
            if not queues:
                raise _Stopped("feed", exc) from exc

    async def _deliver(self, reader: Reader, region: str, queue: asyncio.Queue[Queued]) -> None:
        """Hand ``reader`` its entries in order: each call every entry queued by then (at most
        ``batch_entries``). A failing ``handle`` is retried on the same entries with backoff (the
        reader's cursor has not moved past them and its keys drop what it did), reported down
        meanwhile: one reader's trouble never restarts the others."""
        gauge = metrics.CONSUMER_POSITION.labels(consumer=reader.name, region=region)
        low, high = self.backoff_s
        while True:
            _honour_cancel()
            item = await queue.get()
            if isinstance(item, BaseException):
                raise _Stopped("feed", item)
            entries = [item]
            failure: BaseException | None = None
            while len(entries) < self.batch_entries and not queue.empty():
                item = queue.get_nowait()
                if isinstance(item, BaseException):
                    failure = item  # after the entries before it are handled
                    break
                entries.append(item)
            delay = low
            while True:
                try:
                    await reader.handle(region, entries)
                    break
                except Exception as exc:
                    self._report(reader.name, region, exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(high, delay * 2)
                    _honour_cancel()
            gauge.set(entries[-1][0])
            if self.health.is_down(reader.name, region):
                self._up(reader.name, region)  # it handled what it failed on
            if failure is not None:
                raise _Stopped("feed", failure)

    def _report(self, part: str, region: str, exc: BaseException, delay: float) -> None:
        kind = failure_kind(exc)
        metrics.CONSUMER_RESTARTS.labels(consumer=part, region=region, kind=kind).inc()
        metrics.CONSUMER_UP.labels(consumer=part, region=region).set(0)
        self.health.down(part, region, why(exc))
        log.error(
            "consumer %s of region %s stopped (%s); restarting in %.1fs",
            part,
            region,
            why(exc),
            delay,
            exc_info=exc if kind == "unexpected" else None,
        )

    def _reached_end(self, region: str, readers: list[tuple[Reader, asyncio.Queue[Queued]]]) -> None:
        """The projection has what the journal had at the start: the readers with nothing left
        to do are up (the others once they handle an entry)."""
        for reader, queue in readers:
            if queue.empty():
                self._up(reader.name, region)
        self._caught_up.add(region)
        if self._caught_up >= set(self._tasks):
            self._all_caught_up.set()

    def _lost(self, region: str, first: int, last: int, readers: list[Reader], cursors: list[int]) -> None:
        metrics.CONSUMER_LOST_ENTRIES.labels(region=region).inc(last - first + 1)
        what = f"journal positions {first}..{last} were trimmed before they were handled"
        for reader, cursor in zip(readers, cursors, strict=True):
            if cursor < last:
                self.health.note(reader.name, region, what)
        log.error("region %s: %s; their facts are lost", region, what)


def _replica_of(payload: bytes) -> BookingsReplica:
    return replica_of_snapshot(unpack_snapshot(payload))


def _honour_cancel() -> None:
    """Raise the cancellation a library swallowed. On Python 3.11 ``asyncio.wait_for`` (inside
    aiosmtplib, redis-py, ...) returns normally when the cancel arrives as its inner future
    completes; the task then waits on, cancelled for good, and the TaskGroup around it with it."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def finish_first(work: Awaitable[T], *, grace_s: float = HAND_OVER_GRACE_S) -> T:
    """Await ``work`` to its end even when the caller is cancelled meanwhile, then raise the
    cancellation: for a hand-over and its record, which must not stop between the two (a
    message the mail server accepted, or a webhook the receiver got, and not recorded would be
    sent again after the restart; a write left running in a worker thread may land after the
    restarted pipeline read its cursor). Past ``grace_s`` after the cancel, ``work`` is cancelled."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        try:
            await asyncio.wait({task}, timeout=grace_s)
        finally:
            task.cancel()  # a no-op once it ended
            if task.done() and not task.cancelled():
                task.exception()  # its outcome is the caller's to drop: the caller is cancelled
        raise


def _culprit(exc: BaseException) -> tuple[str, BaseException]:
    """Which part stopped (a reader's name, or ``feed``) and the error underneath."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            if isinstance(inner, _Stopped | BaseExceptionGroup):
                return _culprit(inner)
        return _culprit(exc.exceptions[0])
    if isinstance(exc, _Stopped):
        return exc.part, exc.cause
    return "feed", exc
