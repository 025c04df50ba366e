"""Unit tests: a Hypothesis state machine drives RegionState against a small reference model (no network).

The model is a dict of cell -> owner. For every command it predicts the outcome (success
or the exact refusal code) from the documented rules; the engine must agree. After every
step: no cell belongs to two bookings, bookings' cells are BOOKED and holds' cells HELD,
free counts equal a recount, a viewer fed only ``take_changes()`` sees the same rows, and
replaying every event so far gives a byte-identical packed snapshot.

Wait-list: the model keeps the line in join order and follows the engine's offers; every
``OfferMade`` must take only FREE/BUFFER cells, go to an entry that fits, and no entry that
joined earlier (waiting, patient holding nothing) may fit the offered cells: an offer always
goes to the earliest matching entry.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import msgpack
from hypothesis import event as note_event
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from slot_world import MONDAY, epoch, make_clinic, make_resources

from engine.calendar import cell_epoch, day_of_epoch, earliest_epoch, iso_weekday
from engine.cells import BLOCKED, BOOKED, BUFFER, CLOSED, FREE, HELD
from engine.commands import (
    Block,
    Book,
    Cancel,
    Command,
    JoinWaitlist,
    LeaveWaitlist,
    OpenDays,
    Party,
    PlaceHold,
    RegisterClinic,
    ReleaseHold,
    Reschedule,
    SetDayHours,
    SetHours,
    Tick,
    Unblock,
)
from engine.errors import Refused
from engine.events import Booked, Event, HoldReleased, OfferMade
from engine.model import OpeningHours
from engine.state import RegionState
from engine.waitlist import MAX_ENTRIES_PER_PATIENT

CLINIC = "AB-c1"
RES = ("AB-c1-r1", "AB-c1-r2")
DAYS = (MONDAY, MONDAY + 1)
SERVICE_CELLS = {"child_checkup": 1, "checkup": 2, "filling": 4}
PATIENTS = ("p1", "p2", "p3")
OPEN = set(range(32, 48)) | set(range(52, 68))  # 08-12, 13-17 in 15-minute cells
BUFFER_S = 600

cells_st = st.integers(28, 70)
DAY_HOURS = (None, (), ((9 * 60, 11 * 60),), ((8 * 60, 20 * 60),), ((13 * 60, 15 * 60), (16 * 60, 17 * 60)))
RESOURCE_WEEKS: tuple[OpeningHours | None, ...] = (
    None,  # the clinic's week again
    {},  # closed every day
    {2: ((8 * 60, 12 * 60),)},  # Tuesday mornings only
    {1: ((13 * 60, 17 * 60),), 2: ((7 * 60, 19 * 60),)},
)
Key = tuple[str, int, int]


class SlotMachine(RuleBasedStateMachine):
    @initialize()
    def setup(self) -> None:
        self.now = epoch(MONDAY, 7)
        self.state = RegionState("AB")
        self.journal: list[Event] = []
        self.seq = 0
        self._pending: list[Event] = []
        setup: list[Command] = [
            RegisterClinic(
                make_clinic(
                    buffer_minutes=BUFFER_S // 60, cancel_notice_hours=0, max_bookings_per_patient=100
                ),
                make_resources(n=2),
            ),
            *(OpenDays(r, MONDAY, 2) for r in RES),
        ]
        for command in setup:
            self.journal.extend(self.state.apply(command, self.now))
        # the model
        self.cells: dict[Key, Any] = {(r, d, c): "F" for r in RES for d in DAYS for c in OPEN}
        self.holds: dict[str, dict[str, Any]] = {}
        self.bookings: dict[str, dict[str, Any]] = {}
        self.idem: dict[tuple[str, str], tuple[str, str]] = {}
        self.entries: dict[str, dict[str, Any]] = {}  # join order
        self.viewer = {(r, d): bytearray(96) for r in RES for d in DAYS}
        # the hours: the clinic's own days (day -> cells), each resource's own week (weekday ->
        # cells; None: the clinic's, 08-12 and 13-17 on both days), each resource's own days
        self.hours: dict[str, Any] = {"clinic_day": {}, "week": {}, "res_day": {}}
        self._feed_viewer()

    # ------------------------------------------------------------ helpers

    def _id(self, prefix: str) -> str:
        self.seq += 1
        return f"AB-{prefix}{self.seq}"

    def _feed_viewer(self) -> None:
        for _clinic, res, day, first, n, value in self.state.take_changes():
            self.viewer[(res, day)][first : first + n] = bytes([value]) * n

    def _run(self, command: Command, expected: str | None) -> list[Event] | None:
        """Apply; the outcome must be ``expected`` (None: success, else a refusal code).
        The rule updates the model for the command itself; ``_follow_offers`` then follows the
        offers the same step made."""
        before = msgpack.packb(self.state.to_snapshot())
        try:
            events = self.state.apply(command, self.now)
        except Refused as refused:
            assert refused.code == expected, (command, refused.code, expected)
            assert msgpack.packb(self.state.to_snapshot()) == before
            assert self.state.take_changes() == []
            return None
        assert expected is None, (command, "accepted", expected)
        self.journal.extend(events)
        self._pending = events
        return events

    def _fits(self, entry: dict[str, Any], day: int, cell: int, k: int) -> bool:
        return (
            entry["first_day"] <= day < entry["first_day"] + entry["days"]
            and cell * 15 >= entry["from"]
            and (cell + k) * 15 <= entry["to"]
            and cell_epoch(day, cell, 15) >= self.now
        )

    def _holds_something(self, patient: str) -> bool:
        return any(h["patient"] == patient for h in self.holds.values())

    def _follow_offers(self) -> None:
        events, self._pending = self._pending, []
        for e in events:
            if not isinstance(e, OfferMade):
                continue
            note_event("offer made")
            span = [(e.resource, e.day, c) for c in range(e.cell, e.cell + e.cells)]
            assert all(
                self.cells[key] == "F" or (isinstance(self.cells[key], tuple) and self.cells[key][0] == "U")
                for key in span
            ), ("offer took cells that were not FREE/BUFFER", e)
            entry = self.entries[e.entry_id]
            assert (
                entry["offer"] == ""
                and entry["patient"] == e.patient
                and not self._holds_something(e.patient)
            )
            assert SERVICE_CELLS[entry["service"]] == e.cells and self._fits(entry, e.day, e.cell, e.cells)
            for earlier_id, earlier in self.entries.items():
                if earlier_id == e.entry_id:
                    break
                k = SERVICE_CELLS[earlier["service"]]
                assert not (
                    earlier["offer"] == ""
                    and not self._holds_something(earlier["patient"])
                    and k <= e.cells
                    and self._fits(earlier, e.day, e.cell, k)
                ), ("an earlier entry fits the offered time", earlier_id, e)
            entry["offer"] = e.hold_id
            self.holds[e.hold_id] = dict(
                patient=e.patient,
                res=e.resource,
                day=e.day,
                cell=e.cell,
                k=e.cells,
                exp=e.expires_at,
                service=e.service,
                entry=e.entry_id,
            )
            self._set(e.resource, e.day, e.cell, e.cells, ("H", e.hold_id))

    def _hold_gone(self, hold_id: str) -> dict[str, Any]:
        """The model side of a hold leaving: an offer's entry ends with it."""
        h = self.holds.pop(hold_id)
        if h.get("entry"):
            self.entries.pop(h["entry"], None)
        return h

    def _run_check(self, res: str, day: int, cell: int, k: int, own: set[Key]) -> str | None:
        if cell < 0 or cell + k > 96:
            return "OUTSIDE_HOURS"
        keys = [(res, day, c) for c in range(cell, cell + k)]
        if any(key not in self.cells for key in keys):
            return "OUTSIDE_HOURS"
        if cell_epoch(day, cell, 15) < self.now:
            return "IN_PAST"
        if any(self.cells[key] != "F" and key not in own for key in keys):
            return "SLOT_TAKEN"
        return None

    def _set(self, res: str, day: int, cell: int, k: int, value: Any) -> None:
        for c in range(cell, cell + k):
            self.cells[(res, day, c)] = value

    @staticmethod
    def _span(res: str, day: int, cell: int, k: int) -> set[Key]:
        return {(res, day, c) for c in range(cell, cell + k)}

    # ------------------------------------------------------------ rules

    @rule(
        patient=st.sampled_from(PATIENTS),
        res=st.sampled_from(RES),
        service=st.sampled_from(list(SERVICE_CELLS)),
        day=st.sampled_from(DAYS),
        cell=cells_st,
        ttl=st.integers(60, 1800),
    )
    def place_hold(self, patient: str, res: str, service: str, day: int, cell: int, ttl: int) -> None:
        k = SERVICE_CELLS[service]
        old = next((h for h, v in self.holds.items() if v["patient"] == patient), None)
        own = set() if old is None else self._span(*(self.holds[old][f] for f in ("res", "day", "cell", "k")))
        expected = self._run_check(res, day, cell, k, own)
        hold_id = self._id("h")
        if self._run(PlaceHold(hold_id, patient, res, service, day, cell, ttl), expected) is None:
            return
        if old is not None:
            h = self._hold_gone(old)
            self._set(h["res"], h["day"], h["cell"], h["k"], "F")
        self.holds[hold_id] = dict(
            patient=patient, res=res, day=day, cell=cell, k=k, exp=self.now + ttl, service=service
        )
        self._set(res, day, cell, k, ("H", hold_id))
        self._follow_offers()

    @rule(pick=st.integers(0, 10), wrong=st.booleans())
    def release_hold(self, pick: int, wrong: bool) -> None:
        if not self.holds:
            self._run(ReleaseHold("AB-nope", "p1"), "NOT_FOUND")
            return
        hold_id = sorted(self.holds)[pick % len(self.holds)]
        h = self.holds[hold_id]
        patient = "p9" if wrong else h["patient"]
        if self._run(ReleaseHold(hold_id, patient), "NOT_YOURS" if wrong else None) is not None:
            self._hold_gone(hold_id)
            self._set(h["res"], h["day"], h["cell"], h["k"], "F")
            self._follow_offers()

    def _booked(self, booking_id: str, patient: str, res: str, day: int, cell: int, k: int) -> None:
        self.bookings[booking_id] = dict(patient=patient, res=res, day=day, cell=cell, k=k, status="booked")
        self._set(res, day, cell, k, ("B", booking_id))

    @rule(pick=st.integers(0, 10), wrong=st.booleans())
    def book_from_hold(self, pick: int, wrong: bool) -> None:
        if not self.holds:
            self._run(Book(self._id("b"), "p1", hold_id="AB-nope"), "NOT_FOUND")
            return
        hold_id = sorted(self.holds)[pick % len(self.holds)]
        h = self.holds[hold_id]
        expected = (
            "NOT_YOURS"
            if wrong
            else "HOLD_EXPIRED"
            if h["exp"] <= self.now
            else "IN_PAST"
            if cell_epoch(h["day"], h["cell"], 15) < self.now
            else None
        )
        booking_id = self._id("b")
        if (
            self._run(Book(booking_id, "p9" if wrong else h["patient"], hold_id=hold_id), expected)
            is not None
        ):
            self._hold_gone(hold_id)
            self._booked(booking_id, h["patient"], h["res"], h["day"], h["cell"], h["k"])

    @rule(
        patient=st.sampled_from(PATIENTS),
        res=st.sampled_from(RES),
        service=st.sampled_from(list(SERVICE_CELLS)),
        day=st.sampled_from(DAYS),
        cell=cells_st,
        key=st.sampled_from(["", "", "k1", "k2"]),
        fingerprint=st.sampled_from(["f1", "f2"]),
    )
    def book_direct(
        self, patient: str, res: str, service: str, day: int, cell: int, key: str, fingerprint: str
    ) -> None:
        k = SERVICE_CELLS[service]
        booking_id = self._id("b")
        command = Book(
            booking_id, patient, res, service, day, cell, idempotency_key=key, fingerprint=fingerprint
        )
        seen = self.idem.get((patient, key)) if key else None
        if seen is not None:
            events = self._run(command, None if seen[1] == fingerprint else "INVALID")
            assert events in (None, [])
            if events == []:
                assert self.state.idempotent_booking(patient, key) == self.state.booking(seen[0])
            return
        if self._run(command, self._run_check(res, day, cell, k, set())) is not None:
            self._booked(booking_id, patient, res, day, cell, k)
            if key:
                self.idem[(patient, key)] = (booking_id, fingerprint)

    @rule(pick=st.integers(0, 20), party=st.sampled_from(list(Party)), honest=st.booleans())
    def cancel(self, pick: int, party: Party, honest: bool) -> None:
        if not self.bookings:
            self._run(Cancel("AB-nope", party, "p1"), "NOT_FOUND")
            return
        booking_id = sorted(self.bookings)[pick % len(self.bookings)]
        b = self.bookings[booking_id]
        requester = {Party.PATIENT: b["patient"], Party.CLINIC: CLINIC, Party.ADMIN: "admin"}[party]
        expected: str | None = None
        if not honest and party is Party.PATIENT:
            requester, expected = "p9", "NOT_YOURS"
        elif not honest and party is Party.CLINIC:
            requester, expected = "AB-c2", "NOT_FOUND"
        elif b["status"] != "booked":
            expected = "INVALID"
        elif party is Party.PATIENT and cell_epoch(b["day"], b["cell"], 15) < self.now:
            expected = "TOO_LATE"
        if self._run(Cancel(booking_id, party, requester), expected) is None:
            return
        b["status"] = "cancelled"
        value = "F" if party is Party.PATIENT else ("U", self.now + BUFFER_S)
        self._set(b["res"], b["day"], b["cell"], b["k"], value)
        self._follow_offers()

    @rule(pick=st.integers(0, 20), res=st.sampled_from(RES), day=st.sampled_from(DAYS), cell=cells_st)
    def reschedule(self, pick: int, res: str, day: int, cell: int) -> None:
        if not self.bookings:
            return
        booking_id = sorted(self.bookings)[pick % len(self.bookings)]
        b = self.bookings[booking_id]
        if b["status"] != "booked":
            expected: str | None = "INVALID"
        elif cell_epoch(b["day"], b["cell"], 15) < self.now:
            expected = "TOO_LATE"
        else:
            expected = self._run_check(
                res, day, cell, b["k"], self._span(b["res"], b["day"], b["cell"], b["k"])
            )
        if self._run(Reschedule(booking_id, b["patient"], res, day, cell), expected) is None:
            return
        self._set(b["res"], b["day"], b["cell"], b["k"], "F")
        b.update(res=res, day=day, cell=cell)
        self._set(res, day, cell, b["k"], ("B", booking_id))
        self._follow_offers()

    @rule(res=st.sampled_from(RES), day=st.sampled_from(DAYS), cell=cells_st, n=st.integers(1, 6))
    def block(self, res: str, day: int, cell: int, n: int) -> None:
        keys = [(res, day, c) for c in range(cell, cell + n)]
        values = [self.cells.get(key) for key in keys]
        expected = (
            "OUTSIDE_HOURS"
            if cell + n > 96
            else "IN_PAST"
            if earliest_epoch(day, cell, 15) < self.now
            else "SLOT_TAKEN"
            if any(isinstance(v, tuple) and v[0] in "HB" for v in values)
            else None
        )
        if self._run(Block(res, day, cell, n), expected) is not None:
            for key, v in zip(keys, values, strict=True):
                if v == "F" or (isinstance(v, tuple) and v[0] == "U"):
                    self.cells[key] = "X"

    @rule(res=st.sampled_from(RES), day=st.sampled_from(DAYS), cell=cells_st, n=st.integers(1, 6))
    def unblock(self, res: str, day: int, cell: int, n: int) -> None:
        """BLOCKED cells go FREE inside the hours the day has now, CLOSED outside (a past day
        keeps the cells of the hours it had, so those may differ)."""
        if self._run(Unblock(res, day, cell, n), "OUTSIDE_HOURS" if cell + n > 96 else None) is not None:
            open_now = self._open(self.hours, res, day)
            for c in range(cell, cell + n):
                if self.cells.get((res, day, c)) == "X":
                    if c in open_now:
                        self.cells[(res, day, c)] = "F"
                    else:
                        del self.cells[(res, day, c)]
            self._follow_offers()

    @rule(advance=st.integers(0, 3600))
    def tick(self, advance: int) -> None:
        self.now += advance
        events = self._run(Tick(), None)
        assert events is not None
        expired = {h for h, v in self.holds.items() if v["exp"] <= self.now}
        gone = {e.hold_id for e in events if e.KIND in ("HoldExpired", "OfferExpired")}  # type: ignore[union-attr]
        assert gone == expired
        for hold_id in sorted(expired):
            h = self._hold_gone(hold_id)
            self._set(h["res"], h["day"], h["cell"], h["k"], "F")
        for key, v in self.cells.items():
            if isinstance(v, tuple) and v[0] == "U" and v[1] <= self.now:
                self.cells[key] = "F"
        self._follow_offers()
        deadline = self.state.next_deadline()
        pending = [h["exp"] for h in self.holds.values()] + [
            v[1] for v in self.cells.values() if isinstance(v, tuple) and v[0] == "U"
        ]
        if deadline is not None:
            assert deadline > self.now
        if pending:
            assert deadline is not None and deadline <= min(pending)

    @rule(
        patient=st.sampled_from(PATIENTS),
        town=st.booleans(),
        service=st.sampled_from(list(SERVICE_CELLS)),
        day=st.sampled_from(DAYS),
        days=st.sampled_from([1, 2, 2]),
        start=st.sampled_from([8 * 60, 8 * 60, 9 * 60, 13 * 60]),
        length=st.sampled_from([120, 240, 600, 600]),
    )
    def join(
        self, patient: str, town: bool, service: str, day: int, days: int, start: int, length: int
    ) -> None:
        entry_id = self._id("w")
        to = min(start + length, 24 * 60)
        expected = (
            "IN_PAST"
            if day + days <= day_of_epoch(self.now)
            else "LIMIT_REACHED"
            if sum(e["patient"] == patient for e in self.entries.values()) >= MAX_ENTRIES_PER_PATIENT
            else None
        )
        command = JoinWaitlist(
            entry_id, patient, "" if town else CLINIC, "0180" if town else "", service, day, days, start, to
        )
        if self._run(command, expected) is None:
            return
        self.entries[entry_id] = dict(
            patient=patient, service=service, first_day=day, days=days, offer="", **{"from": start, "to": to}
        )
        self._follow_offers()

    join_more = join  # joins and freed time twice as often: the line is what this machine is about

    @rule(
        res=st.sampled_from(RES),
        service=st.sampled_from(list(SERVICE_CELLS)),
        day=st.sampled_from(DAYS),
        cell=cells_st,
        party=st.sampled_from(list(Party)),
    )
    def free_time(self, res: str, service: str, day: int, cell: int, party: Party) -> None:
        """Another patient books a time and it is cancelled at once: time the line may get."""
        k = SERVICE_CELLS[service]
        if self._run_check(res, day, cell, k, set()) is not None:
            return
        booking_id = self._id("b")
        self._run(Book(booking_id, "p0", res, service, day, cell), None)
        self._booked(booking_id, "p0", res, day, cell, k)
        requester = {Party.PATIENT: "p0", Party.CLINIC: CLINIC, Party.ADMIN: "admin"}[party]
        self._run(Cancel(booking_id, party, requester), None)
        self.bookings[booking_id]["status"] = "cancelled"
        self._set(res, day, cell, k, "F" if party is Party.PATIENT else ("U", self.now + BUFFER_S))
        self._follow_offers()

    @rule(pick=st.integers(0, 10), wrong=st.booleans())
    def leave(self, pick: int, wrong: bool) -> None:
        if not self.entries:
            self._run(LeaveWaitlist("AB-nope", "p1"), "NOT_FOUND")
            return
        entry_id = sorted(self.entries)[pick % len(self.entries)]
        entry = self.entries[entry_id]
        events = self._run(
            LeaveWaitlist(entry_id, "p9" if wrong else entry["patient"]), "NOT_YOURS" if wrong else None
        )
        if events is None:
            return
        del self.entries[entry_id]
        if entry["offer"]:
            assert isinstance(events[1], HoldReleased)
            h = self._hold_gone(entry["offer"])
            self._set(h["res"], h["day"], h["cell"], h["k"], "F")
        self._follow_offers()

    # ------------------------------------------------------------ hours (the clinic's and a resource's own)

    def _open(self, hours: dict[str, Any], res: str, day: int) -> set[int]:
        """The cells ``res`` is open on ``day`` under ``hours`` (the model of the documented rule:
        its own day, else its own week within the clinic's day, else the clinic's day, else the
        clinic's week)."""
        own = hours["res_day"].get((res, day))
        if own is not None:
            return own
        special = hours["clinic_day"].get(day)
        week = hours["week"].get(res)
        if week is not None:
            mine: set[int] = week.get(iso_weekday(day), set())
            return mine & special if special is not None else mine
        return special if special is not None else OPEN

    def _change_hours(
        self, command: SetHours | SetDayHours, hours: dict[str, Any], refusal: str | None, cancel: str
    ) -> None:
        """Apply an hours change whose hours model afterwards is ``hours`` (``refusal``: the code
        expected before bookings are looked at). Bookings of ``command``'s resources starting from
        ``now`` on opened days from today that the new hours leave out refuse it with their list
        unless listed in ``cancel``; holds they leave out are released; then every opened day from
        today takes the new hours (BOOKED and HELD stay, FREE/BLOCKED/BUFFER outside close)."""
        today = day_of_epoch(self.now)
        days = [d for d in DAYS if d >= today]
        resources = [command.resource] if command.resource else list(RES)

        def outside(res: str, day: int, cell: int, k: int) -> bool:
            return not set(range(cell, cell + k)) <= self._open(hours, res, day)

        stranded = sorted(
            bid
            for bid, b in self.bookings.items()
            if b["status"] == "booked"
            and b["res"] in resources
            and b["day"] in days
            and cell_epoch(b["day"], b["cell"], 15) >= self.now
            and outside(b["res"], b["day"], b["cell"], b["k"])
        )
        released = {
            h
            for h, v in self.holds.items()
            if v["res"] in resources and v["day"] in days and outside(v["res"], v["day"], v["cell"], v["k"])
        }
        if stranded:
            note_event(f"{type(command).__name__} with bookings in the way")
        listed = {"none": [], "in_the_way": stranded, "too_many": [*stranded, "AB-b-unknown"]}[cancel]
        expected = refusal or (
            "HAS_BOOKINGS" if set(stranded) - set(listed) else "INVALID" if cancel == "too_many" else None
        )
        command = replace(command, cancel=tuple(listed))
        before = msgpack.packb(self.state.to_snapshot())
        try:
            events = self.state.apply(command, self.now)
        except Refused as refused:
            assert refused.code == expected, (command, refused.code, expected)
            if expected == "HAS_BOOKINGS":
                assert sorted(refused.bookings) == stranded
            assert msgpack.packb(self.state.to_snapshot()) == before
            assert self.state.take_changes() == []
            return
        assert expected is None, (command, "accepted", expected)
        self.journal.extend(events)
        self._pending = events
        note_event(f"{type(command).__name__} of {'a resource' if command.resource else 'the clinic'}")
        assert {e.hold_id for e in events if isinstance(e, HoldReleased)} == released
        for hold_id in sorted(released):
            h = self._hold_gone(hold_id)
            self._set(h["res"], h["day"], h["cell"], h["k"], "F")
        for bid in stranded:
            b = self.bookings[bid]
            b["status"] = "cancelled"
            self._set(b["res"], b["day"], b["cell"], b["k"], "F")
        self.hours = hours
        for r in resources:
            for day in days:
                open_now = self._open(hours, r, day)
                for c in range(96):
                    key = (r, day, c)
                    v = self.cells.get(key)
                    if c in open_now and v is None:
                        self.cells[key] = "F"
                    elif c not in open_now and (v in ("F", "X") or (isinstance(v, tuple) and v[0] == "U")):
                        del self.cells[key]
        self._follow_offers()

    @staticmethod
    def _minutes_to_cells(hours: tuple[tuple[int, int], ...]) -> set[int]:
        return {c for a, b in hours for c in range(96) if a <= c * 15 and c * 15 + 15 <= b}

    @rule(
        day=st.sampled_from(DAYS),
        hours=st.sampled_from(DAY_HOURS),
        cancel=st.sampled_from(["none", "in_the_way", "too_many"]),
    )
    def set_day_hours(self, day: int, hours: tuple[tuple[int, int], ...] | None, cancel: str) -> None:
        """A day's own hours (a holiday, a short day, a late evening, back to the week's):
        bookings left outside refuse it with their list unless cancelled in the same step."""
        new = {**self.hours, "clinic_day": dict(self.hours["clinic_day"])}
        if hours is None:
            new["clinic_day"].pop(day, None)
        else:
            new["clinic_day"][day] = self._minutes_to_cells(hours)
        refusal = "IN_PAST" if day < day_of_epoch(self.now) else None
        self._change_hours(SetDayHours(CLINIC, day, hours), new, refusal, cancel)

    @rule(
        res=st.sampled_from((*RES, "AB-c1-r9")),
        week=st.sampled_from(RESOURCE_WEEKS),
        cancel=st.sampled_from(["none", "in_the_way", "in_the_way", "too_many"]),
    )
    def set_resource_week(self, res: str, week: OpeningHours | None, cancel: str) -> None:
        """A resource's own weekly hours (Tuesday mornings only, closed, back to the clinic's): its
        own bookings left outside refuse it, the other resource's never count."""
        new = {**self.hours, "week": dict(self.hours["week"])}
        new["week"][res] = None if week is None else {d: self._minutes_to_cells(w) for d, w in week.items()}
        refusal = "NOT_FOUND" if res not in RES else None
        self._change_hours(SetHours(CLINIC, week, resource=res), new, refusal, cancel)

    @rule(
        res=st.sampled_from(RES),
        day=st.sampled_from(DAYS),
        hours=st.sampled_from(DAY_HOURS),
        cancel=st.sampled_from(["none", "in_the_way", "too_many"]),
    )
    def set_resource_day(
        self, res: str, day: int, hours: tuple[tuple[int, int], ...] | None, cancel: str
    ) -> None:
        """A resource's own day (leave, a late evening, back to the clinic's day)."""
        new = {**self.hours, "res_day": dict(self.hours["res_day"])}
        if hours is None:
            new["res_day"].pop((res, day), None)
        else:
            new["res_day"][(res, day)] = self._minutes_to_cells(hours)
        refusal = "IN_PAST" if day < day_of_epoch(self.now) else None
        self._change_hours(SetDayHours(CLINIC, day, hours, resource=res), new, refusal, cancel)

    @rule()
    def snapshot_and_restore(self) -> None:
        before = msgpack.packb(self.state.to_snapshot())
        self.state = RegionState.from_snapshot(msgpack.unpackb(before))
        assert msgpack.packb(self.state.to_snapshot()) == before

    @rule()
    def crash_and_recover(self) -> None:
        before = msgpack.packb(self.state.to_snapshot())
        fresh = RegionState("AB")
        for event in self.journal:
            fresh.evolve(event)
        fresh.take_changes()
        self.state = fresh
        assert msgpack.packb(self.state.to_snapshot()) == before

    # ------------------------------------------------------------ invariants

    @invariant()
    def rows_match_the_model_and_the_viewer(self) -> None:
        self._feed_viewer()
        code = {"F": FREE, "X": BLOCKED}
        for r in RES:
            for d in DAYS:
                row = self.state.row(r, d)
                assert bytes(self.viewer[(r, d)]) == row
                for c in range(96):
                    v = self.cells.get((r, d, c))
                    want = (
                        CLOSED
                        if v is None
                        else code[v]
                        if isinstance(v, str)
                        else {"H": HELD, "B": BOOKED, "U": BUFFER}[v[0]]
                    )
                    assert row[c] == want, (r, d, c, v, row[c])

    @invariant()
    def bookings_and_holds_own_their_cells(self) -> None:
        taken: set[Key] = set()
        for b in self.state.all_bookings():
            if b.status == "booked":
                span = self._span(b.resource, b.day, b.cell, b.cells)
                assert not span & taken, "a cell belongs to two bookings"
                taken |= span
                assert (
                    self.state.row(b.resource, b.day)[b.cell : b.cell + b.cells] == bytes([BOOKED]) * b.cells
                )
        for h in self.state.holds.values():
            assert self.state.row(h.resource, h.day)[h.cell : h.cell + h.cells] == bytes([HELD]) * h.cells
        assert set(self.state.holds) == set(self.holds)
        assert {v.id: v.status for v in self.state.all_bookings()} == {
            b: v["status"] for b, v in self.bookings.items()
        }

    @invariant()
    def the_line_matches_the_model(self) -> None:
        line = self.state.waitlist.entries
        assert list(line) == list(self.entries)
        assert {i: e.offer for i, e in line.items()} == {i: e["offer"] for i, e in self.entries.items()}
        assert all(
            b.hold_id == "" or b.hold_id not in self.holds for b in self.journal if isinstance(b, Booked)
        )

    @invariant()
    def free_counts_equal_a_recount(self) -> None:
        for d in DAYS:
            assert self.state.free_count(CLINIC, d) == sum(self.state.row(r, d).count(FREE) for r in RES)

    @invariant()
    def replay_is_byte_identical(self) -> None:
        fresh = RegionState("AB")
        for event in self.journal:
            fresh.evolve(event)
        assert msgpack.packb(fresh.to_snapshot()) == msgpack.packb(self.state.to_snapshot())


SlotMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
test_slot_machine = SlotMachine.TestCase
