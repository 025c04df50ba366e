"""Browser tests (integration, real server + headless Chromium): the private calendar feed controls on /me (a
patient's feed) and /staff (the clinic's feed): create shows the URL, the URL serves text/calendar with the
booking, revoke turns it off (404).
"""

from __future__ import annotations

import re

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.browser.browsing import (
    DEMO,
    DEMO_PASSWORD,
    DESKTOP,
    PHONE,
    Api,
    Contexts,
    check_accessibility,
    screenshot,
    sign_in,
)

pytestmark = pytest.mark.browser

SIZES = {"phone": PHONE, "desktop": DESKTOP}


def create_fetch_revoke(page: Page, prefix: str, kind: str, booking_id: str, screen: str) -> None:
    page.locator(f"#{prefix}-create").click()
    url_field = page.locator(f"#{prefix}-url")
    expect(url_field).to_be_visible()
    expect(url_field).to_have_value(re.compile(rf"^http://127\.0\.0\.1:\d+/ical/{kind}/[^/]+\.ics$"))
    expect(page.locator(f"#{prefix}-copy")).to_be_visible()
    url = url_field.input_value()

    feed = httpx.get(url, timeout=20)
    assert feed.status_code == 200, feed.text
    assert feed.headers["content-type"].startswith("text/calendar")
    assert f"UID:{booking_id}@tandtid" in feed.text
    assert "Test Patient" not in feed.text

    page.locator(f"#{prefix}-shown").scroll_into_view_if_needed()
    check_accessibility(page, screen)
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), (
        "the page scrolls sideways"
    )
    screenshot(page, screen.replace(" (", "-").rstrip(")"))

    page.locator(f"#{prefix}-revoke").click()
    expect(page.locator(f"#{prefix}-message")).to_have_attribute("data-kind", "ok")
    expect(url_field).to_be_hidden()
    assert httpx.get(url, timeout=20).status_code == 404


@pytest.mark.parametrize("size", SIZES)
def test_patient_feed_created_fetched_and_revoked(
    contexts: Contexts, api: Api, solo_clinics: list[str], size: str
) -> None:
    clinic = solo_clinics[1]
    patient = api.register()
    booking = api.book(patient, clinic, api.free_times(clinic)[3 if size == "phone" else 4])
    page = contexts.page("/me", viewport=SIZES[size])
    sign_in(page, patient.email, patient.password)
    expect(page.locator(f"#upcoming li[data-booking='{booking['id']}']")).to_be_visible()
    create_fetch_revoke(page, "me-feed", "patient", booking["id"], f"me-feed ({size})")


@pytest.mark.parametrize("size", SIZES)
def test_clinic_feed_created_fetched_and_revoked(contexts: Contexts, api: Api, size: str) -> None:
    today = api.today()
    booking = api.book(api.register(), "AB-c1", [t for t in api.free_times("AB-c1") if t["date"] != today][9])
    page = contexts.page("/staff", viewport=SIZES[size])
    sign_in(page, DEMO["staff"], DEMO_PASSWORD)
    expect(page.locator("#staff-feed-create")).to_be_visible()
    create_fetch_revoke(page, "staff-feed", "clinic", booking["id"], f"staff-feed ({size})")
