"""The e-mails patients get: one template per kind of fact, in Swedish then English, each with
an iCalendar (.ics) attachment.

``compose`` returns a :class:`Mail`: the finished RFC 5322 message as bytes (CRLF lines, 7-bit:
RFC 2047 encoded-words in the headers, the text quoted-printable, the .ics base64) and its SMTP
envelope, built by string formatting. It used to build an ``email.message.EmailMessage``, whose
header parsing and serialising cost ~2 ms of CPU per message (holding the GIL, so the event loop
waited); this costs well under a tenth of that. Its ``Message-ID`` and MIME boundary are derived
from the message key, so the same fact gives the same bytes and a receiving mail system can also
drop a duplicate. Adding a kind is one entry in ``TEMPLATES`` (subject and first line in both
languages). To read a message back, parse it (``email.message_from_bytes(data,
policy=email.policy.default)``): that is the cold path (the outbox's admin view, tests).
"""

from __future__ import annotations

import binascii
import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import format_datetime, formataddr, parseaddr
from functools import lru_cache

from engine.calendar import TZ, cell_epoch
from engine.model import SERVICES_BY_ID, Clinic
from engine.records import Booking
from server.http.views import booking_ics

MESSAGE_ID_DOMAIN = "notify.tandtid.se"
KEY_HEADER = "X-Tandtid-Key"


@dataclass(frozen=True, slots=True)
class Mail:
    """One finished e-mail: what an SMTP server or the outbox takes as it is."""

    key: str  # the message key (``X-Tandtid-Key``; the outbox's file name)
    sender: str  # the envelope sender: the address of the From header
    to: str = field(repr=False)  # the envelope recipient (personal data: kept out of reprs)
    data: bytes = field(repr=False)  # the RFC 5322 message, CRLF line ends, 7-bit


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
) -> Mail:
    """The complete message for one fact (or reminder). KeyError for a kind without a template;
    ValueError for an address that is not ASCII (as before: SMTPUTF8 is not supported)."""
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
    if not to_email.isascii():
        raise ValueError("the recipient's address is not ASCII")
    from_header, from_address = _mailbox(sender)
    subject = f"{template.subject_sv} / {template.subject_en} – {clinic.name}"
    ics = booking_ics(booking, clinic, now_s=now_s, tentative=kind == "offer").encode()
    boundary = "=_tandtid." + hashlib.blake2b(key.encode(), digest_size=12).hexdigest()
    head = "\r\n".join(
        [
            f"Subject: {_header_text(subject)}",
            f"From: {from_header}",
            f"To: {_address(to_name, to_email)}",
            f"Date: {format_datetime(datetime.fromtimestamp(now_s, TZ))}",
            f"Message-ID: {message_id(key)}",
            f"{KEY_HEADER}: {key}",
            "MIME-Version: 1.0",
            f'Content-Type: multipart/mixed; boundary="{boundary}"',
            "",
            f"--{boundary}",
            'Content-Type: text/plain; charset="utf-8"',
            "Content-Transfer-Encoding: quoted-printable",
            "",
            "",
        ]
    )
    attachment_head = "\r\n".join(
        [
            "",
            f"--{boundary}",
            'Content-Type: text/calendar; charset="utf-8"; method="PUBLISH"',
            f'Content-Disposition: attachment; filename="{booking.id}.ics"',
            "Content-Transfer-Encoding: base64",
            "",
            "",
        ]
    )
    # The CRLF before a boundary belongs to the boundary: each part's own last line end stays.
    data = b"".join(
        [
            head.encode("ascii"),
            _quoted_printable(text),
            attachment_head.encode("ascii"),
            _base64_lines(ics),
            f"\r\n--{boundary}--\r\n".encode("ascii"),
        ]
    )
    return Mail(key, from_address, to_email, data)


_WORD_BYTES = 39  # UTF-8 bytes per encoded-word: 52 base64 characters, 64 with its frame, so
# "Subject: " plus a word stays within RFC 2047's 76 characters per line


def _header_text(text: str) -> str:
    """Unstructured header text: itself when it is short printable ASCII, else RFC 2047
    encoded-words (base64, each holding whole characters), folded one word per line."""
    if text.isascii() and text.isprintable() and "=?" not in text and len(text) <= 60:
        return text
    data = text.encode()
    words = []
    start = 0
    while start < len(data):
        end = min(start + _WORD_BYTES, len(data))
        while end < len(data) and data[end] & 0xC0 == 0x80:  # not inside a character
            end -= 1
        words.append(f"=?utf-8?b?{binascii.b2a_base64(data[start:end], newline=False).decode()}?=")
        start = end
    return "\r\n ".join(words)


def _address(name: str, address: str) -> str:
    """``name <address>``: the name quoted when it needs it, encoded when it is not ASCII."""
    if not name or (name.isascii() and name.isprintable() and "=?" not in name):
        return formataddr((name, address))
    return f"{_header_text(name)}\r\n <{address}>"


@lru_cache(maxsize=8)
def _mailbox(sender: str) -> tuple[str, str]:
    """The configured sender (``Tandtid <no-reply@tandtid.se>``): the From header's value and
    the envelope address."""
    name, address = parseaddr(sender)
    if not address or not address.isascii():
        raise ValueError("the sender is not an ASCII e-mail address")
    return _address(name, address), address


def _quoted_printable(text: str) -> bytes:
    """The text's UTF-8, line ends made CRLF, quoted-printable (lines of at most 76)."""
    lines = text.encode().splitlines()
    return binascii.b2a_qp(b"\r\n".join(lines) + b"\r\n", istext=True)


def _base64_lines(data: bytes) -> bytes:
    """Base64 in lines of 76 characters, CRLF after each."""
    return b"".join(
        binascii.b2a_base64(data[i : i + 57]).replace(b"\n", b"\r\n") for i in range(0, len(data), 57)
    )
