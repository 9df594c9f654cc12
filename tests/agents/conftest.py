"""The console's browser fixtures (Chromium driven by Playwright) for the Agents page's tests."""

from tests.console.conftest import browser, console, console_api, console_server

__all__ = ["browser", "console", "console_api", "console_server"]
