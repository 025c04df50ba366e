"""The README's screenshots (``make screenshots``): every screen at phone and desktop size, from the Sweden seed.

    .venv/bin/python scripts/screenshots.py                       # seeds a fresh temp store (about a minute)
    .venv/bin/python scripts/screenshots.py --data /tmp/seeded    # copies a seeded store (never touches it)

Seeds ``tandtid seed --scale sweden --booked 0.3`` into a temporary data directory (or copies the one given),
serves it with ``tandtid serve`` on a free port, and drives Debian's Chromium through Playwright over every screen
whose PNG is in ``docs/screenshots/``, under the same names. Only the demo accounts appear (the demo patient books,
the demo staff, clinic admin and admin look): no other name or e-mail address. Each screen is photographed once
its live data is in (the selectors say so), never after a fixed sleep. The browser suite's machinery is reused
(tests/browser/browsing.py: contexts that reach only 127.0.0.1, sign-in, the live pill; tests/support: the served
process), so this needs the test dependencies (``make venv`` installs them).
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from playwright.sync_api import Page, ViewportSize, expect, sync_playwright  # noqa: E402

from tests.browser.browsing import (  # noqa: E402
    CHROMIUM,
    CHROMIUM_ARGS,
    DEMO,
    DEMO_PASSWORD,
    DESKTOP,
    KIOSK,
    SERVED_ENV,
    Api,
    Contexts,
    epoch_of,
    ms,
    sign_in,
    wait_live,
)
from tests.support.served import ServedProcess, tandtid  # noqa: E402
from tests.support.webhook_receiver import Receiver, receiving  # noqa: E402

PHONE: ViewportSize = {"width": 390, "height": 844}
SIZES = {"phone": PHONE, "desktop": DESKTOP}
SEED_TIMEOUT_S = 900.0


def seeded_copy(source: Path | None, work: Path) -> Path:
    """A data directory to serve: a copy of ``source`` (without its lock), else a fresh Sweden seed."""
    data = work / "data"
    if source is not None:
        shutil.copytree(source, data, ignore=shutil.ignore_patterns("lock"))
        return data
    started = time.perf_counter()
    done = tandtid(
        "seed", "--scale", "sweden", "--booked", "0.3", "--data", str(data), timeout=SEED_TIMEOUT_S
    )
    if done.returncode != 0:
        raise SystemExit(f"tandtid seed failed:\n{done.stdout}{done.stderr}")
    print(done.stdout.strip(), f"({time.perf_counter() - started:.0f} s)", flush=True)
    return data


class Photographer:
    def __init__(self, contexts: Contexts, api: Api, out: Path, receiver: Receiver) -> None:
        self.contexts, self.api, self.out, self.receiver = contexts, api, out, receiver
        self.clinic: str = api.sign_in(DEMO["staff"]).user["clinic"]  # the demo staff's clinic
        self.taken: list[str] = []  # start times this run booked (never pick one twice)
        self.webhook = self.register_webhook()

    def shoot(self, page: Page, name: str) -> None:
        page.evaluate("document.fonts.ready.then(() => true)")
        page.screenshot(path=str(self.out / f"{name}.png"))
        print(f"  {name}.png", flush=True)

    def free_time(self, skip: int, notice: bool = False) -> dict[str, object]:
        """A free check-up time at the demo clinic, after today (and past the cancellation notice if asked)."""
        today = self.api.today()
        after = time.time()
        if notice:
            after += self.api.get(f"/api/clinics/{self.clinic}")["cancel_notice_hours"] * 3600 + 3600
        free = [
            t
            for t in self.api.free_times(self.clinic)
            if t["date"] != today and epoch_of(t["start"]) > after and t["start"] not in self.taken
        ]
        chosen = free[min(skip, len(free) - 1)]
        self.taken.append(chosen["start"])
        return chosen

    def map(self, size: str) -> None:
        page = self.contexts.page("/", viewport=SIZES[size])
        wait_live(page)
        expect(page.locator("#results li.clinic").first).to_be_visible()
        expect(
            page.locator(".leaflet-marker-pane .cluster-marker, .leaflet-marker-pane .clinic-marker").first
        ).to_be_visible()
        self.shoot(page, f"map-{size}")

    def clinic_booking(self, size: str) -> None:
        """The clinic page, then the demo patient books a time on it: sign-in, hold, confirmation."""
        page = self.contexts.page(f"/clinic/{self.clinic}?service=checkup", viewport=SIZES[size])
        wait_live(page)
        expect(page.locator("button.slot").first).to_be_visible()
        self.shoot(page, f"clinic-{size}")
        target = self.free_time(skip=3, notice=True)
        slot = page.locator(f"button.slot[data-start='{target['start']}']")
        if not slot.is_visible():  # a later day of the grid
            target = {"start": page.locator("button.slot").last.get_attribute("data-start")}
            slot = page.locator(f"button.slot[data-start='{target['start']}']")
        slot.click()
        expect(page.locator("form.auth")).to_be_visible()
        self.shoot(page, f"clinic-sign-in-{size}")
        sign_in(page, DEMO["patient"], DEMO_PASSWORD)
        expect(page.locator("#hold-panel")).to_have_attribute("data-state", "held")
        expect(page.locator("#hold-countdown")).to_have_text(re.compile(r"^\d+:\d\d$"))
        self.shoot(page, f"clinic-hold-{size}")
        page.locator("#confirm").click()
        expect(page.locator("#confirmation")).to_be_visible()
        self.shoot(page, f"clinic-confirmation-{size}")

    def me(self, size: str) -> None:
        page = self.contexts.page("/me", viewport=SIZES[size])
        expect(page.locator("form.auth")).to_be_visible()
        self.shoot(page, f"me-sign-in-{size}")
        sign_in(page, DEMO["patient"], DEMO_PASSWORD)
        wait_live(page)
        first = page.locator("#upcoming li[data-booking]").first
        expect(first).to_be_visible()
        self.shoot(page, f"me-{size}")
        page.locator("#upcoming li[data-booking] button.move").first.click()
        expect(page.locator("#move-grid button.slot").first).to_be_visible()
        self.shoot(page, f"me-move-{size}")
        page.reload()
        wait_live(page)
        expect(first).to_be_visible()
        self.feed(page, "me-feed", size)

    def feed(self, page: Page, prefix: str, size: str) -> None:
        page.locator(f"#{prefix}-create").click()
        expect(page.locator(f"#{prefix}-url")).to_have_value(re.compile(r"/ical/.+\.ics$"))
        page.locator(f"#{prefix}-shown").scroll_into_view_if_needed()
        self.shoot(page, f"{prefix}-{size}")
        page.locator(f"#{prefix}-revoke").click()
        expect(page.locator(f"#{prefix}-url")).to_be_hidden()

    def kiosk(self, size: str) -> None:
        day = self.api.free_times(self.clinic)[0]["date"]
        viewport = KIOSK if size == "desktop" else PHONE
        page = self.contexts.page(f"/kiosk/{self.clinic}?date={day}", viewport=viewport)
        wait_live(page)
        expect(page.locator("#kiosk-times li").first).to_be_visible()
        expect(page.locator("#qr-img")).to_have_attribute("src", re.compile(r"^data:image/gif"))
        self.shoot(page, f"kiosk-{size}")

    def staff(self, size: str, booked: dict[str, object]) -> None:
        page = self.contexts.page("/staff", viewport=SIZES[size])
        sign_in(page, DEMO["staff"], DEMO_PASSWORD)
        wait_live(page)
        day = str(booked["start"])[:10]
        page.locator("#staff-date").fill(day)
        page.locator("#staff-date").dispatch_event("change")
        page.locator("#staff-date").blur()
        expect(page.locator(f"#bookings-body tr[data-booking='{booked['id']}']")).to_contain_text(
            "Demo Patient"
        )
        expect(page.locator("#day-table td.s3").first).to_be_visible()
        self.shoot(page, f"staff-{size}")
        self.feed(page, "staff-feed", size)
        self.webhooks(page, size)

    def register_webhook(self) -> str:
        """The demo staff's webhook for new bookings, to the receiver on loopback (before any booking, so every
        booking of this run is a delivery in its log)."""
        url = f"{self.receiver.base_url}/hooks/clinic"
        staff = self.api.sign_in(DEMO["staff"])
        r = self.api.post("/api/clinic/v1/webhooks", staff.token, {"url": url, "events": ["booking.created"]})
        assert r.status_code == 201, r.text
        return url

    def webhooks(self, page: Page, size: str) -> None:
        """The webhook's delivery log: the bookings of this run, delivered."""
        endpoint = page.locator("#webhook-list li.endpoint").filter(
            has=page.get_by_role("heading", name=self.webhook, exact=True)
        )
        delivered = endpoint.locator("table.deliveries tbody tr[data-status='delivered']")
        expect(delivered.first).to_be_visible(timeout=ms(30))
        endpoint.scroll_into_view_if_needed()
        self.shoot(page, f"staff-webhooks-{size}")

    def admin(self, size: str) -> None:
        page = self.contexts.page("/admin", viewport=SIZES[size])
        sign_in(page, DEMO["admin"], DEMO_PASSWORD)
        expect(page.locator("#regions li[data-ready='true']")).to_have_count(21, timeout=ms(30))
        expect(page.locator("#chart-commands .plot canvas")).to_have_count(1)
        expect(page.locator("#chart-commands")).to_have_attribute(
            "data-samples", re.compile(r"^([3-9]|\d\d+)$")
        )
        expect(page.locator("#outbox tr button").first).to_be_visible(timeout=ms(30))
        page.locator("#outbox tr button").first.click()
        expect(page.locator("#outbox-message")).to_contain_text(".ics")
        page.evaluate("window.scrollTo(0, 0)")  # the dashboard's top: regions and charts
        self.shoot(page, f"admin-{size}")

    def book(self, skip: int) -> dict[str, object]:
        """The demo patient books a check-up at the demo clinic through the API."""
        return self.api.book(self.api.sign_in(DEMO["patient"]), self.clinic, self.free_time(skip))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, help="a seeded data directory to copy (left as it is)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tandtid-screenshots-") as tmp:
        data = seeded_copy(args.data, Path(tmp))
        served = ServedProcess(data, env={**SERVED_ENV, "TANDTID_WEBHOOK_ALLOW_HTTP": "1"})
        served.start()
        api = Api(served.url)
        try:
            with receiving() as receiver, sync_playwright() as driver:
                browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                contexts = Contexts(browser, served.url)
                shots = Photographer(contexts, api, args.out, receiver)
                print(f"serving {served.url}; demo clinic {shots.clinic}; writing {args.out}", flush=True)
                staff_booking = shots.book(skip=5)  # real content on /me and /staff before any picture
                for size in SIZES:
                    shots.map(size)
                    shots.clinic_booking(size)
                    shots.me(size)
                    shots.kiosk(size)
                    shots.staff(size, staff_booking)
                    shots.admin(size)
                    for context in contexts.opened:
                        context.close()
                    contexts.opened.clear()
                browser.close()
            if contexts.page_errors:
                raise SystemExit(f"uncaught errors in the pages: {contexts.page_errors}")
        finally:
            api.client.close()
            served.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
