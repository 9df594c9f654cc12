"""Browser tests of the console: a real ``roost serve`` and Debian's Chromium driven by Playwright.

Chromium is the system's (``/usr/bin/chromium``, installed by ``make system-deps``), never a
downloaded browser. Each test gets a fresh browser context (its own cookies). Every request the
page makes is recorded, so a test can check that nothing left for another host.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.support import (
    ADMIN_PASSWORD,
    Api,
    RoostServer,
    admin_client,
    free_port,
    skip_or_fail,
)

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]


def chromium_path() -> str | None:
    """The system's Chromium (ROOST_TEST_CHROMIUM overrides)."""
    return os.environ.get("ROOST_TEST_CHROMIUM") or shutil.which("chromium")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium per test module.

    Not per session: Playwright's sync API keeps its event loop marked as running in the main
    thread while it is open, so ``asyncio.run`` (and every pytest-asyncio test of later modules)
    would fail. A console test that needs asyncio runs it through
    :func:`tests.support.run_coroutine` (on a thread of its own).
    """
    executable = chromium_path()
    if executable is None:
        skip_or_fail("chromium is not installed (make system-deps installs it)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("playwright is not installed (pip install -e '.[dev]')")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, args=CHROMIUM_FLAGS, headless=True
        )
        yield browser
        browser.close()


@dataclass
class Console:
    """A signed-out browser tab on one Roost server, recording every URL it asks for."""

    server: RoostServer
    context: Any
    page: Any
    requested: list[str] = field(default_factory=list)

    def goto(self, path: str) -> Any:
        """Open a console path; the answer's status must not be a server error."""
        response = self.page.goto(self.server.url + path)
        assert response is not None and response.status < 500, (path, response and response.status)
        return response

    def sign_in(self, username: str = "admin", password: str = ADMIN_PASSWORD) -> None:
        """Sign in through the form."""
        self.goto("/login")
        self.page.get_by_label("Username").fill(username)
        self.page.get_by_label("Password").fill(password)
        self.page.get_by_role("button", name="Sign in").click()
        self.page.wait_for_url(lambda url: "/login" not in url)

    def foreign_requests(self) -> list[str]:
        """Requests the page made to any host but this Roost."""
        ours = urlsplit(self.server.url).netloc
        return [
            url
            for url in self.requested
            if urlsplit(url).scheme in {"http", "https", "ws", "wss"}
            and urlsplit(url).netloc != ours
        ]


@pytest.fixture(scope="module")
def console_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoostServer]:
    """A Roost with MQTT on a free port, for a module's browser tests."""
    server = RoostServer(tmp_path_factory.mktemp("console"), mqtt_port=free_port())
    with server.running():
        yield server


@pytest.fixture(scope="module")
def console_api(console_server: RoostServer) -> Iterator[Api]:
    """The superuser's API client on the console's server."""
    with admin_client(console_server) as api:
        yield api


@pytest.fixture
def console(browser: Any, console_server: RoostServer, tmp_path: Path) -> Iterator[Console]:
    """A fresh browser context (no cookies) with one tab, at 1280×800."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(15_000)
    tab = Console(console_server, context, page)
    page.on("request", lambda request: tab.requested.append(request.url))
    page.on("websocket", lambda ws: tab.requested.append(ws.url))
    yield tab
    context.close()
