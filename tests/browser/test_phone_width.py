"""Browser tests (integration, real server + headless Chromium): on a 360 px phone nothing scrolls sideways and
nothing is cut off at the side, on every main page as its users see it (signed in, with content): the map, a
clinic, my bookings, the staff day with a webhook's delivery log, the kiosk and the operators' dashboard.
On a phone the header's menu has a row of its own (its links wrap, never scroll) and the wide tables (the
webhook delivery log, the outbox, the clinic list) are cards whose cells name their column."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from tests.browser.browsing import (
    DEMO,
    DEMO_PASSWORD,
    PHONE,
    Api,
    Contexts,
    screenshot,
    sign_in,
    wait_live,
)
from tests.support.webhook_receiver import Receiver, receiving

pytestmark = pytest.mark.browser

# What is wider than its box and so scrolls sideways (overflow-x auto/scroll) or is cut off (hidden/clip): the
# page itself, and each element with a box. Not faults: visible overflow (it shows on the page or on the
# ancestor that clips it), the 1 px boxes of visually hidden text, text cut with an ellipsis on purpose
# (text-overflow), and the street map's own panes (Leaflet draws tiles past its edge).
SIDEWAYS = """
() => {
  const found = [];
  const name = (e) => e.tagName.toLowerCase() + (e.id ? "#" + e.id : "")
    + (typeof e.className === "string" && e.className.trim() ? "." + e.className.trim().split(/\\s+/).join(".") : "");
  const root = document.documentElement;
  if (root.scrollWidth > root.clientWidth) found.push(`the page: ${root.scrollWidth} > ${root.clientWidth}`);
  for (const e of document.querySelectorAll("body *")) {
    if (e.clientWidth <= 1 || e.scrollWidth <= e.clientWidth + 1) continue;
    const style = getComputedStyle(e);
    if (style.overflowX === "visible" || style.textOverflow === "ellipsis" || e.closest(".leaflet-container")) continue;
    found.push(`${name(e)} (overflow-x ${style.overflowX}): ${e.scrollWidth} > ${e.clientWidth}`);
  }
  return found;
}
"""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving() as made:
        yield made


def test_at_360_px_nothing_scrolls_sideways_on_the_main_pages(
    contexts: Contexts, api: Api, receiver: Receiver
) -> None:
    """Each page with what makes it wide: a booking on my bookings and on the staff day, a delivered webhook in
    the staff's delivery log, the operators' outbox and clinic list, the kiosk's list of a day with free times."""
    today = api.today()  # the server's, in Stockholm: the days used are later ones, whatever the hour
    later = [t for t in api.free_times("AB-c1") if t["date"] != today]
    staff = api.sign_in(DEMO["staff"])
    hook = {"url": f"{receiver.base_url}/hooks/{uuid.uuid4().hex[:10]}", "events": ["booking.created"]}
    assert api.post("/api/clinic/v1/webhooks", staff.token, hook).status_code == 201
    patient = api.register()
    booked = api.book(patient, "AB-c1", later[5])
    receiver.next_for(booked["id"])
    found: dict[str, list[str]] = {}

    def look(screen: str, page: Page) -> None:
        found[screen] = page.evaluate(SIDEWAYS)
        screenshot(page, f"at-360-px-{screen.replace(' ', '-')}")

    page = contexts.page("/", PHONE)
    wait_live(page)
    expect(page.locator("#results li").first).to_be_visible()
    look("map", page)

    page = contexts.page("/clinic/AB-c1", PHONE)
    wait_live(page)
    expect(page.locator("#grid section.day").first).to_be_visible()
    look("clinic", page)

    page = contexts.page("/me", PHONE)
    sign_in(page, patient.email, patient.password)
    expect(page.locator(f"li[data-booking='{booked['id']}']")).to_be_visible()
    look("my bookings", page)

    page = contexts.page("/staff", PHONE)
    sign_in(page, DEMO["staff"], DEMO_PASSWORD)
    wait_live(page)
    page.locator("#staff-date").fill(booked["start"][:10])
    expect(page.locator(f"#bookings-body tr[data-booking='{booked['id']}']")).to_be_visible()
    delivered = page.locator("table.deliveries tbody tr[data-status='delivered']").first
    expect(delivered).to_be_visible()
    look("staff", page)

    page = contexts.page(f"/kiosk/AB-c1?date={later[0]['date']}", PHONE)
    wait_live(page)
    page.locator("#kiosk-times li").first.wait_for()
    look("kiosk", page)

    page = contexts.page("/admin", PHONE)
    sign_in(page, DEMO["admin"], DEMO_PASSWORD)
    expect(page.locator("#outbox tr td").first).to_be_visible()
    expect(page.locator("#clinics-list tr td").first).to_be_visible()
    look("operators' dashboard", page)

    assert found == {screen: [] for screen in found}, found
    # the tables shown as cards name each cell's column
    expect(delivered.locator("td").nth(2)).to_have_attribute("data-label", "Status")
    expect(page.locator("#outbox tr td").nth(1)).to_have_attribute("data-label", "Till")
    expect(page.locator("#clinics-list tr td").nth(2)).to_have_attribute("data-label", "Kommun")
