"""Browser test (integration, real server + headless Chromium): on /staff the "Klinik" section adds a
hygienist and a late evening; the clinic page then shows the hygienist's evening times. Hours that would
strand a booking list it, and the "cancel these" step applies the change.
Runs on a system of its own: it changes the demo clinic's setup.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import Browser, expect

from tests.browser.browsing import DEMO, DEMO_PASSWORD, PHONE, Api, Contexts, check_accessibility, sign_in
from tests.support.served import ServedProcess

pytestmark = pytest.mark.browser


def test_staff_add_a_hygienist_with_hours_and_see_the_times_on_the_clinic_page(
    browser: Browser, fresh_system: ServedProcess
) -> None:
    api = Api(fresh_system.url)
    contexts = Contexts(browser, fresh_system.url)
    try:
        tomorrow = api.free_times("AB-c1", days=3)[-1]["date"]
        page = contexts.page("/staff", viewport=PHONE)
        sign_in(page, DEMO["staff"], DEMO_PASSWORD)
        setup = page.locator("#clinic-setup[data-ready='true']")
        expect(setup).to_contain_text("Klinik")
        page.locator("#setup-ahead").fill("14")
        page.locator("#setup-details-save").click()
        expect(page.locator("#setup-message")).to_contain_text("Sparat")

        page.locator("#setup-kind").select_option("hygienist")
        page.locator("#setup-rname").fill("Hygienist Sara")
        setup.get_by_label("Tandrengöring").check()
        page.locator("#setup-resource-add").click()
        expect(page.locator("#setup-resources")).to_contain_text("Hygienist Sara")

        page.locator("#setup-day-date").fill(tomorrow)
        page.locator("#setup-day-hours").fill("08:00-12:00, 13:00-21:00")
        page.locator("#setup-day-save").click()
        expect(page.locator("#setup-exceptions")).to_contain_text(f"{tomorrow}: 08:00-12:00, 13:00-21:00")
        check_accessibility(page, "staff clinic setup")

        hygienist = next(
            r for r in api.get("/api/clinics/AB-c1")["resources"] if r["name"] == "Hygienist Sara"
        )
        evening = [
            t
            for t in api.free_times("AB-c1", service="cleaning", days=3)
            if t["date"] == tomorrow and "T20:" in t["start"]
        ]
        assert evening, "the late evening's times are bookable"
        clinic = contexts.page(f"/clinic/AB-c1?service=cleaning&from={tomorrow}")
        expect(clinic.locator("body")).to_contain_text("20:00")

        # a weekly change that would strand a booking lists it; "cancel these" applies it
        patient = api.register()
        # the hygienist takes bookings at once (a start lists one free resource; book hers by id)
        booking = api.book(patient, "AB-c1", evening[0] | {"resource": hygienist["id"]}, service="cleaning")
        page.locator("#setup-day-hours").fill("08:00-12:00")
        page.locator("#setup-day-save").click()
        expect(page.locator("#setup-conflict-list")).to_contain_text(booking["id"])
        page.locator("#setup-confirm").click()
        expect(page.locator("#setup-exceptions")).to_contain_text(f"{tomorrow}: 08:00-12:00")
        assert (
            api.get(f"/api/bookings/{booking['id']}", token=patient.token)["booking"]["status"] == "cancelled"
        )
        page.locator("#lang-toggle").click()
        expect(page.locator("#setup-title")).to_have_text("Clinic")
    finally:
        for context in contexts.opened:
            context.close()
        api.client.close()
    assert not contexts.page_errors, contexts.page_errors


def test_admin_registers_a_clinic_and_finds_it(browser: Browser, fresh_system: ServedProcess) -> None:
    contexts = Contexts(browser, fresh_system.url)
    api = Api(fresh_system.url)
    try:
        page = contexts.page("/admin", viewport=PHONE)
        sign_in(page, DEMO["admin"], DEMO_PASSWORD)
        expect(page.locator("#clinics-list tr").first).to_be_visible()
        page.locator("#clinic-new-name").fill("Tandkliniken Test")
        page.locator("#clinic-new-region").fill("AB")
        page.locator("#clinic-new-municipality").fill("0180")
        page.locator("#clinic-new-municipality-name").fill("Stockholm")
        page.locator("#clinic-new-address").fill("Provgatan 1")
        page.locator("#clinic-new-lat").fill("59.32")
        page.locator("#clinic-new-lon").fill("18.05")
        page.locator("#clinic-register").click()
        expect(page.locator("#clinics-message")).to_contain_text("är registrerad")
        page.locator("#clinics-find").fill("tandkliniken test")
        expect(page.locator("#clinics-list tr")).to_have_count(1)
        clinic_id = page.locator("#clinics-list tr").first.get_attribute("data-clinic")
        assert clinic_id and clinic_id.startswith("AB-c")
        assert api.get(f"/api/clinics/{clinic_id}")["name"] == "Tandkliniken Test"
        check_accessibility(page, "admin clinics")
    finally:
        for context in contexts.opened:
            context.close()
        api.client.close()
    assert not contexts.page_errors, contexts.page_errors
