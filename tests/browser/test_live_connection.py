"""Browser tests (integration, real server + headless Chromium): the live connection recovers from a lost diff
(sequence gap -> resubscribe -> fresh snapshot) and from a subscribe the server could not serve yet (error
UNAVAILABLE -> resubscribe with backoff), and the map's search panel (region, near me, earliest).
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest
from playwright.sync_api import WebSocketRoute, expect

from tests.browser.browsing import TIME_SCALE, Api, Contexts, ms, wait_live

pytestmark = pytest.mark.browser


class DropOneDiff:
    """Passes every frame through except the next diff of one topic, which the network 'loses'."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.armed = False
        self.dropped: list[int] = []
        self.subscribes = 0

    def route(self, ws: WebSocketRoute) -> None:
        server = ws.connect_to_server()

        def from_page(message: Any) -> None:
            if isinstance(message, str) and '"subscribe"' in message and self.topic in message:
                self.subscribes += 1
            server.send(message)

        def from_server(message: Any) -> None:
            if self.armed and isinstance(message, str):
                frame = json.loads(message)
                if frame.get("type") == "diff" and frame.get("topic") == self.topic:
                    self.armed = False
                    self.dropped.append(frame["seq"])
                    return
            ws.send(message)

        ws.on_message(from_page)
        server.on_message(from_server)


def test_a_lost_diff_is_noticed_by_the_next_seq_and_repaired_by_a_fresh_snapshot(
    contexts: Contexts, api: Api, solo_clinics: list[str]
) -> None:
    clinic = solo_clinics[-1]
    free = api.free_times(clinic)
    first, second = free[5], free[-5]
    link = DropOneDiff(f"clinic:{clinic}")
    context = contexts.new()
    context.route_web_socket(re.compile(r"/ws(\?.*)?$"), link.route)
    page = context.new_page()
    page.goto(f"/clinic/{clinic}?service=checkup")
    wait_live(page)
    assert link.subscribes == 1

    link.armed = True
    api.book(api.register(), clinic, first)
    # The diff for the first booking never arrives, so the page still offers that time ...
    deadline = time.monotonic() + 10 * TIME_SCALE
    while not link.dropped and time.monotonic() < deadline:
        page.wait_for_timeout(20)  # lets Playwright deliver frames to the route; the loop polls for the drop
    assert len(link.dropped) == 1
    expect(page.locator(f"button.slot[data-start='{first['start']}']")).to_have_count(1)

    # ... until the next diff shows a gap in seq: the page resubscribes and the snapshot has both bookings.
    api.book(api.register(), clinic, second)
    expect(page.locator(f"button.slot[data-start='{second['start']}']")).to_have_count(0)
    expect(page.locator(f"button.slot[data-start='{first['start']}']")).to_have_count(0)
    assert link.subscribes == 2
    wait_live(page)


class UnavailableFirst:
    """Answers the page's first ``unavailable`` subscribes to one topic with the server's UNAVAILABLE error
    frame (what a recovering region answers) instead of passing them on; later ones go to the server."""

    def __init__(self, topic: str, unavailable: int) -> None:
        self.topic = topic
        self.unavailable = unavailable
        self.subscribes = 0

    def route(self, ws: WebSocketRoute) -> None:
        server = ws.connect_to_server()

        def from_page(message: Any) -> None:
            if isinstance(message, str) and '"subscribe"' in message and self.topic in message:
                self.subscribes += 1
                if self.subscribes <= self.unavailable:
                    error = {
                        "type": "error",
                        "code": "UNAVAILABLE",
                        "message": "recovering",
                        "topic": self.topic,
                    }
                    ws.send(json.dumps(error))
                    return
            server.send(message)

        ws.on_message(from_page)
        server.on_message(ws.send)


def test_a_subscribe_refused_as_unavailable_is_retried_with_backoff_until_served(
    contexts: Contexts, api: Api, solo_clinics: list[str]
) -> None:
    clinic = solo_clinics[0]
    link = UnavailableFirst(f"clinic:{clinic}", unavailable=2)
    context = contexts.new()
    context.route_web_socket(re.compile(r"/ws(\?.*)?$"), link.route)
    page = context.new_page()
    page.goto(f"/clinic/{clinic}?service=checkup")
    free = api.free_times(clinic)
    # two refusals, two retries (0.2-0.4 s, then 0.4-0.8 s later), then the snapshot fills the grid
    expect(page.locator(f"button.slot[data-start='{free[0]['start']}']")).to_have_count(1, timeout=ms(15))
    assert link.subscribes == 3
    wait_live(page)


def test_map_search_by_region_and_near_me(contexts: Contexts, api: Api) -> None:
    malmo = {"latitude": 55.6059, "longitude": 13.0007}
    page = contexts.page("/", geolocation=malmo, permissions=["geolocation"])
    wait_live(page)
    results = page.locator("#results li.clinic")
    expect(results.first).to_be_visible()
    total = results.count()

    page.locator("#region").select_option("M")
    expect(page.locator("#municipality option")).not_to_have_count(1)  # Skåne's municipalities arrived
    page.locator("#search").click()
    expect(results).not_to_have_count(total)
    ids = results.evaluate_all("els => els.map(e => e.dataset.clinic)")
    assert ids and all(i.startswith("M-") for i in ids), ids

    page.locator("#near").click()
    expect(results.first.locator(".muted")).to_contain_text("km")
    distances = [
        float(m.group(1))
        for m in (re.search(r"([\d.]+) km", t) for t in results.locator(".muted").all_text_contents())
        if m
    ]
    assert distances == sorted(distances) and distances[0] < 30, distances

    page.locator("#earliest").click()
    expect(results.first.locator(".next-free")).not_to_contain_text("Inga lediga")
