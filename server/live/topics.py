"""Live topics: their names, their snapshots (read inside the actor) and their diffs.

Two kinds of topic::

    region:<CODE>   per clinic per day: free cells, and the times a service can be booked (the
                    map's badges; the subscription names the service, check-up by default)
    clinic:<id>     every resource's cell string per day (the slot grid, the kiosk)

Snapshots are built by functions that take the region's ``RegionState`` and must run inside
``RegionActor.query`` (between batches, on durable state). Diffs are built from a
``Committed`` batch only (never from state), so building them costs nothing per subscriber.
Diffs carry absolute values (a count, a cell state), so applying one twice is harmless.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from typing import Any

from engine.errors import TandtidError
from engine.model import REGION_CODES, SERVICES_BY_ID, region_of
from engine.queries import bookable_summary, region_summary
from engine.state import Change, RegionState

MAX_DAYS = 92
DEFAULT_DAYS = 14
DEFAULT_SERVICE = "checkup"  # what a region topic's ``starts`` count when the subscriber names none
_CELL_DIGITS = bytes.maketrans(bytes(range(10)), b"0123456789")


class BadTopic(TandtidError):
    """A subscribe/unsubscribe that names no valid topic or range (answered with an error frame)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class TopicName:
    key: str  # "region:AB" | "clinic:AB-c1"
    kind: str  # "region" | "clinic"
    ident: str  # region code or clinic id
    region: str


def parse_topic(value: object) -> TopicName:
    """``"region:AB"`` / ``"clinic:AB-c1"`` -> TopicName; BadTopic otherwise. Whether the
    clinic exists is checked against state at subscribe time (``clinic_exists``)."""
    if not isinstance(value, str) or len(value) > 100:
        raise BadTopic("INVALID", "topic must be 'region:<code>' or 'clinic:<id>'")
    kind, _, ident = value.partition(":")
    if kind == "region" and ident in REGION_CODES:
        return TopicName(value, kind, ident, ident)
    # a clinic id: its region, then ``server.http.ids``' base64url letters ('-' and '_' included)
    if kind == "clinic" and ident.isascii() and ident.replace("-", "").replace("_", "").isalnum():
        try:
            return TopicName(value, kind, ident, region_of(ident))
        except ValueError:
            pass
    raise BadTopic("NOT_FOUND", "no such topic")


def parse_range(message: dict[str, Any], today: int) -> tuple[int, int]:
    """(first_day, days) from a subscribe message's optional ``from``/``days`` (today, 14)."""
    raw_from = message.get("from")
    raw_days = message.get("days", DEFAULT_DAYS)
    if raw_from is None:
        first_day = today
    else:
        try:
            first_day = date.fromisoformat(raw_from).toordinal() if isinstance(raw_from, str) else -1
        except ValueError:
            first_day = -1
        if first_day < 0 or len(raw_from) != 10:
            raise BadTopic("INVALID", "'from' must be a date YYYY-MM-DD")
    if isinstance(raw_days, bool) or not isinstance(raw_days, int) or not 1 <= raw_days <= MAX_DAYS:
        raise BadTopic("INVALID", f"'days' must be an integer 1..{MAX_DAYS}")
    return first_day, raw_days


def parse_service(message: dict[str, Any]) -> str:
    """The service a region subscription's ``starts`` count (``service``, check-up by default)."""
    service = message.get("service", DEFAULT_SERVICE)
    if not isinstance(service, str) or service not in SERVICES_BY_ID:
        raise BadTopic("INVALID", f"'service' must be one of {', '.join(SERVICES_BY_ID)}")
    return service


@lru_cache(maxsize=4096)
def iso_date(day: int) -> str:
    return date.fromordinal(day).isoformat()


def cell_string(row: bytes | bytearray) -> str:
    """A row of cell states as the digits of the wire format ("0011133…")."""
    return bytes(row).translate(_CELL_DIGITS).decode("ascii")


# -- snapshots: run inside the actor -----------------------------------------------------------


def clinic_exists(state: RegionState, clinic: str) -> bool:
    return clinic in state.clinics


def region_snapshot(state: RegionState, first_day: int, days: int, service: str, now: int) -> dict[str, Any]:
    """``clinics``: free cells per clinic per day; ``starts``: the times ``service`` can be booked
    per clinic per day at ``now`` (``engine.starts``)."""
    return {
        "from": iso_date(first_day),
        "days": days,
        "clinics": region_summary(state, first_day, days),
        "service": service,
        "starts": bookable_summary(state, service, first_day, days, now),
    }


def clinic_snapshot(state: RegionState, clinic: str, first_day: int, days: int) -> dict[str, Any]:
    resources: dict[str, dict[str, str]] = {}
    for resource in state.resources_of(clinic):
        resources[resource.id] = {
            iso_date(day): cell_string(state.row(resource.id, day))
            for day in range(first_day, first_day + days)
        }
    return {
        "from": iso_date(first_day),
        "days": days,
        "cell_minutes": state.clinics[clinic].cell_minutes,
        "resources": resources,
    }


def snapshot_data(
    state: RegionState, topic: TopicName, first_day: int, days: int, service: str, now: int
) -> dict[str, Any]:
    if topic.kind == "region":
        return region_snapshot(state, first_day, days, service, now)
    return clinic_snapshot(state, topic.ident, first_day, days)


# -- diffs: from a committed batch only ---------------------------------------------------------


def count_items(counts: list[tuple[str, int, int, dict[str, int]]]) -> list[list[Any]]:
    """``Committed.counts`` as the region diff's ``counts`` list: [clinic, date, free cells,
    {service: bookable times}] (every service the clinic offers: subscribers of any service share
    the frame)."""
    return [[clinic, iso_date(day), free, starts] for clinic, day, free, starts in counts]


def cell_items_by_clinic(changes: list[Change]) -> dict[str, list[list[Any]]]:
    """``Committed.changes`` grouped by clinic: [resource, date, first cell, n, state]."""
    by_clinic: dict[str, list[list[Any]]] = defaultdict(list)
    for clinic, resource, day, first, n, cell_state in changes:
        by_clinic[clinic].append([resource, iso_date(day), first, n, int(cell_state)])
    return by_clinic
