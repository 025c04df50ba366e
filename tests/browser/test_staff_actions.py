"""Browser tests (integration, real server + headless Chromium): staff actions that touch a patient's booking.
Blocking over a booking names the booking in the way; "Avboka" asks first, naming the patient and the time, and
takes a reason that the patient then sees. On a phone each booking is a card; the day shown is the date asked
for last, whatever order the answers come in. Every day used is after the server's today in Stockholm (from its
availability), never from this machine's clock."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Page, Route, ViewportSize, expect

from tests.browser.browsing import (
    DEMO,
    DEMO_PASSWORD,
    DESKTOP,
    PHONE,
    Api,
    Contexts,
    Patient,
    check_accessibility,
    sign_in,
    wait_live,
)

pytestmark = pytest.mark.browser


def later_times(api: Api) -> list[dict[str, Any]]:
    """AB-c1's free check-up times after the server's today in Stockholm (from its availability, not this
    machine's clock), so the whole of each day is still open whatever hour the test runs."""
    today = api.today()
    return [t for t in api.free_times("AB-c1") if t["date"] != today]


def staff_day_with_booking(
    contexts: Contexts, api: Api, index: int, viewport: ViewportSize = DESKTOP
) -> tuple[Page, dict[str, str], Patient]:
    patient = api.register()
    booked = api.book(patient, "AB-c1", later_times(api)[index])
    page = contexts.page("/staff", viewport)
    sign_in(page, DEMO["staff"], DEMO_PASSWORD)
    wait_live(page)
    page.locator("#staff-date").fill(booked["start"][:10])  # fill sends the field's change event
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


def test_on_a_phone_each_booking_is_a_card_with_every_column_in_view(contexts: Contexts, api: Api) -> None:
    """At 360 px the bookings table shows each booking as a card: every cell, the patient's name and the
    actions included, lies inside the screen with its column's name before it; nothing scrolls sideways."""
    page, booked, _ = staff_day_with_booking(contexts, api, 11, PHONE)
    row = page.locator(f"#bookings-body tr[data-booking='{booked['id']}']")
    # Every cell measured in one step in the page: a reload of the day (any live diff of the clinic) replaces
    # the rows, and a cell measured on its own could be the replaced one (no box).
    boxes = row.evaluate(
        "tr => [...tr.cells].map((c) => { const r = c.getBoundingClientRect();"
        " return { left: r.left, right: r.right, height: r.height }; })"
    )
    assert len(boxes) == 6, boxes
    for box in boxes:
        assert box["height"] > 0 and box["left"] >= 0 and box["right"] <= PHONE["width"], boxes
    patient = row.locator("td").nth(3)
    expect(patient).to_have_attribute("data-label", "Patient")
    expect(patient).to_contain_text("Test Patient")
    wrap_width = "document.querySelector('#bookings-body').closest('.table-wrap').scrollWidth"
    assert page.evaluate(wrap_width) <= PHONE["width"]
    row.locator("button.danger").click()
    expect(page.locator("#cancel-dialog")).to_be_visible()
    check_accessibility(page, "staff bookings as cards on a phone")


def test_a_late_answer_for_a_date_left_does_not_replace_the_day_shown(contexts: Contexts, api: Api) -> None:
    """Staff pick one date, then another before the first one's day has come: when the first answer comes
    last, the second date's bookings stay on screen (the first answer is dropped)."""
    patient = api.register()
    times = later_times(api)
    second = next(t for t in times if t["date"] != times[0]["date"])
    left, wanted = api.book(patient, "AB-c1", times[0]), api.book(patient, "AB-c1", second)
    page = contexts.page("/staff")
    sign_in(page, DEMO["staff"], DEMO_PASSWORD)
    wait_live(page)
    table = page.locator("#bookings-table")
    expect(table).to_have_attribute("aria-busy", "false")  # today's day is in
    held: list[Route] = []

    def hold(route: Route) -> None:  # answered only when the test says so
        held.append(route)

    page.route(lambda url: "/api/clinic/v1/day" in url and f"date={times[0]['date']}" in url, hold)
    page.locator("#staff-date").fill(times[0]["date"])
    page.locator("#staff-date").fill(second["date"])
    expect(page.locator(f"#bookings-body tr[data-booking='{wanted['id']}']")).to_be_visible()
    expect(table).to_have_attribute("aria-busy", "true")  # the first date's answer is still to come
    assert held, "the first date's day was not asked for"
    for route in held:
        route.continue_()
    expect(table).to_have_attribute("aria-busy", "false")
    expect(page.locator(f"#bookings-body tr[data-booking='{wanted['id']}']")).to_be_visible()
    expect(page.locator(f"#bookings-body tr[data-booking='{left['id']}']")).to_have_count(0)
