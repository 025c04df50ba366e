"""The end-of-run check: no slot sold twice, and the server holds exactly what users were told.

During a run every user writes what the server *told* it into the module-level ``LEDGER``
(one process: run Locust headless without ``--processes``):

- ``booked(view)``    a 201 to ``POST /api/bookings`` (the booking id, its clinic, its date)
- ``cancelled(view)`` a 200 to ``POST /api/bookings/{id}/cancel``
- ``moved(view)``     a 200 to ``POST /api/bookings/{id}/reschedule`` (only its date matters here)
- ``pending_*``       a booking or cancellation whose answer never arrived (connection lost,
                      greenlet stopped mid-request): resolved at the end, see ``resolve_pending``.

``check(base_url, ledger, admin_email=…, admin_password=…)`` then signs in as an admin, reads
``GET /api/admin/bookings`` for every clinic the run touched over every date it touched, and
reports:

- ``double_bookings``: two *booked* bookings on one resource whose times overlap (must be none);
- ``missing``: bookings users were told succeeded (and not told cancelled) that the server does
  not hold as booked;
- ``unexpected``: bookings of the run's patients the server holds as booked that no user was told
  about (or was told were cancelled).

``ok`` is true only when all three are empty. Ids only: no names or e-mail addresses are kept.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx

BOOKED = "booked"
MAX_ADMIN_DAYS = 90


@dataclass(frozen=True)
class PendingBook:
    """A ``POST /api/bookings`` sent with an Idempotency-Key whose answer never arrived."""

    token: str
    body: dict[str, Any]
    key: str
    reason: str = "unanswered"  # or "interrupted": the user was stopped mid-request


@dataclass(frozen=True)
class PendingCancel:
    """A cancellation whose answer never arrived: the server's word on the booking is final."""

    booking_id: str


@dataclass
class Ledger:
    """What the server told the users. Safe to share between greenlets (and threads)."""

    patients: set[str] = field(default_factory=set)
    confirmed: dict[str, str] = field(default_factory=dict)  # booking id -> clinic
    cancelled: set[str] = field(default_factory=set)
    dates: dict[str, set[dt.date]] = field(default_factory=dict)  # clinic -> dates touched
    pending_books: list[PendingBook] = field(default_factory=list)
    pending_cancels: list[PendingCancel] = field(default_factory=list)
    refusals: Counter[str] = field(default_factory=Counter)  # expected refusals (lost races) by code
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def reset(self) -> None:
        with self._lock:
            self.patients.clear()
            self.confirmed.clear()
            self.cancelled.clear()
            self.dates.clear()
            self.pending_books.clear()
            self.pending_cancels.clear()
            self.refusals.clear()

    def patient(self, user_id: str) -> None:
        with self._lock:
            self.patients.add(user_id)

    def touched(self, clinic: str, start: str) -> None:
        """Remember a clinic and the date of an ISO start time, so the check reads that day."""
        with self._lock:
            self.dates.setdefault(clinic, set()).add(dt.date.fromisoformat(start[:10]))

    def booked(self, view: dict[str, Any]) -> None:
        self.touched(view["clinic"], view["start"])
        with self._lock:
            self.confirmed[view["id"]] = view["clinic"]

    def cancelled_booking(self, view: dict[str, Any]) -> None:
        self.touched(view["clinic"], view["start"])
        with self._lock:
            self.cancelled.add(view["id"])

    def moved(self, view: dict[str, Any]) -> None:
        self.touched(view["clinic"], view["start"])

    def refused(self, code: str) -> None:
        with self._lock:
            self.refusals[code] += 1

    def pending_book(self, pending: PendingBook) -> None:
        with self._lock:
            self.pending_books.append(pending)

    def pending_cancel(self, pending: PendingCancel) -> None:
        with self._lock:
            self.pending_cancels.append(pending)

    def expected_booked(self) -> set[str]:
        with self._lock:
            return set(self.confirmed) - self.cancelled


LEDGER = Ledger()


@dataclass
class InvariantReport:
    ok: bool
    clinics_checked: int
    confirmed: int
    cancelled: int
    expected_booked: int
    server_booked: int
    pending_resolved: dict[str, int]
    refusals: dict[str, int]
    double_bookings: list[tuple[str, str]]
    missing: list[str]
    unexpected: list[str]
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "clinics_checked": self.clinics_checked,
            "confirmed": self.confirmed,
            "cancelled": self.cancelled,
            "expected_booked": self.expected_booked,
            "server_booked": self.server_booked,
            "pending_resolved": self.pending_resolved,
            "refusals": self.refusals,
            "double_bookings": [list(pair) for pair in self.double_bookings],
            "missing": self.missing,
            "unexpected": self.unexpected,
            "error": self.error,
        }


