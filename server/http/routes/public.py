"""Public read-only routes: regions, services, municipalities, clinic search, availability.

Every read of slot state goes through ``regions.query(region, fn)``: ``fn`` runs inside the
region's actor between batches and returns plain data (never live engine objects).
"""

from __future__ import annotations

import math
from itertools import groupby
from operator import itemgetter
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from engine import queries
from engine import search as engine_search
from engine.calendar import date_of, iso
from engine.model import REGION_CODES, REGIONS, SERVICES, Clinic, Resource
from engine.state import RegionState
from server.demo import geography
from server.http.errors import not_found
from server.http.openapi import Endpoint
from server.http.routes.access import first_day, now_s, parse_query, path_id, region_or_404, regions_of
from server.http.routes.replies import json_response
from server.http.schemas import AvailabilityQuery, ClinicSearchQuery, MunicipalitiesQuery, SummaryQuery
from server.regions.routing import SEARCH_SLICE_CLINICS


def clinic_resources(state: RegionState, clinic: str) -> list[Resource]:
    return sorted((r for r in state.resources.values() if r.clinic == clinic), key=lambda r: r.id)


def clinic_summary(clinic: Clinic) -> dict[str, Any]:
    return {
        "id": clinic.id,
        "name": clinic.name,
        "region": clinic.region,
        "municipality": clinic.municipality,
        "municipality_name": clinic.municipality_name,
        "address": clinic.address,
        "lat": clinic.lat,
        "lon": clinic.lon,
        "kind": str(clinic.kind),
        "services": list(clinic.services),
    } | ({"suspended": True} if clinic.suspended else {})  # by the platform: no new bookings


def _distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6371.0 * math.asin(math.sqrt(min(1.0, a)))


async def list_regions(request: Request) -> Response:
    regions = regions_of(request)
    counts = dict(await regions.query_all(lambda s: [(s.region, len(s.clinics))]))
    out = []
    for region, count in ((r.code, counts[r.code]) for r in REGIONS if r.code in counts):
        county = geography.county(region)
        out.append(
            {"code": region, "name": county.name, "clinics": count, "lat": county.lat, "lon": county.lon}
        )
    return json_response(out)


async def list_services(request: Request) -> Response:
    return json_response(
        [{"id": s.id, "name": s.name, "name_en": s.name_en, "minutes": s.minutes} for s in SERVICES]
    )


async def list_municipalities(request: Request) -> Response:
    q = parse_query(request, MunicipalitiesQuery)
    if q.region is not None and q.region not in REGION_CODES:
        return json_response([])
    found = geography.municipalities_in(q.region) if q.region else geography.municipalities()
    return json_response(
        [{"code": m.code, "name": m.name, "region": m.region} for m in sorted(found, key=lambda m: m.name)]
    )


async def search_clinics(request: Request) -> Response:
    q = parse_query(request, ClinicSearchQuery)
    regions = regions_of(request)
    start_day = first_day(request, q.from_, days=q.days)
    now = now_s(request)
    near: tuple[float, float] | None = None
    if q.near:
        lat_s, lon_s = q.near.split(",")
        near = (float(lat_s), float(lon_s))

    sort = q.sort or ("distance" if near else ("earliest" if q.service else "name"))
    if sort == "distance" and near is None:
        sort = "name"
    # every clinic's first free time, of the service or (none named) of any: one ranking
    wants_first = bool(q.service or q.has_free or sort == "earliest")

    def search(state: RegionState) -> list[dict[str, Any]]:
        """At most ``limit`` rows of this region, in the answer's order. By ``earliest`` for a
        service: the head of the region's ranking (``engine.search``), walked only as far as the
        answer. Otherwise clinics are ordered first (by name or distance) and taken until
        ``limit`` are found, each clinic's first free time read from the ranking."""
        found: list[engine_search.Found]
        if sort == "earliest":
            found = engine_search.earliest_clinics(
                state,
                q.service,
                start_day,
                q.days,
                now,
                q.limit,
                municipality=q.municipality,
                has_free=bool(q.has_free),
            )
        else:
            found = _ordered(state)
        rows = []
        for clinic, first, at in found:
            row = clinic_summary(clinic)
            row["next_free"] = iso(first[0], first[1], clinic.cell_minutes) if first else None
            row["_next"] = at
            if near is not None:
                row["distance_km"] = round(_distance_km(near[0], near[1], clinic.lat, clinic.lon), 2)
            rows.append(row)
        return rows

    def _ordered(state: RegionState) -> list[engine_search.Found]:
        rank = engine_search.ranking(state, q.service, start_day, q.days, now) if wants_first else None
        matching = [
            c
            for c in state.clinics.values()
            if (not q.municipality or c.municipality == q.municipality)
            and (not q.service or q.service in c.services)
        ]
        if sort == "distance":
            assert near is not None
            distance = {c.id: round(_distance_km(near[0], near[1], c.lat, c.lon), 2) for c in matching}
            matching.sort(key=lambda c: (distance[c.id], c.id))
        elif sort == "name":
            matching.sort(key=lambda c: (c.name, c.id))
        found: list[engine_search.Found] = []
        for clinic in matching:
            first = rank.found.get(clinic.id) if rank else None
            if q.has_free and first is None:
                continue
            # compared as instants: (day, cell) alone is not comparable across cell sizes
            found.append((clinic, first[1], first[0]) if first else (clinic, None, None))
            if len(found) >= q.limit:
                break
        return found

    searched = list(regions.actors) if q.region is None else [q.region] if q.region in regions.actors else []
    if wants_first:  # a cold ranking is built in slices first
        for code in searched:
            await regions.prepare(
                code,
                lambda state: engine_search.prepare(
                    state, q.service, start_day, q.days, now, SEARCH_SLICE_CLINICS
                ),
            )
    if q.region is None:
        rows = await regions.query_all(search)
    elif searched:
        rows = await regions.query(q.region, search)
    else:
        rows = []
    if sort == "distance":
        rows.sort(key=lambda r: (r["distance_km"], r["id"]))
    elif sort == "earliest":
        rows.sort(key=lambda r: (r["_next"] is None, r["_next"] or 0, r["id"]))
    else:
        rows.sort(key=lambda r: (r["name"], r["id"]))
    del rows[q.limit :]
    for row in rows:
        del row["_next"]
    return json_response(rows)


