"""A device's telemetry and events tabs in a real Chromium: charts drawn from what a paho device
published, new points and events appearing without reload, aggregates for long ranges, the API's
error for a bad custom range, and nothing fetched from another host."""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import expect

from tests.console.conftest import Console
from tests.mqtt_device import MqttDevice
from tests.support import Api, Device, RoostServer, eventually, make_device, unique

HOUR = 3600
# What the chart module (static/chart.js) promises: no series brings more points than this.
RAW_LIMIT = 4000


@pytest.fixture
def device(console_api: Api) -> Device:
    """A device with a numeric sensor in °C and a text sensor."""
    made = make_device(console_api)
    for body in (
        {"id": "temp", "type": "double", "unit": "°C", "name": "Temperature"},
        {"id": "mode", "type": "string"},
    ):
        resp = console_api.post(f"/api/v1/devices/{made.id}/sensors", json=body)
        assert resp.status_code == 201, resp.text
    return made


@pytest.fixture
def paho(console_server: RoostServer, device: Device) -> Iterator[MqttDevice]:
    client = MqttDevice(console_server, device)
    client.connect()
    yield client
    client.close()


def publish(client: MqttDevice, suffix: str, payload: Any) -> None:
    """Publish JSON at QoS 1; the PUBACK comes after the message is stored."""
    reason = client.publish(suffix, json.dumps(payload))
    assert int(getattr(reason, "value", reason)) == 0, reason


def stored(api: Api, device_id: str, sensor: str) -> list[Any]:
    resp = api.get(f"/api/v1/devices/{device_id}/telemetry", params={"sensor": sensor})
    assert resp.status_code == 200, resp.text
    return [p["value"] for p in resp.json()["items"]]


def telemetry_requests(console: Console, device_id: str) -> list[dict[str, list[str]]]:
    """The queries of the API history requests the page made for this device."""
    path = f"/api/v1/devices/{device_id}/telemetry"
    return [
        parse_qs(urlsplit(url).query) for url in console.requested if urlsplit(url).path == path
    ]


def test_a_chart_shows_published_points_and_new_ones_without_reload(
    console: Console, console_api: Api, device: Device, paho: MqttDevice
) -> None:
    now = int(time.time())
    publish(
        paho,
        "telemetry",
        [
            {"sensor_id": "temp", "timestamp": now - 300 + i * 60, "value": v}
            for i, v in enumerate([20.5, 21.0, 22.5])
        ],
    )
    publish(paho, "telemetry", {"mode": "eco", "timestamp": now - 200})
    assert eventually(lambda: len(stored(console_api, device.id, "temp")) == 3)

    console.sign_in()
    console.goto(f"/devices/{device.id}/telemetry")
    chart = console.page.locator('[data-roost-chart][data-sensor="temp"]')
    expect(chart).to_have_attribute("data-state", "ready")
    expect(chart).to_have_attribute("data-points", "3")
    expect(chart).to_have_attribute("data-last-value", "22.5")
    expect(chart).to_have_attribute("data-mode", "raw")
    assert int(chart.get_attribute("data-drawn-at") or 0) > 0
    expect(chart.locator("canvas")).to_have_count(1)
    summary = console.page.locator("#" + (chart.get_attribute("aria-describedby") or ""))
    expect(summary).to_contain_text("3 points")
    expect(summary).to_contain_text("22.5 °C")
    expect(console.page.get_by_role("heading", name="Temperature (°C)")).to_be_visible()
    # The last hour is read raw: no aggregate was asked for.
    queries = telemetry_requests(console, device.id)
    assert queries and all("agg" not in q for q in queries), queries
    # A text sensor is listed, not charted.
    values = console.page.locator('[data-roost-chart][data-sensor="mode"]')
    expect(values).to_have_attribute("data-points", "1")
    expect(values.get_by_role("cell", name="eco")).to_be_visible()

    live = console.page.locator("[data-live-status]")
    expect(live).to_have_attribute("data-state", "live")
    requests_before = len(console.requested)
    publish(paho, "telemetry", {"temp": 23.25})  # stamped on arrival
    publish(paho, "telemetry", {"mode": "boost"})
    expect(chart).to_have_attribute("data-points", "4")
    expect(chart).to_have_attribute("data-last-value", "23.25")
    expect(summary).to_contain_text("23.25 °C")
    expect(values.get_by_role("cell", name="boost")).to_be_visible()
    expect(values).to_have_attribute("data-last-value", "boost")
    # No reload and no new read: the points came over the WebSocket.
    assert telemetry_requests(console, device.id) == queries
    assert [u for u in console.requested[requests_before:] if u.startswith("http")] == []
    assert console.foreign_requests() == []


