"""Topic fan-out: subscribers per topic, sequence numbers, snapshots and one diff per batch.

Flow of one committed batch::

    RegionActor turn -> journal append durable -> Fanout.on_commit(Committed)   (sync, in the actor turn)
        -> pending diff items per topic (only topics somebody watches)
        -> flush (next loop iteration): ONE message per topic, seq + 1, handed to
           ``Sender.broadcast`` (encoded and framed once per encoding in use)

A flush normally covers exactly one batch; when the loop is busy it covers every batch
committed since the previous flush, so frame counts stay flat under load. Diffs carry
absolute values (free counts, cell states), so a diff that repeats a change a snapshot
already holds is harmless; that is what makes snapshots consistent: a snapshot is read and
its subscription registered in ONE ``regions.query`` call, inside the actor between
batches, and it carries the topic's current ``seq``; every later flush is ``seq + 1``.

A subscription marked ``resync`` gets no diffs until its fresh snapshot is queued; the
snapshot carries the topic's seq at that moment, so the client's sequence continues. A
reload of the region (``Reloaded``) or a new clinic (``ClinicRegistered``, which a diff
cannot express) bumps the topic's seq and resyncs every subscriber of it.

A resync the region cannot answer (recovering past its patience, FAILED, FENCED) is retried
with a backoff per connection (``RESYNC_BACKOFF_S``, doubling) that a ``Reloaded`` of the
region cuts short; it is logged once per region until a resync from it works again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from typing import Any

from engine.events import ClinicRegistered
from engine.queries import prepare_summaries
from engine.state import RegionState
from server.live.codec import Encoding, Frame, encode
from server.live.connection import Connection, Sender, Subscription
from server.live.topics import (
    DEFAULT_SERVICE,
    BadTopic,
    TopicName,
    cell_items_by_clinic,
    clinic_exists,
    count_items,
    snapshot_data,
)
from server.regions.actor import Committed, Reloaded
from server.regions.routing import SLICE_CLINICS, Regions

log = logging.getLogger("tandtid.hub")

MAX_CACHED_SNAPSHOTS = 16  # per topic: (range, encoding) combinations kept encoded
RESYNC_BACKOFF_S = (0.5, 30.0)  # first and longest wait before a failed resync is tried again


class Topic:
    """A topic's sequence number, subscribers and encoded-snapshot cache."""

    __slots__ = ("name", "seq", "subscribers", "snapshots")

    def __init__(self, name: TopicName) -> None:
        self.name = name
        self.seq = 0
        self.subscribers: dict[Connection, Subscription] = {}
        # (first_day, days, service, minute, encoding) -> encoded snapshot at the current seq and
        # state (a region's bookable times depend on the time too: kept at most for its minute)
        self.snapshots: dict[tuple[int, int, str, int, Encoding], Frame] = {}


