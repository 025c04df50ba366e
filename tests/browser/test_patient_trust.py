"""Browser tests (integration, real server + headless Chromium): a patient cannot lock themselves in. Moving
offers no time inside the clinic's cancellation notice, the rule is shown before booking and moving, a booking
already inside the notice offers no actions but the clinic's phone; on a phone, choosing a time while signed out
opens the sign-in where the patient is looking and names the chosen time.

Times are derived from each clinic's ``cancel_notice_hours`` and the server's clock (the same machine), never the
time of day.
"""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import expect

from tests.browser.browsing import PHONE, Api, Contexts, epoch_of, sign_in, wait_live

pytestmark = pytest.mark.browser


def notice_s(api: Api, clinic: str) -> int:
    hours: int = api.get(f"/api/clinics/{clinic}")["cancel_notice_hours"]
    return hours * 3600


def test_moving_offers_no_time_inside_the_notice_and_says_the_rule(
    contexts: Contexts, api: Api, solo_clinics: list[str]
) -> None:
    clinic = solo_clinics[3]
    notice = notice_s(api, clinic)
    patient = api.register()
    later = [t for t in api.free_times(clinic) if epoch_of(t["start"]) > time.time() + notice + 3600]
    assert len(later) >= 3, f"{clinic} has too few free times past the notice window"
    booking = api.book(patient, clinic, later[-1])

    page = contexts.page("/me")
    sign_in(page, patient.email, patient.password)
    wait_live(page)
    page.locator(f"#upcoming li[data-booking='{booking['id']}'] button.move").click()
    expect(page.locator("#move-rule")).to_contain_text(f"{notice // 3600} timmar")
    slots = page.locator("#move-grid button.slot")
    expect(slots.first).to_be_visible()
    starts = slots.evaluate_all("(bs) => bs.map((b) => b.dataset.start)")
    now = time.time()
    inside = [s for s in starts if epoch_of(s) < now + notice]
    assert not inside, f"the mover offers times inside the {notice // 3600} h notice: {inside[:5]}"
    assert later[0]["start"] in starts


def test_a_booking_inside_the_notice_shows_the_phone_instead_of_actions(
    contexts: Contexts, api: Api, solo_clinics: list[str]
) -> None:
    for clinic in solo_clinics:
        notice = notice_s(api, clinic)
        soon = [t for t in api.free_times(clinic) if epoch_of(t["start"]) < time.time() + notice - 600]
        if soon:
            break
    else:
        pytest.skip("no clinic has a free time inside its notice window right now")
    details = api.get(f"/api/clinics/{clinic}")
    patient = api.register()
    booking = api.book(patient, clinic, soon[0])

    page = contexts.page("/me")
    sign_in(page, patient.email, patient.password)
    item = page.locator(f"#upcoming li[data-booking='{booking['id']}']")
    expect(item.locator(".locked")).to_contain_text(details["phone"])
    expect(item.locator("button.move")).to_have_count(0)
    expect(item.locator("button.cancel")).to_have_count(0)
    # the server agrees: a patient's cancel is too late, and its message names the clinic's phone
    r = api.post(f"/api/bookings/{booking['id']}/cancel", patient.token, {})
    assert r.status_code == 409 and r.json()["error"]["code"] == "TOO_LATE"


def test_the_clinic_page_states_the_cancellation_rule_before_confirming(
    contexts: Contexts, api: Api, solo_clinics: list[str]
) -> None:
    clinic = solo_clinics[4]
    notice = notice_s(api, clinic)
    patient = api.register()
    target = [t for t in api.free_times(clinic) if epoch_of(t["start"]) > time.time() + notice + 3600][0]
    page = contexts.page("/me")
    sign_in(page, patient.email, patient.password)
    page.goto(f"/clinic/{clinic}?service=checkup")
    wait_live(page)
    expect(page.locator("#clinic-details-list")).to_contain_text(f"{notice // 3600} timmar")
    page.locator(f"button.slot[data-start='{target['start']}']").click()
    expect(page.locator("#hold-rule")).to_contain_text(f"{notice // 3600} timmar")
    expect(page.locator("#hold-rule")).to_have_attribute("data-inside", "false")


def test_on_a_phone_choosing_a_time_signed_out_opens_sign_in_in_view(
    contexts: Contexts, api: Api, solo_clinics: list[str]
) -> None:
    clinic = solo_clinics[5]
    patient = api.register()
    target = api.free_times(clinic)[-1]  # far down the grid
    page = contexts.page(f"/clinic/{clinic}?service=checkup", viewport=PHONE)
    wait_live(page)
    slot = page.locator(f"button.slot[data-start='{target['start']}']")
    slot.scroll_into_view_if_needed()
    slot.click()
    message = page.locator("#flow-message")
    expect(message).to_be_in_viewport()
    hhmm = target["start"][11:16]
    expect(message).to_contain_text(hhmm)
    expect(page.locator("#book-auth-email")).to_be_in_viewport()
    sign_in(page, patient.email, patient.password)
    expect(page.locator("#hold-panel")).to_be_visible()
    expect(page.locator("#hold-when")).to_contain_text(hhmm)
