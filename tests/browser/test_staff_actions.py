"""Browser tests (integration, real server + headless Chromium): staff actions that touch a patient's booking.
Blocking over a booking names the booking in the way; "Avboka" asks first, naming the patient and the time, and
takes a reason that the patient then sees."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.browser.browsing import (
    DEMO,
    DEMO_PASSWORD,
    PHONE,
    Api,
    Contexts,
    Patient,
    check_accessibility,
    sign_in,
    wait_live,
)

pytestmark = pytest.mark.browser


def staff_day_with_booking(
    contexts: Contexts, api: Api, index: int, viewport: dict[str, int] | None = None
) -> tuple[Page, dict[str, str], Patient]:
    patient = api.register()
    today = api.today()  # a later day, so the rest of that day is open whatever hour the test runs
    booked = api.book(patient, "AB-c1", [t for t in api.free_times("AB-c1") if t["date"] != today][index])
    page = contexts.page("/staff") if viewport is None else contexts.page("/staff", viewport)
    sign_in(page, DEMO["staff"], DEMO_PASSWORD)
    wait_live(page)
    page.locator("#staff-date").fill(booked["start"][:10])
    page.locator("#staff-date").dispatch_event("change")
    expect(page.locator(f"#bookings-body tr[data-booking='{booked['id']}']")).to_contain_text("Test Patient")
    return page, booked, patient


def test_blocking_over_a_booking_names_it(contexts: Contexts, api: Api) -> None:
    page, booked, _ = staff_day_with_booking(contexts, api, 7)
    page.locator("#block-resource").select_option(booked["resource"])
    page.locator("#block-start").fill(booked["start"][11:16])
    page.locator("#block-minutes").fill("30")
    page.locator("#block").click()
    message = page.locator("#staff-message")
    expect(message).to_have_attribute("data-kind", "error")
    expect(message).to_contain_text("Test Patient")
    expect(message).to_contain_text(booked["start"][11:16])
    expect(message).not_to_contain_text("SLOT_TAKEN")


def test_staff_cancel_asks_first_and_the_patient_is_told_why(contexts: Contexts, api: Api) -> None:
    """ "Avboka" opens a dialog naming the patient and the time; "Behåll" changes nothing; with a reason
    written, the booking is cancelled and the patient's "Mina bokningar" says who cancelled and why."""
    page, booked, patient = staff_day_with_booking(contexts, api, 9)
    row = page.locator(f"#bookings-body tr[data-booking='{booked['id']}']")
    status = row.locator("td").nth(4)
    dialog = page.locator("#cancel-dialog")
    row.locator("button.danger").click()
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("Test Patient")
    expect(dialog).to_contain_text(booked["start"][11:16])
    check_accessibility(page, "staff cancel dialog")
    page.locator("#cancel-reason").fill("Should not be sent")
    page.locator("#cancel-keep").click()
    expect(dialog).to_be_hidden()
    expect(status).to_have_text("Bokad")  # kept: nothing changed

    row.locator("button.danger").click()
    expect(page.locator("#cancel-reason")).to_have_value("")  # a fresh dialog each time
    reason = "Tandläkaren är sjuk – ring oss för en ny tid."
    page.locator("#cancel-reason").fill(f"  {reason}  ")
    page.locator("#cancel-confirm").click()
    expect(page.locator("#staff-message")).to_have_attribute("data-kind", "ok")
    expect(status).to_have_text("Avbokad")
    mine = {b["id"]: b for b in api.get("/api/bookings", patient.token)["bookings"]}
    assert (mine[booked["id"]]["cancelled_by"], mine[booked["id"]]["cancel_reason"]) == ("clinic", reason)

    me = contexts.page("/me", PHONE)
    sign_in(me, patient.email, patient.password)
    item = me.locator(f"li[data-booking='{booked['id']}']")
    expect(item.locator(".cancel-note")).to_have_text(f"Avbokad av kliniken. Anledning: {reason}")
    check_accessibility(me, "my bookings with a clinic's cancellation")
    me.locator("#lang-toggle").click()
    expect(item.locator(".cancel-note")).to_have_text(f"Cancelled by the clinic. Reason: {reason}")