def double_bookings(bookings: Iterable[dict[str, Any]]) -> list[tuple[str, str]]:
    """Pairs of *booked* bookings on the same resource whose [start, end) times overlap."""
    by_resource: dict[str, list[tuple[dt.datetime, dt.datetime, str]]] = {}
    for b in bookings:
        if b["status"] != BOOKED:
            continue
        start, end = dt.datetime.fromisoformat(b["start"]), dt.datetime.fromisoformat(b["end"])
        by_resource.setdefault(b["resource"], []).append((start, end, b["id"]))
    clashes: list[tuple[str, str]] = []
    for runs in by_resource.values():
        runs.sort()
        latest_end, latest_id = None, ""
        for start, end, booking_id in runs:
            if latest_end is not None and start < latest_end:
                clashes.append((latest_id, booking_id))
            if latest_end is None or end > latest_end:
                latest_end, latest_id = end, booking_id
    return clashes


def resolve_pending(client: httpx.Client, ledger: Ledger) -> dict[str, int]:
    """Settle bookings whose answer never arrived by sending them again with the same
    Idempotency-Key: the server answers with the booking the first attempt made (or makes it
    now), either way a told success. A 409/410 means no booking exists for that key."""
    resolved: Counter[str] = Counter()
    with ledger._lock:
        pending, ledger.pending_books = ledger.pending_books, []
    for p in pending:
        reply = client.post(
            "/api/bookings",
            json=p.body,
            headers={"Authorization": f"Bearer {p.token}", "Idempotency-Key": p.key},
        )
        if reply.status_code == 201:
            ledger.booked(reply.json()["booking"])
        elif reply.status_code not in (409, 410):
            reply.raise_for_status()
        resolved[f"{p.reason} {reply.status_code}"] += 1
    return dict(resolved)


def admin_token(client: httpx.Client, email: str, password: str) -> str:
    reply = client.post("/api/auth/login", json={"email": email, "password": password})
    reply.raise_for_status()
    token: str = reply.json()["token"]
    return token


def server_bookings(client: httpx.Client, token: str, dates: dict[str, set[dt.date]]) -> list[dict[str, Any]]:
    """Every booking (booked and cancelled) of the given clinics over the dates touched there."""
    out: list[dict[str, Any]] = []
    for clinic, seen in sorted(dates.items()):
        first, last = min(seen), max(seen)
        day = first
        while day <= last:
            span = min(MAX_ADMIN_DAYS, (last - day).days + 1)
            reply = client.get(
                "/api/admin/bookings",
                headers={"Authorization": f"Bearer {token}"},
                params={"clinic": clinic, "from": day.isoformat(), "days": span},
            )
            reply.raise_for_status()
            out.extend(reply.json()["bookings"])
            day += dt.timedelta(days=span)
    return out


def check(
    base_url: str, ledger: Ledger, *, admin_email: str, admin_password: str, timeout_s: float = 30.0
) -> InvariantReport:
    """Compare the ledger with the server (see the module docstring). Never raises: a failure
    to reach the server is a failed report with ``error`` set."""
    try:
        with httpx.Client(base_url=base_url, timeout=timeout_s) as client:
            resolved = resolve_pending(client, ledger)
            token = admin_token(client, admin_email, admin_password)
            with ledger._lock:
                dates = {clinic: set(days) for clinic, days in ledger.dates.items()}
                patients = set(ledger.patients)
                confirmed, cancelled = dict(ledger.confirmed), set(ledger.cancelled)
                uncertain = {p.booking_id for p in ledger.pending_cancels}
                refusals = dict(ledger.refusals)
            bookings = server_bookings(client, token, dates)
    except (httpx.HTTPError, KeyError, ValueError) as exc:
        return InvariantReport(
            False,
            0,
            len(ledger.confirmed),
            len(ledger.cancelled),
            0,
            0,
            {},
            dict(ledger.refusals),
            [],
            [],
            [],
            error=f"{type(exc).__name__}: {exc}",
        )
    expected = set(confirmed) - cancelled
    held = {b["id"] for b in bookings if b["status"] == BOOKED and b.get("patient") in patients}
    # A cancellation whose answer was lost may or may not have happened: the server decides.
    missing = sorted((expected - held) - uncertain)
    unexpected = sorted((held - expected) - uncertain)
    clashes = double_bookings(bookings)
    return InvariantReport(
        ok=not (missing or unexpected or clashes),
        clinics_checked=len(dates),
        confirmed=len(confirmed),
        cancelled=len(cancelled),
        expected_booked=len(expected),
        server_booked=len(held),
        pending_resolved=resolved,
        refusals=refusals,
        double_bookings=clashes,
        missing=missing,
        unexpected=unexpected,
    )
