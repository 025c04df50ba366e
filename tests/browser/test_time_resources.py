"""Browser tests (integration, real server + headless Chromium): a time is a time.

A clinic with two dentists shows 09:00 once, whichever of them is free; the patient's choice is held on the
first dentist free then, and when that one was taken a moment ago (the page has not heard yet), on the next:
the patient never sees "taken" for a time another dentist can still give them.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from playwright.sync_api import WebSocketRoute, expect

from tests.browser.browsing import Api, Contexts, sign_in, wait_live

pytestmark = pytest.mark.browser


def shared_time(api: Api) -> tuple[str, dict[str, Any]]:
    """A Stockholm clinic (not AB-c1: the staff tests') and a check-up time free on two of its dentists, on a
    later day than today (so the hour the test runs at does not matter)."""
    today = api.today()
    for clinic in api.get("/api/clinics", region="AB", limit=500):
        if clinic["id"] == "AB-c1":
            continue
        shared = [t for t in api.free_times(clinic["id"]) if t["date"] != today and len(t["resources"]) >= 2]
        if shared:
            return clinic["id"], shared[len(shared) // 2]
    raise AssertionError("no Stockholm demo clinic has a check-up time free on two dentists")


def test_a_time_shows_once_and_is_held_on_another_free_resource(contexts: Contexts, api: Api) -> None:
    clinic, target = shared_time(api)
    first, second = target["resources"][:2]
    patient, other = api.register(), api.register()

    context = contexts.new()
    page = context.new_page()
    page.goto("/me")
    sign_in(page, patient.email, patient.password)

    # The page hears its snapshot but not the diffs after it, as if the news were still on its way.
    def hold_back_diffs(ws: WebSocketRoute) -> None:
        server = ws.connect_to_server()

        def to_page(message: str | bytes) -> None:
            if isinstance(message, str) and json.loads(message).get("type") == "diff":
                return
            ws.send(message)

        server.on_message(to_page)

    page.route_web_socket("**/ws", hold_back_diffs)
    page.goto(f"/clinic/{clinic}?service=checkup")
    wait_live(page)
    slot = page.locator(f"button.slot[data-start='{target['start']}']")
    expect(slot).to_have_count(1)  # one button for the time, not one per dentist
    expect(slot).to_have_attribute("data-resources", f"{first} {second}")

    api.book(other, clinic, {"start": target["start"], "resource": first})  # the first dentist goes
    slot.click()
    panel = page.locator("#hold-panel")
    expect(panel).to_have_attribute("data-state", "held")
    page.locator("#confirm").click()
    expect(page.locator("#confirmation")).to_be_visible()
    booking_id = page.locator("#confirmation").get_attribute("data-booking")
    mine = api.get(f"/api/bookings/{booking_id}", patient.token)["booking"]
    assert (mine["start"], mine["resource"]) == (target["start"], second)
    expect(page.locator("#flow-message")).to_be_hidden()  # no "taken" on the way