async def get_clinic(request: Request) -> Response:
    clinic_id = path_id(request)
    region = region_or_404(clinic_id)

    def read(state: RegionState) -> dict[str, Any] | None:
        clinic = state.clinics.get(clinic_id)
        if clinic is None:
            return None
        view = clinic_summary(clinic)
        view.update(
            {
                "phone": clinic.phone,
                "cell_minutes": clinic.cell_minutes,
                "hours": {str(d): [list(iv) for iv in ivs] for d, ivs in sorted(clinic.hours.items())},
                "cancel_notice_hours": clinic.cancel_notice_hours,
                "resources": [
                    {"id": r.id, "kind": str(r.kind), "name": r.name, "services": list(r.services)}
                    for r in clinic_resources(state, clinic_id)
                ],
            }
        )
        return view

    view = await regions_of(request).query(region, read)
    if view is None:
        raise not_found("no such clinic")
    return json_response(view)


async def clinic_availability(request: Request) -> Response:
    clinic_id = path_id(request)
    region = region_or_404(clinic_id)
    q = parse_query(request, AvailabilityQuery)
    start_day = first_day(request, q.from_, days=q.days)
    now = now_s(request)

    def read(state: RegionState) -> dict[str, Any] | None:
        clinic = state.clinics.get(clinic_id)
        if clinic is None:
            return None
        cm = clinic.cell_minutes
        days = []
        if q.service in clinic.services:
            per_day = dict(queries.free_starts(state, clinic_id, q.service, start_day, q.days, now))
        else:
            per_day = {}
        for day in range(start_day, start_day + q.days):
            # A time is a time: one entry per start, naming every resource free then (the first is the one
            # to hold; the count is how many patients can still take it).
            times = []
            for cell, starts in groupby(per_day.get(day, []), key=itemgetter(0)):  # by cell, then resource
                free = [res for _, res in starts]
                times.append({"start": iso(day, cell, cm), "resource": free[0], "resources": free})
            days.append({"date": date_of(day).isoformat(), "times": times})
        return {"clinic": clinic_id, "service": q.service, "cell_minutes": cm, "days": days}

    view = await regions_of(request).query(region, read)
    if view is None:
        raise not_found("no such clinic")
    return json_response(view)


async def region_summary(request: Request) -> Response:
    code = path_id(request, "code")
    regions = regions_of(request)
    if code not in regions.actors:
        raise not_found("no such region")
    q = parse_query(request, SummaryQuery)
    start_day = first_day(request, q.from_, days=q.days)
    now = now_s(request)

    def summary(state: RegionState) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
        return (
            queries.region_summary(state, start_day, q.days),
            queries.bookable_summary(state, q.service, start_day, q.days, now),
        )

    clinics, starts = await regions.query(code, summary)
    return json_response(
        {
            "region": code,
            "from": date_of(start_day).isoformat(),
            "days": q.days,
            "clinics": clinics,
            "service": q.service,
            "starts": starts,
        }
    )


_LIST = {"type": "array", "items": {"type": "object"}}

ENDPOINTS = [
    Endpoint(
        "GET",
        "/api/regions",
        list_regions,
        "Sweden's 21 regions with clinic counts",
        "public",
        ok_schema=_LIST,
    ),
    Endpoint(
        "GET", "/api/services", list_services, "The services that can be booked", "public", ok_schema=_LIST
    ),
    Endpoint(
        "GET",
        "/api/municipalities",
        list_municipalities,
        "Municipalities, optionally of one region",
        "public",
        query=MunicipalitiesQuery,
        ok_schema=_LIST,
    ),
    Endpoint(
        "GET",
        "/api/clinics",
        search_clinics,
        "Search clinics, with their earliest free time",
        "public",
        query=ClinicSearchQuery,
        ok_schema=_LIST,
    ),
    Endpoint("GET", "/api/clinics/{id}", get_clinic, "A clinic with its resources and hours", "public"),
    Endpoint(
        "GET",
        "/api/clinics/{id}/availability",
        clinic_availability,
        "Free start times per day for a service: one per time, with every resource free then",
        "public",
        query=AvailabilityQuery,
    ),
    Endpoint(
        "GET",
        "/api/regions/{code}/summary",
        region_summary,
        "Per clinic per day in a region: free cells (clinics) and the times the service can be booked"
        " (starts: what the map's badges count)",
        "public",
        query=SummaryQuery,
    ),
]
