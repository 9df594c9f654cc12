"""Every console page on a lived-in fleet, on SQLite and on PostgreSQL.

The server runs ``roost serve --demo`` (the retail fleet of the README), then devices send a day of
telemetry and events over HTTP, some stay connected over MQTT, one has a desired state it has not
reached and answered a command, and a job runs across a store's group. Each page must render its
heading with no error shown, ask no other host for anything, and fit a tablet's width (tables
scroll inside their own box). ``ROOST_SCREENSHOT_DIR=docs/console`` saves the screenshots the
README shows (taken on SQLite at 1280×800).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest
from playwright.sync_api import expect

from tests.console.conftest import Console
from tests.mqtt_device import MqttDevice
from tests.support import (
    Api,
    Device,
    RoostServer,
    admin_client,
    eventually,
    free_port,
    fresh_postgres_database,
    postgres_reachable,
    skip_or_fail,
)

SCREENSHOTS = os.environ.get("ROOST_SCREENSHOT_DIR")
DAY_S = 86_400
STEP_S = 120  # a point every two minutes: 720 a day per sensor
FEATURED = "nyc-display-01"


@dataclass
class Fleet:
    """The lived-in demo fleet, and the MQTT devices that keep it online."""

    server: RoostServer
    backend: str
    job_id: str = ""
    connected: list[MqttDevice] = field(default_factory=list)


def _send_history(server: RoostServer, device: Device, now: int, seed: int) -> None:
    points = [
        {"sensor_id": sensor, "timestamp": ts, "value": value}
        for i, ts in enumerate(range(now - DAY_S, now, STEP_S))
        for sensor, value in (
            ("temperature", round(31 + 4 * ((i + seed) % 90) / 90 + (i % 7) / 10, 2)),
            ("cpu_load", round(20 + 50 * ((i * 7 + seed) % 40) / 40, 1)),
        )
    ]
    events = [
        {"event": "product_pickup", "product_id": 160 + i % 5, "ts": ts}
        for i, ts in enumerate(range(now - DAY_S, now, 900))
    ]
    with Api(server.url, device.token) as api:
        for door, body in (("telemetry", points), ("events", events)):
            resp = api.post(
                f"/api/v1/{door}",
                content=orjson.dumps(body),
                headers={"Content-Type": "application/json"},
            )
            assert resp.status_code == 200, resp.text


def _token(api: Api, device_id: str) -> Device:
    resp = api.post(f"/api/v1/devices/{device_id}/tokens", json={"name": "tour"})
    assert resp.status_code == 201, resp.text
    return Device(device_id, resp.json()["token"], resp.json()["id"])


def _live_in(fleet: Fleet, api: Api) -> None:
    server = fleet.server
    # Nine displays in New York and Paris are connected now (online), six of them sent a day of
    # history; the rest of the fleet never connected.
    active = [f"nyc-display-{n:02d}" for n in range(1, 6)]
    active += [f"paris-display-{n:02d}" for n in range(1, 5)]
    devices = {device_id: _token(api, device_id) for device_id in active}
    now = int(time.time())
    for seed, device in enumerate(list(devices.values())[:6]):
        _send_history(server, device, now, seed * 11)
    for device in devices.values():
        mqtt = MqttDevice(server, device)
        mqtt.connect()
        fleet.connected.append(mqtt)
    featured = next(m for m in fleet.connected if m.device.id == FEATURED)
    featured.subscribe("commands/+")
    # State: the display has not applied the new brightness yet.
    resp = api.patch(
        f"/api/v1/devices/{FEATURED}/state",
        json={"desired": {"brightness": 80, "content": "winter-2026", "volume": 30}},
    )
    assert resp.status_code == 200, resp.text
    reported = {"brightness": 60, "content": "winter-2026", "volume": 30, "uptime_s": 86000}
    assert featured.publish("state/reported", json.dumps(reported)) == 0
    # A command the display answers, and one still waiting.
    made = api.post(
        f"/api/v1/devices/{FEATURED}/commands",
        json={"name": "screenshot", "params": {"format": "png"}},
    )
    assert made.status_code == 201, made.text
    command_id = made.json()["id"]
    featured.wait_for(f"commands/{command_id}", lambda m: m.get("name") == "screenshot")
    answer = json.dumps({"status": "SUCCEEDED", "result": {"bytes": 48213}})
    assert featured.publish(f"commands/{command_id}/response", answer) == 0
    resp = api.post(
        f"/api/v1/devices/{FEATURED}/commands",
        json={"name": "reboot", "params": {"delay_s": 30}, "timeout_s": 600},
    )
    assert resp.status_code == 201, resp.text
    # A content rollout to the New York store: some done, one failed, one running.
    job = api.post(
        "/api/v1/jobs",
        json={
            "id": "content-winter-2026",
            "description": "Winter 2026 content bundle",
            "document": {"operation": "install-content", "bundle": "winter-2026", "size_mb": 412},
            "targets": {"groups": ["store-nyc"]},
        },
    )
    assert job.status_code == 201, job.text
    fleet.job_id = job.json()["id"]
    nyc = [d for d in devices.values() if d.id.startswith("nyc")]
    for n, device in enumerate(nyc[:5]):
        with Api(server.url, device.token) as door:
            path = f"/api/v1/device/jobs/{fleet.job_id}/update"
            assert door.post(path, json={"status": "IN_PROGRESS"}).status_code == 200
            if n < 4:
                status = "FAILED" if n == 3 else "SUCCEEDED"
                resp = door.post(path, json={"status": status, "status_details": {"step": n}})
                assert resp.status_code == 200, resp.text
    # A rule over the store's displays, and the alarm a hot reading of the featured one raised.
    rule = {
        "id": "display-overheat",
        "name": "Display overheating",
        "source": {"kind": "telemetry", "sensor": "temperature"},
        "targets": {"groups": ["store-nyc"]},
        "condition": {"type": "threshold", "op": ">", "value": 60},
        "actions": [
            {"type": "alarm", "severity": "major", "summary": "{device_id} is at {value} °C"}
        ],
    }
    assert api.post("/api/v1/rules", json=rule).status_code == 201
    hot = [{"sensor_id": "temperature", "timestamp": time.time(), "value": 64.5}]
    with Api(server.url, devices[FEATURED].token) as door:
        assert door.post("/api/v1/telemetry", json=hot).status_code == 200
    eventually(
        lambda: api.get("/api/v1/alarms", params={"rule_id": "display-overheat"}).json()["total"]
    )
    # Administration: a viewer, a consumer, an enrollment group.
    user = {"username": "store-manager", "password": "manager-password-1", "role": "viewer"}
    assert api.post("/api/v1/users", json=user).status_code == 201
    consumer = {"name": "bi-export", "grants": [{"groups": ["store-paris"]}]}
    assert api.post("/api/v1/consumers", json=consumer).status_code == 201
    enrollment = {"id": "paris-new-displays", "site_id": "paris-rivoli"}
    assert api.post("/api/v1/enrollments", json=enrollment).status_code == 201
    eventually(lambda: api.get(f"/api/v1/devices/{FEATURED}/presence").json()["status"] == "online")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def console_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RoostServer]:
    """``roost serve --demo`` on each backend (overrides the conftest's server)."""
    backend: str = request.param
    if backend == "postgresql":
        reason = postgres_reachable()
        if reason:
            skip_or_fail(reason)
        with fresh_postgres_database() as url:
            yield from _serve(tmp_path_factory.mktemp("tour-pg"), url)
    else:
        yield from _serve(tmp_path_factory.mktemp("tour"), "")


def _serve(data_dir: Path, database_url: str) -> Iterator[RoostServer]:
    server = RoostServer(data_dir, database_url=database_url, mqtt_port=free_port())
    server.start("--demo", timeout=60)
    try:
        yield server
    finally:
        server.stop()
    log = server.log_path.read_text(errors="replace")
    assert "Traceback" not in log, log
    assert not server.unhandled_errors(), server.unhandled_errors()


@pytest.fixture(scope="module")
def fleet(console_server: RoostServer) -> Iterator[Fleet]:
    backend = "postgresql" if console_server.database_url else "sqlite"
    lived = Fleet(console_server, backend)
    with admin_client(console_server) as api:
        try:
            _live_in(lived, api)
            yield lived
        finally:
            for device in lived.connected:
                device.close()


# (path, the heading it shows, a selector that says the page finished loading, screenshot name)
PAGES = [
    ("/", "Fleet overview", "h1", "overview"),
    ("/devices", "Devices", "table tbody tr", "devices"),
    (f"/devices/{FEATURED}", "New York display 1", "[data-presence-status]", "device"),
    (f"/devices/{FEATURED}/telemetry", FEATURED, "[data-drawn-at]", "telemetry"),
    (f"/devices/{FEATURED}/events", FEATURED, "table tbody tr", "events"),
    (f"/devices/{FEATURED}/state", FEATURED, "h1", "state"),
    (f"/devices/{FEATURED}/commands", FEATURED, "table tbody tr", "commands"),
    (f"/devices/{FEATURED}/jobs", FEATURED, "h1", ""),
    (f"/devices/{FEATURED}/credentials", FEATURED, "h1", ""),
    (f"/devices/{FEATURED}/history", FEATURED, "h1", ""),
    ("/jobs", "Jobs", "table tbody tr", ""),
    ("/jobs/new", "New job", "h1", ""),
    ("/jobs/content-winter-2026", "content-winter-2026", "h1", "job"),
    ("/alarms", "Alarms", "table tbody tr", "alarms"),
    ("/alarms?status=all&severity=major", "Alarms", "table tbody tr", ""),
    ("/rules", "Rules", "table tbody tr", ""),
    ("/rules/display-overheat", "display-overheat", "[data-testid=rule-active]", "rule"),
    ("/rules/display-overheat/edit", "display-overheat", "textarea", ""),
    ("/rules/new", "New rule", "textarea", ""),
    ("/notifications/channels", "Notification channels", "h1", ""),
    ("/notifications/silences", "Silences", "h1", ""),
    ("/notifications/log", "Delivery log", "h1", ""),
    ("/inventory/sites", "Sites", "table tbody tr", "inventory"),
    ("/inventory/customers", "Customers", "table tbody tr", ""),
    ("/inventory/manufacturers", "Manufacturers", "table tbody tr", ""),
    ("/inventory/models", "models", "table tbody tr", ""),
    ("/inventory/firmware", "Firmware", "table tbody tr", ""),
    ("/inventory/groups", "Groups", "table tbody tr", ""),
    ("/inventory/groups/store-nyc", "New York store", "table tbody tr", ""),
    ("/inventory/import", "Import devices", "h1", ""),
    ("/provisioning/enrollments", "Enrollment groups", "table tbody tr", ""),
    ("/provisioning/attestations", "Attestation hashes", "h1", ""),
    ("/provisioning/bundles", "Offline bundles", "h1", ""),
    ("/admin/users", "Users", "table tbody tr", "users"),
    ("/admin/api-keys", "API keys", "h1", ""),
    ("/admin/consumers", "Consumers", "table tbody tr", ""),
    ("/admin/audit", "Audit log", "table tbody tr", "audit"),
    ("/admin/tenants", "Tenants", "table tbody tr", ""),
]


@pytest.mark.parametrize(("path", "heading", "ready", "shot"), PAGES, ids=[p[0] for p in PAGES])
def test_the_page_renders_on_a_lived_in_fleet(
    fleet: Fleet, console: Console, path: str, heading: str, ready: str, shot: str
) -> None:
    console.sign_in()
    console.goto(path)
    expect(console.page.locator("h1").first).to_contain_text(heading, ignore_case=True)
    console.page.wait_for_selector(ready, state="attached")
    shown = [p.inner_text() for p in console.page.locator(".problem").all() if p.is_visible()]
    assert shown == [], shown
    assert console.foreign_requests() == []
    if SCREENSHOTS and shot and fleet.backend == "sqlite":
        console.page.wait_for_load_state("networkidle")
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        console.page.screenshot(path=str(Path(SCREENSHOTS) / f"{shot}.png"))
    # Tablet width: the page itself never scrolls sideways (wide tables scroll in their box).
    console.page.set_viewport_size({"width": 800, "height": 1100})
    overflow = console.page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 1, f"{path} is {overflow} px wider than an 800 px screen"


def test_the_keyboard_reaches_the_sections_and_opens_one(fleet: Fleet, console: Console) -> None:
    console.sign_in()
    console.goto("/")
    page = console.page
    page.keyboard.press("Tab")
    expect(page.locator(":focus")).to_have_text("Skip to content")
    for _ in range(12):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.textContent.trim()") == "Devices":
            break
    else:
        pytest.fail("Tab never reached the Devices link")
    page.keyboard.press("Enter")
    page.wait_for_url("**/devices")
    expect(page.locator("h1").first).to_contain_text("Devices")


def test_the_overview_counts_the_connected_displays(fleet: Fleet, console: Console) -> None:
    with admin_client(fleet.server) as api:
        summary = api.get("/api/v1/fleet/summary").json()
    assert summary["by_status"]["online"] == len(fleet.connected) == 9, summary
    console.sign_in()
    console.goto("/")
    stat = console.page.get_by_test_id
    expect(stat("devices-total").locator(".value")).to_have_text(str(summary["total"]))
    expect(stat("devices-online").locator(".value")).to_have_text("9")
    never = summary["by_status"]["never_seen"]
    expect(stat("devices-never-seen").locator(".value")).to_have_text(str(never))
    expect(console.page.get_by_role("link", name="content-winter-2026")).to_be_visible()
