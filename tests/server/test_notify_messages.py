"""Unit tests (pure, no network): the e-mails ``compose`` writes as bytes, read back by the standard
library's parser (``email.policy.default``), say what the ``EmailMessage`` it used to build said —
headers, text and .ics, for every kind, with Swedish letters in the names, the clinic and a long
cancellation reason — and are well-formed: 7-bit, CRLF, lines of at most 76, the same bytes for the
same fact. A cancellation's reason travels from the journal entry through the consumers' projection
into the patient's e-mail; without one the e-mail has no reason line."""

from __future__ import annotations

from dataclasses import replace
from email import message_from_bytes, policy
from email.header import decode_header, make_header
from email.message import EmailMessage
from typing import Any

import pytest

from engine.events import Booked, Cancelled, ClinicRegistered, to_record
from engine.model import resource_to_record
from engine.records import Booking, BookingStatus
from persistence.codec import pack_events
from server.consumers.feed import Projection
from server.consumers.notify.messages import Mail, compose
from tests.support.catalog import CELL_0900, FIRST_DAY, NOW, clinic

CLINIC = replace(
    clinic("AB", 1)[0],
    name="Folktandvården Södermalm Åsögatan",
    address="Åsögatan 133, 116 24 Stockholm",
    phone="08-123 456 78",
)
BOOKING = Booking(
    "AB-b7", "p1", "AB-c1", "AB-c1-r1", "checkup", FIRST_DAY + 3, CELL_0900, 2, BookingStatus.BOOKED, NOW
)
REASON = (
    "Tandläkaren är sjuk hela veckan och vi har tyvärr inte kunnat hitta någon ersättare; ring oss på "
    "08-123 456 78 så hittar vi en ny tid åt dig så snart som möjligt. Vi ber om ursäkt för besväret!"
)
CANCELLED = replace(
    BOOKING,
    status=BookingStatus.CANCELLED,
    cancelled_at=NOW + 60,
    cancelled_by="clinic",
    cancel_reason=REASON,
)
PREVIOUS = replace(BOOKING, day=FIRST_DAY + 1, cell=CELL_0900 + 4)

# kind -> (key, compose's own arguments, subject, first line sv, first line en, .ics STATUS)
KINDS: dict[str, tuple[str, dict[str, Any], str, str, str, str]] = {
    "booked": (
        "AB:12:0:booked",
        {"booking": BOOKING},
        "Bokningsbekräftelse / Booking confirmed – Folktandvården Södermalm Åsögatan",
        "Din tid är bokad.",
        "Your appointment is booked.",
        "CONFIRMED",
    ),
    "cancelled": (
        "AB:13:0:cancelled",
        {"booking": CANCELLED, "by": "clinic"},
        # (the EmailMessage dropped the space after the dash when it folded this one)
        "Din tid är avbokad / Appointment cancelled – Folktandvården Södermalm Åsögatan",
        "Din tid har avbokats av kliniken.",
        "Your appointment has been cancelled by the clinic.",
        "CANCELLED",
    ),
    "rescheduled": (
        "AB:14:0:rescheduled",
        {"booking": BOOKING, "previous": PREVIOUS},
        "Din tid är flyttad / Appointment moved – Folktandvården Södermalm Åsögatan",
        "Din tid har flyttats (tidigare 2026-12-08 10:00).",
        "Your appointment has been moved (previously 2026-12-08 10:00).",
        "CONFIRMED",
    ),
    "offer": (
        "AB:15:0:offer",
        {"booking": BOOKING},
        "En tid har blivit ledig åt dig / A time has opened up for you – Folktandvården Södermalm Åsögatan",
        "En tid du väntar på har blivit ledig och är reserverad åt dig en kort stund. Bekräfta den under "
        "Mina bokningar i Tandtid, annars går den vidare till nästa i kön.",
        "A time you are waiting for has opened up and is held for you for a short while. Confirm it "
        "under My bookings in Tandtid, or it passes to the next in line.",
        "TENTATIVE",
    ),
    "reminder": (
        "AB-b7.739960.36:r24",
        {"booking": BOOKING, "lead_s": 24 * 3600},
        "Påminnelse om din tid / Appointment reminder – Folktandvården Södermalm Åsögatan",
        "Påminnelse: du har en tid om 24 timmar.",
        "Reminder: you have an appointment in 24 hours.",
        "CONFIRMED",
    ),
}


