"""Browser tests (integration, real server + headless Chromium): a time taken between view and click, and
moving and cancelling a booking from "My bookings".
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from playwright.sync_api import Dialog, WebSocketRoute, expect

from tests.browser.browsing import Api, Contexts, epoch_of, sign_in, wait_live

pytestmark = pytest.mark.browser


class DelayedFrames:
    """Sits on the page's WebSocket and can hold back server -> page frames, like a slow network."""

    def __init__(self) -> None:
        self.paused = False
        self.queue: list[Any] = []
        self.page_side: WebSocketRoute | None = None

    def route(self, ws: WebSocketRoute) -> None:
        self.page_side = ws
        server = ws.connect_to_server()
        server.on_message(self.from_server)

    def from_server(self, message: Any) -> None:
        if self.paused:
            self.queue.append(message)
        elif self.page_side is not None:
            self.page_side.send(message)

    def release(self) -> None:
        self.paused = False
        assert self.page_side is not None
        for message in self.queue:
            self.page_side.send(message)
        self.queue.clear()


def test_a_time_taken_between_view_and_click_gives_the_taken_message(
    contexts: Contexts, api: Api, solo_clinics: list[str]
) -> None:
    clinic = solo_clinics[1]
    me, someone_else = api.register(), api.register()
    target = api.free_times(clinic)[3]
    slot = f"button.slot[data-start='{target['start']}']"

    frames = DelayedFrames()
    context = contexts.new()
    context.route_web_socket(re.compile(r"/ws(\?.*)?$"), frames.route)
    page = context.new_page()
    page.goto("/me")
    sign_in(page, me.email, me.password)
    page.goto(f"/clinic/{clinic}?service=checkup")
    wait_live(page)
    expect(page.locator(slot)).to_have_count(1)

    # The diff that would remove the time is late: the page still offers it when the patient clicks.
    frames.paused = True
    api.book(someone_else, clinic, target)
    page.locator(slot).click()

    message = page.locator("#flow-message")
    expect(message).to_be_visible()
    expect(message).to_have_attribute("data-kind", "error")
    expect(message).to_contain_text("någon annan")
    expect(page.locator(slot)).to_have_class(re.compile(r"\btaken\b"))
    expect(page.locator(slot)).to_be_disabled()
    expect(page.locator("#hold-panel")).to_be_hidden()

    # Once the late frames arrive, the grid drops the time for good.
    frames.release()
    expect(page.locator(slot)).to_have_count(0)
    assert api.get("/api/bookings", token=me.token)["bookings"] == []


def test_move_then_cancel_a_booking_from_my_bookings(
    contexts: Contexts, api: Api, solo_clinics: list[str]
) -> None:
    clinic = solo_clinics[2]
    patient = api.register()
    # Both times lie past the clinic's cancellation notice (with an hour to spare), whatever the time of day:
    # a booking inside the notice can be neither moved nor cancelled by the patient.
    notice_s = (api.get(f"/api/clinics/{clinic}")["cancel_notice_hours"] + 1) * 3600
    free = [t for t in api.free_times(clinic) if epoch_of(t["start"]) > time.time() + notice_s]
    assert len(free) >= 6, f"{clinic} has too few free times past the notice window"
    booking = api.book(patient, clinic, free[0])
    new_time = free[-3]

    page = contexts.page("/me")
    sign_in(page, patient.email, patient.password)
    wait_live(page)
    item = page.locator(f"#upcoming li[data-booking='{booking['id']}']")
    expect(item).to_be_visible()

    item.locator("button.move").click()
    grid = page.locator("#move-grid")
    expect(page.locator("#move-panel")).to_be_visible()
    slot = grid.locator(f"button.slot[data-start='{new_time['start']}']")
    slot.click()
    expect(page.locator("#me-message")).to_have_attribute("data-kind", "ok")
    expect(page.locator("#move-panel")).to_be_hidden()
    moved = api.get(f"/api/bookings/{booking['id']}", token=patient.token)
    moved = moved.get("booking", moved)
    assert moved["start"] == new_time["start"]
    assert moved["status"] == "booked"

    def accept(dialog: Dialog) -> None:
        dialog.accept()

    page.once("dialog", accept)
    page.locator(f"#upcoming li[data-booking='{booking['id']}'] button.cancel").click()
    expect(page.locator("#me-message")).to_have_attribute("data-kind", "ok")
    expect(page.locator(f"#past li[data-booking='{booking['id']}']")).to_have_attribute(
        "data-status", "cancelled"
    )
    expect(page.locator(f"#upcoming li[data-booking='{booking['id']}']")).to_have_count(0)
    cancelled = api.get(f"/api/bookings/{booking['id']}", token=patient.token)
    assert cancelled.get("booking", cancelled)["status"] == "cancelled"


def test_my_bookings_hears_about_a_booking_made_elsewhere(
    contexts: Contexts, api: Api, solo_clinics: list[str]
) -> None:
    clinic = solo_clinics[2]
    patient = api.register()
    page = contexts.page("/me")
    sign_in(page, patient.email, patient.password)
    wait_live(page)
    expect(page.locator("#upcoming li.muted")).to_be_visible()  # no bookings yet

    booking = api.book(patient, clinic, api.free_times(clinic)[4])  # e.g. from the phone app
    expect(page.locator(f"#upcoming li[data-booking='{booking['id']}']")).to_be_visible()
    expect(page.locator("#toasts .message").first).to_be_visible()
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1
