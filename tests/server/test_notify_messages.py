"""Unit tests (pure, no network): a cancellation's reason travels from the journal entry through the
consumers' projection into the patient's e-mail, in Swedish and English; without one the e-mail has no
reason line."""

from __future__ import annotations

from engine.events import Booked, Cancelled, ClinicRegistered, to_record
from engine.model import resource_to_record
from persistence.codec import pack_events
from server.consumers.feed import Projection
from server.consumers.notify.messages import compose
from tests.support.catalog import CELL_0900, FIRST_DAY, NOW, clinic


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
    message = compose(
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
    body = message.get_body(("plain",))
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
