"""Browser test (integration, real server + headless Chromium): an unknown address shows the HTML 404 page in
the site's look, in Swedish or English, with the way back to the map."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.browser.browsing import Contexts, check_accessibility

pytestmark = pytest.mark.browser


def test_an_unknown_address_shows_the_not_found_page(contexts: Contexts) -> None:
    page = contexts.page("/no-such-page")
    expect(page.get_by_role("heading", level=1)).to_have_text("Sidan finns inte")
    expect(page).to_have_title("Sidan finns inte – Tandtid")
    expect(page.locator("header.site .brand")).to_be_visible()
    check_accessibility(page, "not found")
    page.locator("#lang-toggle").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Page not found")
    expect(page).to_have_title("Page not found – Tandtid")
    back = page.get_by_role("link", name="Back to the map of free times")
    back.click()
    expect(page).to_have_url(re.compile(r"/$"))
