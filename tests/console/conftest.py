"""The web console in a real browser: Debian's Chromium (`make browser`), driven headless by
Playwright, against the local stack started as `make dev` starts it.

Screenshots of every page go to tests/console/screenshots/ (git-ignored), for a reviewer."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright

from tests.e2e.conftest import LocalStack, run_local_stack

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}


@pytest.fixture(scope="package")
def console_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """`make dev`'s stack (demo provider; fast retries so the demo fallback is quick)."""
    environment = {
        "FORGE_RETRY_BASE_DELAY": "0.01",
        "FORGE_RETRY_MAX_DELAY": "0.05",
        "FORGE_ROUTE_FAILURE_THRESHOLD": "1000",
    }
    yield from run_local_stack(tmp_path_factory.mktemp("console"), environment)


@pytest.fixture(scope="package")
def console_url(console_stack: LocalStack) -> str:
    return console_stack.env["FORGE_CONSOLE_URL"]


@pytest.fixture(scope="package")
def management_key(console_stack: LocalStack) -> str:
    return console_stack.env["FORGE_MANAGEMENT_KEY"]


@pytest.fixture(scope="package")
def playwright() -> Iterator[Playwright]:
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: run `make browser` (Debian's chromium package)")
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="package")
def browser(playwright: Playwright) -> Iterator[Browser]:
    shutil.rmtree(SCREENSHOTS, ignore_errors=True)
    SCREENSHOTS.mkdir(parents=True)
    launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
    yield launched
    launched.close()


@pytest.fixture
def context(browser: Browser, console_url: str) -> Iterator[BrowserContext]:
    """A fresh browser profile per test (its own sessionStorage), allowed to use the clipboard;
    any console error or CSP violation fails the test."""
    fresh = browser.new_context(viewport=DESKTOP, locale="en-GB", accept_downloads=True)
    origin = console_url.split("/console", 1)[0]
    fresh.grant_permissions(["clipboard-read", "clipboard-write"], origin=origin)
    yield fresh
    fresh.close()


@pytest.fixture
def page(context: BrowserContext) -> Iterator[Page]:
    opened = context.new_page()
    problems: list[str] = []
    opened.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    opened.on("pageerror", lambda e: problems.append(str(e)))
    yield opened
    # A refused call's fetch logs its status as a console error; anything else is a bug.
    unexpected = [p for p in problems if "status of 4" not in p]
    assert not unexpected, unexpected


def shot(page: Page, name: str) -> None:
    """A full-page screenshot for the reviewer: tests/console/screenshots/<name>.png."""
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def sign_in(page: Page, console_url: str, key: str) -> None:
    page.goto(console_url)
    page.fill("#key", key)
    page.click("button[type=submit]")
    page.wait_for_selector("nav a[href='#/overview']")
