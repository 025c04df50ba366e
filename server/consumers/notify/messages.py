"""The e-mails patients get: one template per kind of fact, in Swedish then English, each with
an iCalendar (.ics) attachment.

``compose`` builds a complete ``EmailMessage``; its ``Message-ID`` is derived from the
message key, so a receiving mail system can also drop a duplicate. Adding a kind is one
entry in ``TEMPLATES`` (subject and first line in both languages, and whether the .ics
cancels the calendar event).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, formataddr

from engine.calendar import TZ, cell_epoch
from engine.model import SERVICES_BY_ID, Clinic
from engine.records import Booking
from server.http.views import booking_ics

MESSAGE_ID_DOMAIN = "notify.tandtid.se"
KEY_HEADER = "X-Tandtid-Key"


@dataclass(frozen=True, slots=True)
class Template:
    subject_sv: str
    subject_en: str
    lead_sv: str
    lead_en: str


TEMPLATES: dict[str, Template] = {
    "booked": Template(
        "Bokningsbekräftelse", "Booking confirmed", "Din tid är bokad.", "Your appointment is booked."
    ),
    "cancelled": Template(
        "Din tid är avbokad",
        "Appointment cancelled",
        "Din tid har avbokats{by_sv}.",
        "Your appointment has been cancelled{by_en}.",
    ),
    "rescheduled": Template(
        "Din tid är flyttad",
        "Appointment moved",
        "Din tid har flyttats (tidigare {previous}).",
        "Your appointment has been moved (previously {previous}).",
    ),
    "offer": Template(
        "En tid har blivit ledig åt dig",
        "A time has opened up for you",
        "En tid du väntar på har blivit ledig och är reserverad åt dig en kort stund. "
        "Bekräfta den under Mina bokningar i Tandtid, annars går den vidare till nästa i kön.",
        "A time you are waiting for has opened up and is held for you for a short while. "
        "Confirm it under My bookings in Tandtid, or it passes to the next in line.",
    ),
    "reminder": Template(
        "Påminnelse om din tid",
        "Appointment reminder",
        "Påminnelse: du har en tid {when_sv}.",
        "Reminder: you have an appointment {when_en}.",
    ),
}

_BY_SV = {"patient": " av dig", "clinic": " av kliniken", "admin": " av Tandtids support"}
_BY_EN = {"patient": " by you", "clinic": " by the clinic", "admin": " by Tandtid support"}


def message_id(key: str) -> str:
    """``AB:12:0:booked`` -> ``<AB.12.0.booked@notify.tandtid.se>`` (":" is not allowed there)."""
    return f"<{key.replace(':', '.')}@{MESSAGE_ID_DOMAIN}>"


def _local(epoch_s: int) -> str:
    return datetime.fromtimestamp(epoch_s, TZ).strftime("%Y-%m-%d %H:%M")


def _when(lead_s: int) -> tuple[str, str]:
    hours = lead_s // 3600
    if lead_s % 3600 == 0 and hours >= 1:
        return (
            f"om {hours} timm{'e' if hours == 1 else 'ar'}",
            f"in {hours} hour{'' if hours == 1 else 's'}",
        )
    minutes = lead_s // 60
    return f"om {minutes} minuter", f"in {minutes} minutes"


def compose(
    kind: str,
    key: str,
    *,
    booking: Booking,
    clinic: Clinic,
    to_name: str,
    to_email: str,
    sender: str,
    now_s: int,
    by: str = "",
    previous: Booking | None = None,
    lead_s: int = 0,
) -> EmailMessage:
    """The complete message for one fact (or reminder). KeyError for a kind without a template."""
    template = TEMPLATES[kind]
    start = cell_epoch(booking.day, booking.cell, clinic.cell_minutes)
    service = SERVICES_BY_ID.get(booking.service)
    previous_text = (
        _local(cell_epoch(previous.day, previous.cell, clinic.cell_minutes)) if previous is not None else ""
    )
    when_sv, when_en = _when(lead_s)
    fill = {
        "by_sv": _BY_SV.get(by, ""),
        "by_en": _BY_EN.get(by, ""),
        "previous": previous_text,
        "when_sv": when_sv,
        "when_en": when_en,
    }
    details_sv = [
        f"Tid: {_local(start)} (svensk tid)",
        f"Behandling: {service.name if service else booking.service}",
        f"Klinik: {clinic.name}, {clinic.address}",
        f"Bokningsnummer: {booking.id}",
    ]
    details_en = [
        f"Time: {_local(start)} (Swedish time)",
        f"Treatment: {service.name_en if service else booking.service}",
        f"Clinic: {clinic.name}, {clinic.address}",
        f"Booking number: {booking.id}",
    ]
    if clinic.phone:
        details_sv.append(f"Telefon: {clinic.phone}")
        details_en.append(f"Phone: {clinic.phone}")
    if kind == "cancelled" and booking.cancel_reason:  # the clinic's or support's words, as written
        details_sv.insert(0, f"Anledning: {booking.cancel_reason}")
        details_en.insert(0, f"Reason: {booking.cancel_reason}")
    text = "\n".join(
        [
            f"Hej {to_name},",
            "",
            template.lead_sv.format(**fill),
            "",
            *details_sv,
            "",
            "— Tandtid",
            "",
            "----",
            "",
            f"Hello {to_name},",
            "",
            template.lead_en.format(**fill),
            "",
            *details_en,
            "",
            "— Tandtid",
            "",
        ]
    )
    message = EmailMessage()
    message["Subject"] = f"{template.subject_sv} / {template.subject_en} – {clinic.name}"
    message["From"] = sender
    message["To"] = formataddr((to_name, to_email))
    message["Date"] = format_datetime(datetime.fromtimestamp(now_s, TZ))
    message["Message-ID"] = message_id(key)
    message[KEY_HEADER] = key
    message.set_content(text)
    ics = booking_ics(booking, clinic, now_s=now_s, tentative=kind == "offer")
    message.add_attachment(
        ics.encode(),
        maintype="text",
        subtype="calendar",
        filename=f"{booking.id}.ics",
        params={"method": "PUBLISH"},
    )
    return message
