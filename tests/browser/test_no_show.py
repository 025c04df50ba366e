"""Browser test (integration, real server + headless Chromium): the staff "No-show" button posts to
``/api/clinic/v1/bookings/{id}/no-show``; before the appointment has started the server refuses (422 INVALID)
and the page says so plainly, and the booking stays booked.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser.browsing import DEMO, DEMO_PASSWORD, Api, Contexts, check_accessibility, sign_in, wait_live

pytestmark = pytest.mark.browser


def test_no_show_before_the_start_is_refused_with_a_clear_message(contexts: Contexts, api: Api) -> None:
    today = api.today()
    patient = api.register()
    booking = api.book(patient, "AB-c1", [t for t in api.free_times("AB-c1") if t["date"] != today][11])
    page = contexts.page("/staff")
    sign_in(page, DEMO["staff"], DEMO_PASSWORD)
    wait_live(page)
    page.locator("#staff-date").fill(booking["start"][:10])
    page.locator("#staff-date").dispatch_event("change")
    row = page.locator(f"#bookings-body tr[data-booking='{booking['id']}']")
    expect(row).to_contain_text("Bokad")

    with page.expect_response(
        lambda r: (
            r.request.method == "POST" and r.url.endswith(f"/api/clinic/v1/bookings/{booking['id']}/no-show")
        )
    ) as answer:
        row.get_by_role("button", name="Uteblev").click()
    assert answer.value.status == 422
    assert answer.value.json()["error"]["code"] == "INVALID"

    message = page.locator("#staff-message")
    expect(message).to_have_attribute("data-kind", "error")
    expect(message).to_contain_text("Kan inte markeras som utebliven än")
    start = page.evaluate(
        "(iso) => new Date(iso).toLocaleTimeString('sv-SE', {timeZone: 'Europe/Stockholm', hour: '2-digit', minute: '2-digit'})",
        booking["start"],
    )
    expect(message).to_contain_text(start)
    expect(row).to_contain_text("Bokad")
    assert api.get(f"/api/bookings/{booking['id']}", token=patient.token)["booking"]["status"] == "booked"
    check_accessibility(page, "staff no-show refused")

    page.locator("#lang-toggle").click()
    row.get_by_role("button", name="No-show").click()
    expect(message).to_contain_text("Cannot be marked as a no-show yet")
