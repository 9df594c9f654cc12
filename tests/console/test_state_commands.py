"""The device's STATE and COMMANDS tabs in a real Chromium, with a real paho device answering.

Desired state set in the page reaches the device as a delta and the page sees it clear when the
device reports; a stale save shows the API's 409; a command sent from the page reaches the device
and its SUCCEEDED shows without a reload; schedules are made, paused and snoozed from the page.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.console.conftest import Console
from tests.mqtt_device import MqttDevice
from tests.support import Api, Device, eventually, make_device, unique

VIEWER_PASSWORD = "viewer-password-123"


@pytest.fixture
def device(console_api: Api) -> Device:
    return make_device(console_api)


@pytest.fixture
def mqtt(console_server: Any, device: Device) -> Iterator[MqttDevice]:
    """The device, connected over MQTT."""
    client = MqttDevice(console_server, device)
    client.connect()
    yield client
    client.close()


def mark_page(console: Console) -> None:
    """Mark the loaded document, to show later that the page was not reloaded."""
    console.page.evaluate("window.__sameDocument = true")


def same_document(console: Console) -> bool:
    return bool(console.page.evaluate("window.__sameDocument === true"))


def api_state(api: Api, device_id: str) -> dict[str, Any]:
    resp = api.get(f"/api/v1/devices/{device_id}/state")
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def api_commands(api: Api, device_id: str) -> list[dict[str, Any]]:
    resp = api.get(f"/api/v1/devices/{device_id}/commands")
    assert resp.status_code == 200, resp.text
    items: list[dict[str, Any]] = resp.json()["items"]
    return items


# -- state ------------------------------------------------------------------------------------


def test_desired_set_in_the_page_reaches_the_device_and_the_delta_clears_when_it_reports(
    console: Console, console_api: Api, device: Device, mqtt: MqttDevice
) -> None:
    mqtt.subscribe("state/delta")
    console.sign_in()
    console.goto(f"/devices/{device.id}/state")
    page = console.page
    expect(page.locator("#sync-status")).to_have_text("in sync")

    page.get_by_label("Desired state of").fill('{"light": "on", "temp": 21}')
    with page.expect_navigation():
        page.get_by_role("button", name="Save desired").click()
    delta = mqtt.wait_for("state/delta", lambda m: m["delta"] == {"light": "on", "temp": 21})
    assert delta["version"] == 1
    delta_box = page.get_by_role("region", name="Delta")
    expect(delta_box).to_contain_text('"light": "on"')
    expect(page.locator("#sync-status")).to_have_text("2 fields pending")
    mark_page(console)

    # The device does it and reports: the page's delta clears by itself.
    assert mqtt.publish("state/reported", json.dumps({"light": "on", "temp": 21})) == 0
    expect(page.locator("#sync-status")).to_have_text("in sync")
    expect(delta_box).to_contain_text("No delta")
    expect(page.get_by_role("region", name="Reported")).to_contain_text('"temp": 21')
    assert same_document(console)
    doc = api_state(console_api, device.id)
    assert (doc["desired"], doc["delta"], doc["version"]) == ({"light": "on", "temp": 21}, {}, 2)

    # Removing a field in the editor deletes it from desired; the history shows the versions.
    page.reload()
    page.get_by_label("Desired state of").fill('{"light": "off"}')
    with page.expect_navigation():
        page.get_by_role("button", name="Save desired").click()
    assert api_state(console_api, device.id)["desired"] == {"light": "off"}
    history = page.get_by_role("region", name=re.compile("History"))
    expect(history.locator("tbody tr")).to_have_count(3)
    expect(history.locator("tbody tr").first).to_contain_text('"temp": null')
    assert console.foreign_requests() == []


def test_a_stale_save_shows_the_apis_conflict_and_the_latest_can_be_loaded(
    console: Console, console_api: Api, device: Device
) -> None:
    console.sign_in()
    console.goto(f"/devices/{device.id}/state")
    page = console.page
    editor = page.get_by_label("Desired state of")
    expect(editor).to_have_value("{}")

    # Another writer changes desired after the page was read.
    resp = console_api.patch(
        f"/api/v1/devices/{device.id}/state", json={"desired": {"mode": "eco"}}
    )
    assert resp.status_code == 200, resp.text
    # The live part notices, before any save.
    expect(page.get_by_role("status").filter(has_text="now at version 1")).to_be_visible()

    editor.fill('{"mode": "comfort"}')
    page.get_by_role("button", name="Save desired").click()
    problem = page.locator("#desired-form [data-problem]")
    expect(problem).to_contain_text("version 0 is stale: the document is at version 1")
    assert api_state(console_api, device.id)["desired"] == {"mode": "eco"}

    page.locator("#reload-latest").click()
    expect(editor).to_have_value(re.compile('"mode": "eco"'))
    editor.fill('{"mode": "comfort"}')
    with page.expect_navigation():
        page.get_by_role("button", name="Save desired").click()
    assert api_state(console_api, device.id)["desired"] == {"mode": "comfort"}
    assert console.foreign_requests() == []


def test_bad_desired_state_shows_the_error_in_the_page(
    console: Console, console_api: Api, device: Device
) -> None:
    console.sign_in()
    console.goto(f"/devices/{device.id}/state")
    page = console.page
    problem = page.locator("#desired-form [data-problem]")
    page.get_by_label("Desired state of").fill('{"light": ')
    page.get_by_role("button", name="Save desired").click()
    expect(problem).to_contain_text("desired is not valid JSON")

    # The API's own refusal (nested deeper than the document allows) is shown as it says it.
    page.get_by_label("Desired state of").fill(
        json.dumps({"a": {"b": {"c": {"d": {"e": {"f": {"g": 1}}}}}}})
    )
    page.get_by_role("button", name="Save desired").click()
    expect(problem).to_contain_text("deep")
    assert api_state(console_api, device.id)["version"] == 0
    assert console.foreign_requests() == []


def test_a_named_state_is_opened_created_and_deleted_from_the_page(
    console: Console, console_api: Api, device: Device
) -> None:
    console.sign_in()
    console.goto(f"/devices/{device.id}/state")
    page = console.page
    page.get_by_role("textbox", name="Named state").fill("config")
    page.get_by_role("button", name="Open").click()
    expect(page.locator("#state-version")).to_contain_text("not written yet")
    page.get_by_label("Desired state of").fill('{"interval_s": 30}')
    with page.expect_navigation():
        page.get_by_role("button", name="Save desired").click()
    resp = console_api.get(f"/api/v1/devices/{device.id}/states/config")
    assert resp.status_code == 200, resp.text
    assert resp.json()["desired"] == {"interval_s": 30}
    expect(page.get_by_role("navigation", name="States of this device")).to_contain_text("config")

    page.once("dialog", lambda dialog: dialog.accept())
    with page.expect_navigation():
        page.get_by_role("button", name="Delete this state").click()
    assert console_api.get(f"/api/v1/devices/{device.id}/states/config").status_code == 404
    expect(page.get_by_role("navigation", name="States of this device")).not_to_contain_text(
        "config"
    )
    assert console.foreign_requests() == []


# -- commands ---------------------------------------------------------------------------------


def test_a_command_sent_from_the_page_shows_succeeded_when_the_device_answers(
    console: Console, console_api: Api, device: Device, mqtt: MqttDevice
) -> None:
    mqtt.subscribe("commands/+")
    console.sign_in()
    console.goto(f"/devices/{device.id}/commands")
    page = console.page
    mark_page(console)
    form = page.locator("#send-command")
    form.get_by_label("Command name").fill("reboot")
    form.get_by_label("Parameters (JSON object)").fill('{"delay_s": 5}')
    page.get_by_role("button", name="Send command").click()

    (command,) = eventually(lambda: api_commands(console_api, device.id))
    received = mqtt.wait_for(f"commands/{command['id']}")
    assert (received["name"], received["params"]) == ("reboot", {"delay_s": 5})
    row = page.locator(f'tr[data-command="{command["id"]}"]')
    expect(row.locator(".badge")).to_have_text(re.compile("^(SENT|DELIVERED)$"))

    answer = json.dumps({"status": "SUCCEEDED", "result": {"uptime_s": 0}})
    assert mqtt.publish(f"commands/{command['id']}/response", answer) == 0
    expect(row.locator(".badge")).to_have_text("SUCCEEDED")
    expect(row).to_contain_text('"uptime_s": 0')
    expect(page.locator("#commands-live")).to_have_attribute("data-pending", "no")
    assert same_document(console)
    assert api_commands(console_api, device.id)[0]["status"] == "SUCCEEDED"
    assert console.foreign_requests() == []


def test_a_pending_command_can_be_cancelled_from_the_page(
    console: Console, console_api: Api, device: Device
) -> None:
    resp = console_api.post(f"/api/v1/devices/{device.id}/commands", json={"name": "blink"})
    assert resp.status_code == 201, resp.text
    command_id = resp.json()["id"]  # the device is offline: it stays QUEUED
    console.sign_in()
    console.goto(f"/devices/{device.id}/commands")
    page = console.page
    row = page.locator(f'tr[data-command="{command_id}"]')
    expect(row.locator(".badge")).to_have_text("QUEUED")
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Cancel").click()
    expect(row.locator(".badge")).to_have_text("CANCELED")
    expect(row.get_by_role("button", name="Cancel")).to_have_count(0)
    assert api_commands(console_api, device.id)[0]["status"] == "CANCELED"


def test_bad_command_input_shows_the_error_in_the_page(
    console: Console, console_api: Api, device: Device
) -> None:
    console.sign_in()
    console.goto(f"/devices/{device.id}/commands")
    page = console.page
    form = page.locator("#send-command")
    problem = form.locator("[data-problem]")
    form.get_by_label("Command name").fill("reboot")
    params = form.get_by_label("Parameters (JSON object)")
    params.fill('{"delay_s": ')
    page.get_by_role("button", name="Send command").click()
    expect(problem).to_contain_text("params is not valid JSON")

    # Valid JSON the API refuses: its own message (params must be an object) shows.
    params.fill("[1, 2]")
    page.get_by_role("button", name="Send command").click()
    expect(problem).to_contain_text("params")
    expect(problem).to_contain_text(re.compile("dict|object"))
    assert api_commands(console_api, device.id) == []
    assert console.foreign_requests() == []


def test_a_schedule_is_created_snoozed_paused_resumed_and_deleted_from_the_page(
    console: Console, console_api: Api, device: Device
) -> None:
    console.sign_in()
    console.goto(f"/devices/{device.id}/commands")
    page = console.page
    form = page.locator("#new-schedule")
    form.get_by_label("Command name").fill("alarm_light_on")
    form.get_by_label("Repeat").fill("0 18 * * 1-5")
    form.get_by_label("Time zone").fill("Europe/Berlin")
    form.get_by_label("Parameters (JSON object)").fill('{"light": "on"}')
    with page.expect_navigation():
        form.get_by_role("button", name="Create schedule").click()

    resp = console_api.get(f"/api/v1/devices/{device.id}/command-schedules")
    (schedule,) = resp.json()["items"]
    assert (schedule["cron"], schedule["timezone"], schedule["params"]) == (
        "0 18 * * 1-5",
        "Europe/Berlin",
        {"light": "on"},
    )
    row = page.locator(f'tr[data-schedule="{schedule["id"]}"]')
    expect(row.locator(".badge")).to_have_text("enabled")

    row.get_by_label("Snooze next fire by").select_option(label="1 day")
    with page.expect_navigation():
        row.get_by_role("button", name="Snooze").click()
    snoozed = console_api.get(f"/api/v1/command-schedules/{schedule['id']}").json()
    assert snoozed["next_fire_at"] > schedule["next_fire_at"]

    with page.expect_navigation():
        row.get_by_role("button", name="Pause").click()
    expect(row.locator(".badge")).to_have_text("paused")
    assert console_api.get(f"/api/v1/command-schedules/{schedule['id']}").json()["enabled"] is False

    # A paused schedule has no next fire to snooze.
    expect(row.get_by_role("button", name="Snooze")).to_have_count(0)
    with page.expect_navigation():
        row.get_by_role("button", name="Resume").click()
    expect(row.locator(".badge")).to_have_text("enabled")

    page.once("dialog", lambda dialog: dialog.accept())
    with page.expect_navigation():
        row.get_by_role("button", name="Delete").click()
    expect(row).to_have_count(0)
    resp = console_api.get(f"/api/v1/devices/{device.id}/command-schedules")
    assert resp.json()["items"] == []
    assert console.foreign_requests() == []


def test_a_bad_schedule_shows_the_apis_message(
    console: Console, console_api: Api, device: Device
) -> None:
    console.sign_in()
    console.goto(f"/devices/{device.id}/commands")
    form = console.page.locator("#new-schedule")
    form.get_by_label("Command name").fill("nightly")
    form.get_by_label("Repeat").fill("not a cron")
    form.get_by_role("button", name="Create schedule").click()
    expect(form.locator("[data-problem]")).to_contain_text("cron")
    resp = console_api.get(f"/api/v1/devices/{device.id}/command-schedules")
    assert resp.json()["items"] == []


# -- roles ------------------------------------------------------------------------------------


def test_a_viewer_sees_state_and_commands_but_no_write_actions(
    console: Console, console_api: Api, device: Device
) -> None:
    name = unique("viewer")
    resp = console_api.post(
        "/api/v1/users", json={"username": name, "password": VIEWER_PASSWORD, "role": "viewer"}
    )
    assert resp.status_code == 201, resp.text
    base = f"/api/v1/devices/{device.id}"
    assert console_api.patch(f"{base}/state", json={"desired": {"light": "on"}}).status_code == 200
    assert console_api.post(f"{base}/commands", json={"name": "blink"}).status_code == 201
    made = console_api.post(f"{base}/command-schedules", json={"name": "n", "cron": "0 1 * * *"})
    assert made.status_code == 201, made.text

    console.sign_in(name, VIEWER_PASSWORD)
    page = console.page
    console.goto(f"/devices/{device.id}/state")
    expect(page.get_by_role("region", name="Delta")).to_contain_text('"light": "on"')
    expect(page.locator("textarea")).to_have_count(0)
    expect(page.get_by_role("button", name="Save desired")).to_have_count(0)
    expect(page.locator("[data-api]")).to_have_count(0)

    console.goto(f"/devices/{device.id}/commands")
    expect(page.locator("tr[data-command] .badge")).to_have_text("QUEUED")
    expect(page.locator("tr[data-schedule]")).to_have_count(1)
    for label in ("Send command", "Cancel", "Pause", "Delete", "Snooze", "Create schedule"):
        expect(page.get_by_role("button", name=label)).to_have_count(0)
    expect(page.locator("[data-api]")).to_have_count(0)
    assert console.foreign_requests() == []
