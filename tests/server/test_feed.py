"""Unit tests (no network) for server.consumers.feed: what the feed does with clinic setup events.

Setup events are no fact for anyone: passed over on purpose and counted by kind; a consumer's own
replica applies a clinic's edit, so the facts after it carry the clinic's new details.
"""

from __future__ import annotations

from prometheus_client import REGISTRY

from engine.events import (
    ClinicEdited,
    ClinicRegistered,
    DayHoursSet,
    HoursSet,
    OfferMade,
    ResourcePut,
    ResourceRetired,
    to_record,
)
from engine.model import resource_to_record
from persistence.codec import pack_events
from server.consumers.feed import Projection
from tests.support.catalog import CELL_0900, FIRST_DAY, NOW, clinic


def counted(kind: str) -> float:
    return REGISTRY.get_sample_value("tandtid_consumer_setup_events_total", {"kind": kind}) or 0.0


def test_setup_events_are_passed_over_counted_and_an_edit_reaches_the_facts_after_it() -> None:
    c, resources = clinic("AB", 1)
    projection = Projection()  # no region state in this process: the feed keeps its own replica
    registered = ClinicRegistered(c.to_record(), [resource_to_record(r) for r in resources])
    assert projection.facts("AB", 1, pack_events([to_record(registered)])) == []

    setup = [
        ClinicEdited(c.id, {"name": "Tandvården Ny", "offer_minutes": 30, "phone": "08-1"}),
        ResourcePut(resource_to_record(resources[0])),
        HoursSet(c.id, {"1": [[480, 1020]]}, FIRST_DAY),
        DayHoursSet(c.id, FIRST_DAY, None),
        ResourceRetired(resources[1].id, FIRST_DAY),
    ]
    before = {e.KIND: counted(e.KIND) for e in setup}
    assert projection.facts("AB", 2, pack_events([to_record(e) for e in setup])) == []
    assert {e.KIND: counted(e.KIND) - before[e.KIND] for e in setup} == {e.KIND: 1 for e in setup}

    expires = NOW + 30 * 60
    offer = OfferMade(
        "AB-h1", "w1", "patient-1", c.id, resources[0].id, "checkup", FIRST_DAY, CELL_0900, 2, expires
    )
    [fact] = projection.facts("AB", 3, pack_events([to_record(offer)]))
    assert fact.clinic.name == "Tandvården Ny" and fact.clinic.phone == "08-1"
    assert fact.at == NOW  # made when the (new) 30-minute window began
