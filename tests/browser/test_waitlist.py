"""Browser tests (integration, real server + headless Chromium): "tell me when a time opens" on My bookings,
then the wait-list offer arriving live when the clinic frees a time, and booking it from the offer.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser.browsing import Api, Contexts, sign_in, wait_live

pytestmark = pytest.mark.browser


def test_a_waiting_patient_is_offered_the_freed_time_and_books_it(
    contexts: Contexts, api: Api, solo_clinics: list[str]
) -> None:
    clinic = solo_clinics[2]
    waiter, other = api.register(), api.register()
    target = api.free_times(clinic)[6]
    taken = api.book(other, clinic, target)

    page = contexts.page("/me")
    sign_in(page, waiter.email, waiter.password)
    page.locator("#notify-clinic").fill(clinic)
    page.locator("#notify-service").select_option("checkup")
    page.locator("#notify-form button[type=submit]").click()
    expect(page.locator("#watches li")).to_have_count(1)
    expect(page.locator("#watches li")).to_contain_text(clinic)
    wait_live(page)

    # The clinic's admin cancels the other patient's booking: the cells go to BUFFER and the
    # wait-list gets them first, as an exclusive offer to the first in line.
    admin = api.client.post(
        "/api/auth/login", json={"email": "admin@demo.tandtid.se", "password": "tandtid-demo"}
    )
    assert admin.status_code == 200, admin.text
    cancelled = api.post(f"/api/admin/bookings/{taken['id']}/cancel", admin.json()["token"], {})
    assert cancelled.status_code == 200, cancelled.text

    offer = page.locator("#offers li")
    expect(offer).to_have_count(1)
    expect(offer).to_contain_text(
        page.evaluate(
            "(iso) => new Date(iso).toLocaleTimeString('sv-SE', {timeZone: 'Europe/Stockholm', hour: '2-digit', minute: '2-digit'})",
            target["start"],
        )
    )
    offer.locator("button").click()
    booked = page.locator("#upcoming li[data-booking]")
    expect(booked).to_have_count(1)
    expect(page.locator("#offers-wrap")).to_be_hidden()
    mine = api.get("/api/bookings", token=waiter.token)["bookings"]
    assert [(b["start"], b["status"]) for b in mine] == [(target["start"], "booked")]
