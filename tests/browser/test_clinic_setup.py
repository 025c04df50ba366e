"""Browser test (integration, real server + headless Chromium): on /staff the "Klinik" section (the clinic
admin's) adds a hygienist and a late evening; the clinic page then shows the hygienist's evening times.
The hygienist gets hours of her own (early mornings on one weekday): a clinic page already open shows
them arrive, and "Samma som kliniken" takes them away again.
Hours that would strand a booking list it, and the "cancel these" step applies the change. The clinic
admin adds a staff account (first password shown once), makes it admin and removes it (signed out at
once), creates and revokes the API key; staff see only a line saying the setup is the admin's.
Each runs on a system of its own: they change the demo clinic's setup and accounts.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date

import pytest
from playwright.sync_api import Browser, expect

from tests.browser.browsing import (
    DEMO,
    DEMO_PASSWORD,
    PHONE,
    Api,
    Contexts,
    check_accessibility,
    open_contexts,
    sign_in,
)
from tests.support.served import ServedProcess

pytestmark = pytest.mark.browser


# These tests change the demo clinic's setup and accounts: ``api`` and ``contexts`` here are on a
# system of the test's own (``fresh_system``), not the suite's shared one.
@pytest.fixture
def api(fresh_system: ServedProcess) -> Iterator[Api]:
    client = Api(fresh_system.url)
    try:
        yield client
    finally:
        client.client.close()


@pytest.fixture
def contexts(browser: Browser, fresh_system: ServedProcess) -> Iterator[Contexts]:
    yield from open_contexts(browser, fresh_system.url)


def test_staff_add_a_hygienist_with_hours_and_see_the_times_on_the_clinic_page(
    contexts: Contexts, api: Api
) -> None:
    tomorrow = api.free_times("AB-c1", days=3)[-1]["date"]
    page = contexts.page("/staff", viewport=PHONE)
    sign_in(page, DEMO["clinic_admin"], DEMO_PASSWORD)
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

    hygienist = next(r for r in api.get("/api/clinics/AB-c1")["resources"] if r["name"] == "Hygienist Sara")
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
    # "08:00-12:00" alone was on the page before the change ("08:00-12:00, 13:00-21:00"): wait for
    # the evening to go, which the page shows once the change is answered
    expect(page.locator("#setup-exceptions")).not_to_contain_text("13:00-21:00")
    expect(page.locator("#setup-exceptions")).to_contain_text(f"{tomorrow}: 08:00-12:00")
    assert api.get(f"/api/bookings/{booking['id']}", token=patient.token)["booking"]["status"] == "cancelled"
    page.locator("#lang-toggle").click()
    expect(page.locator("#setup-title")).to_have_text("Clinic")


def test_a_hygienist_with_hours_of_her_own_shows_them_on_the_clinic_page(
    contexts: Contexts, api: Api
) -> None:
    """06:00 is before any demo clinic opens (07:30 at the earliest): a 06:00 time is hers."""
    dates = sorted({t["date"] for t in api.free_times("AB-c1", service="cleaning", days=7)})
    day = dates[1]  # a day the clinic is open, not today (its early morning may have passed)
    weekday = date.fromisoformat(day).isoweekday()
    page = contexts.page("/staff", viewport=PHONE)
    sign_in(page, DEMO["clinic_admin"], DEMO_PASSWORD)
    expect(page.locator("#clinic-setup[data-ready='true']")).to_be_visible()
    page.locator("#setup-kind").select_option("hygienist")
    page.locator("#setup-rname").fill("Hygienist Sara")
    page.locator("#setup-services").get_by_label("Tandrengöring").check()
    page.locator("#setup-resource-add").click()
    sara = page.locator("#setup-resources li", has_text="Hygienist Sara")
    expect(sara).to_contain_text("Samma som kliniken")
    # a clinic page open from now on (it shows the resources it loaded with)
    clinic = contexts.page(f"/clinic/AB-c1?service=cleaning&from={day}", viewport=PHONE)
    times = clinic.locator("#times")
    expect(times).to_contain_text(":")
    expect(times).not_to_contain_text("06:00")
    sara.get_by_role("button", name="Tider för Hygienist Sara").click()
    expect(page.locator("#setup-own")).to_be_visible()
    expect(page.locator("#setup-own-same")).to_be_checked()
    expect(page.locator("#setup-day-1")).to_be_disabled()  # the clinic's week, read-only
    page.locator("#setup-own-own").check()
    for d in range(1, 8):
        page.locator(f"#setup-day-{d}").fill("06:00-08:00" if d == weekday else "")
    page.locator("#setup-hours-save").click()
    expect(page.locator("#setup-message")).to_contain_text("Sparat")
    expect(sara).to_contain_text("Egna tider")
    check_accessibility(page, "staff resource hours")

    expect(times).to_contain_text("06:00")  # the open clinic page, live
    rid = next(r["id"] for r in api.get("/api/clinics/AB-c1")["resources"] if r["name"] == "Hygienist Sara")
    hers = [t for t in api.free_times("AB-c1", service="cleaning", days=7) if rid in t["resources"]]
    assert hers and all(date.fromisoformat(t["date"]).isoweekday() == weekday for t in hers)
    assert all("T06:" in t["start"] or "T07:" in t["start"] for t in hers), hers

    # her own day: on that day only 06:00-07:00; listed for her, not for the clinic
    page.locator("#setup-day-date").fill(day)
    page.locator("#setup-day-hours").fill("06:00-07:00")
    page.locator("#setup-day-save").click()
    expect(page.locator("#setup-exceptions")).to_contain_text(f"{day}: 06:00-07:00")
    page.locator("#setup-hours-for").select_option("")
    expect(page.locator("#setup-own")).to_be_hidden()
    expect(page.locator("#setup-exceptions")).not_to_contain_text("06:00-07:00")
    hers = [t for t in api.free_times("AB-c1", service="cleaning", days=7) if rid in t["resources"]]
    assert hers and all(t["date"] == day and "T06:" in t["start"] for t in hers), hers

    # the same as the clinic's again: the early times go, live
    sara.get_by_role("button", name="Tider för Hygienist Sara").click()
    page.locator("#setup-own-same").check()
    page.locator("#setup-hours-save").click()
    expect(sara).to_contain_text("Samma som kliniken")
    page.locator("#setup-day-date").fill(day)
    page.locator("#setup-day-hours").fill("")
    page.locator("#setup-day-save").click()
    expect(page.locator("#setup-exceptions")).not_to_contain_text(day)
    expect(times).not_to_contain_text("06:00")
    page.locator("#lang-toggle").click()
    expect(sara).to_contain_text("Same as the clinic")
    expect(page.locator("label[for='setup-own-own']")).to_have_text("Own hours")


def test_the_clinic_admin_manages_staff_accounts_and_the_api_key(contexts: Contexts, api: Api) -> None:
    staff = contexts.page("/staff", viewport=PHONE)
    sign_in(staff, DEMO["staff"], DEMO_PASSWORD)
    expect(staff.locator("#setup-staff-note")).to_be_visible()
    expect(staff.locator("#setup-admin")).to_be_hidden()

    page = contexts.page("/staff", viewport=PHONE)
    page.on("dialog", lambda dialog: dialog.accept())
    sign_in(page, DEMO["clinic_admin"], DEMO_PASSWORD)
    accounts = page.locator("#accounts-list")
    expect(accounts).to_contain_text(DEMO["staff"])
    expect(accounts).to_contain_text("(du)")
    page.locator("#accounts-name").fill("Nya Nils")
    page.locator("#accounts-email").fill("nils@example.test")
    page.locator("#accounts-add").click()
    expect(page.locator("#accounts-secret")).to_be_visible()
    password = page.locator("#accounts-secret-value").input_value()
    assert len(password) >= 12
    nils = accounts.locator("li", has_text="nils@example.test")
    expect(nils).to_contain_text("Personal")
    r = api.client.post("/api/auth/login", json={"email": "nils@example.test", "password": password})
    assert r.status_code == 200, r.text
    token = r.json()["token"]
    check_accessibility(page, "staff accounts")

    nils.get_by_role("button", name="Gör till administratör").click()
    expect(nils).to_contain_text("Administratör")
    assert api.get("/api/clinic/v1/accounts", token=token)["accounts"]  # an admin now: may list them
    nils.get_by_role("button", name="Ta bort").click()
    expect(accounts).not_to_contain_text("nils@example.test")
    assert (
        api.client.get("/api/clinic/v1/day", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    )

    expect(page.locator("#key-state")).to_contain_text("ingen API-nyckel")
    page.locator("#key-rotate").click()
    expect(page.locator("#key-secret")).to_be_visible()
    key = page.locator("#key-secret-value").input_value()
    assert key.startswith("tt_live_")
    expect(page.locator("#key-secret-copy")).to_be_visible()
    assert api.get("/api/clinic/v1/setup", token=key)["clinic"]["id"] == "AB-c1"
    expect(page.locator("#key-state")).to_contain_text("En nyckel gäller sedan")
    page.locator("#key-revoke").click()
    expect(page.locator("#key-state")).to_contain_text("ingen API-nyckel")
    assert (
        api.client.get("/api/clinic/v1/setup", headers={"Authorization": f"Bearer {key}"}).status_code == 401
    )
    page.locator("#lang-toggle").click()
    expect(page.locator("#accounts-title")).to_have_text("Staff accounts")
    page.goto("/me")  # the header keeps the staff page's link for a clinic admin
    expect(page.locator("header.site a[href='/staff']")).to_be_visible()


def test_admin_registers_finds_suspends_and_reinstates_a_clinic(contexts: Contexts, api: Api) -> None:
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

    # suspend it: marked in the list and on its page; reinstate it
    page.on("dialog", lambda dialog: dialog.accept())
    row = page.locator(f"#clinics-list tr[data-clinic='{clinic_id}']")
    row.get_by_role("button", name="Stäng av").click()
    expect(row).to_contain_text("Avstängd")
    assert api.get(f"/api/clinics/{clinic_id}")["suspended"] is True
    clinic_page = contexts.page(f"/clinic/{clinic_id}", viewport=PHONE)
    expect(clinic_page.locator("#clinic-details-list")).to_contain_text("tar inte emot nya bokningar")
    row.get_by_role("button", name="Återaktivera").click()
    expect(row).not_to_contain_text("Avstängd")
    assert "suspended" not in api.get(f"/api/clinics/{clinic_id}")
