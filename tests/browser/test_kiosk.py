"""Browser tests (integration, real server + headless Chromium): the kiosk stays live across a server restart.

The served system is this test's own (it is stopped and started again on the same port and data directory).
The kiosk shows one day (``?date=``, a day that has free times, so the test does not depend on the hour it
runs); bookings made through the API before and after the restart both disappear from the screen.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.browser.browsing import KIOSK, Api, Contexts, ms, wait_live
from tests.support.served import ServedProcess

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_kiosk_keeps_updating_across_a_server_restart(
    contexts: Contexts, fresh_system: ServedProcess
) -> None:
    api = Api(fresh_system.url)
    try:
        clinic = api.clinics_with_one_resource("checkup")[0]
        free = api.free_times(clinic)
        days = sorted({t["date"] for t in free})
        day = next(d for d in days if sum(t["date"] == d for t in free) >= 3)
        on_day = [t for t in free if t["date"] == day]
        before, after = on_day[0], on_day[-1]

        contexts.base_url = fresh_system.url
        kiosk = contexts.page(f"/kiosk/{clinic}?date={day}", viewport=KIOSK)
        wait_live(kiosk)
        times = kiosk.locator("#kiosk-times li")
        for t in (before, after):
            expect(kiosk.locator(f"#kiosk-times li[data-start='{t['start']}']")).to_have_count(1)
        count = times.count()
        expect(kiosk.locator("#qr-img")).to_have_attribute("src", re.compile(r"^data:image/gif;base64,"))
        clock = kiosk.locator("#clock").text_content()
        expect(kiosk.locator("#clock")).not_to_have_text(clock or "", timeout=ms(3))

        patient = api.register()
        api.book(patient, clinic, before)
        expect(kiosk.locator(f"#kiosk-times li[data-start='{before['start']}']")).to_have_count(0)
        expect(times).not_to_have_count(count)  # the overlapping start 15 minutes later goes too
        count = times.count()

        fresh_system.stop()
        expect(kiosk.locator("#conn-status")).to_have_attribute("data-state", "reconnecting", timeout=ms(10))
        fresh_system.start()
        wait_live(kiosk)

        api.book(api.register(), clinic, after)
        expect(kiosk.locator(f"#kiosk-times li[data-start='{after['start']}']")).to_have_count(
            0, timeout=ms(10)
        )
        expect(times).not_to_have_count(count)
        assert kiosk.evaluate("performance.getEntriesByType('navigation').length") == 1
    finally:
        api.client.close()
