"""Browser tests (integration, real server + headless Chromium + a real HTTP receiver in this process): clinic
staff register a webhook on /staff, a booking at the clinic is delivered to the receiver with a valid
signature, the delivery log shows it delivered, Replay sends the same event again, and the endpoint is deleted.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from playwright.sync_api import expect

from server.consumers.webhooks import HEADER, verify_signature
from tests.browser.browsing import (
    DEMO,
    DEMO_PASSWORD,
    DESKTOP,
    PHONE,
    Api,
    Contexts,
    check_accessibility,
    ms,
    screenshot,
    sign_in,
    wait_live,
)
from tests.support.webhook_receiver import Receiver, receiving

pytestmark = pytest.mark.browser

SIZES = {"phone": PHONE, "desktop": DESKTOP}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving() as made:
        yield made


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
    boxes = page.locator("#webhook-events input[type=checkbox]")
    # The panel draws its boxes after the live day view is up (wait_live): .all() does not wait for them.
    expect(boxes).to_have_count(3)
    for box in boxes.all():
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
