"""The region actor: the ONLY writer of one region's slot table.

One asyncio task per region. Each turn it

1. drains a batch from its inbox (commands; queries only those made while it recovered),
2. runs those queries on durable state,
3. applies every command with ``state.apply(command, now)`` (pure, synchronous),
4. appends the batch's events with ONE journal write (group commit),
5. only after that write is durable resolves every caller's future and hands a
   ``Committed`` to the listeners (the live hub, the notifier), then yields once so those
   callers and the readers that waited run on the durable state before the next batch applies.

Reads (``query``) take no turn: they run in the caller's task on the durable state, at once
between batches or right after the batch in flight is answered (nothing unacknowledged is
ever read, and a read never queues behind commands or other reads).

If the journal write fails, or anything else in a turn raises (an engine bug mid-command, a
failing tick, packing, ``take_changes``), every caller in the batch not yet answered gets
``Unavailable``, the in-memory state is dropped and reloaded from snapshot + journal,
retrying with backoff while the journal is unreachable; then listeners get ``Reloaded`` so
they resync their subscribers. The state therefore never holds a change the journal lacks.

Lifecycle (``Lifecycle``, one value at a time)::

    RECOVERING ──> FOLLOWING ──(promote: this node took the lease)──> READY
    RECOVERING ──> READY ──(any failure in a turn)──> RECOVERING
        │            └──(a newer epoch holds the region)──> FENCED   (stays; writes refused)
        └──(damage in the journal, or any non-transient recovery error)──> FAILED
                                    (stays until an operator repairs and restarts; ``failure``
                                     says why; every submit and query answers Unavailable)
A FOLLOWING actor (``start(follow=True)``: another node owns the region) answers queries only;
a task tails the journal and the actor applies each entry with the engine's own ``evolve``
between queries and hands a ``Committed`` to the listeners, as the owner's did: every node
serves reads, the map and live topics for every region. ``promote(epoch)`` applies what is left
in the journal (the lease's epoch already fences the old owner) and serves commands.

Holds expire and buffers release through the same path (a ``Tick`` command), so they are
journaled too. Snapshots are taken every N events or T seconds; what changes in place is copied on
the actor's turn, the append-only rest (most of the bookings) copied, packed and written off it.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from engine.commands import Command, Tick
from engine.errors import Refused, TandtidError
from engine.events import Event, from_record, to_record
from engine.state import Change, RegionState
from persistence.codec import pack_events, pack_snapshot, unpack_events, unpack_snapshot
from persistence.journal import (
    CorruptJournal,
    Entry,
    Journal,
    JournalError,
    JournalUnavailable,
    Snapshot,
    StaleEpoch,
)
from server import metrics
from server.cancelling import cancel_until_done
from server.runtime import gc_paused, release_free_memory

log = logging.getLogger("tandtid.actor")
T = TypeVar("T")


class Unavailable(TandtidError):
    """The region could not make the command durable; nothing happened. Retry later (HTTP 503)."""


class Overloaded(Unavailable):
    """The region's inbox is full: answered at once instead of queued (HTTP 503, Retry-After)."""


class NotWritable(Unavailable):
    """The journal refuses every write for now (``Journal.write_failure``: a full disk): answered
    at once for up to ``WRITE_RETRY_S`` after a failed append instead of applying and reloading."""


class _Reload(Exception):
    """A replica cannot go on from where it is (a gap in the journal): recover again."""


class Lifecycle(enum.Enum):
    RECOVERING = "recovering"  # loading snapshot + journal (or retrying while it is unreachable)
    READY = "ready"  # serving commands and queries
    FOLLOWING = "following"  # a read replica: another node owns the region; its journal is applied here
    FENCED = "fenced"  # a writer with a newer epoch owns the region: no more writes from here
    FAILED = "failed"  # recovery cannot succeed without an operator (see ``RegionActor.failure``)


WRITE_RETRY_S = 1.0  # after an append failed with the journal unwritable, the next one tried after this
QUERY_SLICE_S = 0.005  # queries of one turn run back to back for at most this long, then yield

# Recovery retries these (the store may come back); anything else fails the region.
TRANSIENT = (JournalUnavailable, OSError, ConnectionError)


@dataclass(frozen=True, slots=True)
class Committed:
    region: str
    position: int
    # epoch seconds of the durable write: the journal's clock where it keeps one (Redis: the same
    # on the owner and on every replica), else the writer's clock once the write returned
    committed_at: float
    events: list[Event]
    changes: list[Change]
    # (clinic, day, free cells, {service: bookable times}) per clinic-day touched, counted when
    # called: by a listener that needs them (a recount per clinic-day, which a node where nobody
    # watches the region never pays) and only while it is being told (the state moves on after)
    counts: Callable[[], list[tuple[str, int, int, dict[str, int]]]]


