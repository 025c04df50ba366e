"""The map at national size (integration): a server seeded with all of Sweden with a realistic share already
booked (``--scale sweden --booked 0.3``: 4,430 clinics, ~3.35 M bookings), real Chromium. Every clinic is counted in the list and reachable through it, the DOM stays small, a booking
elsewhere reaches the clinic's row by id, and the desktop layout keeps the map a fixed panel beside the list.

Long tasks after load are printed (a figure, not a timed assertion).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, ViewportSize, expect

from tests.browser.browsing import (
    DESKTOP,
    PHONE,
    SERVED_ENV,
    Api,
    Contexts,
    ms,
    open_contexts,
    screenshot,
    wait_live,
)
from tests.support.served import ServedProcess

pytestmark = pytest.mark.browser

LONG_TASKS = """
window.__longTasks = [];
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) window.__longTasks.push(Math.round(e.duration));
}).observe({ type: "longtask", buffered: true });
"""


@pytest.fixture(scope="module")
def sweden(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedProcess]:
    data = tmp_path_factory.mktemp("sweden") / "data"
    served = ServedProcess(data, "--seed", "--scale", "sweden", "--booked", "0.3", env=SERVED_ENV).start(
        ready_timeout=240.0
    )
    try:
        yield served
    finally:
        served.stop()


@pytest.fixture
def national(browser: Browser, sweden: ServedProcess) -> Iterator[Contexts]:
    yield from open_contexts(browser, sweden.url)


@pytest.fixture(scope="module")
def sweden_api(sweden: ServedProcess) -> Iterator[Api]:
    client = Api(sweden.url)
    try:
        yield client
    finally:
        client.client.close()


def open_map(contexts: Contexts, viewport: ViewportSize) -> Page:
    context = contexts.new(viewport)
    context.add_init_script(LONG_TASKS)
    page = context.new_page()
    page.goto("/")
    wait_live(page)
    return page


def test_every_clinic_is_counted_and_reachable_with_a_small_dom(national: Contexts, sweden_api: Api) -> None:
    total = sum(r["clinics"] for r in sweden_api.get("/api/regions"))
    assert total == 4430
    page = open_map(national, DESKTOP)
    expect(page.locator("#results-count")).to_have_text(f"{total} kliniker", timeout=ms(30))
    expect(page.locator("#results li.clinic")).to_have_count(50)
    expect(page.locator("#results-more")).to_contain_text(f"{total - 50} kvar")
    page.wait_for_timeout(1000)
    nodes = page.evaluate("document.getElementsByTagName('*').length")
    tasks = page.evaluate("window.__longTasks")
    print(f"\nmap at {total} clinics: {nodes} DOM nodes; long tasks (ms) since navigation: {tasks}")
    assert nodes < 5000

    # Stockholm alone has more clinics than the old 500 cap: all of them are in the list, to the last one.
    stockholm = sweden_api.get("/api/regions")[0]
    assert stockholm["code"] == "AB" and stockholm["clinics"] > 500
    page.select_option("#region", "AB")
    page.locator("#search").click()
    expect(page.locator("#results-count")).to_have_text(f"{stockholm['clinics']} kliniker", timeout=ms(30))
    # scrolling to the list's end renders the next rows, until the last clinic is there
    results = page.locator("section.results")
    for _ in range(stockholm["clinics"] // 50 + 2):
        if page.locator("#results-more").is_hidden():
            break
        results.evaluate("(el) => { el.scrollTop = el.scrollHeight; }")
        page.wait_for_timeout(100)
    expect(page.locator("#results-more")).to_be_hidden(timeout=ms(10))
    expect(page.locator("#results li.clinic")).to_have_count(stockholm["clinics"])


def test_a_booking_elsewhere_changes_the_row_by_id(national: Contexts, sweden_api: Api) -> None:
    page = open_map(national, DESKTOP)
    first = page.locator("#results li.clinic").first
    expect(first).to_be_visible(timeout=ms(30))
    clinic = first.get_attribute("data-clinic")
    assert clinic
    badge = first.locator(".free-badge")
    expect(badge).not_to_have_attribute("data-free", "0")
    before = int(badge.get_attribute("data-free") or "0")
    # The badge counts bookable check-up times: the time goes once every dentist free then is booked.
    time_ = sweden_api.free_times(clinic)[0]
    for resource in time_["resources"]:
        sweden_api.book(sweden_api.register(), clinic, time_ | {"resource": resource})
    expect(badge).not_to_have_attribute("data-free", str(before), timeout=ms(5))
    assert int(badge.get_attribute("data-free") or "0") < before


def test_desktop_map_is_a_fixed_panel_beside_the_list(national: Contexts) -> None:
    page = open_map(national, DESKTOP)
    expect(page.locator("#results li.clinic").first).to_be_visible(timeout=ms(30))
    size = page.evaluate(
        "[document.documentElement.scrollHeight, window.innerHeight, document.documentElement.scrollWidth, window.innerWidth]"
    )
    assert size[0] <= size[1] and size[2] <= size[3], f"the page scrolls: {size}"
    legend = page.locator(".legend").bounding_box()
    assert legend and legend["y"] + legend["height"] <= DESKTOP["height"], legend
    map_box = page.locator("#map").bounding_box()
    assert map_box and map_box["height"] >= 500, map_box

    row = page.locator("#results li.clinic").nth(10)
    row.locator("button.show-on-map").click()
    popup = page.locator(".leaflet-popup")
    expect(popup).to_be_visible()
    expect(popup.locator("h3")).to_have_text(row.locator("h3").inner_text())
    marker = page.locator(
        f".leaflet-marker-pane .free-badge[data-clinic='{row.get_attribute('data-clinic')}']"
    )
    expect(marker).to_be_visible()
    box = marker.bounding_box()
    assert (
        box and map_box["y"] <= box["y"] and box["y"] + box["height"] <= map_box["y"] + map_box["height"]
    ), box
    screenshot(page, "map-sweden-desktop")

    # The markers share one popup (none bound to each): Enter on a focused marker opens it for that clinic.
    page.locator(".leaflet-popup-close-button").click()
    expect(popup).to_have_count(0)
    marker.locator("xpath=..").focus()
    page.keyboard.press("Enter")
    expect(popup.locator("h3")).to_have_text(row.locator("h3").inner_text())


def test_phone_stacks_search_map_and_list(national: Contexts) -> None:
    page = open_map(national, PHONE)
    expect(page.locator("#results li.clinic").first).to_be_attached(timeout=ms(30))
    width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], f"the phone page scrolls sideways: {width}"
    search = page.locator("section.search").bounding_box()
    map_box = page.locator("#map").bounding_box()
    results = page.locator("section.results").bounding_box()
    assert search and map_box and results
    assert search["y"] < map_box["y"] < results["y"]
    screenshot(page, "map-sweden-phone")
