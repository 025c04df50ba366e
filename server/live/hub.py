"""The live hub: the WebSocket endpoint ``/ws`` and what feeds it, put together.

Its parts, one concept each::

    endpoint.LiveEndpoint   the handshake and the client's ops (subscribe, unsubscribe, ping)
    fanout.Fanout           topics, sequence numbers, snapshots, one diff per topic per batch
    me_events.MeEvents      a signed-in patient's own booking events (topic "me")
    connection.Sender       per-connection bounded queues, backpressure, slow consumers closed
    topics, codec, protocol topic names and data, wire encodings, uvicorn's protocol for direct writes

The hub listens to every region actor: ``on_commit`` runs inside the actor's turn right after
a batch is durable and hands it to the fan-out and the patients' events; it never blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from starlette.websockets import WebSocket

from server.live.connection import Connection, Sender
from server.live.endpoint import Identify, LiveEndpoint
from server.live.fanout import Fanout, Topic
from server.live.me_events import MeEvents
from server.regions.actor import Committed, Reloaded
from server.regions.routing import Regions
from server.settings import Settings

log = logging.getLogger("tandtid.hub")


class Hub:
    """Create once per app (it registers itself with ``regions``), mount ``endpoint`` at /ws,
    call ``start()`` on startup and ``await stop()`` on shutdown. ``identify`` names the
    signed-in patient of a handshake (``server.identity.auth.patient_of``); without it every
    connection is anonymous. ``session_live`` says whether a session id still lives: every
    ``session_sweep_s`` the sockets of sessions ended elsewhere are closed (``sign_out`` closes
    those of a session ended in this process at once); it is asked in a worker thread, since it
    may read the account store."""

    def __init__(
        self,
        regions: Regions,
        settings: Settings,
        *,
        identify: Identify | None = None,
        max_subscriptions: int = 64,
        stall_s: float = 10.0,
        max_strikes: int = 3,
        max_queued_bytes: int | None = None,
        sweep_s: float = 1.0,
        close_timeout_s: float = 5.0,
        session_live: Callable[[str], bool] | None = None,
        session_sweep_s: float = 5.0,
    ) -> None:
        self.regions = regions
        self.settings = settings
        self.session_live = session_live
        self.session_sweep_s = session_sweep_s
        self._session_sweeper: asyncio.Task[None] | None = None
        self.sender = Sender(
            detach=self._detach,
            resync=self._resync,
            max_queue=settings.ws_send_buffer,
            max_queued_bytes=max_queued_bytes or max(1 << 20, 32 * settings.max_ws_frame),
            max_strikes=max_strikes,
            stall_s=stall_s,
            sweep_s=sweep_s,
            close_timeout_s=close_timeout_s,
        )
        self.fanout = Fanout(regions, self.sender)
        self.me = MeEvents(regions, self.sender)
        self._endpoint = LiveEndpoint(
            regions,
            settings,
            self.sender,
            self.fanout,
            self.me,
            identify=identify,
            max_subscriptions=max_subscriptions,
        )
        regions.add_listener(self.on_commit)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the stall sweeper (needs a running loop). Idempotent."""
        self.sender.start()
        if self.session_live is not None and self._session_sweeper is None:
            self._session_sweeper = asyncio.get_running_loop().create_task(self._sweep_sessions())

    async def stop(self) -> None:
        """Stop listening and close every connection with 1001 (going away)."""
        if self._session_sweeper is not None:
            self._session_sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._session_sweeper
            self._session_sweeper = None
        self.regions.remove_listener(self.on_commit)
        self.fanout.stop()
        await self.sender.stop()

    async def endpoint(self, websocket: WebSocket) -> None:
        """The ASGI WebSocket endpoint (a method, so Starlette's ``WebSocketRoute`` wraps it)."""
        await self._endpoint(websocket)

    def sign_out(self, *, session: str | None = None, patient: str | None = None) -> int:
        """A session ended here (sign-out), or every session of ``patient`` (password change):
        close their sockets now (``MeEvents.sign_out``)."""
        return self.me.sign_out(session=session, patient=patient)

    async def _sweep_sessions(self) -> None:
        while True:
            await asyncio.sleep(self.session_sweep_s)
            sessions = self.me.sessions()
            if not sessions:
                continue
            try:
                # in a worker thread: the store is read for every session its memory lost (all of
                # them after a drop), which must not hold up the event loop
                ended = await asyncio.to_thread(self._ended, sessions)
            except Exception as exc:  # the session store is away: keep the sockets, look again later
                log.warning(
                    "session sweep failed (%s); retrying in %.0f s", type(exc).__name__, self.session_sweep_s
                )
                continue
            self.me.sweep(ended)

    def _ended(self, sessions: set[str]) -> set[str]:
        session_live = self.session_live
        assert session_live is not None
        return {s for s in sessions if not session_live(s)}

    # -- from the actors ---------------------------------------------------------------------

    def on_commit(self, item: Committed | Reloaded) -> None:
        """Called by a region actor right after a durable batch (or a reload). Never blocks."""
        self.fanout.on_commit(item)
        if isinstance(item, Committed):
            self.me.on_commit(item)

    # -- between the parts -------------------------------------------------------------------

    def _detach(self, conn: Connection) -> None:
        self.fanout.detach(conn)
        self.me.unwatch(conn)

    async def _resync(self, conn: Connection) -> None:
        await self.fanout.resync(conn)

    # -- what the tests, the bench and /api/admin read ---------------------------------------

    @property
    def connections(self) -> set[Connection]:
        return self.sender.connections

    @property
    def topics(self) -> dict[str, Topic]:
        return self.fanout.topics

    @property
    def max_queue(self) -> int:
        return self.sender.max_queue

    @property
    def frames_sent(self) -> int:
        return self.sender.frames_sent

    @property
    def dropped(self) -> int:
        return self.sender.dropped

    @property
    def resynced(self) -> int:
        return self.sender.resynced

    def stats(self) -> dict[str, int]:
        sender = self.sender
        return {
            "connections": len(sender.connections),
            "subscriptions": self.fanout.subscriptions(),
            "topics": self.fanout.watched_topics(),
            "frames_sent": sender.frames_sent,
            "dropped": sender.dropped,
            "resynced": sender.resynced,
            "queued": sum(len(c.queue) for c in sender.connections),
            "queue_high_water": sender.queue_high_water,
            "queue_bound": sender.max_queue,
        }
