"""Clinic setup: the commands a clinic runs itself with, decided and evolved like bookings.

Commands: ``EditClinic`` (details and rules), ``SuspendClinic`` (the platform's: a suspended
clinic takes no new bookings or holds, ``SUSPENDED``; its bookings stay), ``PutResource`` (add or edit a dentist,
hygienist or chair), ``RetireResource``, ``SetHours`` (the weekly opening hours),
``SetDayHours`` (one day's own hours: a holiday, a closed day, a late evening) and
``OpenAhead`` (the rolling horizon: every clinic with ``open_ahead_days`` gets the days up to
today + that many opened from its hours; the server sends it, no one opens days by hand).

Hours belong to the clinic, and a resource may have its own: ``SetHours``/``SetDayHours`` with a
``resource`` set that resource's weekly hours (a hygienist on Tuesday and Thursday mornings) and
its own days (leave, a late evening); without them it follows the clinic's. Which hours a day
of a resource has is ``engine.rows.OpeningMasks``' rule (its own day, else its own week within
the clinic's own day, else the clinic's day, else the clinic's week). A resource's change
touches that resource's cells only; a clinic's change touches every resource whose days it
decides (one with its own week keeps it).

Hours change opened days at once: from today on, cells inside the new hours that were
CLOSED become FREE, and FREE/BUFFER/BLOCKED cells outside them become CLOSED. A change
never drops a booking silently: a booking starting at or after ``now`` that would lie
(partly) outside the new hours refuses the command with HAS_BOOKINGS and the list of those
bookings in ``Refused.bookings``. Sending the command again with those ids in ``cancel``
applies it: each is cancelled by the clinic (a ``Cancelled`` event, which notifies the
patient) in the same step. Retiring a resource works the same way for its future bookings.
Holds in the way (offers included) are released in the same step.

Refusal order: unknown clinic/resource (or a resource of another clinic) NOT_FOUND -> a retired
resource, bad values INVALID -> bookings in the
way HAS_BOOKINGS -> a ``cancel`` id that is not in the way INVALID.

This module is the other half of ``engine.state`` for setup, as ``engine.snapshot`` is for
snapshots: it reads and changes the state's private stores, and only through its evolvers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, NoReturn

from engine.calendar import cell_epoch, day_of_epoch
from engine.cells import BLOCKED, BOOKED, BUFFER, CLOSED, FREE, HELD
from engine.commands import (
    EditClinic,
    OpenAhead,
    Party,
    PutResource,
    RetireResource,
    SetDayHours,
    SetHours,
    SuspendClinic,
)
from engine.errors import RefusalCode, Refused
from engine.events import (
    Cancelled,
    ClinicEdited,
    ClinicSuspended,
    DayHoursSet,
    DaysOpened,
    HoldReleased,
    HoursSet,
    ResourcePut,
    ResourceRetired,
)
from engine.model import (
    SERVICES_BY_ID,
    Clinic,
    ClinicKind,
    Resource,
    intervals_from_record,
    intervals_record,
    resource_from_record,
    resource_to_record,
)
from engine.records import BookingStatus
from engine.rows import OpeningMasks

if TYPE_CHECKING:
    from engine.state import RegionState

MAX_EXCEPTIONS = 400  # a clinic's (or a resource's) day exceptions from today on

MaskOf = Callable[[str, int], bytes]
"""(resource id, day) -> the opening mask a change would give that day."""


def _refuse(code: RefusalCode, message: str, bookings: tuple[str, ...] = ()) -> NoReturn:
    raise Refused(code, message, bookings)


def _check_intervals(ivs: tuple[tuple[int, int], ...]) -> None:
    last = -1
    for a, b in ivs:
        if not 0 <= a < b <= 24 * 60 or a < last:
            _refuse(RefusalCode.INVALID, "opening intervals must be ordered, within the day, not overlapping")
        last = b


def edited(clinic: Clinic, changes: dict[str, Any]) -> Clinic:
    """``clinic`` with a ``ClinicEdited`` event's changes (also for readers that keep clinics)."""
    fields = dict(changes)
    if "kind" in fields:
        fields["kind"] = ClinicKind(fields["kind"])
    if "services" in fields:
        fields["services"] = tuple(fields["services"])
    return replace(clinic, **fields)


