"""Bookings and holds as the API shows them: JSON dicts with ISO times, and .ics files.

Pure functions over engine records and catalogue values; the routes call them inside or
after a ``regions.query``. Times go through ``engine.calendar`` only (wall-clock cells,
Europe/Stockholm). No personal data: a booking view carries the opaque ids and the clinic.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from engine.calendar import TZ, cell_epoch, cells_per_day, earliest_epoch, iso
from engine.model import SERVICES_BY_ID, Clinic
from engine.records import Booking, BookingStatus, Hold


def end_iso(day: int, cell: int, cells: int, cell_minutes: int) -> str:
    """ISO end of a run of cells (the start of the next cell; midnight rolls to the next day)."""
    end = cell + cells
    per_day = cells_per_day(cell_minutes)
    if end >= per_day:
        day, end = day + 1, end - per_day
    # earliest_epoch: an end on a nonexistent wall time (spring forward) is the instant of the jump
    return epoch_iso(earliest_epoch(day, end, cell_minutes))


def epoch_iso(epoch_s: int) -> str:
    return datetime.fromtimestamp(epoch_s, TZ).isoformat()


def booking_view(booking: Booking, clinic: Clinic) -> dict[str, Any]:
    cm = clinic.cell_minutes
    view: dict[str, Any] = {
        "id": booking.id,
        "clinic": booking.clinic,
        "clinic_name": clinic.name,
        "resource": booking.resource,
        "service": booking.service,
        "start": iso(booking.day, booking.cell, cm),
        "end": end_iso(booking.day, booking.cell, booking.cells, cm),
        "status": booking.status,
        "booked_at": epoch_iso(booking.booked_at),
    }
    if booking.cancelled_at:
        view["cancelled_at"] = epoch_iso(booking.cancelled_at)
        view["cancelled_by"] = booking.cancelled_by
        if booking.cancel_reason:
            view["cancel_reason"] = booking.cancel_reason  # the clinic's words to the patient
    return view


def hold_view(hold: Hold, clinic: Clinic) -> dict[str, Any]:
    cm = clinic.cell_minutes
    return {
        "id": hold.id,
        "clinic": hold.clinic,
        "clinic_name": clinic.name,
        "resource": hold.resource,
        "service": hold.service,
        "start": iso(hold.day, hold.cell, cm),
        "end": end_iso(hold.day, hold.cell, hold.cells, cm),
        "expires_at": epoch_iso(hold.expires_at),
        "offer": bool(hold.offer),  # a wait-list offer: confirm it like any hold
    }


def booking_start_epoch(booking: Booking, clinic: Clinic) -> int:
    return cell_epoch(booking.day, booking.cell, clinic.cell_minutes)


# -- iCalendar (RFC 5545) ----------------------------------------------------------------------


def _ics_text(value: str) -> str:
    return (
        value.replace("\\", "\\\\")
        .replace(";", "\\;")
        .replace(",", "\\,")
        .replace("\r\n", "\\n")
        .replace("\n", "\\n")
    )


def _ics_time(epoch_s: int) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y%m%dT%H%M%SZ")


def _fold(line: str) -> str:
    """Lines longer than 75 octets continue on the next line after CRLF + space."""
    raw = line.encode()
    if len(raw) <= 75:
        return line
    parts: list[str] = []
    current = ""
    for ch in line:
        limit = 75 if not parts else 74
        if len((current + ch).encode()) > limit:
            parts.append(current)
            current = ch
        else:
            current += ch
    parts.append(current)
    return "\r\n ".join(parts)


def booking_ics(booking: Booking, clinic: Clinic, *, now_s: int, tentative: bool = False) -> str:
    """A one-event calendar file for the booking (UTC times; the clinic as location).
    ``tentative``: a time offered but not yet confirmed (a wait-list offer)."""
    cm = clinic.cell_minutes
    start = cell_epoch(booking.day, booking.cell, cm)
    end = start + booking.cells * cm * 60
    service = SERVICES_BY_ID.get(booking.service)
    title = f"{service.name if service else booking.service} – {clinic.name}"
    location = ", ".join(p for p in (clinic.address, clinic.phone) if p)
    lines = [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        "PRODID:-//tandtid//booking//SV",
        "CALSCALE:GREGORIAN",
        "METHOD:PUBLISH",
        "BEGIN:VEVENT",
        f"UID:{booking.id}@tandtid",
        f"DTSTAMP:{_ics_time(now_s)}",
        f"DTSTART:{_ics_time(start)}",
        f"DTEND:{_ics_time(end)}",
        f"SUMMARY:{_ics_text(title)}",
        f"LOCATION:{_ics_text(location)}",
        f"GEO:{clinic.lat:.6f};{clinic.lon:.6f}",
        "STATUS:" + _ics_status(booking, tentative),
        "END:VEVENT",
        "END:VCALENDAR",
    ]
    return "\r\n".join(_fold(line) for line in lines) + "\r\n"


def _ics_status(booking: Booking, tentative: bool) -> str:
    if booking.status == BookingStatus.CANCELLED:
        return "CANCELLED"
    return "TENTATIVE" if tentative else "CONFIRMED"


def feed_ics(items: list[tuple[Booking, Clinic, str]], *, name: str, now_s: int) -> str:
    """A subscribable calendar (an iCal feed) of several bookings: ``(booking, clinic, summary)``
    each; the caller chooses the summary (a clinic feed must not name patients)."""
    lines = [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        "PRODID:-//tandtid//feed//SV",
        "CALSCALE:GREGORIAN",
        "METHOD:PUBLISH",
        f"X-WR-CALNAME:{_ics_text(name)}",
        "X-PUBLISHED-TTL:PT15M",
    ]
    for booking, clinic, summary in items:
        cm = clinic.cell_minutes
        start = cell_epoch(booking.day, booking.cell, cm)
        location = ", ".join(p for p in (clinic.address, clinic.phone) if p)
        lines += [
            "BEGIN:VEVENT",
            f"UID:{booking.id}@tandtid",
            f"DTSTAMP:{_ics_time(now_s)}",
            f"DTSTART:{_ics_time(start)}",
            f"DTEND:{_ics_time(start + booking.cells * cm * 60)}",
            f"SUMMARY:{_ics_text(summary)}",
            f"LOCATION:{_ics_text(location)}",
            "STATUS:CONFIRMED",
            "END:VEVENT",
        ]
    lines.append("END:VCALENDAR")
    return "\r\n".join(_fold(line) for line in lines) + "\r\n"