@dataclass(frozen=True, slots=True)
class Reloaded:
    region: str


Listener = Callable[[Committed | Reloaded], None]


class _Query:
    __slots__ = ("fn", "future")

    def __init__(self, fn: Callable[[RegionState], Any], future: asyncio.Future[Any]) -> None:
        self.fn = fn
        self.future = future


class _Request:
    __slots__ = ("command", "future", "make", "reply")

    def __init__(
        self,
        command: Command | None,
        future: asyncio.Future[Any],
        make: Callable[[RegionState], Command] | None = None,
        reply: Callable[[RegionState, list[Event]], Any] | None = None,
    ) -> None:
        self.command = command
        self.future = future
        self.make = make
        self.reply = reply


class _Replied:
    """A command's events and what its ``reply`` made of the state right after it."""

    __slots__ = ("events", "value")

    def __init__(self, events: list[Event], value: Any) -> None:
        self.events = events
        self.value = value


class _Apply:
    """A journal entry another node wrote, for a FOLLOWING actor to apply."""

    __slots__ = ("entry",)

    def __init__(self, entry: Entry) -> None:
        self.entry = entry

    @property
    def future(self) -> _Answered:
        return _ANSWERED  # nobody waits for it


class _Answered:
    """What an item nobody waits for has instead of a future."""

    def done(self) -> bool:
        return True

    def set_result(self, _value: object) -> None: ...

    def set_exception(self, _exc: BaseException) -> None: ...


_ANSWERED = _Answered()


class _Promote:
    """This node took the region's lease under ``epoch``: catch up and serve commands."""

    __slots__ = ("epoch", "future")

    def __init__(self, epoch: int, future: asyncio.Future[None]) -> None:
        self.epoch = epoch
        self.future = future


_Item = _Request | _Query | _Apply | _Promote


class SnapshotGate:
    """One snapshot written at a time among the actors that share it (``Regions`` gives all of
    its actors one). Packing a region's snapshot runs in a worker thread but holds the GIL for
    much of its time; the 21 regions recovered together fall due together every
    ``snapshot_every_s``, and 21 packing threads at once left the event loop ~1/7 of the GIL for
    a second or more. A region due while another writes takes its snapshot on a later turn."""

    __slots__ = ("writing",)

    def __init__(self) -> None:
        self.writing = 0  # snapshots captured and not yet stored