# ---------------------------------------------------------------------- deciding and evolving


class ClinicSetup:
    """The setup deciders and evolvers of one ``RegionState`` (which registers them)."""

    def __init__(self, state: RegionState) -> None:
        self.s = state

    def deciders(self) -> dict[type, Any]:
        return {
            EditClinic: self.decide_edit,
            PutResource: self.decide_put,
            RetireResource: self.decide_retire,
            SetHours: self.decide_hours,
            SetDayHours: self.decide_day_hours,
            OpenAhead: self.decide_open_ahead,
            SuspendClinic: self.decide_suspend,
        }

    def evolvers(self) -> dict[type, Any]:
        return {
            ClinicEdited: self.on_edited,
            ResourcePut: self.on_put,
            ResourceRetired: self.on_retired,
            HoursSet: self.on_hours,
            DayHoursSet: self.on_day_hours,
            ClinicSuspended: self.on_suspended,
        }

    # -------------------------------------------------------------- helpers

    def _clinic(self, cid: str) -> Clinic:
        clinic = self.s.clinics.get(cid)
        if clinic is None:
            _refuse(RefusalCode.NOT_FOUND, "unknown clinic")
        return clinic

    def _own_resource(self, clinic: Clinic, rid: str) -> Resource:
        """The clinic's resource ``rid`` that may get hours: NOT_FOUND, retired INVALID."""
        res = self.s.resources.get(rid)
        if res is None or res.clinic != clinic.id:
            _refuse(RefusalCode.NOT_FOUND, "unknown resource at this clinic")
        if res.retired:
            _refuse(RefusalCode.INVALID, "the resource is retired")
        return res

    def _opened(self, cid: str) -> bool:
        return any(self.s._rows[r].buf for r in self.s._clinic_resources.get(cid, ()))

    def _in_the_way(
        self,
        clinic: Clinic,
        resources: list[str],
        days: range,
        new: MaskOf | None,
        now: int,
        cancel: tuple[str, ...],
    ) -> list[Any]:
        """Events releasing the holds and cancelling the bookings (those in ``cancel``) that
        lie outside the new hours ``new`` gives (or anywhere, when ``new`` is None) on ``days``. Refuses
        HAS_BOOKINGS when a booking starting at or after ``now`` is in the way and not listed."""
        s = self.s
        wanted = set(resources)
        cm = clinic.cell_minutes
        stranded: list[str] = []
        events: list[Any] = []
        for hold in sorted(s.holds.values(), key=lambda h: h.id):
            if (
                hold.resource in wanted
                and hold.day in days
                and self._outside(new, hold.resource, hold.day, hold.cell, hold.cells)
            ):
                events.append(HoldReleased(hold.id))
        for day in days:
            for b in s.bookings_on(clinic.id, day):
                if (
                    b.status == BookingStatus.BOOKED
                    and b.resource in wanted
                    and cell_epoch(b.day, b.cell, cm) >= now
                    and self._outside(new, b.resource, b.day, b.cell, b.cells)
                ):
                    stranded.append(b.id)
        missing = [b for b in stranded if b not in cancel]
        if missing:
            _refuse(
                RefusalCode.HAS_BOOKINGS,
                f"{len(missing)} booking(s) would lie outside the new hours: move or cancel them",
                tuple(missing),
            )
        if set(cancel) - set(stranded):
            _refuse(RefusalCode.INVALID, "cancel lists a booking that is not in the way")
        events.extend(Cancelled(b, str(Party.CLINIC), now, 0) for b in stranded)
        return events

    @staticmethod
    def _outside(new: MaskOf | None, resource: str, day: int, cell: int, cells: int) -> bool:
        if new is None:
            return True
        return CLOSED in new(resource, day)[cell : cell + cells]

    def _reshape(self, clinic: Clinic, days: range, resources: list[str] | None = None) -> None:
        """Opened days of ``days`` of the clinic's resources (or just ``resources``) take their
        (new) hours; BOOKED and HELD cells stay. The caller forgot the changed templates."""
        s = self.s
        for rid in s._clinic_resources.get(clinic.id, ()) if resources is None else resources:
            res = s.resources[rid]
            if res.retired:
                continue
            row = s._rows[rid]
            for day in days:
                if row.offset(day) < 0:
                    continue
                old = row.day(day)
                mask = s._masks.of(clinic, day, res)
                new = bytes(
                    (FREE if c == CLOSED else c)
                    if m == FREE
                    else (CLOSED if c in (FREE, BUFFER, BLOCKED) else c)
                    for c, m in zip(old, mask, strict=True)
                )
                if new != old:
                    s._write(row, day, 0, old, new)

    def _horizon_days(self, clinic: str) -> range:
        """Every opened day of the clinic (the range a change of hours may touch)."""
        s = self.s
        rows = [s._rows[r] for r in s._clinic_resources.get(clinic, ()) if s._rows[r].buf]
        if not rows:
            return range(0)
        return range(min(r.first_day for r in rows), max(r.first_day + r.days for r in rows))

    # -------------------------------------------------------------- deciders

    def decide_edit(self, c: EditClinic, now: int) -> list[Any]:
        clinic = self._clinic(c.clinic)
        changes: dict[str, Any] = {}
        for name in (
            "name",
            "address",
            "lat",
            "lon",
            "phone",
            "kind",
            "services",
            "cell_minutes",
            "cancel_notice_hours",
            "offer_minutes",
            "max_bookings_per_patient",
            "open_ahead_days",
        ):
            value = getattr(c, name)
            if value is not None and value != getattr(clinic, name):
                changes[name] = value
        if "name" in changes and not changes["name"].strip():
            _refuse(RefusalCode.INVALID, "a clinic needs a name")
        if (
            "lat" in changes
            and not -90 <= changes["lat"] <= 90
            or "lon" in changes
            and not -180 <= changes["lon"] <= 180
        ):
            _refuse(RefusalCode.INVALID, "position outside the globe")
        if "cell_minutes" in changes:
            cm = changes["cell_minutes"]
            if cm <= 0 or 60 % cm:
                _refuse(RefusalCode.INVALID, "cell_minutes must divide an hour")
            if self._opened(clinic.id):
                _refuse(RefusalCode.INVALID, "cell_minutes cannot change once days are opened")
        for s in changes.get("services", ()):
            if s not in SERVICES_BY_ID:
                _refuse(RefusalCode.INVALID, f"unknown service {s}")
        for name, low in (
            ("cancel_notice_hours", 0),
            ("offer_minutes", 1),
            ("max_bookings_per_patient", 1),
            ("open_ahead_days", 0),
        ):
            if name in changes and changes[name] < low:
                _refuse(RefusalCode.INVALID, f"{name} must be at least {low}")
        if not changes:
            return []
        if "kind" in changes:
            changes["kind"] = str(changes["kind"])
        if "services" in changes:
            changes["services"] = list(changes["services"])
        return [ClinicEdited(clinic.id, changes)]

    def decide_put(self, c: PutResource, now: int) -> list[Any]:
        res = c.resource
        self._clinic(res.clinic)
        if not res.id.startswith(res.clinic + "-"):
            _refuse(RefusalCode.INVALID, "a resource id starts with its clinic's id")
        known = self.s.resources.get(res.id)
        if known is not None and known.clinic != res.clinic:
            _refuse(RefusalCode.INVALID, "resource belongs to another clinic")
        if known is not None and known.retired or res.retired:
            _refuse(RefusalCode.INVALID, "a retired resource stays retired")
        if not res.name.strip():
            _refuse(RefusalCode.INVALID, "a resource needs a name")
        for s in res.services:
            if s not in SERVICES_BY_ID:
                _refuse(RefusalCode.INVALID, f"unknown service {s}")
        if res.hours is not None or res.exceptions:
            _refuse(RefusalCode.INVALID, "a resource's own hours are set with SetHours/SetDayHours")
        if known is not None:  # an edit keeps the resource's own hours
            res = replace(res, hours=known.hours, exceptions=known.exceptions)
        if known == res:
            return []
        return [ResourcePut(resource_to_record(res))]

    def decide_retire(self, c: RetireResource, now: int) -> list[Any]:
        res = self.s.resources.get(c.resource)
        if res is None:
            _refuse(RefusalCode.NOT_FOUND, "unknown resource")
        if res.retired:
            _refuse(RefusalCode.INVALID, "the resource is already retired")
        clinic = self.s.clinics[res.clinic]
        today = day_of_epoch(now)
        opened = self._horizon_days(clinic.id)
        days = range(max(today, opened.start), max(today, opened.stop))
        events = self._in_the_way(clinic, [res.id], days, None, now, c.cancel)
        return [*events, ResourceRetired(res.id, today)]

    def _decide_new_hours(
        self, clinic: Clinic, new: Clinic, res: Resource | None, now: int, cancel: tuple[str, ...]
    ) -> list[Any]:
        """What moving to clinic ``new`` (and, for a resource's change, resource ``res``) takes:
        the holds released and the listed bookings cancelled; HAS_BOOKINGS for one not listed."""
        today = day_of_epoch(now)
        opened = self._horizon_days(clinic.id)
        days = range(max(today, opened.start), max(today, opened.stop))
        if res is None:
            live = [r for r in self.s._clinic_resources.get(clinic.id, ()) if not self.s.resources[r].retired]
            resources = {r: self.s.resources[r] for r in live}
        else:
            resources = {res.id: res}
        masks = OpeningMasks()  # a cache of its own: the new hours are not the state's yet

        def mask_of(rid: str, day: int) -> bytes:
            return masks.of(new, day, resources[rid])

        return self._in_the_way(clinic, list(resources), days, mask_of, now, cancel)

    def decide_hours(self, c: SetHours, now: int) -> list[Any]:
        clinic = self._clinic(c.clinic)
        res = self._own_resource(clinic, c.resource) if c.resource else None
        hours = None
        if c.hours is None:
            if res is None:
                _refuse(RefusalCode.INVALID, "the clinic's weekly hours cannot be none (closed: empty days)")
        else:
            if set(c.hours) - set(range(1, 8)):
                _refuse(RefusalCode.INVALID, "weekdays are 1 (Monday) .. 7 (Sunday)")
            for ivs in c.hours.values():
                _check_intervals(ivs)
            hours = {d: tuple(c.hours.get(d, ())) for d in range(1, 8)}
        if res is None:
            assert hours is not None
            events = self._decide_new_hours(clinic, replace(clinic, hours=hours), None, now, c.cancel)
        else:
            events = self._decide_new_hours(clinic, clinic, replace(res, hours=hours), now, c.cancel)
        record = None if hours is None else intervals_record(hours)
        return [*events, HoursSet(clinic.id, record, day_of_epoch(now), c.resource)]

    def decide_day_hours(self, c: SetDayHours, now: int) -> list[Any]:
        clinic = self._clinic(c.clinic)
        res = self._own_resource(clinic, c.resource) if c.resource else None
        today = day_of_epoch(now)
        if c.day < today:
            _refuse(RefusalCode.IN_PAST, "that day has passed")
        exceptions = dict(clinic.exceptions if res is None else res.exceptions)
        if c.hours is None:
            exceptions.pop(c.day, None)
        else:
            _check_intervals(c.hours)
            exceptions[c.day] = tuple(c.hours)
            if sum(1 for d in exceptions if d >= today) > MAX_EXCEPTIONS:
                _refuse(RefusalCode.LIMIT_REACHED, f"at most {MAX_EXCEPTIONS} days with their own hours")
        if res is None:
            new = replace(clinic, exceptions=exceptions)
            events = self._decide_new_hours(clinic, new, None, now, c.cancel)
        else:
            events = self._decide_new_hours(
                clinic, clinic, replace(res, exceptions=exceptions), now, c.cancel
            )
        hours = None if c.hours is None else [list(iv) for iv in c.hours]
        return [*events, DayHoursSet(clinic.id, c.day, hours, c.resource)]

    def decide_suspend(self, c: SuspendClinic, now: int) -> list[Any]:
        clinic = self._clinic(c.clinic)
        if clinic.suspended == c.suspended:
            return []  # already so: nothing to journal (a retry is harmless)
        return [ClinicSuspended(clinic.id, c.suspended)]

    def decide_open_ahead(self, c: OpenAhead, now: int) -> list[Any]:
        if c.region != self.s.region:
            _refuse(RefusalCode.INVALID, f"not region {self.s.region}")
        if c.clinic:
            self._clinic(c.clinic)
        today = day_of_epoch(now)
        events: list[Any] = []
        for cid in sorted(self.s.clinics) if not c.clinic else [c.clinic]:
            clinic = self.s.clinics[cid]
            if clinic.open_ahead_days <= 0:
                continue
            last = today + min(clinic.open_ahead_days, c.horizon_days)
            for rid in self.s._clinic_resources.get(cid, ()):
                if self.s.resources[rid].retired:
                    continue
                row = self.s._rows[rid]
                first = max(today, row.first_day + row.days) if row.buf else today
                if first <= last:
                    events.append(DaysOpened(rid, first, last - first + 1))
        return events

    # -------------------------------------------------------------- evolvers

    def on_edited(self, e: ClinicEdited) -> None:
        self.s._install(edited(self.s.clinics[e.clinic], e.changes), [])

    def on_suspended(self, e: ClinicSuspended) -> None:
        self.s._install(replace(self.s.clinics[e.clinic], suspended=e.suspended), [])

    def on_put(self, e: ResourcePut) -> None:
        res = resource_from_record(e.resource)
        self.s._install(self.s.clinics[res.clinic], [res])

    def on_retired(self, e: ResourceRetired) -> None:
        s = self.s
        res = replace(s.resources[e.resource], retired=True)
        s.resources[res.id] = res
        row = s._rows[res.id]
        row.cells_for = {}
        s._touch(row.clinic)
        s._starts.forget(row.clinic)
        if not row.buf:
            return
        for day in range(max(e.from_day, row.first_day), row.first_day + row.days):
            old = row.day(day)
            new = bytes(c if c in (BOOKED, HELD) else CLOSED for c in old)
            if new != old:
                s._write(row, day, 0, old, new)

    def on_hours(self, e: HoursSet) -> None:
        s = self.s
        clinic = s.clinics[e.clinic]
        hours = None if e.hours is None else intervals_from_record(e.hours)
        opened = self._horizon_days(clinic.id)
        days = range(max(e.from_day, opened.start), opened.stop)
        if e.resource:
            s.resources[e.resource] = replace(s.resources[e.resource], hours=hours)
            s._masks.forget(e.resource)
            s._touch(clinic.id)
            self._reshape(clinic, days, [e.resource])
            return
        assert hours is not None
        clinic = replace(clinic, hours=hours)
        s.clinics[clinic.id] = clinic
        s._masks.forget(clinic.id)
        s._touch(clinic.id)
        self._reshape(clinic, days)

    def on_day_hours(self, e: DayHoursSet) -> None:
        s = self.s
        clinic = s.clinics[e.clinic]
        owner: Clinic | Resource = s.resources[e.resource] if e.resource else clinic
        exceptions = dict(owner.exceptions)
        if e.hours is None:
            exceptions.pop(e.day, None)
        else:
            exceptions[e.day] = tuple((int(a), int(b)) for a, b in e.hours)
        s._touch(clinic.id)
        if isinstance(owner, Resource):
            s.resources[owner.id] = replace(owner, exceptions=exceptions)
            self._reshape(clinic, range(e.day, e.day + 1), [owner.id])
            return
        clinic = replace(clinic, exceptions=exceptions)
        s.clinics[clinic.id] = clinic
        self._reshape(clinic, range(e.day, e.day + 1))
