"""Browser tests (integration, real server + headless Chromium): staff actions that touch a patient's booking.
Blocking over a booking names the booking in the way; "Avboka" asks first, naming the patient and the time."""

from __future__ import annotations

import pytest
from playwright.sync_api import Dialog, Page, expect

from tests.browser.browsing import DEMO, DEMO_PASSWORD, Api, Contexts, sign_in, wait_live

pytestmark = pytest.mark.browser


def staff_day_with_booking(contexts: Contexts, api: Api, index: int) -> tuple[Page, dict[str, str]]:
    patient = api.register()
    today = api.today()  # a later day, so the rest of that day is open whatever hour the test runs
    booked = api.book(patient, "AB-c1", [t for t in api.free_times("AB-c1") if t["date"] != today][index])
    page = contexts.page("/staff")
    sign_in(page, DEMO["staff"], DEMO_PASSWORD)
    wait_live(page)
    page.locator("#staff-date").fill(booked["start"][:10])
    page.locator("#staff-date").dispatch_event("change")
    expect(page.locator(f"#bookings-body tr[data-booking='{booked['id']}']")).to_contain_text("Test Patient")
    return page, booked


def test_blocking_over_a_booking_names_it(contexts: Contexts, api: Api) -> None:
    page, booked = staff_day_with_booking(contexts, api, 7)
    page.locator("#block-resource").select_option(booked["resource"])
    page.locator("#block-start").fill(booked["start"][11:16])
    page.locator("#block-minutes").fill("30")
    page.locator("#block").click()
    message = page.locator("#staff-message")
    expect(message).to_have_attribute("data-kind", "error")
    expect(message).to_contain_text("Test Patient")
    expect(message).to_contain_text(booked["start"][11:16])
    expect(message).not_to_contain_text("SLOT_TAKEN")


def test_staff_cancel_asks_first(contexts: Contexts, api: Api) -> None:
    page, booked = staff_day_with_booking(contexts, api, 9)
    asked: list[str] = []

    def dismiss(dialog: Dialog) -> None:
        asked.append(dialog.message)
        dialog.dismiss()

    page.once("dialog", dismiss)
    row = page.locator(f"#bookings-body tr[data-booking='{booked['id']}']")
    row.locator("button.danger").click()
    status = row.locator("td").nth(4)
    expect(status).to_have_text("Bokad")  # dismissed: nothing changed
    assert asked and "Test Patient" in asked[0] and booked["start"][11:16] in asked[0]

    def accept(dialog: Dialog) -> None:
        dialog.accept()

    page.once("dialog", accept)
    row.locator("button.danger").click()
    expect(page.locator("#staff-message")).to_have_attribute("data-kind", "ok")
    expect(status).to_have_text("Avbokad")
