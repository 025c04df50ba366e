"""Browser tests (integration, real server + headless Chromium): "tell me when a time opens" on My bookings,
then the wait-list offer arriving live when the clinic frees a time, and booking it from the offer.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser.browsing import DEMO, Api, Contexts, sign_in, wait_live

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
    # the clinic is chosen by its name within its region, not typed as an id
    name = api.get(f"/api/clinics/{clinic}")["name"]
    page.locator("#notify-region").select_option(clinic.split("-")[0])
    expect(page.locator(f"#notify-clinic option[value='{clinic}']")).to_have_count(1)
    page.locator("#notify-clinic").select_option(clinic)
    expect(page.locator("#notify-clinic option:checked")).to_contain_text(name)
    page.locator("#notify-service").select_option("checkup")
    page.locator("#notify-form button[type=submit]").click()
    expect(page.locator("#watches li")).to_have_count(1)
    expect(page.locator("#watches li")).to_contain_text(name)
    expect(page.locator("#watches li")).not_to_contain_text(f"{clinic} ")
    wait_live(page)

    # The clinic's admin cancels the other patient's booking: the cells go to BUFFER and the
    # wait-list gets them first, as an exclusive offer to the first in line.
    admin = api.sign_in(DEMO["admin"])
    cancelled = api.post(f"/api/admin/bookings/{taken['id']}/cancel", admin.token, {})
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


def test_watch_on_a_clinic_page_joins_the_wait_list_in_one_tap(
    contexts: Contexts, api: Api, solo_clinics: list[str]
) -> None:
    clinic = solo_clinics[3]
    patient = api.register()
    page = contexts.page("/me")
    sign_in(page, patient.email, patient.password)
    page.goto(f"/clinic/{clinic}?service=checkup")
    wait_live(page)
    page.locator("#watch").click()
    expect(page.locator("#flow-message")).to_have_attribute("data-kind", "ok")
    entries = api.get("/api/waitlist", token=patient.token)["entries"]
    assert [(e["clinic"], e["service"]) for e in entries] == [(clinic, "checkup")]
    page.goto("/me")
    expect(page.locator("#watches li")).to_contain_text(api.get(f"/api/clinics/{clinic}")["name"])