class RegionActor:
    """Owns one region. Create, ``await start()`` (recovers), then ``submit``/``query``."""

    def __init__(
        self,
        region: str,
        journal: Journal,
        *,
        epoch: int = 1,
        clock: Callable[[], float] = time.time,
        listeners: list[Listener] | None = None,
        max_batch: int = 2048,
        max_inbox: int = 4096,
        snapshot_every_events: int = 100_000,
        snapshot_every_s: float = 300.0,
        tick_interval_s: float = 1.0,
        retry_backoff_s: tuple[float, float] = (0.05, 2.0),
        snapshot_gate: SnapshotGate | None = None,
    ) -> None:
        self.region = region
        self.snapshot_gate = snapshot_gate if snapshot_gate is not None else SnapshotGate()
        self.journal = journal
        self.epoch = epoch
        self.clock = clock
        self.listeners: list[Listener] = listeners if listeners is not None else []
        self.max_batch = max_batch
        self.max_inbox = max_inbox  # commands and queries waiting; past it, Overloaded at once
        self.snapshot_every_events = snapshot_every_events
        self.snapshot_every_s = snapshot_every_s
        self.tick_interval_s = tick_interval_s
        self.retry_backoff_s = retry_backoff_s
        self.state = RegionState(region)
        self.position = 0
        self._applied_waiters: list[tuple[int, asyncio.Future[None]]] = []  # (position, woken at it)
        self.lifecycle = Lifecycle.RECOVERING
        self.failure: str | None = None  # why the region FAILED (no personal data: kinds and offsets)
        self._inbox: asyncio.Queue[_Item] = asyncio.Queue()
        self._follow = False  # start as a read replica (``start(follow=True)``)
        self._tail_task: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._recovered = asyncio.Event()
        self._snapshot_task: asyncio.Task[None] | None = None
        self._events_since_snapshot = 0
        self._last_snapshot_at = 0.0
        self._queue_gauge = metrics.QUEUE_DEPTH.labels(region=region)
        self._batch_hist = metrics.BATCH_SIZE.labels(region=region)
        self._append_hist = metrics.JOURNAL_APPEND_SECONDS.labels(region=region)
        self._overloaded = metrics.OVERLOADED.labels(region=region)
        self._ready_gauge = metrics.REGION_READY.labels(region=region)
        self._lifecycle_enum = metrics.REGION_LIFECYCLE.labels(region=region)
        self._lifecycle_enum.state(self.lifecycle.value)
        self._command_counters: dict[type, Any] = {}
        self._refusal_counters: dict[str, Any] = {}
        self._write_failed_at = -WRITE_RETRY_S  # time.monotonic() of the last append the journal refused
        # True from a turn's first apply until its batch is durable and answered: meanwhile the
        # state holds changes nobody may read yet, and readers wait in ``_readers`` for the turn
        self._applying = False
        self._readers: list[asyncio.Future[None]] = []

    # -- public API ---------------------------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        return self._inbox.qsize()

    @property
    def ready(self) -> bool:
        return self.lifecycle is Lifecycle.READY

    @property
    def fenced(self) -> bool:
        return self.lifecycle is Lifecycle.FENCED

    def _become(self, lifecycle: Lifecycle) -> None:
        self.lifecycle = lifecycle
        self._ready_gauge.set(1 if lifecycle is Lifecycle.READY else 0)
        self._lifecycle_enum.state(lifecycle.value)

    @property
    def following(self) -> bool:
        return self.lifecycle is Lifecycle.FOLLOWING

    @property
    def serving(self) -> bool:
        """Answering queries from recovered state: READY, or FOLLOWING another node's writes."""
        return self.lifecycle in (Lifecycle.READY, Lifecycle.FOLLOWING)

    async def start(self, wait: bool = True, *, follow: bool = False) -> None:
        """Start the loop, which first recovers (snapshot + replay), retrying with backoff while
        the journal is unreachable. ``wait``: return only once the region is ready (or
        following). ``follow``: a read replica of a region another node writes (``promote``)."""
        self._follow = follow
        self._task = asyncio.create_task(self._run(), name=f"region-actor-{self.region}")
        if wait:
            await self.wait_ready()

    async def wait_ready(self) -> None:
        """Until the first recovery has finished. Raises ``Unavailable`` when the region
        FAILED or was FENCED instead (``failure`` says why)."""
        assert self._task is not None, "start() first"
        waiter = asyncio.create_task(self._recovered.wait())
        done, _ = await asyncio.wait({waiter, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if waiter not in done:
            waiter.cancel()
            self._task.result()  # re-raise a failure of the loop itself
        if not self.serving:
            raise Unavailable(f"region {self.region} is {self.lifecycle.value}: {self.failure}")

    async def promote(self, epoch: int) -> None:
        """A FOLLOWING actor becomes the writer under ``epoch`` (this node took the lease): it
        applies every entry left in the journal, then serves commands. Raises ``Unavailable``
        when it is not following (the caller starts a fresh actor instead)."""
        if not self.following:
            raise Unavailable(f"region {self.region} is {self.lifecycle.value}, not following")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._inbox.put_nowait(_Promote(epoch, future))
        await future

    async def stop(self) -> None:
        await self._stop_tail()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._snapshot_task is not None:
            with contextlib.suppress(Exception):
                await self._snapshot_task
        self._fail_pending(Unavailable(f"region {self.region} is shutting down"))
        if self.lifecycle is Lifecycle.READY:
            self._become(Lifecycle.RECOVERING)

    def step_down(self, why: str) -> None:
        """FENCED at once (this node does not own the region, or no longer): every waiting and
        later caller gets Unavailable and the loop ends after the turn in flight (whose append
        the journal's epoch fence refuses if a newer owner exists)."""
        self.failure = why
        self.state = RegionState(self.region)
        self._become(Lifecycle.FENCED)
        self._settle()
        self._fail_pending(Unavailable(f"region {self.region}: {why}"))

    async def submit(self, command: Command) -> list[Event]:
        """Apply ``command``; returns its events once they are durable.
        Raises ``Refused`` (nothing changed) or ``Unavailable`` (nothing changed, retry later;
        ``Overloaded`` when ``max_inbox`` items already wait)."""
        if not self.ready:
            raise Unavailable(f"region {self.region} is {self.lifecycle.value}")
        self._refuse_while_unwritable()
        self._admit()
        future: asyncio.Future[list[Event] | Refused] = asyncio.get_running_loop().create_future()
        self._inbox.put_nowait(_Request(command, future))
        outcome = await future
        if isinstance(outcome, Refused):
            raise outcome
        return outcome

    async def decide(
        self, make: Callable[[RegionState], Command], reply: Callable[[RegionState, list[Event]], T]
    ) -> T | Refused:
        """One trip through the actor for a command that needs the state to be built and to be
        answered: ``make(state)`` builds the command inside the turn (an exception it raises is
        re-raised here and nothing is applied), ``reply(state, events)`` runs right after the
        command applied (the state then holds exactly what this batch makes durable) and its
        result is returned once the batch is durable.

        A refusal is an answer, not a failure: the engine's ``Refused`` is *returned* (nothing
        changed), so a route answers it without an exception and its traceback travelling up
        the request's frames (the hot path of a contested time: most requests are refusals).
        Raises ``Unavailable`` like ``submit``, except that while the region reloads it waits
        (like ``query``: the reload answers it, or fails it when the journal stays unreachable).
        ``make`` and ``reply`` must be quick."""
        if self.lifecycle in (Lifecycle.FAILED, Lifecycle.FENCED):
            raise Unavailable(f"region {self.region} is {self.lifecycle.value}")
        self._refuse_while_unwritable()
        self._admit()
        future: asyncio.Future[T | Refused] = asyncio.get_running_loop().create_future()
        self._inbox.put_nowait(_Request(None, future, make, reply))
        return await future

    @property
    def settled(self) -> bool:
        """True while the state holds exactly what is durable (serving, and no batch between its
        first apply and its answers): ``fn(state)`` may be read right now (``query``)."""
        return not self._applying and self.lifecycle in (Lifecycle.READY, Lifecycle.FOLLOWING)

    @property
    def committing(self) -> bool:
        """True while a serving actor's batch is between its first apply and its answers: the
        state then holds everything durable plus what that batch does (or, if the batch fails,
        it is reloaded from what is durable). Something the state only ever gains (a patient's
        bookings, the idempotency keys) and that it does not hold now is not durable either."""
        return self._applying and self.lifecycle in (Lifecycle.READY, Lifecycle.FOLLOWING)

    async def query(self, fn: Callable[[RegionState], T]) -> T:
        """``fn(state)`` on durable state only, in the caller's task: at once while the actor is
        ``settled``, else right after the batch in flight is durable and answered (never behind
        the commands and reads queued after it: a read takes no turn of the actor's).
        ``fn`` must be quick and must not keep references to mutable state it returns.
        While recovering, waits for the recovery; raises ``Unavailable`` when FAILED or FENCED,
        ``Overloaded`` when the inbox is full."""
        if self.lifecycle in (Lifecycle.FAILED, Lifecycle.FENCED):
            raise Unavailable(f"region {self.region} is {self.lifecycle.value}")
        self._admit()
        loop = asyncio.get_running_loop()
        while self.lifecycle in (Lifecycle.READY, Lifecycle.FOLLOWING):
            if not self._applying:
                return fn(self.state)
            waiter: asyncio.Future[None] = loop.create_future()
            self._readers.append(waiter)
            await waiter  # woken when the batch is answered (or the turn failed)
        if self.lifecycle in (Lifecycle.FAILED, Lifecycle.FENCED) or self._task is None or self._task.done():
            raise Unavailable(f"region {self.region} is {self.lifecycle.value}")
        # recovering: answered by the first turn after the recovery (or failed with it)
        future: asyncio.Future[T] = loop.create_future()
        self._inbox.put_nowait(_Query(fn, future))
        return await future

    def _settle(self) -> bool:
        """The state is durable again (or replaced): wake every waiting reader. True if any."""
        self._applying = False
        readers, self._readers = self._readers, []
        for waiter in readers:
            if not waiter.done():
                waiter.set_result(None)
        return bool(readers)

    def _refuse_while_unwritable(self) -> None:
        """While the journal refuses writes (a full disk), answer at once: applying the command
        would only fail its append and reload the whole region. One command per ``WRITE_RETRY_S``
        goes through to find out whether writes work again."""
        failure = self.journal.write_failure()
        if failure is not None and time.monotonic() - self._write_failed_at < WRITE_RETRY_S:
            raise NotWritable(f"region {self.region}: the journal cannot write ({failure})")

    @property
    def overloaded(self) -> bool:
        """The inbox is full: commands and reads are answered ``Overloaded`` at once."""
        return self._inbox.qsize() >= self.max_inbox

    def _admit(self) -> None:
        if self.overloaded:
            self._overloaded.inc()
            raise Overloaded(f"region {self.region} is busy: {self.max_inbox} requests already wait")

    async def snapshot_now(self) -> None:
        """Take a snapshot at the next turn and wait until it is stored (tests, benchmarks).
        The copy is made inside the turn, between batches, so it holds exactly the state
        at ``position`` (never a batch still waiting for its append)."""
        captured = await self.query(lambda _state: self._capture_snapshot())
        self.snapshot_gate.writing += 1
        await self._write_snapshot(captured)

    # -- the loop -----------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._recover_with_backoff()
            self._last_snapshot_at = self.clock()
            self._recovered.set()
            if self.following:
                self._start_tail()
                self._publish(Reloaded(self.region))  # a replica replacing a writer: subscribers resync
            inbox = self._inbox
            while self.lifecycle in (Lifecycle.READY, Lifecycle.FOLLOWING):
                items: list[_Item] = []
                try:
                    # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a stop()'s cancellation.
                    first: _Item | None = None
                    try:
                        async with asyncio.timeout(self._idle_timeout()):
                            first = await inbox.get()
                    except TimeoutError:
                        pass
                    if first is not None:
                        items.append(first)
                    while len(items) < self.max_batch and not inbox.empty():
                        items.append(inbox.get_nowait())
                    self._queue_gauge.set(inbox.qsize())
                    if self.following:
                        await self._follow_turn(items)
                    else:
                        await self._turn(items)
                except Exception as exc:  # anything unexpected: 503 for the batch, reload
                    await self._on_turn_failure(items, exc)
                except asyncio.CancelledError:  # stop() mid-turn: nobody may wait forever
                    error = Unavailable(f"region {self.region} is shutting down")
                    for item in items:
                        if not item.future.done():
                            item.future.set_exception(error)
                    if self._applying:  # the batch is not durable: nobody reads it
                        self.state = RegionState(self.region)
                        self._become(Lifecycle.RECOVERING)
                    self._settle()
                    raise
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the loop itself broke: say so, never leave callers waiting
            self._fail(f"{type(exc).__name__} in the actor loop", exc)
        finally:
            self._recovered.set()

    def _idle_timeout(self) -> float:
        if self.following:
            return self.tick_interval_s * 5  # no ticks: the owner issues them
        deadline = self.state.next_deadline()
        if deadline is None:
            return self.tick_interval_s * 5
        return max(0.0, min(self.tick_interval_s * 5, deadline - self.clock() + 0.001))

    async def _turn(self, items: list[_Item]) -> None:
        # 1. queries see durable state only
        # Between two queries that ran past QUERY_SLICE_S the loop gets a turn (the state cannot
        # change meanwhile: only this task changes it), so a batch of heavy reads never holds
        # every other region and socket for its whole length.
        requests: list[_Request] = []
        slice_started = time.perf_counter()
        for item in items:
            if isinstance(item, _Apply | _Promote):  # left from following: nothing to do now
                if not item.future.done():
                    item.future.set_result(None)
                continue
            if isinstance(item, _Query):
                if not item.future.done():
                    try:
                        item.future.set_result(item.fn(self.state))
                    except Exception as exc:  # a bad query must not kill the actor
                        item.future.set_exception(exc)
                if time.perf_counter() - slice_started > QUERY_SLICE_S:
                    await asyncio.sleep(0)
                    slice_started = time.perf_counter()
            else:
                requests.append(item)

        # 2. apply (pure); ticks ride along when a deadline has passed. From here until the
        # batch is answered the state is ahead of the journal: readers wait (``query``).
        now_f = self.clock()
        now = int(now_f)
        state = self.state
        deadline = state.next_deadline()
        tick_events: list[Event] = []
        if deadline is not None and deadline <= now:
            self._applying = True
            tick_events = state.apply(Tick(), now)
        if not requests and not tick_events:
            if self._settle():
                await asyncio.sleep(0)
            if self._snapshot_due(now_f):
                self._start_snapshot()
            return
        self._applying = True
        outcomes: list[list[Event] | _Replied | Refused | Exception] = []
        batch_events: list[Event] = list(tick_events)
        kinds: dict[type, int] = {}
        refused: dict[str, int] = {}
        for req in requests:
            command = req.command
            if command is None:
                assert req.make is not None
                try:
                    command = req.make(state)
                except Exception as exc:  # the caller's own check (an unknown clinic): nothing applied
                    outcomes.append(exc)
                    continue
            kind = type(command)
            kinds[kind] = kinds.get(kind, 0) + 1
            try:
                events = state.apply(command, now)
            except Refused as refusal:
                refusal.__traceback__ = (
                    None  # an answer (set_result below): the code, not the engine's frames
                )
                refused[refusal.code] = refused.get(refusal.code, 0) + 1
                outcomes.append(refusal)
                continue
            # Any other exception is an engine bug that may have changed state half-way: it
            # propagates, the batch is answered 503 and the state reloaded (``_on_turn_failure``).
            batch_events.extend(events)
            if req.reply is None:
                outcomes.append(events)
                continue
            try:
                outcomes.append(_Replied(events, req.reply(state, events)))
            except Exception as exc:  # the command stands; its caller gets the reply's error
                outcomes.append(exc)
        changes = state.take_changes()
        self._count(kinds, refused, len(requests))

        # 3. one durable write for the whole batch
        if batch_events:
            payload = pack_events([to_record(e) for e in batch_events])
            started = time.perf_counter()
            try:
                position = await self.journal.append(self.region, self.epoch, payload)
            except (JournalError, OSError, ConnectionError):
                metrics.JOURNAL_FAILURES.labels(region=self.region).inc()
                raise
            self._append_hist.observe(time.perf_counter() - started)
            self.position = position
            self._wake_applied()
            self._events_since_snapshot += len(batch_events)

        # 4. acknowledge, then publish
        for req, outcome in zip(requests, outcomes, strict=True):
            if req.future.done():  # the caller went away; its command still happened
                continue
            if isinstance(outcome, Refused):  # an answer, handed over as a value (``decide``)
                req.future.set_result(outcome)
            elif isinstance(outcome, Exception):
                req.future.set_exception(outcome)
            elif isinstance(outcome, _Replied):
                req.future.set_result(outcome.value)
            else:
                req.future.set_result(outcome)
        if batch_events:
            committed = Committed(
                region=self.region,
                position=self.position,
                # the journal's clock when it wrote the batch, where it keeps one (Redis: every
                # node's replica publishes the same time), else ours now
                committed_at=self.journal.written_at(self.region, self.position) or time.time(),
                events=batch_events,
                changes=changes,
                counts=partial(self._counts, changes, now),
            )
            self._publish(committed)
        if self._snapshot_due(now_f):
            self._start_snapshot()
        self._settle()
        # Let everyone just answered, and every reader that waited, run on the durable state
        # before the next batch applies: a caller's read right after its command needs no
        # second journal round.
        await asyncio.sleep(0)

    def _count(self, kinds: dict[type, int], refused: dict[str, int], batch: int) -> None:
        """Metrics once per batch, not per command: the hot loop stays free of them."""
        for kind, n in kinds.items():
            counter = self._command_counters.get(kind)
            if counter is None:
                counter = metrics.COMMANDS.labels(type=kind.__name__, region=self.region)
                self._command_counters[kind] = counter
            counter.inc(n)
        for code, n in refused.items():
            refusals = self._refusal_counters.get(code)
            if refusals is None:
                refusals = metrics.REFUSALS.labels(code=str(code), region=self.region)
                self._refusal_counters[code] = refusals
            refusals.inc(n)
        self._batch_hist.observe(batch)

    def _counts(self, changes: list[Change], now: int) -> list[tuple[str, int, int, dict[str, int]]]:
        """Per clinic-day the batch touched: its free cells and the times each service can be
        booked at ``now`` (one clinic-day recounted each, ``engine.starts``)."""
        touched = {(clinic, day) for clinic, _resource, day, _cell, _n, _state in changes}
        free_count, starts = self.state.free_count, self.state.bookable_starts
        return [
            (clinic, day, free_count(clinic, day), starts(clinic, day, now))
            for clinic, day in sorted(touched)
        ]

    def _publish(self, item: Committed | Reloaded) -> None:
        for listener in self.listeners:
            try:
                listener(item)
            except Exception:  # a listener's bug must not stop the region
                log.exception("listener failed in region %s", self.region)

    # -- following another node's writes (a read replica) -------------------------------------

    def _start_tail(self) -> None:
        self._tail_task = asyncio.create_task(self._tail(self.position), name=f"region-tail-{self.region}")

    async def _stop_tail(self) -> None:
        task, self._tail_task = self._tail_task, None
        if task is None or task is asyncio.current_task():
            return
        await cancel_until_done(task)  # its redis-py read may swallow one cancel
        with contextlib.suppress(asyncio.CancelledError):
            task.result()  # the tail only ever ends by a cancel

    async def _tail(self, after: int) -> None:
        """Hand every journal entry after ``after`` to the actor, for ever; re-tail with backoff
        while the journal is unreachable. Waits while the inbox is half full (a long catch-up
        must not crowd queries out)."""
        delay, max_delay = self.retry_backoff_s
        while True:
            try:
                async for entry in self.journal.tail(self.region, after=after):
                    while self._inbox.qsize() > self.max_inbox // 2:  # noqa: ASYNC110 - a queue has no "below" event
                        await asyncio.sleep(0.01)
                    self._inbox.put_nowait(_Apply(entry))
                    after = entry.position
                    delay = self.retry_backoff_s[0]
            except Exception as exc:  # unreachable, or anything else: follow on from the same place
                log.warning(
                    "region %s: following the journal failed (%s); again in %.2fs",
                    self.region,
                    type(exc).__name__,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(max_delay, delay * 2)

    async def _follow_turn(self, items: list[_Item]) -> None:
        """A replica's turn: queries answered and entries applied in the order they came."""
        slice_started = time.perf_counter()
        for i, item in enumerate(items):
            if isinstance(item, _Query):
                if not item.future.done():
                    try:
                        item.future.set_result(item.fn(self.state))
                    except Exception as exc:
                        item.future.set_exception(exc)
            elif isinstance(item, _Apply):
                self._apply_entry(item.entry)
            elif isinstance(item, _Promote):
                await self._promote(item.epoch)
                item.future.set_result(None)
                for rest in items[i + 1 :]:  # anything after: the writer's turns take it from here
                    self._inbox.put_nowait(rest)
                return
            elif not item.future.done():
                item.future.set_exception(Unavailable(f"region {self.region} is following another node"))
            if time.perf_counter() - slice_started > QUERY_SLICE_S:
                await asyncio.sleep(0)
                slice_started = time.perf_counter()

    async def applied(self, position: int) -> None:
        """Return once this actor has applied journal ``position`` (callers bound the wait)."""
        if self.position >= position:
            return
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._applied_waiters.append((position, woken))
        try:
            await woken
        except BaseException:  # given up (timeout, cancelled): forget it
            self._applied_waiters = [w for w in self._applied_waiters if w[1] is not woken]
            raise

    def _wake_applied(self) -> None:
        if not self._applied_waiters:
            return
        waiting = []
        for position, woken in self._applied_waiters:
            if position > self.position:
                waiting.append((position, woken))
            elif not woken.done():
                woken.set_result(None)
        self._applied_waiters = waiting

    def _apply_entry(self, entry: Entry) -> None:
        """Evolve by one entry another node wrote and tell the listeners, as its writer did.
        A gap (history trimmed under a slow replica) reloads from the snapshot."""
        if entry.position <= self.position:
            return
        if entry.position != self.position + 1:
            log.warning(
                "region %s: replica at %d met entry %d; reloading", self.region, self.position, entry.position
            )
            self.state = RegionState(self.region)
            self._become(Lifecycle.RECOVERING)
            raise _Reload
        events = [from_record(record) for record in unpack_events(entry.payload)]
        evolve = self.state.evolve
        for event in events:
            evolve(event)
        changes = self.state.take_changes()
        self.position = entry.position
        self._wake_applied()
        if events:
            self._publish(
                Committed(
                    region=self.region,
                    position=entry.position,
                    committed_at=entry.written_at or time.time(),  # the owner's commit, not our apply
                    events=events,
                    changes=changes,
                    counts=partial(self._counts, changes, int(self.clock())),
                )
            )

    async def _promote(self, epoch: int) -> None:
        await self._stop_tail()
        async for entry in self.journal.read(self.region, after=self.position):
            self._apply_entry(entry)
        self.epoch = epoch
        self._follow = False
        self._events_since_snapshot = 0
        self._last_snapshot_at = self.clock()
        self._become(Lifecycle.READY)
        log.info("region %s: replica promoted at position %d, epoch %d", self.region, self.position, epoch)

    # -- failure and recovery -----------------------------------------------------------------

    async def _on_turn_failure(self, items: list[_Item], exc: Exception) -> None:
        """Answer every caller of the batch not yet answered with 503, drop the state (it may
        hold changes the journal does not) and reload it from snapshot + journal."""
        metrics.ACTOR_FAILURES.labels(region=self.region, kind=_failure_kind(exc)).inc()
        if isinstance(exc, JournalError | OSError | ConnectionError):
            log.error(
                "journal append failed in region %s (%s): answering the batch 503, reloading",
                self.region,
                type(exc).__name__,
            )
        else:
            log.exception("unexpected error in region %s: answering the batch 503, reloading", self.region)
        error: Unavailable = Unavailable(f"region {self.region}: not durable, retry later")
        failure = self.journal.write_failure()
        if failure is not None:
            self._write_failed_at = time.monotonic()
            error = NotWritable(f"region {self.region}: the journal cannot write ({failure})")
        for item in items:
            if not item.future.done():
                item.future.set_exception(error)
        self.state = RegionState(self.region)  # drop everything unacknowledged at once
        if isinstance(exc, StaleEpoch):
            # Another node owns the region now: it serves reads and writes; this one stops.
            self.failure = f"stale epoch {self.epoch}: a newer writer holds the region"
            self._become(Lifecycle.FENCED)
            self._settle()  # waiting readers: Unavailable
            log.error("region %s: %s; stopping writes", self.region, self.failure)
            self._fail_pending(error)
            self._publish(Reloaded(self.region))
            return
        self._become(Lifecycle.RECOVERING)
        self._settle()  # waiting readers wait for the recovery, as queries do
        self._fail_pending(error)
        await self._recover_with_backoff(error)
        if self.following:  # a replica that lost its place follows on from where it loaded
            await self._stop_tail()
            self._start_tail()
        self._publish(Reloaded(self.region))

    def _fail(self, why: str, exc: BaseException | None = None) -> None:
        """FAILED: no more turns; every waiting and future caller gets Unavailable."""
        self.failure = why
        self.state = RegionState(self.region)
        self._become(Lifecycle.FAILED)
        self._settle()
        log.error("region %s FAILED: %s (an operator must act: tandtid journal check)", self.region, why)
        if exc is not None and not isinstance(exc, JournalError):
            log.error("region %s failure detail", self.region, exc_info=exc)
        self._fail_pending(Unavailable(f"region {self.region} failed: {why}"))

    async def _recover_with_backoff(self, error: Exception | None = None) -> None:
        """Recover, retrying while the journal is unreachable. Damage or any other error
        FAILS the region (``lifecycle`` FAILED, ``failure`` says why) and returns."""
        delay, max_delay = self.retry_backoff_s
        while True:
            if error is not None:
                self._fail_pending(error)
            try:
                await self._recover()
                return
            except TRANSIENT as exc:
                log.warning(
                    "region %s cannot reach its journal (%s); retrying in %.2fs",
                    self.region,
                    type(exc).__name__,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(max_delay, delay * 2)
            except Exception as exc:
                self._fail(f"recovery failed: {type(exc).__name__}: {exc}", exc)
                return

    def _fail_pending(self, error: Exception) -> None:
        while not self._inbox.empty():
            item = self._inbox.get_nowait()
            if not item.future.done():
                item.future.set_exception(error)

    async def _recover(self) -> None:
        """Latest snapshot + replay of every later entry. Raises JournalError if unreachable.

        The cyclic GC is paused while the state is rebuilt (``server.runtime.gc_paused``: until
        the LAST concurrent recovery ends, so the first region to finish does not collect over
        the others' young objects): recovery allocates millions of long-lived objects and
        nothing cyclic, and collecting during it more than doubled ``python -m loadtest.bench
        recovery``. Other coroutines' garbage waits a few seconds at most."""
        with gc_paused():
            await self._rebuild()

    async def _rebuild(self) -> None:
        started = time.perf_counter()
        snapshot = await self.journal.load_snapshot(self.region)
        if snapshot is not None:
            state = RegionState.from_snapshot(unpack_snapshot(snapshot.payload))
            position = snapshot.position
        else:
            state = RegionState(self.region)
            position = 0
        replayed = 0
        evolve = state.evolve
        async for entry in self.journal.read(self.region, after=position):
            if entry.position != position + 1:
                # History the state needs is gone (trimmed, or cut by a repair) and no snapshot
                # covers it: replaying on would build a region that never was.
                raise CorruptJournal(
                    f"region {self.region}: entry {entry.position} follows position {position}; "
                    "the entries between are missing and no snapshot covers them"
                )
            for record in unpack_events(entry.payload):
                evolve(from_record(record))
                replayed += 1
            position = entry.position
        state.take_changes()
        self.state = state
        self.position = position
        self._wake_applied()
        self._events_since_snapshot = replayed
        if not self.fenced:
            self._become(Lifecycle.FOLLOWING if self._follow else Lifecycle.READY)
        log.info(
            "region %s recovered: snapshot at %d, %d events replayed, position %d, %.3fs",
            self.region,
            snapshot.position if snapshot else 0,
            replayed,
            position,
            time.perf_counter() - started,
        )

    # -- snapshots ----------------------------------------------------------------------------

    def _snapshot_due(self, now: float) -> bool:
        if self._snapshot_task is not None and not self._snapshot_task.done():
            return False
        if self._events_since_snapshot == 0 or self.snapshot_gate.writing:
            return False
        return (
            self._events_since_snapshot >= self.snapshot_every_events
            or now - self._last_snapshot_at >= self.snapshot_every_s
        )

    def _capture_snapshot(self) -> tuple[int, Callable[[], dict[str, Any]]]:
        """On the turn: the copy of what changes in place (rows, free counts, the bookings'
        mutable columns); the append-only rest is copied by ``_write_snapshot`` in a worker
        thread (``RegionState.capture_snapshot``)."""
        return self.position, self.state.capture_snapshot()

    def _start_snapshot(self) -> None:
        captured = self._capture_snapshot()
        self._events_since_snapshot = 0
        self._last_snapshot_at = self.clock()
        self.snapshot_gate.writing += 1  # at once: another actor's turn may come before the task runs
        self._snapshot_task = asyncio.create_task(self._write_snapshot(captured))

    async def _write_snapshot(self, captured: tuple[int, Callable[[], dict[str, Any]]]) -> None:
        """Pack and store ``captured``; the caller counted it in ``snapshot_gate.writing``."""
        position, finish = captured
        try:
            payload = await asyncio.to_thread(lambda: pack_snapshot(finish()))
            await self.journal.save_snapshot(self.region, Snapshot(position=position, payload=payload))
            del payload
            await asyncio.to_thread(release_free_memory)  # the copies just freed: not kept resident
        except (JournalError, OSError, ConnectionError) as exc:
            # the journal still has every event; the next snapshot will try again
            log.warning("snapshot of region %s at %d failed: %s", self.region, position, type(exc).__name__)
            self._events_since_snapshot = max(self._events_since_snapshot, 1)
        finally:
            self.snapshot_gate.writing -= 1


def _failure_kind(exc: BaseException) -> str:
    """A metric label for a failed turn: a fixed small set, never a message."""
    if isinstance(exc, StaleEpoch):
        return "stale_epoch"
    if isinstance(exc, JournalError | OSError | ConnectionError):
        return "journal"
    return "unexpected"
