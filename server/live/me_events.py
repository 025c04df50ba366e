"""Patients' own events on the live socket: ``{"type": "event", "topic": "me", "data": ...}``.

A signed-in patient's connections (``Connection.patient``, the opaque user id) are told when
one of their bookings is confirmed, cancelled or moved, and when a wait-list offer holds a
time for them. The booking and the hold are shown exactly as the HTTP API shows them
(``server.http.views``): no personal data, not even the patient id.

Such a socket lives as long as the session it was opened with: ``sign_out`` closes it at once
(4401) when the session ends here (sign-out, password change), and ``sweep`` closes those
whose session ended elsewhere (another node, expiry). The page reconnects, signed out.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from engine.events import Booked, Cancelled, OfferMade, Rescheduled
from server.http.views import booking_view, hold_view
from server.live.connection import CLOSE_SIGNED_OUT, Connection, Sender
from server.regions.actor import Committed
from server.regions.routing import Regions

_KINDS = {Booked: "booking_confirmed", Cancelled: "booking_cancelled", Rescheduled: "booking_moved"}


class MeEvents:
    """The signed-in patients' connections, told about their own bookings and offers."""

    def __init__(self, regions: Regions, sender: Sender) -> None:
        self.regions = regions
        self.sender = sender
        self.watchers: dict[str, set[Connection]] = {}

    def watch(self, conn: Connection) -> None:
        if conn.patient is not None:
            self.watchers.setdefault(conn.patient, set()).add(conn)

    def unwatch(self, conn: Connection) -> None:
        if conn.patient is None:
            return
        watchers = self.watchers.get(conn.patient)
        if watchers is not None:
            watchers.discard(conn)
            if not watchers:
                del self.watchers[conn.patient]

    def sign_out(self, *, session: str | None = None, patient: str | None = None) -> int:
        """Close the sockets opened with ``session``, or every socket of ``patient`` (all of its
        sessions ended); returns how many."""
        if patient is not None:
            doomed = list(self.watchers.get(patient, ()))
        else:
            doomed = [c for conns in self.watchers.values() for c in conns if c.session == session]
        for conn in doomed:
            self.sender.shut(conn, CLOSE_SIGNED_OUT)  # detaches: no "me" event reaches it any more
        return len(doomed)

    def sessions(self) -> set[str]:
        """The sessions the watched sockets were opened with (to ask the store which still live)."""
        return {c.session for conns in self.watchers.values() for c in conns if c.session is not None}

    def sweep(self, ended: Collection[str]) -> int:
        """Close the sockets opened with a session of ``ended``; returns how many."""
        doomed = [c for conns in self.watchers.values() for c in conns if c.session in ended]
        for conn in doomed:
            self.sender.shut(conn, CLOSE_SIGNED_OUT)
        return len(doomed)

    def on_commit(self, item: Committed) -> None:
        """Runs inside the region actor's turn (right after the batch is durable)."""
        if not self.watchers:
            return
        actor = self.regions.actors.get(item.region)
        if actor is None:
            return
        state = actor.state  # safe: on_commit runs inside the actor's turn
        for event in item.events:
            if isinstance(event, OfferMade):
                # a wait-list offer: the patient's new hold (gone already if released in the same batch)
                hold = state.hold(event.hold_id)
                watchers = self.watchers.get(event.patient)
                if hold is None or not watchers:
                    continue
                data: dict[str, Any] = {"kind": "offer", "hold": hold_view(hold, state.clinics[hold.clinic])}
            else:
                kind = _KINDS.get(type(event))
                if kind is None:
                    continue
                booking = state.booking(event.booking_id)  # type: ignore[union-attr]
                if booking is None:
                    continue
                watchers = self.watchers.get(booking.patient)
                if not watchers:
                    continue
                data = {"kind": kind, "booking": booking_view(booking, state.clinics[booking.clinic])}
            message = {"type": "event", "topic": "me", "data": data}
            self.sender.broadcast(((conn, None) for conn in watchers), "event", message)