def test_the_week_range_draws_aggregates_and_a_dense_hour_falls_back_to_them(
    console: Console, console_server: RoostServer, console_api: Api, device: Device
) -> None:
    now = int(time.time())
    week = [
        {"sensor_id": "temp", "timestamp": now - 6 * 86400 + i * 1800, "value": float(i % 48)}
        for i in range(6 * 48)
    ]
    # More points in the last hour than a raw answer may bring (one every 0.8 s).
    dense = [
        {"sensor_id": "temp", "timestamp": (now - HOUR + 10) * 1000 + i * 800, "value": i % 100}
        for i in range(RAW_LIMIT + 200)
    ]
    with Api(console_server.url, device.token) as http:
        for batch in (week, dense):
            resp = http.post("/api/v1/telemetry", json=batch)
            assert resp.status_code == 200, resp.text

    console.sign_in()
    console.goto(f"/devices/{device.id}/telemetry")
    chart = console.page.locator('[data-roost-chart][data-sensor="temp"]')
    expect(chart).to_have_attribute("data-mode", "aggregate")
    assert int(chart.get_attribute("data-points") or 0) <= 1000
    assert any(q.get("agg") for q in telemetry_requests(console, device.id))

    console.requested.clear()
    console.page.get_by_role("button", name="Last week").click()
    console.page.wait_for_url(re.compile(r"range=7d"))
    expect(chart).to_have_attribute("data-mode", "aggregate")
    expect(chart).to_have_attribute("data-interval", "15m")
    points = int(chart.get_attribute("data-points") or 0)
    assert 6 * 48 <= points <= 1000, points  # every half-hour bucket, and the dense hour's
    [query] = [q for q in telemetry_requests(console, device.id) if q["sensor"] == ["temp"]]
    assert query["agg"] == ["avg,min,max,count"] and query["interval"] == ["15m"]
    assert query["from"] == ["-7d"]
    expect(console.page.locator("[data-live-status]")).to_have_attribute("data-state", "live")
    assert console.foreign_requests() == []


def test_a_backwards_custom_range_shows_the_apis_error(console: Console, device: Device) -> None:
    console.sign_in()
    console.goto(f"/devices/{device.id}/telemetry")
    console.page.get_by_label("From (UTC)").fill("2026-11-22T10:00:00")
    console.page.get_by_label("To (UTC)").fill("2026-11-22T09:00:00")
    console.page.get_by_role("button", name="Show custom range").click()
    console.page.wait_for_url(re.compile(r"range=custom"))
    chart = console.page.locator('[data-roost-chart][data-sensor="temp"]')
    expect(chart).to_have_attribute("data-state", "error")
    expect(chart.get_by_role("alert")).to_contain_text("from must be before to")
    expect(console.page.get_by_text("not live (custom range)")).to_be_visible()


def test_a_custom_range_shows_only_its_points(
    console: Console, console_api: Api, device: Device, paho: MqttDevice
) -> None:
    publish(
        paho,
        "telemetry",
        [
            {"sensor_id": "temp", "timestamp": f"2026-11-22T{h:02d}:30:00Z", "value": h}
            for h in range(8, 12)
        ],
    )
    assert eventually(lambda: len(stored(console_api, device.id, "temp")) == 4)
    console.sign_in()
    console.goto(
        f"/devices/{device.id}/telemetry?range=custom&from=2026-11-22T09:00:00&to=2026-11-22T11:00:00"
    )
    chart = console.page.locator('[data-roost-chart][data-sensor="temp"]')
    expect(chart).to_have_attribute("data-points", "2")
    expect(chart).to_have_attribute("data-last-value", "10")
    expect(chart).to_have_attribute("data-last-ts", "2026-11-22T10:30:00.000Z")
    empty = console.page.locator('[data-roost-chart][data-sensor="mode"]')
    expect(empty).to_have_attribute("data-state", "empty")
    expect(empty).to_contain_text("No data from this sensor in this range")


