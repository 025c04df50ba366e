"""Browser-test machinery (integration): the real ``tandtid serve`` as a subprocess (uvicorn, region actors, file
journal, demo seed) driven by headless Chromium (Debian's ``/usr/bin/chromium``) through Playwright.

Every browser context refuses any request that is not to 127.0.0.1: the pages must work with no network
beyond the server (that is also the offline-map test). Page errors (uncaught exceptions) fail the test.
Timeouts are multiples of ``TIME_SCALE``, the suite's timeout factor (``TANDTID_TEST_TIMEOUT_FACTOR``, default 1);
actions and expect() wait 10 s (scaled) unless told otherwise.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Browser, BrowserContext, Page, Route, ViewportSize, expect

from tests.support.served import ServedProcess
from tests.support.waiting import TIMEOUT_FACTOR

ROOT = Path(__file__).resolve().parents[2]
AXE = Path(__file__).resolve().parent / "vendor" / "axe-core" / "axe.min.js"
# what the tests photograph, to look at after a run (the README's pictures: make screenshots)
SCREENSHOTS = Path(tempfile.gettempdir()) / "tandtid-screenshots"
TIME_SCALE = TIMEOUT_FACTOR
CHROMIUM = os.environ.get("TANDTID_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DEMO_PASSWORD = "tandtid-demo"
DEMO = {
    "patient": "patient@demo.tandtid.se",
    "staff": "staff@demo.tandtid.se",
    "clinic_admin": "clinicadmin@demo.tandtid.se",
    "admin": "admin@demo.tandtid.se",
}
PHONE: ViewportSize = {"width": 360, "height": 780}
DESKTOP: ViewportSize = {"width": 1440, "height": 900}
KIOSK: ViewportSize = {"width": 1920, "height": 1080}


def ms(seconds: float) -> float:
    """A Playwright timeout in milliseconds, scaled."""
    return seconds * 1000 * TIME_SCALE


# expect() waits as long as a page's actions do (Contexts.new): 10 s, scaled (Playwright's own default is 5 s,
# unscaled, which a loaded machine can outlast while a page is merely slow).
expect.set_options(timeout=ms(10))


# Every context of every test comes from 127.0.0.1, like a whole clinic behind one NAT address: give that
# one address room, or the per-IP rate limit (not under test here) would refuse pages.
SERVED_ENV = {"TANDTID_RATE_PER_S": "1000", "TANDTID_RATE_BURST": "5000"}


def served_system(data_dir: Path, env: dict[str, str] | None = None) -> ServedProcess:
    """``tandtid serve --seed`` over ``data_dir`` on a free port (started: ready); ``env`` adds to its
    environment (e.g. ``TANDTID_WEBHOOK_ALLOW_HTTP``)."""
    return ServedProcess(data_dir, "--seed", env={**SERVED_ENV, **(env or {})}).start(ready_timeout=90.0)


@dataclass
class Patient:
    email: str
    password: str
    token: str
    user: dict[str, Any]


@dataclass
class Api:
    """The HTTP API as a test client (Bearer tokens, no CSRF), for setting up and for acting as 'someone else'."""

    base_url: str
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.base_url, timeout=20)

    def register(self) -> Patient:
        email = f"test-{uuid.uuid4().hex[:12]}@example.test"
        password = f"pw-{uuid.uuid4().hex}"
        r = self.client.post(
            "/api/auth/register", json={"email": email, "password": password, "name": "Test Patient"}
        )
        assert r.status_code == 201, r.text
        body = r.json()
        return Patient(email, password, body["token"], body["user"])

    def sign_in(self, email: str, password: str = DEMO_PASSWORD) -> Patient:
        """A session for an existing account (a demo account by default password), as a Patient record."""
        r = self.client.post("/api/auth/login", json={"email": email, "password": password})
        assert r.status_code == 200, r.text
        body = r.json()
        return Patient(email, password, body["token"], body["user"])

    def get(self, path: str, token: str | None = None, **params: Any) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        r = self.client.get(path, params=params, headers=headers)
        assert r.status_code == 200, r.text
        return r.json()

    def post(self, path: str, token: str, body: dict[str, Any]) -> httpx.Response:
        return self.client.post(path, json=body, headers={"Authorization": f"Bearer {token}"})

    def free_times(
        self, clinic: str, service: str = "checkup", days: int = 7, **params: Any
    ) -> list[dict[str, Any]]:
        """Future free starts ({start, resource, resources, date}) of a clinic, earliest first, skipping the next
        20 minutes (``resources``: every resource free then; ``resource`` the first)."""
        data = self.get(f"/api/clinics/{clinic}/availability", service=service, days=days, **params)
        soon = time.time() + 20 * 60
        out = []
        for day in data["days"]:
            for t in day["times"]:
                start = t["start"]
                if epoch_of(start) > soon:
                    out.append(
                        {
                            "start": start,
                            "resource": t["resource"],
                            "resources": t["resources"],
                            "date": day["date"],
                        }
                    )
        return out

    def bookable_count(self, clinic: str, first: str, days: int, service: str = "checkup") -> int:
        """How many start times the clinic's availability lists for ``service`` over ``days`` days from ``first``
        (what the map's badge counts)."""
        data = self.get(f"/api/clinics/{clinic}/availability", service=service, days=days, **{"from": first})
        return sum(len(day["times"]) for day in data["days"])

    def tomorrow(self) -> str:
        """The day after the server's date in Stockholm: a period from it holds no time passing while a test runs."""
        from datetime import date, timedelta

        return (date.fromisoformat(self.today()) + timedelta(days=1)).isoformat()

    def today(self) -> str:
        """The server's date in Stockholm (the first day of an availability answer)."""
        day: str = self.get("/api/clinics/AB-c1/availability", service="checkup", days=1)["days"][0]["date"]
        return day

    def clinics_with_one_resource(self, service: str = "checkup") -> list[str]:
        """Clinics where exactly one resource performs the service, so a start time is one resource's cells."""
        out = []
        for region in self.get("/api/regions"):
            for clinic in self.get("/api/clinics", region=region["code"], limit=500):
                details = self.get(f"/api/clinics/{clinic['id']}")
                if sum(service in r["services"] for r in details["resources"]) == 1:
                    out.append(clinic["id"])
        return sorted(out)

    def book(
        self, patient: Patient, clinic: str, time_: dict[str, Any], service: str = "checkup"
    ) -> dict[str, Any]:
        r = self.post(
            "/api/bookings",
            patient.token,
            {"clinic": clinic, "resource": time_["resource"], "service": service, "start": time_["start"]},
        )
        assert r.status_code == 201, r.text
        booking: dict[str, Any] = r.json()["booking"]
        return booking


def epoch_of(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()


@dataclass
class Contexts:
    """Creates browser contexts that only reach 127.0.0.1; records what was blocked and every page error."""

    browser: Browser
    base_url: str
    blocked: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    opened: list[BrowserContext] = field(default_factory=list)

    def new(self, viewport: ViewportSize = DESKTOP, **options: Any) -> BrowserContext:
        context = self.browser.new_context(viewport=viewport, base_url=self.base_url, **options)
        context.set_default_timeout(ms(10))

        def only_local(route: Route) -> None:
            url = route.request.url
            if url.startswith(("http://127.0.0.1:", "ws://127.0.0.1:", "data:", "blob:")):
                route.continue_()
            else:
                self.blocked.append(url)
                route.abort("internetdisconnected")

        context.route("**/*", only_local)
        context.on("page", lambda page: page.on("pageerror", lambda err: self.page_errors.append(str(err))))
        self.opened.append(context)
        return context

    def page(self, path: str, viewport: ViewportSize = DESKTOP, **options: Any) -> Page:
        page = self.new(viewport, **options).new_page()
        page.goto(path)
        return page


def sign_in(page: Page, email: str, password: str) -> None:
    """Fill whichever sign-in form the page shows (the forms share their field names)."""
    form = page.locator("form.auth[data-mode='signin']")
    form.locator("input[name=email]").fill(email)
    form.locator("input[name=password]").fill(password)
    form.locator("button[type=submit]").click()
    form.wait_for(state="detached")


def wait_live(page: Page) -> None:
    """The page's live connection has all its snapshots (the status pill says so)."""
    page.locator("#conn-status[data-state='live']").wait_for(timeout=ms(15))


def check_accessibility(page: Page, screen: str) -> None:
    """axe-core (vendored): no serious or critical violation on the screen as it is now."""
    # Evaluated through the DevTools protocol, so the page's CSP (script-src 'self') stays on.
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.evaluate(AXE.read_text(encoding="utf-8") + "\n;undefined")
    violations = page.evaluate(
        """async () => {
            const result = await axe.run(document, { resultTypes: ["violations"] });
            return result.violations.map((v) => ({
                id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.slice(0, 4).map((n) => n.target.join(" ")),
            }));
        }"""
    )
    bad = [v for v in violations if v["impact"] in ("serious", "critical")]
    assert not bad, f"{screen}: accessibility violations: {bad}"


def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


def open_contexts(browser: Browser, base_url: str) -> Iterator[Contexts]:
    """Contexts for one test against ``base_url``: closed afterwards, and the test fails on any uncaught page error."""
    made = Contexts(browser, base_url)
    try:
        yield made
    finally:
        for context in made.opened:
            context.close()
    assert not made.page_errors, f"uncaught errors in the page: {made.page_errors}"
