"""Browser tests (integration, real server + headless Chromium): every screen at phone and desktop size.

Each screen is brought into a meaningful state, checked with axe-core (no serious or critical violation)
and photographed into a temp dir (the README's pictures come from ``make screenshots``, scripts/screenshots.py).
The map is also the offline test: the contexts refuse everything but 127.0.0.1, so the street map's tiles fail
and the county outline must be the map; the page tries nothing else beyond the server. With tiles served, the
street map is the base, with attribution.
"""

from __future__ import annotations

import re
import struct
import time
import zlib

import pytest
from playwright.sync_api import Page, Route, expect

from tests.browser.browsing import (
    DEMO,
    DEMO_PASSWORD,
    DESKTOP,
    KIOSK,
    PHONE,
    Api,
    Contexts,
    check_accessibility,
    epoch_of,
    ms,
    screenshot,
    sign_in,
    wait_live,
)

pytestmark = pytest.mark.browser

SIZES = {"phone": PHONE, "desktop": DESKTOP}


def _png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A plain PNG of one colour (what a tile server would answer)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\0" + bytes(rgb) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


TILE_PNG = _png(256, 256, (222, 230, 214))


def settle(page: Page, screen: str, size: str) -> None:
    check_accessibility(page, f"{screen} ({size})")
    screenshot(page, f"{screen}-{size}")


@pytest.mark.parametrize("size", SIZES)
def test_map_works_offline_and_is_accessible(contexts: Contexts, size: str) -> None:
    page = contexts.page("/", viewport=SIZES[size])
    wait_live(page)
    expect(page.locator("#results li.clinic").first).to_be_visible()
    # The street map's tiles cannot load here: the 21 counties and the outline, drawn from the geography shipped
    # in static/geo, are the map (filled), and no tile is left behind.
    expect(page.locator("#map")).to_have_attribute("data-base", "outline")
    expect(page.locator(".leaflet-overlay-pane path")).to_have_count(22)
    expect(page.locator(".leaflet-overlay-pane path[fill-opacity='1']")).to_have_count(21)
    expect(
        page.locator(".leaflet-marker-pane .cluster-marker, .leaflet-marker-pane .clinic-marker").first
    ).to_be_visible()
    expect(page.locator(".leaflet-tile-pane img")).to_have_count(0)
    expect(page.locator(".leaflet-control-attribution")).not_to_contain_text("OpenStreetMap")
    beyond = [url for url in contexts.blocked if not url.startswith("https://tile.openstreetmap.org/")]
    assert beyond == [], f"the map tried to reach beyond the server and the tile server: {beyond}"
    assert len(contexts.blocked) == 1, f"the map should try one tile, then give up: {contexts.blocked}"
    settle(page, "map", size)


def test_the_street_map_is_the_base_when_its_tiles_load(contexts: Contexts) -> None:
    context = contexts.new(DESKTOP)
    asked: list[str] = []

    def tile(route: Route) -> None:
        asked.append(route.request.url)
        route.fulfill(status=200, content_type="image/png", body=TILE_PNG)

    context.route(
        "https://tile.openstreetmap.org/**", tile
    )  # after the context's only-local route: asked first
    page = context.new_page()
    page.goto("/")
    wait_live(page)
    expect(page.locator("#map")).to_have_attribute("data-base", "tiles")
    expect(page.locator(".leaflet-tile-pane img.leaflet-tile-loaded").first).to_be_attached()
    expect(page.locator(".leaflet-control-attribution")).to_contain_text("© OpenStreetMap contributors")
    # the counties stay as thin lines over the streets, not a fill hiding them
    expect(page.locator(".leaflet-overlay-pane path")).to_have_count(22)
    expect(page.locator(".leaflet-overlay-pane path[fill-opacity='1']")).to_have_count(0)
    assert asked and all(re.search(r"/\d+/\d+/\d+\.png$", url) for url in asked), asked


@pytest.mark.parametrize("size", SIZES)
def test_clinic_hold_and_confirmation_screens(
    contexts: Contexts, api: Api, solo_clinics: list[str], size: str
) -> None:
    clinic = solo_clinics[3]
    patient = api.register()
    page = contexts.page(f"/clinic/{clinic}?service=checkup", viewport=SIZES[size])
    wait_live(page)
    expect(page.locator("button.slot").first).to_be_visible()
    settle(page, "clinic", size)

    target = api.free_times(clinic)[-1 if size == "phone" else -2]
    page.locator(f"button.slot[data-start='{target['start']}']").click()
    expect(page.locator("form.auth")).to_be_visible()
    settle(page, "clinic-sign-in", size)
    sign_in(page, patient.email, patient.password)
    expect(page.locator("#hold-panel")).to_have_attribute("data-state", "held")
    expect(page.locator("#hold-countdown")).to_have_text(re.compile(r"^\d+:\d\d$"))
    settle(page, "clinic-hold", size)
    page.locator("#confirm").click()
    expect(page.locator("#confirmation")).to_be_visible()
    settle(page, "clinic-confirmation", size)


