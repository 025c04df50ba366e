"""Browser test (integration, a served system of its own + headless Chromium): my bookings say when a region
could not answer. A patient books in Stockholm (AB) and Skåne (M); the server is stopped, AB's journal damaged and the commit log lost,
so AB stops alone after the restart (as in tests/server/test_http_damaged_region.py); /me lists the Skåne booking and says, in Swedish and in English, that
bookings in AB may be missing (the API's ``missing_regions``) instead of silently showing fewer.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser.browsing import Api, Contexts, sign_in
from tests.support.served import ServedProcess

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_my_bookings_say_which_region_could_not_answer(
    contexts: Contexts, fresh_system: ServedProcess
) -> None:
    api = Api(fresh_system.url)
    try:
        patient = api.register()
        for region in ("M", "AB"):
            clinic = api.get("/api/clinics", region=region, service="checkup", has_free="true", limit=1)[0][
                "id"
            ]
            api.book(patient, clinic, api.free_times(clinic)[0])
        assert len(api.get("/api/bookings", token=patient.token)["bookings"]) == 2

        fresh_system.stop()
        journal = fresh_system.data_dir / "journal"
        data = bytearray((journal / "AB.log").read_bytes())
        data[-2] ^= 0x20  # inside AB's last frame (the booking): damage, not a torn write
        (journal / "AB.log").write_bytes(bytes(data))
        (journal / "commit.log").unlink()  # lost too: nothing to restore the frame from
        fresh_system.start()
        mine = api.get("/api/bookings", token=patient.token)
        assert mine["missing_regions"] == ["AB"] and [b["clinic"][:2] for b in mine["bookings"]] == ["M-"]

        contexts.base_url = fresh_system.url
        page = contexts.page("/me")
        sign_in(page, patient.email, patient.password)
        expect(page.locator("#upcoming li[data-booking]")).to_have_count(1)
        notice = page.locator("#missing-regions")
        expect(notice).to_be_visible()
        expect(notice).to_have_text(
            "Några av dina bokningar kan saknas här just nu: län AB svarar inte. Försök igen om en stund."
        )
        page.locator("#lang-toggle").click()
        expect(notice).to_have_text(
            "Some of your bookings may be missing here right now: region AB is not answering. Try again in a while."
        )
    finally:
        api.client.close()
