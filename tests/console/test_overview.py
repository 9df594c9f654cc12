"""The fleet overview in a real Chromium: presence counts of devices that connected over MQTT,
left, or were never seen, per site; devices lost recently; the ingest rate; jobs in progress;
and what a viewer does not see."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.console.conftest import Console
from tests.mqtt_device import MqttDevice
from tests.support import Api, Device, RoostServer, eventually, make_device, unique

VIEWER_PASSWORD = "viewer-password-123"


def presence(api: Api, device_id: str) -> str:
    resp = api.get(f"/api/v1/devices/{device_id}/presence")
    assert resp.status_code == 200, resp.text
    status: str = resp.json()["status"]
    return status


@pytest.fixture(scope="module")
def fleet(console_server: RoostServer, console_api: Api) -> Iterator[dict[str, Any]]:
    """A site with two devices online over MQTT, one that left, one never seen, and a job."""
    site = unique("store")
    resp = console_api.post("/api/v1/sites", json={"id": site, "name": f"Store {site}"})
    assert resp.status_code == 201, resp.text
    made = [make_device(console_api, site_id=site) for _ in range(4)]
    online, gone, never = made[:2], made[2], made[3]
    clients = [MqttDevice(console_server, device) for device in (*online, gone)]
    for client in clients:
        client.connect()
    reason = clients[0].publish("telemetry", json.dumps({"temp": 21.5, "humidity": 40}))
    assert int(getattr(reason, "value", reason)) == 0, reason
    clients[2].close()
    assert eventually(lambda: all(presence(console_api, d.id) == "online" for d in online))
    assert eventually(lambda: presence(console_api, gone.id) == "offline")
    assert presence(console_api, never.id) == "never_seen"
    resp = console_api.post(
        "/api/v1/jobs",
        json={"document": {"operation": "inventory"}, "targets": {"devices": [never.id]}},
    )
    assert resp.status_code == 201, resp.text
    yield {"site": site, "online": online, "gone": gone, "never": never, "job": resp.json()}
    for client in clients[:2]:
        client.close()


def section(console: Console, title: str | re.Pattern[str]) -> Any:
    page = console.page
    return page.locator("section", has=page.get_by_role("heading", name=title))


def stat(console: Console, test_id: str) -> str:
    text: str = console.page.get_by_test_id(test_id).locator(".value").inner_text()
    return text.replace(",", "")


def test_the_overview_counts_devices_by_presence_and_site(
    console: Console, console_api: Api, fleet: dict[str, Any]
) -> None:
    console.sign_in()
    console.goto("/")
    page = console.page
    summary = console_api.get("/api/v1/fleet/summary").json()
    by = summary["by_status"]
    assert by["online"] >= 2 and by["offline"] >= 1 and by["never_seen"] >= 1
    assert stat(console, "devices-online") == str(by["online"])
    assert stat(console, "devices-offline") == str(by["offline"])
    assert stat(console, "devices-never-seen") == str(by["never_seen"])
    assert stat(console, "devices-total") == str(summary["total"])

    site = fleet["site"]
    row = section(console, "By site").get_by_role("row", name=re.compile(site))
    expect(row.locator("td")).to_have_text([site, "2", "1", "1", "4"])
    online_link = row.get_by_role("link", name="2", exact=True)
    assert online_link.get_attribute("href") == f"/devices?site={site}&status=online"

    lost = section(console, re.compile("Lost"))
    gone: Device = fleet["gone"]
    expect(lost.get_by_role("row", name=re.compile(gone.id))).to_contain_text("ago")

    job = fleet["job"]
    jobs = section(console, "Jobs in progress")
    expect(jobs.get_by_role("row", name=re.compile(job["id"]))).to_contain_text("0 / 1")
    # The device that published a telemetry message within the minute shows in the rate.
    assert float(stat(console, "ingest-rate")) > 0
    expect(page.get_by_role("link", name="New job")).to_be_visible()
    assert console.foreign_requests() == []


def test_a_viewer_sees_the_overview_without_write_actions(
    console: Console, console_api: Api, fleet: dict[str, Any]
) -> None:
    name = unique("viewer")
    resp = console_api.post(
        "/api/v1/users", json={"username": name, "password": VIEWER_PASSWORD, "role": "viewer"}
    )
    assert resp.status_code == 201, resp.text
    console.sign_in(name, VIEWER_PASSWORD)
    console.goto("/")
    page = console.page
    expect(page.get_by_role("heading", name="Fleet overview")).to_be_visible()
    by_site = section(console, "By site")
    expect(by_site.get_by_role("row", name=re.compile(fleet["site"]))).to_be_visible()
    expect(page.locator('a[href="/jobs/new"]')).to_have_count(0)
    expect(page.locator("button")).to_have_text(["Sign out"])
    assert console.foreign_requests() == []