def test_events_are_listed_paged_filtered_and_a_new_one_appears_live(
    console: Console, device: Device, paho: MqttDevice, console_api: Api
) -> None:
    now = int(time.time())
    ticks = [{"event": "tick", "n": i, "ts": now - 600 + i} for i in range(55)]
    publish(paho, "events", ticks)
    publish(paho, "events", {"event": "door_open", "door": 2, "ts": now - 10})

    def listed() -> int:
        resp = console_api.get(f"/api/v1/devices/{device.id}/events", params={"limit": 100})
        return len(resp.json()["items"])

    assert eventually(lambda: listed() == 56)

    console.sign_in()
    console.goto(f"/devices/{device.id}/events")
    rows = console.page.locator("[data-events] tr")
    expect(rows).to_have_count(50)
    expect(rows.first).to_contain_text("door_open")
    expect(rows.first).to_contain_text('"door":2')
    expect(rows.nth(1)).to_contain_text('"n":54')
    console.page.get_by_role("link", name="Older ›").click()
    expect(rows).to_have_count(6)
    expect(rows.first).to_contain_text('"n":5')
    expect(rows.last).to_contain_text('"n":0')
    expect(console.page.get_by_role("link", name="Older ›")).to_have_count(0)
    expect(console.page.get_by_text("not live (older events)")).to_be_visible()

    console.page.get_by_role("link", name="« Newest").click()
    console.page.get_by_label("Event type").fill("door_open")
    console.page.get_by_role("button", name="Filter").click()
    console.page.wait_for_url(re.compile(r"type=door_open"))
    expect(rows).to_have_count(1)
    live = console.page.locator("[data-live-status]")
    expect(live).to_have_attribute("data-state", "live")
    publish(paho, "events", {"event": "tick", "n": 99})  # not of the chosen type
    publish(paho, "events", {"event": "door_open", "door": 7})
    expect(rows).to_have_count(2)
    expect(rows.first).to_contain_text('"door":7')

    console.goto(f"/devices/{device.id}/events")
    expect(live).to_have_attribute("data-state", "live")
    expect(rows.first).to_contain_text('"door":7')
    publish(paho, "events", {"event": "alarm", "level": "high"})
    expect(rows.first).to_contain_text("alarm")
    expect(rows.first).to_contain_text('"level":"high"')
    assert console.foreign_requests() == []


def test_a_bad_event_range_shows_the_message_in_the_page(console: Console, device: Device) -> None:
    console.sign_in()
    console.goto(f"/devices/{device.id}/events?from=yesterday")
    expect(console.page.get_by_role("alert")).to_contain_text("from:")
    expect(console.page.get_by_label("Event type")).to_be_visible()


def test_a_device_without_sensors_says_how_they_appear(console: Console, console_api: Api) -> None:
    bare = make_device(console_api)
    console.sign_in()
    console.goto(f"/devices/{bare.id}/telemetry")
    expect(console.page.get_by_text("This device has no sensors yet.")).to_be_visible()
    console.goto(f"/devices/{bare.id}/events")
    expect(console.page.get_by_text("No events in this range.")).to_be_visible()


def test_a_viewer_reads_charts_and_events(
    console: Console, console_api: Api, device: Device, paho: MqttDevice
) -> None:
    name, password = unique("viewer"), "viewer-password-" + secrets.token_hex(4)
    resp = console_api.post(
        "/api/v1/users", json={"username": name, "password": password, "role": "viewer"}
    )
    assert resp.status_code == 201, resp.text
    publish(paho, "telemetry", {"temp": 19.0})
    publish(paho, "events", {"event": "boot"})
    console.sign_in(name, password)
    console.goto(f"/devices/{device.id}/telemetry")
    chart = console.page.locator('[data-roost-chart][data-sensor="temp"]')
    expect(chart).to_have_attribute("data-last-value", "19")
    expect(console.page.locator("[data-live-status]")).to_have_attribute("data-state", "live")
    console.goto(f"/devices/{device.id}/events")
    expect(console.page.locator("[data-events] tr").first).to_contain_text("boot")
    assert console.page.locator("main [data-api]").count() == 0