@pytest.mark.parametrize("size", SIZES)
def test_my_bookings_screen(contexts: Contexts, api: Api, solo_clinics: list[str], size: str) -> None:
    clinic = solo_clinics[4 % len(solo_clinics)]
    patient = api.register()
    # past the clinic's cancellation notice (whatever the time of day), so the booking can still be moved
    notice_s = api.get(f"/api/clinics/{clinic}")["cancel_notice_hours"] * 3600 + 3600
    free = [t for t in api.free_times(clinic) if epoch_of(t["start"]) > time.time() + notice_s]
    booking = api.book(patient, clinic, free[1 if size == "phone" else 2])
    page = contexts.page("/me", viewport=SIZES[size])
    expect(page.locator("form.auth")).to_be_visible()
    settle(page, "me-sign-in", size)
    sign_in(page, patient.email, patient.password)
    wait_live(page)
    expect(page.locator(f"#upcoming li[data-booking='{booking['id']}']")).to_be_visible()
    settle(page, "me", size)
    page.locator(f"#upcoming li[data-booking='{booking['id']}'] button.move").click()
    expect(page.locator("#move-grid button.slot").first).to_be_visible()
    settle(page, "me-move", size)


@pytest.mark.parametrize("size", SIZES)
def test_kiosk_screen(contexts: Contexts, api: Api, solo_clinics: list[str], size: str) -> None:
    clinic = solo_clinics[0]
    day = api.free_times(clinic)[0]["date"]
    page = contexts.page(f"/kiosk/{clinic}?date={day}", viewport=KIOSK if size == "desktop" else PHONE)
    wait_live(page)
    expect(page.locator("#kiosk-times li").first).to_be_visible()
    expect(page.locator("#qr-img")).to_have_attribute("src", re.compile(r"^data:image/gif"))
    settle(page, "kiosk", size)


@pytest.mark.parametrize("size", SIZES)
def test_staff_screen_shows_the_day_with_patient_names(contexts: Contexts, api: Api, size: str) -> None:
    patient = api.register()
    # A day after today, so the rest of that day is still open whatever hour the test runs.
    today = api.today()
    booked = api.book(
        patient,
        "AB-c1",
        [t for t in api.free_times("AB-c1") if t["date"] != today][4 if size == "phone" else 5],
    )
    page = contexts.page("/staff", viewport=SIZES[size])
    sign_in(page, DEMO["staff"], DEMO_PASSWORD)
    wait_live(page)
    page.locator("#staff-date").fill(booked["start"][:10])
    page.locator("#staff-date").dispatch_event("change")
    row = page.locator(f"#bookings-body tr[data-booking='{booked['id']}']")
    expect(row).to_contain_text("Test Patient")
    expect(page.locator("#day-table td.s3").first).to_be_visible()
    expect(page.locator("#staff-message")).to_be_hidden()
    settle(page, "staff", size)

    # Block a free half hour later that day on the booking's resource, then unblock it again.
    later = [
        t
        for t in api.free_times("AB-c1")
        if t["date"] == booked["start"][:10]
        and t["resource"] == booked["resource"]
        and t["start"] > booked["start"]
    ]
    page.locator("#block-resource").select_option(booked["resource"])
    page.locator("#block-start").fill(later[-1]["start"][11:16])
    page.locator("#block-minutes").fill("30")
    column = page.locator(f"#day-table td[data-resource='{booked['resource']}']")
    blocked_before = column.and_(page.locator(".s4")).count()
    page.locator("#block").click()
    expect(column.and_(page.locator(".s4"))).to_have_count(blocked_before + 2)
    page.locator("#unblock").click()
    expect(column.and_(page.locator(".s4"))).to_have_count(blocked_before)


@pytest.mark.parametrize("size", SIZES)
def test_admin_dashboard_screen(contexts: Contexts, api: Api, solo_clinics: list[str], size: str) -> None:
    page = contexts.page("/admin", viewport=SIZES[size])
    sign_in(page, DEMO["admin"], DEMO_PASSWORD)
    expect(page.locator("#chart-commands")).to_have_attribute("data-samples", re.compile(r"^\d+$"))
    # Some traffic to draw: bookings in two regions and one refused (the time is already taken).
    for clinic in (solo_clinics[0], solo_clinics[-1]):
        taken = api.free_times(clinic)[6]
        api.book(api.register(), clinic, taken)
    assert (
        api.post(
            "/api/bookings",
            api.register().token,
            {"clinic": clinic, "resource": taken["resource"], "service": "checkup", "start": taken["start"]},
        ).status_code
        == 409
    )
    expect(page.locator("#regions li")).to_have_count(21)
    expect(page.locator("#regions li[data-ready='true']")).to_have_count(21)
    expect(page.locator("#chart-commands .plot canvas")).to_have_count(1)
    expect(page.locator("#chart-commands")).to_have_attribute("data-samples", re.compile(r"^([3-9]|\d\d+)$"))
    # With no SMTP configured, the confirmations of those bookings land in the outbox the admin reads here.
    expect(page.locator("#outbox tr button").first).to_be_visible(timeout=ms(15))
    page.locator("#outbox tr button").first.click()
    expect(page.locator("#outbox-message")).to_be_visible()
    expect(page.locator("#outbox-message")).to_contain_text(".ics")
    settle(page, "admin", size)


def test_english_toggle_is_remembered(contexts: Contexts) -> None:
    page = contexts.page("/")
    expect(page.locator("html")).to_have_attribute("lang", "sv")
    expect(page.locator("header nav a[href='/']")).to_have_text("Karta")
    page.locator("#lang-toggle").click()
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.locator("header nav a[href='/']")).to_have_text("Map")
    expect(page.locator("#search")).to_have_text("Search")
    page.reload()
    expect(page.locator("header nav a[href='/']")).to_have_text("Map")
    expect(page.locator("#results-title")).to_have_text("Clinics")
