"""Clinic API keys for a load test, created through the admin API of the server under test.

The clinic systems (``ClinicSystemUser``) and the flash crowd's releases need keys. They go to
the clinics patients meet first in a region's search for the flash crowd's service (where
contention is); the first is the flash crowd's clinic. ``keys_through_api`` signs in as the run's admin (the demo admin that
``tandtid serve --seed`` creates, unless ``TANDTID_LT_ADMIN_EMAIL``/``_PASSWORD`` say otherwise).
"""

from __future__ import annotations

import datetime as dt

import httpx

from loadtest.invariants import admin_token
from loadtest.users import FIRST_OFFSET, FLASH_SERVICE, WINDOW_DAYS, today


class NoClinicKeys(Exception):
    """Keys could not be created; the message says why (for the one line the user sees)."""


def busy_clinics(client: httpx.Client, region: str, count: int) -> list[str]:
    """The clinics patients meet first in a region's search for the flash crowd's service over its
    window. The first is where the crowd races: it must offer that service and have free times
    then. (Taken from a search naming no service, the first clinic depended on the time of day,
    and was at times one without the crowd's service: the crowd had nothing to race for, and the
    mix's load differed from run to run by 30 times in flash bookings.)"""
    first = today() + dt.timedelta(days=FIRST_OFFSET)
    reply = client.get(
        "/api/clinics",
        params={
            "region": region,
            "service": FLASH_SERVICE,
            "from": first.isoformat(),
            "days": WINDOW_DAYS,
            "has_free": "true",
            "sort": "earliest",
            "limit": count,
        },
    )
    reply.raise_for_status()
    return [c["id"] for c in reply.json()]


def keys_through_api(
    host: str, region: str, count: int, *, admin_email: str, admin_password: str
) -> dict[str, str]:
    """``{clinic: key}`` for up to ``count`` busy clinics of ``region``. Raises NoClinicKeys."""
    try:
        with httpx.Client(base_url=host, timeout=30) as client:
            try:
                token = admin_token(client, admin_email, admin_password)
            except httpx.HTTPStatusError as exc:
                raise NoClinicKeys(
                    f"cannot sign in as the admin {admin_email} ({exc.response.status_code}); "
                    "set TANDTID_LT_ADMIN_EMAIL/_PASSWORD or TANDTID_LT_CLINIC_KEYS"
                ) from None
            keys = {}
            for clinic in busy_clinics(client, region, count):
                reply = client.post(
                    f"/api/admin/clinics/{clinic}/keys", headers={"Authorization": f"Bearer {token}"}
                )
                reply.raise_for_status()
                keys[clinic] = reply.json()["key"]
            return keys
    except httpx.HTTPError as exc:
        raise NoClinicKeys(f"cannot create clinic keys at {host}: {exc}") from None