class Fanout:
    """Every topic somebody watches, fed by the region actors' committed batches."""

    def __init__(self, regions: Regions, sender: Sender) -> None:
        self.regions = regions
        self.sender = sender
        self.topics: dict[str, Topic] = {}
        # topic key -> (earliest committed_at ms, data key, items) waiting for the next flush
        self._pending: dict[str, tuple[int, str, list[list[Any]]]] = {}
        self._flush_handle: asyncio.Handle | None = None
        self._resync_failing: set[str] = set()  # regions whose failed resync has been logged
        self._region_back: dict[str, asyncio.Event] = {}  # set by a Reloaded: retry resyncs now

    def stop(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None

    def subscriptions(self) -> int:
        return sum(len(t.subscribers) for t in self.topics.values())

    def watched_topics(self) -> int:
        return sum(1 for t in self.topics.values() if t.subscribers)

    # -- subscribing -------------------------------------------------------------------------

    async def subscribe(
        self, conn: Connection, name: TopicName, first_day: int, days: int, service: str = DEFAULT_SERVICE
    ) -> None:
        """Register ``conn`` for ``name`` and queue its snapshot, atomically inside the actor.
        Raises BadTopic NOT_FOUND (no such clinic), or UNAVAILABLE when the region cannot answer
        now (recovering, failed): then the subscription is registered all the same, marked for
        resync, and its snapshot follows once the region answers again."""

        def register(state: RegionState) -> bool:
            # inside the actor, between batches: the snapshot and the registration are atomic
            if conn.closed:
                return True
            if name.kind == "clinic" and not clinic_exists(state, name.ident):
                return False
            sub = self._register(conn, name, first_day, days, service)
            self.sender.push(conn, sub, "snapshot", self._snapshot_frame(state, sub, conn.encoding))
            return True

        try:
            if name.kind == "region":  # its counts of every clinic: built in slices when cold
                now = int(self.regions.actors[name.region].clock())
                await self.regions.prepare(
                    name.region,
                    lambda state: prepare_summaries(state, service, first_day, days, now, SLICE_CLINICS),
                )
            found = await self.regions.query(name.region, register)
        except Exception as exc:
            log.warning("subscribe to %s failed: %s", name.key, type(exc).__name__)
            if not conn.closed:
                # no diffs until its snapshot: the resync loop asks the region again until it answers
                self._register(conn, name, first_day, days, service).resync = True
                conn.resync_pending = True
                self.sender.kick(conn)
            raise BadTopic(
                "UNAVAILABLE", "the region is not available right now; its snapshot follows when it is back"
            ) from None
        if not found:
            raise BadTopic("NOT_FOUND", "no such clinic")

    def _register(
        self, conn: Connection, name: TopicName, first_day: int, days: int, service: str
    ) -> Subscription:
        topic = self.topics.get(name.key)
        if topic is None:
            topic = self.topics[name.key] = Topic(name)
        old = conn.subs.pop(name.key, None)
        if old is not None:
            self.forget(old)
        sub = Subscription(conn, topic, first_day, days, service)
        topic.subscribers[conn] = sub
        conn.subs[name.key] = sub
        return sub

    def unsubscribe(self, conn: Connection, name: TopicName) -> None:
        sub = conn.subs.pop(name.key, None)
        if sub is not None:
            self.forget(sub)

    def forget(self, sub: Subscription) -> None:
        topic, conn = sub.topic, sub.conn
        if topic.subscribers.get(conn) is sub:
            del topic.subscribers[conn]
        self.sender.unqueue(conn, sub)

    def detach(self, conn: Connection) -> None:
        """Every subscription of ``conn`` ends (it is closing or closed)."""
        for sub in conn.subs.values():
            topic = sub.topic
            if topic.subscribers.get(conn) is sub:
                del topic.subscribers[conn]
        conn.subs.clear()

    # -- snapshots and resync ----------------------------------------------------------------

    def _snapshot_frame(self, state: RegionState, sub: Subscription, encoding: Encoding) -> Frame:
        """Runs inside the actor. Subscribers asking for the same range share one encoded frame."""
        topic, first_day, days, service = sub.topic, sub.first_day, sub.days, sub.service
        now = int(self.regions.actors[topic.name.region].clock())
        key = (first_day, days, service if topic.name.kind == "region" else "", now // 60, encoding)
        frame = topic.snapshots.get(key)
        if frame is None:
            if len(topic.snapshots) >= MAX_CACHED_SNAPSHOTS:
                topic.snapshots.clear()
            message = {
                "type": "snapshot",
                "topic": topic.name.key,
                "seq": topic.seq,
                "data": snapshot_data(state, topic.name, first_day, days, service, now),
            }
            frame = topic.snapshots[key] = encode(message, encoding)
        return frame

    async def resync(self, conn: Connection) -> None:
        """Queue a fresh snapshot for each of ``conn``'s subscriptions marked ``resync``."""
        conn.resync_pending = False
        by_region: dict[str, list[Subscription]] = defaultdict(list)
        for sub in conn.subs.values():
            if sub.resync:
                by_region[sub.topic.name.region].append(sub)
        for region, subs in by_region.items():

            def resnapshot(state: RegionState, subs: list[Subscription] = subs) -> None:
                for sub in subs:
                    topic = sub.topic
                    if conn.closed or not sub.resync or topic.subscribers.get(conn) is not sub:
                        continue
                    if topic.name.kind == "clinic" and not clinic_exists(state, topic.name.ident):
                        # registered while the region was away, for a clinic it does not have
                        conn.subs.pop(topic.name.key, None)
                        self.forget(sub)
                        self.sender.control(
                            conn,
                            {
                                "type": "error",
                                "code": "NOT_FOUND",
                                "message": "no such clinic",
                                "topic": topic.name.key,
                            },
                        )
                        continue
                    sub.resync = False
                    self.sender.push(
                        conn,
                        sub,
                        "snapshot",
                        self._snapshot_frame(state, sub, conn.encoding),
                    )

            try:
                await self.regions.query(region, resnapshot)
            except Exception as exc:  # the region is away: retry after a backoff, or once it is back
                conn.resync_pending = True
                await self._resync_later(conn, region, exc)
                continue
            conn.resync_delay = 0.0
            if region in self._resync_failing:
                self._resync_failing.discard(region)
                log.info("resync from region %s works again", region)

    async def _resync_later(self, conn: Connection, region: str, exc: Exception) -> None:
        first, longest = RESYNC_BACKOFF_S
        conn.resync_delay = min(longest, max(first, conn.resync_delay * 2))
        if region not in self._resync_failing:
            self._resync_failing.add(region)
            log.warning(
                "resync from region %s failed (%s); retrying with backoff up to %.0f s (logged once)",
                region,
                type(exc).__name__,
                longest,
            )
        back = self._region_back.setdefault(region, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(conn.resync_delay):
                await back.wait()

    def _resync_topic(self, topic: Topic) -> None:
        """Every subscriber of ``topic`` gets a fresh snapshot (its seq continues, +1)."""
        topic.seq += 1
        topic.snapshots.clear()
        for conn, sub in topic.subscribers.items():
            self.sender.unqueue(conn, sub)
            sub.resync = True
            conn.resync_pending = True
            if not conn.queue:
                self.sender.kick(conn)

    # -- from the actors ---------------------------------------------------------------------

    def on_commit(self, item: Committed | Reloaded) -> None:
        """Called by a region actor right after a durable batch (or a reload). Never blocks."""
        if isinstance(item, Reloaded):
            self._on_reloaded(item.region)
            return
        topics = self.topics
        committed_ms = int(item.committed_at * 1000)
        if item.changes:
            topic = topics.get("region:" + item.region)
            if topic is not None:
                topic.snapshots.clear()  # cached snapshots no longer match state
                if topic.subscribers:  # counted only for a region somebody watches
                    self._add_pending(topic, committed_ms, "counts", count_items(item.counts()))
        if item.changes:
            for clinic, cells in cell_items_by_clinic(item.changes).items():
                topic = topics.get("clinic:" + clinic)
                if topic is not None:
                    topic.snapshots.clear()
                    if topic.subscribers:
                        self._add_pending(topic, committed_ms, "cells", cells)
        for event in item.events:
            if type(event) is ClinicRegistered:
                # a new clinic or new resources: a diff cannot say that, a snapshot can
                for key in ("region:" + item.region, "clinic:" + str(event.clinic.get("id", ""))):
                    topic = topics.get(key)
                    if topic is not None:
                        self._pending.pop(key, None)
                        self._resync_topic(topic)

    def _add_pending(self, topic: Topic, committed_ms: int, data_key: str, items: list[list[Any]]) -> None:
        pending = self._pending.get(topic.name.key)
        if pending is None:
            self._pending[topic.name.key] = (committed_ms, data_key, items)
        else:
            pending[2].extend(items)
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        pending, self._pending = self._pending, {}
        for key, (committed_ms, data_key, items) in pending.items():
            topic = self.topics.get(key)
            if topic is None or not topic.subscribers:
                continue
            topic.seq += 1
            topic.snapshots.clear()
            message = {
                "type": "diff",
                "topic": key,
                "seq": topic.seq,
                "committed_at": committed_ms,
                "data": {data_key: items},
            }
            self.sender.broadcast(
                ((conn, sub) for conn, sub in topic.subscribers.items() if not sub.resync), "diff", message
            )

    def _on_reloaded(self, region: str) -> None:
        back = self._region_back.pop(region, None)
        if back is not None:
            back.set()  # resyncs waiting out a backoff try again now
        for key in [k for k, t in self.topics.items() if t.name.region == region]:
            self._pending.pop(key, None)
            topic = self.topics[key]
            if topic.subscribers:
                self._resync_topic(topic)
