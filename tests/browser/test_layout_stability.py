"""Browser tests (integration, real server + headless Chromium): pages that fill in as data arrives do not
move what is already on screen (Cumulative Layout Shift, as Chromium's layout-shift entries report it), and
the header has fixed rows (one on a wide screen, two on a phone) with links for the patient's role only."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import ConsoleMessage, Page, ViewportSize, expect

from tests.browser.browsing import DEMO, DEMO_PASSWORD, DESKTOP, PHONE, Api, Contexts, sign_in, wait_live

pytestmark = pytest.mark.browser

# Every layout shift not caused by input, from the page's first moment (buffered).
WATCH_SHIFTS = """
window.__shifts = [];
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) if (!entry.hadRecentInput) window.__shifts.push(entry.value);
}).observe({ type: "layout-shift", buffered: true });
"""
GOOD_CLS = 0.1  # Lighthouse's and Web Vitals' line for "good"


def shifted(page: Page) -> float:
    total: float = page.evaluate("window.__shifts.reduce((a, b) => a + b, 0)")
    return total


def loaded_page(contexts: Contexts, path: str, viewport: ViewportSize) -> Page:
    context = contexts.new(viewport)
    context.add_init_script(WATCH_SHIFTS)
    page = context.new_page()
    page.goto(path)
    wait_live(page)
    return page


@pytest.mark.parametrize("size", ["phone", "desktop"])
def test_the_clinic_page_does_not_shift_as_it_loads(contexts: Contexts, size: str) -> None:
    page = loaded_page(contexts, "/clinic/AB-c1", PHONE if size == "phone" else DESKTOP)
    expect(page.locator("#clinic-details-list dd").first).to_be_visible()
    expect(page.locator("#grid section.day").first).to_be_visible()  # the times are drawn
    page.wait_for_timeout(300)  # a frame or two after the last change, for its entry to arrive
    assert shifted(page) < GOOD_CLS


@pytest.mark.parametrize("size", ["phone", "desktop"])
def test_the_kiosk_does_not_shift_as_it_loads(contexts: Contexts, api: Api, size: str) -> None:
    # A day with free times, pinned (?date=): a full list is what moved the page (the grid's rows had
    # stretched to fill the screen while it was empty, then shrank), whatever the time of day.
    day = next(t["date"] for t in api.free_times("AB-c1") if t["date"] != api.today())
    page = loaded_page(contexts, f"/kiosk/AB-c1?date={day}", PHONE if size == "phone" else DESKTOP)
    expect(page.locator("#clinic-name")).not_to_be_empty()
    expect(page.locator("#qr-img")).to_have_attribute("src", re.compile(r"^data:image/"))
    page.locator("#kiosk-times li").first.wait_for()
    page.wait_for_timeout(300)
    assert shifted(page) < GOOD_CLS


def test_the_phone_header_is_two_rows_with_the_links_of_the_role(contexts: Contexts) -> None:
    """On a phone the header is the name and the tools on one row, the menu on a second row below, every link
    in view (nothing scrolls sideways); a patient sees only the patient's links, staff the staff link too."""
    for path in ("/", "/clinic/AB-c1", "/me"):
        page = contexts.page(path, PHONE)
        header = page.locator("header.site")
        expect(header.locator("#lang-toggle")).to_be_visible()
        box = header.bounding_box()
        assert box is not None and box["height"] <= 90, (path, box)
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"], path
        expect(header.locator("a[href='/me']")).to_be_visible()
        expect(header.locator("a[href='/staff']")).to_be_hidden()  # not for patients
        expect(header.locator("a[href='/admin']")).to_be_hidden()
        assert_in_header(page, ("nav a[href='/']", "nav a[href='/me']", "#lang-toggle", "#conn-status"))
        brand, menu = header.locator(".brand").bounding_box(), header.locator("nav").bounding_box()
        assert brand is not None and menu is not None and menu["y"] >= brand["y"] + brand["height"], path

    staff = contexts.page("/staff", PHONE)
    sign_in(staff, DEMO["staff"], DEMO_PASSWORD)
    staff.goto("/")  # the role is remembered: the staff link shows on every page, the admin link does not
    expect(staff.locator("header.site a[href='/staff']")).to_be_visible()
    expect(staff.locator("header.site a[href='/admin']")).to_be_hidden()
    staff.goto("/staff")  # three links: all of them on the menu's row, none scrolled out of view
    expect(staff.locator("header.site a[href='/staff']")).to_have_attribute("aria-current", "page")
    assert_in_header(staff, ("nav a[href='/']", "nav a[href='/me']", "nav a[href='/staff']"))
    assert staff.locator("header.site nav").evaluate("(nav) => nav.scrollWidth <= nav.clientWidth")


def test_the_desktop_header_is_one_row(contexts: Contexts) -> None:
    page = contexts.page("/me", DESKTOP)
    header = page.locator("header.site")
    expect(header.locator("#lang-toggle")).to_be_visible()
    box = header.bounding_box()
    assert box is not None and box["height"] <= 60, box
    assert_in_header(page, ("nav a[href='/']", "nav a[href='/me']", "#lang-toggle", "#conn-status"))
    brand, menu = header.locator(".brand").bounding_box(), header.locator("nav").bounding_box()
    assert brand is not None and menu is not None and menu["y"] < brand["y"] + brand["height"]


def assert_in_header(page: Page, items: tuple[str, ...]) -> None:
    """Each item lies inside the screen's width and inside the header's box."""
    header = page.locator("header.site").bounding_box()
    width = page.viewport_size["width"] if page.viewport_size else 0
    assert header is not None
    for item in items:
        inner = page.locator(f"header.site {item}").bounding_box()
        assert inner is not None and inner["x"] >= 0 and inner["x"] + inner["width"] <= width, (item, inner)
        assert header["y"] <= inner["y"] and inner["y"] + inner["height"] <= header["y"] + header["height"], (
            item
        )


def test_an_anonymous_visit_leaves_the_console_clean(contexts: Contexts) -> None:
    """No 401 from asking who is signed in when nobody is, no favicon 404: nothing in the console but the street
    map's tiles, which cannot load here (the contexts reach only 127.0.0.1; the map then falls back to the outline)."""
    context = contexts.new(PHONE)
    errors: list[str] = []

    def console(message: ConsoleMessage) -> None:
        if message.type == "error" and not message.location["url"].startswith(
            "https://tile.openstreetmap.org/"
        ):
            errors.append(f"{message.text} ({message.location['url']})")

    context.on("console", console)
    for path in ("/", "/clinic/AB-c1", "/kiosk/AB-c1", "/me"):
        page = context.new_page()
        page.goto(path)
        if path == "/me":
            page.locator("form.auth").wait_for()  # my bookings has no live connection before sign-in
        else:
            wait_live(page)
        page.wait_for_load_state("networkidle")
        page.close()
    assert errors == []