def compose_kind(kind: str, to_name: str = "Åsa Öberg-Lindqvist") -> Mail:
    key, arguments, *_ = KINDS[kind]
    return compose(
        kind,
        key,
        clinic=CLINIC,
        to_name=to_name,
        to_email="asa.oberg@example.test",
        sender="Tandtid <no-reply@tandtid.se>",
        now_s=NOW + 60,
        **arguments,
    )


def parsed(mail: Mail) -> EmailMessage:
    message = message_from_bytes(mail.data, policy=policy.default)
    assert isinstance(message, EmailMessage)
    assert message.defects == []
    return message


def expected_text(kind: str) -> str:
    _, _, _, lead_sv, lead_en, _ = KINDS[kind]
    reason = kind == "cancelled"
    lines = [
        "Hej Åsa Öberg-Lindqvist,",
        "",
        lead_sv,
        "",
        *([f"Anledning: {REASON}"] if reason else []),
        "Tid: 2026-12-10 09:00 (svensk tid)",
        "Behandling: Undersökning",
        "Klinik: Folktandvården Södermalm Åsögatan, Åsögatan 133, 116 24 Stockholm",
        "Bokningsnummer: AB-b7",
        "Telefon: 08-123 456 78",
        "",
        "— Tandtid",
        "",
        "----",
        "",
        "Hello Åsa Öberg-Lindqvist,",
        "",
        lead_en,
        "",
        *([f"Reason: {REASON}"] if reason else []),
        "Time: 2026-12-10 09:00 (Swedish time)",
        "Treatment: Check-up",
        "Clinic: Folktandvården Södermalm Åsögatan, Åsögatan 133, 116 24 Stockholm",
        "Booking number: AB-b7",
        "Phone: 08-123 456 78",
        "",
        "— Tandtid",
        "",
    ]
    return "\r\n".join(lines)


def expected_ics(status: str) -> bytes:
    return (
        "BEGIN:VCALENDAR\r\n"
        "VERSION:2.0\r\n"
        "PRODID:-//tandtid//booking//SV\r\n"
        "CALSCALE:GREGORIAN\r\n"
        "METHOD:PUBLISH\r\n"
        "BEGIN:VEVENT\r\n"
        "UID:AB-b7@tandtid\r\n"
        "DTSTAMP:20261207T050100Z\r\n"
        "DTSTART:20261210T080000Z\r\n"
        "DTEND:20261210T083000Z\r\n"
        "SUMMARY:Undersökning – Folktandvården Södermalm Åsögatan\r\n"
        "LOCATION:Åsögatan 133\\, 116 24 Stockholm\\, 08-123 456 78\r\n"
        "GEO:59.330000;18.060000\r\n"
        f"STATUS:{status}\r\n"
        "END:VEVENT\r\n"
        "END:VCALENDAR\r\n"
    ).encode()


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_kind_reads_back_as_the_email_it_was(kind: str) -> None:
    key, _, subject, _, _, status = KINDS[kind]
    mail = compose_kind(kind)
    assert (mail.key, mail.sender, mail.to) == (key, "no-reply@tandtid.se", "asa.oberg@example.test")
    message = parsed(mail)
    assert {h: str(message[h]) for h in message} == {
        "Subject": subject,
        "From": "Tandtid <no-reply@tandtid.se>",
        "To": "Åsa Öberg-Lindqvist <asa.oberg@example.test>",
        "Date": "Mon, 07 Dec 2026 06:01:00 +0100",
        "Message-ID": f"<{key.replace(':', '.')}@notify.tandtid.se>",
        "X-Tandtid-Key": key,
        "MIME-Version": "1.0",
        "Content-Type": message["Content-Type"],  # the boundary: checked below
    }
    assert message.get_content_type() == "multipart/mixed"
    body = message.get_body(("plain",))
    assert body is not None and body.get_content_charset() == "utf-8"
    assert body.get_content() == expected_text(kind)
    (ics,) = message.iter_attachments()
    assert (ics.get_content_type(), ics.get_filename(), ics.get_param("method")) == (
        "text/calendar",
        "AB-b7.ics",
        "PUBLISH",
    )
    assert ics.get_payload(decode=True) == expected_ics(status)


