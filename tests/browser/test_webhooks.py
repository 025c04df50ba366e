"""Browser tests (integration, real server + headless Chromium + a real HTTP receiver in this process): clinic
staff register a webhook on /staff, a booking at the clinic is delivered to the receiver with a valid
signature, the delivery log shows it delivered, Replay sends the same event again, and the endpoint is deleted.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from playwright.sync_api import expect

from server.consumers.webhooks import HEADER, verify_signature
from tests.browser.browsing import (
    DEMO,
    DEMO_PASSWORD,
    DESKTOP,
    PHONE,
    TIME_SCALE,
    Api,
    Contexts,
    check_accessibility,
    ms,
    screenshot,
    sign_in,
    wait_live,
)

pytestmark = pytest.mark.browser

SIZES = {"phone": PHONE, "desktop": DESKTOP}


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body)
        return data


class Receiver:
    """A plain HTTP server on 127.0.0.1 that answers 204 to every POST and queues what it got."""

    def __init__(self) -> None:
        got: queue.Queue[Received] = queue.Queue()
        self.got = got

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server hook's name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                got.put(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's signature
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def next_for(self, booking_id: str, timeout_s: float = 15.0) -> Received:
        """The next delivery about ``booking_id`` (others, if any, are skipped)."""
        deadline = time.monotonic() + timeout_s * TIME_SCALE
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no delivery for {booking_id} within {timeout_s}s"
            try:
                item = self.got.get(timeout=remaining)
            except queue.Empty:
                raise AssertionError(f"no delivery for {booking_id} within {timeout_s}s") from None
            if item.json()["data"]["booking"] == booking_id:
                return item


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver()
    made.thread.start()
    try:
        yield made
    finally:
        made.server.shutdown()
        made.server.server_close()


@pytest.mark.parametrize("size", SIZES)
def test_staff_register_a_webhook_see_the_delivery_and_replay_it(
    contexts: Contexts, api: Api, receiver: Receiver, size: str
) -> None:
    url = f"{receiver.base_url}/hooks/{uuid.uuid4().hex[:10]}"
    page = contexts.page("/staff", viewport=SIZES[size])
    sign_in(page, DEMO["staff"], DEMO_PASSWORD)
    wait_live(page)

    # Register for new bookings only: the secret is shown once, with the "copy it now" note.
    page.locator("#webhook-url").fill(url)
    for box in page.locator("#webhook-events input[type=checkbox]").all():
        if box.get_attribute("value") != "booking.created":
            box.uncheck()
    page.locator("#webhook-register").click()
    expect(page.locator("#webhook-secret")).to_be_visible()
    expect(page.locator("#webhook-secret")).to_contain_text("Kopiera hemligheten nu")
    secret = page.locator("#webhook-secret-value").input_value()
    assert secret.startswith("whsec_"), secret
    endpoint = page.locator("#webhook-list li.endpoint").filter(
        has=page.get_by_role("heading", name=url, exact=True)
    )
    expect(endpoint).to_have_count(1)
    expect(endpoint.locator(".event-types")).to_have_text("booking.created")
    expect(endpoint).to_have_attribute("data-health", "new")

    # A booking at the clinic reaches the receiver, signed with that secret, and the log says delivered.
    today = api.today()
    booking = api.book(api.register(), "AB-c1", [t for t in api.free_times("AB-c1") if t["date"] != today][7])
    first = receiver.next_for(booking["id"])
    assert first.path == url.removeprefix(receiver.base_url)
    assert verify_signature(secret, first.headers[HEADER.lower()], first.body, time.time())
    assert not verify_signature(secret + "x", first.headers[HEADER.lower()], first.body, time.time())
    event = first.json()
    assert event["type"] == "booking.created"
    assert event["data"]["start"] == booking["start"]
    assert "patient" not in event["data"] and "Test Patient" not in first.body.decode()
    assert first.headers["tandtid-event-id"] == event["id"]

    row = endpoint.locator("table.deliveries tbody tr[data-type='booking.created']")
    expect(row).to_have_count(1, timeout=ms(15))
    expect(row).to_have_attribute("data-status", "delivered", timeout=ms(15))
    expect(row).to_contain_text(f"#{event['sequence']}")
    expect(row).to_contain_text("Levererad")
    expect(endpoint).to_have_attribute("data-health", "ok")
    check_accessibility(page, f"staff webhooks ({size})")

    # Replay: a second delivery of the same event, signed again, and a copy in the log.
    row.locator("button.replay").click()
    expect(page.locator("#webhook-message")).to_contain_text(
        f"booking.created #{event['sequence']} skickas igen"
    )
    again = receiver.next_for(booking["id"])
    assert again.body == first.body
    assert again.headers["tandtid-event-id"] == event["id"]
    assert again.headers["tandtid-delivery-id"] != first.headers["tandtid-delivery-id"]
    assert verify_signature(secret, again.headers[HEADER.lower()], again.body, time.time())
    expect(endpoint.locator("table.deliveries tbody tr[data-status='delivered']")).to_have_count(
        2, timeout=ms(15)
    )
    expect(endpoint.locator("table.deliveries tbody tr").first).to_contain_text("kopia av")
    page.locator("#webhook-secret-hide").click()
    expect(page.locator("#webhook-secret")).to_be_hidden()
    endpoint.scroll_into_view_if_needed()
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), (
        "the page scrolls sideways"
    )
    check_accessibility(page, f"staff webhooks after replay ({size})")
    screenshot(page, f"staff-webhooks-{size}")

    # Delete (after confirming): gone from the list and from the API.
    page.once("dialog", lambda dialog: dialog.accept())
    endpoint.locator("button.delete").click()
    expect(endpoint).to_have_count(0)
    expect(page.locator("#webhook-message")).to_have_text("Adressen är borttagen.")


def test_an_address_the_server_refuses_is_explained(contexts: Contexts) -> None:
    page = contexts.page("/staff")
    sign_in(page, DEMO["staff"], DEMO_PASSWORD)
    page.locator("#webhook-url").fill("http://example.com/hook")
    page.locator("#webhook-register").click()
    message = page.locator("#webhook-message")
    expect(message).to_have_attribute("data-kind", "error")
    expect(message).to_contain_text("måste börja med https://")
    expect(page.locator("#webhook-secret")).to_be_hidden()
    page.locator("#lang-toggle").click()
    expect(page.locator("#webhooks-title + p")).to_contain_text("sends the clinic's booking events")
    page.locator("#webhook-register").click()
    expect(message).to_contain_text("must start with https://")
