"""All 21 region actors of one process, and the routing of commands to them.

Every id a command carries names its region (``AB-c12``, ``AB-b…``), so routing needs no
lookup: ``region_of(id)`` picks the actor.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from engine.commands import (
    Block,
    Book,
    Cancel,
    Command,
    EditClinic,
    JoinWaitlist,
    LeaveWaitlist,
    MarkNoShow,
    OpenAhead,
    OpenDays,
    PlaceHold,
    PutResource,
    RegisterClinic,
    ReleaseHold,
    Reschedule,
    RetireResource,
    SetDayHours,
    SetHours,
    SuspendClinic,
    Tick,
    Unblock,
)
from engine.errors import Refused
from engine.model import REGIONS, region_of
from engine.state import RegionState
from persistence.journal import Journal
from server.regions.actor import Committed, RegionActor, Reloaded, SnapshotGate, Unavailable

T = TypeVar("T")
OwnershipListener = Callable[[str, bool], Awaitable[None] | None]  # (region, owned now)


@dataclass(frozen=True, slots=True)
class Gathered(Generic[T]):
    """What ``Regions.query_available`` found: the items, and the regions whose part is absent."""

    items: list[T]
    missing: list[str]

    def body(self, key: str, items: list[Any]) -> dict[str, Any]:
        """``{key: items}``, plus ``missing_regions`` when some region could not answer."""
        return {key: items, "missing_regions": self.missing} if self.missing else {key: items}


NOT_OWNED = "owned by another node (its lease)"
SLICE_CLINICS = 8  # clinics asked per turn while a cold cache is built (up to ~1.5 ms each when booked up)
# clinics asked per turn while a cold search ranking is built: a clinic's first free start stops at
# the first fit (~8 us each for Stockholm at 30%, bench queries): 8 a turn made a search of the
# region wait for ~140 turns of the loop; 32 take 0.3-0.6 ms
SEARCH_SLICE_CLINICS = 32


# True once the current request (its task) has handed a command to an actor here: from then on a
# NotOwned (the region moved meanwhile) must not send the whole request to another node again.
SUBMITTED: contextvars.ContextVar[bool] = contextvars.ContextVar("tandtid_submitted", default=False)


class NotOwned(Unavailable):
    """Another node owns ``region`` (its lease): the HTTP edge forwards the request there
    (``server.http.forwarding``), or answers 503 when it cannot."""

    def __init__(self, region: str) -> None:
        super().__init__(f"region {region} is {NOT_OWNED}")
        self.region = region


def command_region(command: Command) -> str:
    """The region a command belongs to, from the id it carries."""
    match command:
        case RegisterClinic():
            return command.clinic.region
        case EditClinic() | SetHours() | SetDayHours() | SuspendClinic():
            return region_of(command.clinic)
        case PutResource():
            return region_of(command.resource.clinic)
        case RetireResource():
            return region_of(command.resource)
        case OpenAhead():
            return command.region
        case OpenDays() | PlaceHold() | Block() | Unblock():
            return region_of(command.resource)
        case Book() | Cancel() | Reschedule() | MarkNoShow():
            return region_of(command.booking_id)
        case JoinWaitlist() | LeaveWaitlist():
            return region_of(command.entry_id)
        case ReleaseHold():
            return region_of(command.hold_id)
        case Tick():
            raise ValueError("a Tick belongs to every region; the actors issue their own")
    raise TypeError(f"not a command: {command!r}")


class Regions:
    def __init__(
        self,
        journal: Journal,
        *,
        clock: Callable[[], float] = time.time,
        epoch: int = 1,
        regions: tuple[str, ...] | None = None,
        **actor_options: Any,
    ) -> None:
        self.journal = journal
        self._listeners: list[Callable[[Committed | Reloaded], None]] = []
        self._ownership_listeners: list[OwnershipListener] = []
        # one snapshot written at a time in the process (SnapshotGate)
        self._actor_options: dict[str, Any] = {
            "clock": clock,
            "snapshot_gate": SnapshotGate(),
            **actor_options,
        }
        codes = regions if regions is not None else tuple(r.code for r in REGIONS)
        self.actors: dict[str, RegionActor] = {code: self._new_actor(code, epoch) for code in codes}
        self.owned: set[str] = set(codes)  # the regions this node writes (all of them without leases)
        self.leased = False  # True once leases decide what this node owns (``stand_by``)

    def _new_actor(self, region: str, epoch: int) -> RegionActor:
        return RegionActor(
            region, self.journal, epoch=epoch, listeners=self._listeners, **self._actor_options
        )

    # -- ownership by lease (several nodes): see server.regions.lease ------------------------

    async def stand_by(self) -> None:
        """Instead of ``start()`` when leases decide: every region starts as a read replica
        (following the journal another node writes); ``take`` promotes it."""
        self.leased = True
        self.owned.clear()
        await asyncio.gather(*(actor.start(wait=False, follow=True) for actor in self.actors.values()))

    def add_ownership_listener(self, fn: OwnershipListener) -> None:
        """``fn(region, owned)`` after this node takes a region (True) or gives it up (False):
        what runs once per region in the cluster (the consumers) starts and stops with it."""
        self._ownership_listeners.append(fn)

    async def _tell_ownership(self, region: str, owned: bool) -> None:
        for fn in list(self._ownership_listeners):
            result = fn(region, owned)
            if inspect.isawaitable(result):
                await result

    async def take(self, region: str, epoch: int) -> None:
        """This node now owns ``region`` under ``epoch``: its replica applies what is left in the
        journal and serves commands (the lease keeps being renewed meanwhile). A replica that
        cannot (failed, fenced) is replaced by a fresh actor that recovers in the background."""
        actor = self.actors[region]
        try:
            await actor.wait_ready()
            await actor.promote(epoch)
        except Unavailable:
            actor.step_down(NOT_OWNED)
            await actor.stop()
            actor = self._new_actor(region, epoch)
            self.actors[region] = actor
            await actor.start(wait=False)
        self.owned.add(region)
        await self._tell_ownership(region, True)

    async def give_up(self, region: str, epoch: int) -> None:
        """This node no longer owns ``region``: it stops writing it at once, and a fresh replica
        follows the new owner's writes (its subscribers resync once it has loaded)."""
        actor = self.actors[region]
        if actor.epoch == epoch and region in self.owned:
            actor.step_down(NOT_OWNED)
            self.owned.discard(region)
            await actor.stop()
            replica = self._new_actor(region, epoch)
            self.actors[region] = replica
            await replica.start(wait=False, follow=True)
            await self._tell_ownership(region, False)

    def add_listener(self, fn: Callable[[Committed | Reloaded], None]) -> None:
        self._listeners.append(fn)

    def remove_listener(self, fn: Callable[[Committed | Reloaded], None]) -> None:
        if fn in self._listeners:
            self._listeners.remove(fn)

    async def start(self, wait: bool = True) -> None:
        """Recover every region (in parallel). ``wait=False`` returns at once; /ready tells.
        ``wait``: until each region is READY or has FAILED (a damaged journal stops that
        region only: the others serve, /ready names it)."""
        await asyncio.gather(*(actor.start(wait=False) for actor in self.actors.values()))
        if wait:
            outcomes = await asyncio.gather(
                *(actor.wait_ready() for actor in self.actors.values()), return_exceptions=True
            )
            for outcome in outcomes:
                if isinstance(outcome, BaseException) and not isinstance(outcome, Unavailable):
                    raise outcome

    async def stop(self) -> None:
        await asyncio.gather(*(actor.stop() for actor in self.actors.values()))

    def actor(self, region_or_id: str) -> RegionActor:
        """The actor of a region code or of any id that carries one. KeyError if none."""
        actor = self.actors.get(region_or_id)
        if actor is None:
            try:
                actor = self.actors[region_of(region_or_id)]
            except (ValueError, KeyError):
                raise KeyError(region_or_id) from None
        return actor

    def _owned_actor(self, region_or_id: str) -> RegionActor:
        """The actor, if this node owns its region; ``NotOwned`` when another node does."""
        actor = self.actor(region_or_id)
        if self.leased and actor.region not in self.owned:
            raise NotOwned(actor.region)
        return actor

    def _reading_actor(self, region_or_id: str) -> RegionActor:
        """The actor to read from: the owner's or a replica here; ``NotOwned`` when neither
        serves here now (a replica still loading: the owner answers)."""
        actor = self.actor(region_or_id)
        if self.leased and not actor.serving and actor.region not in self.owned:
            raise NotOwned(actor.region)
        return actor

    async def submit(self, command: Command) -> list[Any]:
        actor = self._owned_actor(command_region(command))
        SUBMITTED.set(True)
        return await actor.submit(command)

    async def decide(
        self,
        region: str,
        make: Callable[[RegionState], Command],
        reply: Callable[[RegionState, list[Any]], T],
    ) -> T | Refused:
        """``RegionActor.decide`` in ``region``: build, apply and answer in one trip (a refusal
        is returned, not raised)."""
        actor = self._owned_actor(region)
        SUBMITTED.set(True)
        return await actor.decide(make, reply)

    async def query(self, region: str, fn: Callable[[RegionState], T]) -> T:
        return await self._reading_actor(region).query(fn)

    async def prepare(self, region: str, step: Callable[[RegionState], bool]) -> None:
        """``step`` on the region's state again and again, letting others run in between, until
        it says True: a cold cache of a big region (the map's counts, a search's ranking: every
        clinic asked) built ``SLICE_CLINICS`` clinics at a time (``engine.queries.prepare_summaries``,
        ``engine.search.prepare``) instead of in one long turn of the event loop. Then the read
        itself costs what changed."""
        while True:
            if await self.query(region, step):
                return
            await asyncio.sleep(0)  # a turn for everyone else; not a wait for anything

    async def query_all(
        self, fn: Callable[[RegionState], list[T]], *, absent: Callable[[RegionState], bool] | None = None
    ) -> list[T]:
        """``fn`` on every region (each on its actor's or replica's durable state), the lists
        joined. Raises ``Unavailable`` when any region cannot answer: for what must see every
        region (is an idempotency key used anywhere?). To show what can be shown, ``query_available``.

        ``absent(state)``: True when ``fn`` finds nothing in ``state`` and what it looks for is
        only ever added (a patient's bookings, idempotency keys). A region in the middle of a
        commit where it is True answers ``[]`` at once (nothing durable can hold what the state
        with the batch in flight does not: ``RegionActor.committing``) instead of being waited
        for; without it every read of all regions waits for the slowest commit under way."""
        chunks = await self._query_each(fn, absent)
        for chunk in chunks:
            if isinstance(chunk, BaseException):
                raise chunk
        return [item for chunk in chunks for item in chunk]  # type: ignore[union-attr]

    async def query_available(
        self, fn: Callable[[RegionState], list[T]], *, absent: Callable[[RegionState], bool] | None = None
    ) -> Gathered[T]:
        """``fn`` on every region that can answer (each on its durable state), the lists joined,
        and the regions that could not (FAILED, FENCED, overloaded), sorted. For things that can
        live in any region: a patient's bookings, holds, wait-list entries -- one failed region
        must not hide those in the twenty others. ``absent`` as for ``query_all``."""
        items: list[T] = []
        missing: list[str] = []
        for code, chunk in zip(self.actors, await self._query_each(fn, absent), strict=True):
            if isinstance(chunk, Unavailable):
                missing.append(code)
            elif isinstance(chunk, BaseException):
                raise chunk
            else:
                items.extend(chunk)
        return Gathered(items, sorted(missing))

    async def _query_each(
        self, fn: Callable[[RegionState], list[T]], absent: Callable[[RegionState], bool] | None = None
    ) -> list[list[T] | BaseException]:
        """``fn`` in every region, in ``actors`` order: read at once where the actor is settled
        (or committing, where ``absent`` says there is nothing to find), the others awaited
        together (each a result or the exception it raised; ``Unavailable`` for a region that
        cannot answer)."""
        codes = list(self.actors)
        out: list[list[T] | BaseException] = []
        waiting: dict[int, str] = {}
        for code in codes:
            try:
                actor = self._reading_actor(code)
                if actor.overloaded or not actor.settled:
                    if (
                        not actor.overloaded
                        and absent is not None
                        and actor.committing
                        and absent(actor.state)
                    ):
                        out.append([])
                        continue
                    waiting[len(out)] = code
                    out.append(Unavailable(code))  # until awaited below
                    continue
                out.append(fn(actor.state))
            except Exception as exc:
                out.append(exc)
        if waiting:
            found = await asyncio.gather(
                *(self._query_in(code, fn) for code in waiting.values()), return_exceptions=True
            )
            for i, value in zip(waiting, found, strict=True):
                out[i] = value
        return out

    async def _query_in(self, region: str, fn: Callable[[RegionState], T]) -> T:
        return await self._reading_actor(region).query(fn)

    def state_of(self, region: str) -> tuple[RegionState, int] | None:
        """The region's state as its actor has it now and the journal position it holds at
        least, for readers on this process's event loop (the journal consumers); None while the
        actor is not serving (recovering, fenced, failed). Read it at once: the actor replaces
        the object when it reloads."""
        actor = self.actors.get(region)
        return (actor.state, actor.position) if actor is not None and actor.ready else None

    def position_of(self, region: str) -> int:
        """The journal position this node's actor of ``region`` has applied (0: none here)."""
        actor = self.actors.get(region)
        return actor.position if actor is not None else 0

    async def wait_applied(self, region: str, position: int, timeout_s: float) -> bool:
        """Wait until this node's actor of ``region`` has applied ``position`` (a replica follows
        the owner's journal within milliseconds); False if it has not within ``timeout_s``.
        Woken by the actor when its position moves, not polled."""
        actor = self.actors.get(region)
        if actor is None:
            return False
        try:
            await asyncio.wait_for(actor.applied(position), timeout_s)
        except TimeoutError:
            return False
        return True

    def ready(self) -> bool:
        return all(actor.serving for actor in self.actors.values())

    def not_ready(self) -> list[str]:
        return [code for code, actor in self.actors.items() if not actor.serving]

    async def journal_ok(self) -> bool:
        try:
            return await asyncio.wait_for(self.journal.ping(), timeout=2.0)
        except Exception:
            return False
