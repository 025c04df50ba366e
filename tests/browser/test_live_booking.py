"""Browser tests (integration, real server + headless Chromium): booking live across screens.

Two contexts on the same clinic page: one holds and books a time through the UI (sign-in form, "Reserving…",
countdown, confirm, confirmation with .ics); the other sees that time disappear within one second without a
reload. A third context has the map open and sees the clinic's marker change: it shows as many check-up times
as the clinic's availability lists over the map's period, before and after the hold.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.browser.browsing import Api, Contexts, ms, sign_in, wait_live

pytestmark = pytest.mark.browser


def test_booking_in_one_context_updates_the_other_and_the_map(
    contexts: Contexts, api: Api, solo_clinics: list[str]
) -> None:
    clinic = solo_clinics[0]
    patient = api.register()
    # the map's period starts tomorrow: no time of it passes while the test runs, so its count is exact
    first, days = api.tomorrow(), 7
    free = api.free_times(clinic, days=days, **{"from": first})
    assert len(free) > 3, f"{clinic} has no free check-up times in the week from {first}"
    target = free[len(free) // 2]
    slot = f"button.slot[data-start='{target['start']}']"
    url = f"/clinic/{clinic}?service=checkup&from={first}&days={days}"

    booker = contexts.page(url)
    watcher = contexts.page(url)
    for page in (booker, watcher):
        wait_live(page)
        expect(page.locator(slot)).to_have_count(1)

    the_map = contexts.page("/")
    wait_live(the_map)
    the_map.locator("#from").fill(first)
    the_map.locator("#days").fill(str(days))
    the_map.locator("#search-form button[type=submit]").click()
    item = the_map.locator(f"#results li[data-clinic='{clinic}']")
    # the new search's row (the first search's rows are replaced)
    expect(item.locator("h3 a")).to_have_attribute("href", re.compile(f"from={first}"))
    expect(item).to_have_count(1)
    item.locator("button.show-on-map").click()
    marker = the_map.locator(f".leaflet-marker-pane .free-badge[data-clinic='{clinic}']")
    expect(marker).to_be_visible()
    bookable = api.bookable_count(clinic, first, days)
    assert bookable > 0
    expect(marker).to_have_attribute("data-free", str(bookable), timeout=ms(5))

    # Choose the time: not signed in yet, so the sign-in form comes first, then the hold.
    booker.locator(slot).click()
    sign_in(booker, patient.email, patient.password)
    panel = booker.locator("#hold-panel")
    expect(panel).to_be_visible()
    expect(panel).to_have_attribute("data-state", "held")
    # The hold turned the cells HELD: the other screen loses that time within a second, without a reload.
    expect(watcher.locator(slot)).to_have_count(0, timeout=ms(1))
    countdown = booker.locator("#hold-countdown")
    expect(countdown).to_have_text(re.compile(r"^\d+:\d\d$"))
    shown = countdown.text_content()
    expect(countdown).not_to_have_text(shown or "", timeout=ms(3))  # it counts down

    # The map marker follows the region diff: the check-up times the hold took away (the held one and those
    # that would run into it), as the availability now lists them.
    held = api.bookable_count(clinic, first, days)
    assert held < bookable
    expect(marker).to_have_attribute("data-free", str(held), timeout=ms(5))

    booker.locator("#confirm").click()
    confirmation = booker.locator("#confirmation")
    expect(confirmation).to_be_visible()
    booking_id = confirmation.get_attribute("data-booking")
    assert booking_id and booking_id.startswith(clinic.split("-")[0] + "-")
    expect(confirmation).to_contain_text(booking_id)
    ics = booker.locator("#ics-link")
    response = booker.request.get(ics.get_attribute("href") or "")
    assert response.ok
    assert "BEGIN:VCALENDAR" in response.text()

    # The booking is the patient's, at the chosen time; the watcher never reloaded.
    bookings = api.get("/api/bookings", token=patient.token)["bookings"]
    assert [(b["id"], b["start"]) for b in bookings] == [(booking_id, target["start"])]
    expect(watcher.locator(slot)).to_have_count(0)
    assert watcher.evaluate("performance.getEntriesByType('navigation').length") == 1
