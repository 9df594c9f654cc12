"""The Agents page in a real Chromium: the nav entry, the table of reporting agents (device link,
presence, version, backlog, last report), its filters and paging, and a viewer's view."""

from __future__ import annotations

import os
from typing import Any

import httpx
from playwright.sync_api import expect

from tests.console.conftest import Console
from tests.support import Api, Device, RoostServer, make_device, unique

VIEWER_PASSWORD = "viewer-password-123"
#: Where to save the tablet-width screenshot (unset: none).
SCREENSHOT = os.environ.get("ROOST_AGENTS_SCREENSHOT")


def report(server: RoostServer, device: Device, version: str, points: int) -> None:
    """The device reports the state ``agent`` as roost-agent does (here over HTTP)."""
    fields: dict[str, Any] = {
        "version": version,
        "python": "3.11.2",
        "queue": {"points": points, "bytes": points * 80, "dropped": 4, "refused": 0},
        "forwarded_points": 120,
        "connected_since": None,
        "started_at": 1765099990000,
    }
    resp = httpx.post(
        f"{server.url}/api/v1/device/states/agent/reported",
        json=fields,
        headers={"Authorization": f"Bearer {device.token}"},
        timeout=10,
    )
    assert resp.status_code == 200, resp.text


def test_the_agents_page_lists_filters_and_links_to_devices(
    console: Console, console_server: RoostServer, console_api: Api
) -> None:
    version = unique("5.0")
    busy, idle = make_device(console_api), make_device(console_api)
    report(console_server, busy, version, points=1234)
    report(console_server, idle, version, points=0)
    console.sign_in()
    console.goto("/")
    page = console.page
    page.get_by_role("navigation", name="Sections").get_by_role("link", name="Agents").click()
    page.wait_for_url("**/agents")
    expect(page.get_by_role("heading", name="Agents")).to_be_visible()
    expect(page.locator('nav.nav a[aria-current="page"]')).to_have_text("Agents")

    busy_row = page.get_by_role("row").filter(has_text=busy.id)
    expect(busy_row).to_contain_text(version)
    expect(busy_row).to_contain_text("1,234")
    expect(busy_row).to_contain_text("online")  # its report over HTTP was activity
    expect(busy_row).to_contain_text("ago")

    # The version filter, then "has a backlog": only the busy device is left.
    page.get_by_label("Version").select_option(version)
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("table tbody tr")).to_have_count(2)
    page.get_by_label("Has a backlog").check()
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("table tbody tr")).to_have_count(1)
    expect(page.locator("table tbody tr")).to_contain_text(busy.id)
    assert "backlog=1" in page.url

    # Paging like the other tables: one per page.
    console.goto(f"/agents?version={version}&size=1")
    expect(page.locator("table tbody tr")).to_have_count(1)
    expect(page.locator("nav.pager")).to_contain_text("1–1 of 2")
    page.get_by_role("link", name="Next ›").click()
    expect(page.locator("table tbody tr")).to_have_count(1)
    expect(page.locator("nav.pager")).to_contain_text("2–2 of 2")

    # The device id links to the device's page.
    console.goto(f"/agents?version={version}")
    page.get_by_role("link", name=busy.id).click()
    page.wait_for_url(f"**/devices/{busy.id}")
    assert console.foreign_requests() == []


def test_the_page_fits_a_tablet(
    console: Console, console_server: RoostServer, console_api: Api
) -> None:
    """With its nav entry added, the page (and so the nav) never scrolls sideways at 800 px."""
    report(console_server, make_device(console_api), "5.5.5", points=2)
    console.sign_in()
    console.page.set_viewport_size({"width": 800, "height": 1100})
    console.goto("/agents")
    console.page.wait_for_selector("table tbody tr", state="attached")
    if SCREENSHOT:
        console.page.screenshot(path=SCREENSHOT)
    overflow = console.page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 1, f"/agents is {overflow} px wider than an 800 px screen"


def test_a_filter_that_matches_nothing_says_so(console: Console) -> None:
    console.sign_in()
    console.goto("/agents?version=no-such-version&backlog=1")
    expect(console.page.get_by_text("No agent matches these filters")).to_be_visible()


def test_a_viewer_sees_the_agents(
    console: Console, console_server: RoostServer, console_api: Api
) -> None:
    name = unique("viewer")
    resp = console_api.post(
        "/api/v1/users", json={"username": name, "password": VIEWER_PASSWORD, "role": "viewer"}
    )
    assert resp.status_code == 201, resp.text
    device = make_device(console_api)
    report(console_server, device, "6.1.0", points=3)
    console.sign_in(name, VIEWER_PASSWORD)
    console.goto("/agents")
    expect(console.page.get_by_role("row").filter(has_text=device.id)).to_contain_text("6.1.0")