@pytest.mark.parametrize("kind", list(KINDS))
def test_the_bytes_are_7_bit_crlf_short_lines_and_the_same_for_the_same_fact(kind: str) -> None:
    mail = compose_kind(kind)
    mail.data.decode("ascii")  # 7-bit: any SMTP server takes it without 8BITMIME or SMTPUTF8
    lines = mail.data.split(b"\r\n")
    assert not any(b"\r" in line or b"\n" in line for line in lines)
    assert max(len(line) for line in lines) <= 76
    assert compose_kind(kind) == mail  # boundary and Message-ID come from the key
    others = {compose_kind(k).data.split(b"boundary=", 1)[1].split(b"\r\n", 1)[0] for k in KINDS}
    assert len(others) == len(KINDS)  # ...and differ between keys


def test_names_are_quoted_or_encoded_and_cannot_add_headers() -> None:
    plain = parsed(compose_kind("booked", to_name='Anna "Annie" Berg, jr'))
    assert plain["To"].addresses[0].display_name == 'Anna "Annie" Berg, jr'
    assert plain["To"].addresses[0].addr_spec == "asa.oberg@example.test"
    # (accounts refuse control characters in names; a line break would still stay inside the To header)
    message = parsed(compose_kind("booked", to_name="Eva\r\nBcc: everyone@example.test"))
    assert [name for name, _ in message.raw_items()].count("To") == 1 and "Bcc" not in message
    long_name = "Maria-Åsa Öberg-Lindqvist von Ählström af Gyllenbåge-Nordenskiöld " * 2
    mail = compose_kind("booked", to_name=long_name)
    (to,) = [value for name, value in parsed(mail).raw_items() if name == "To"]
    # RFC 2047 decoding (the default policy's address parser puts a space between encoded-words)
    assert str(make_header(decode_header(to))) == f"{long_name} <asa.oberg@example.test>"
    assert max(len(line) for line in mail.data.split(b"\r\n")) <= 76


def test_an_address_that_is_not_ascii_is_not_composed() -> None:
    with pytest.raises(ValueError):  # the notifier records it as skipped:uncomposable, as before
        compose(
            "booked",
            "AB:12:0:booked",
            booking=BOOKING,
            clinic=CLINIC,
            to_name="Åsa",
            to_email="åsa@example.test",
            sender="Tandtid <no-reply@tandtid.se>",
            now_s=NOW,
        )


def cancellation_text(reason: str) -> str:
    c, resources = clinic("AB", 1)
    projection = Projection()
    entries = [
        [ClinicRegistered(c.to_record(), [resource_to_record(r) for r in resources])],
        [Booked("AB-b1", "p1", "AB-c1", "AB-c1-r1", "checkup", FIRST_DAY + 3, CELL_0900, 2, NOW, "", "", "")],
        [Cancelled("AB-b1", "clinic", NOW + 60, NOW + 660, reason)],
    ]
    facts = [
        fact
        for position, events in enumerate(entries, 1)
        for fact in projection.facts("AB", position, pack_events([to_record(e) for e in events]))
    ]
    fact = facts[-1]
    assert (fact.kind, fact.booking.cancel_reason) == ("cancelled", reason)
    mail = compose(
        fact.kind,
        fact.key,
        booking=fact.booking,
        clinic=fact.clinic,
        to_name="Test Patient",
        to_email="patient@example.test",
        sender="Tandtid <noreply@example.test>",
        now_s=NOW + 60,
        by=fact.by,
    )
    body = parsed(mail).get_body(("plain",))
    assert body is not None
    text: str = body.get_content()
    return text


def test_the_reason_is_in_the_cancellation_email() -> None:
    text = cancellation_text("Tandläkaren är sjuk, ring oss för en ny tid")
    assert "Din tid har avbokats av kliniken." in text
    assert "Anledning: Tandläkaren är sjuk, ring oss för en ny tid" in text
    assert "Reason: Tandläkaren är sjuk, ring oss för en ny tid" in text


def test_no_reason_no_reason_line() -> None:
    text = cancellation_text("")
    assert "Din tid har avbokats av kliniken." in text
    assert "Anledning" not in text and "Reason" not in text
