"""Fixtures for the browser tests (integration): a served system, Chromium, local-only contexts.

The machinery (served_system, Api, Contexts, sign_in, check_accessibility, screenshot) is in browsing.py.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Playwright, sync_playwright

from tests.browser.browsing import CHROMIUM, CHROMIUM_ARGS, Api, Contexts, open_contexts, served_system
from tests.support.served import ServedProcess

WEBHOOKS_TO_LOOPBACK = {"TANDTID_WEBHOOK_ALLOW_HTTP": "1"}


@pytest.fixture(scope="session")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedProcess]:
    """One served system with demo data for the whole browser session (tests use fresh patients).
    Webhooks may post plain HTTP to loopback, so a receiver in the test process can take deliveries."""
    served = served_system(tmp_path_factory.mktemp("served") / "data", env=WEBHOOKS_TO_LOOPBACK)
    try:
        yield served
    finally:
        served.stop()


@pytest.fixture(scope="session")
def api(system: ServedProcess) -> Iterator[Api]:
    client = Api(system.url)
    try:
        yield client
    finally:
        client.client.close()


@pytest.fixture(scope="session")
def playwright_driver() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="session")
def browser(playwright_driver: Playwright) -> Iterator[Browser]:
    if not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: apt-get install chromium (.ci/run does)")
    launched = playwright_driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    try:
        yield launched
    finally:
        launched.close()


@pytest.fixture
def contexts(browser: Browser, system: ServedProcess) -> Iterator[Contexts]:
    yield from open_contexts(browser, system.url)


@pytest.fixture
def fresh_system(tmp_path: Path) -> Iterator[ServedProcess]:
    """A served system of the test's own (for tests that restart the server)."""
    served = served_system(tmp_path / "data")
    try:
        yield served
    finally:
        served.stop()


@pytest.fixture(scope="session")
def solo_clinics(api: Api) -> list[str]:
    """Demo clinics where one resource does check-ups: a booked start time then vanishes from every grid."""
    clinics = [c for c in api.clinics_with_one_resource("checkup") if c != "AB-c1"]  # AB-c1: the staff tests
    assert len(clinics) >= 4, f"the demo seed has too few single-dentist clinics: {clinics}"
    return clinics
