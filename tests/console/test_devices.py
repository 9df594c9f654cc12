"""The device pages in a real Chromium: the list (search, filters, sort, pages, bulk actions),
a device's overview (inventory, components, notes, tags, groups, presence, latest values) and its
change history, for an operator and for a viewer."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from playwright.sync_api import expect

from roost.presence.console import timeline
from tests.console.conftest import Console
from tests.mqtt_device import MqttDevice
from tests.support import Api, RoostServer, eventually, make_device, unique

VIEWER_PASSWORD = "viewer-password-123"


@dataclass(frozen=True)
class Fleet:
    """Devices registered through the API for this module: 20 at ``site_a``, 12 at ``site_b``."""

    prefix: str
    site_a: str
    site_b: str
    group: str
    devices: list[str]


@pytest.fixture(scope="module")
def fleet(console_api: Api) -> Fleet:
    prefix = unique("kiosk")
    site_a, site_b, group = unique("site-a"), unique("site-b"), unique("grp")
    for site, name in ((site_a, "Berlin Mitte"), (site_b, "Hamburg Hafen")):
        resp = console_api.post("/api/v1/sites", json={"id": site, "name": name})
        assert resp.status_code == 201, resp.text
    resp = console_api.post("/api/v1/groups", json={"id": group, "name": "Pilot stores"})
    assert resp.status_code == 201, resp.text
    ids = []
    for n in range(32):
        device_id = f"{prefix}-{n:02d}"
        body = {
            "id": device_id,
            "name": f"{prefix} till {n:02d}",
            "site_id": site_a if n < 20 else site_b,
            "tags": {"store": f"s{n % 4}", "lane": str(n)},
        }
        resp = console_api.post("/api/v1/devices", json=body)
        assert resp.status_code == 201, resp.text
        ids.append(device_id)
    return Fleet(prefix, site_a, site_b, group, ids)


@pytest.fixture(scope="module")
def viewer(console_api: Api) -> str:
    name = unique("viewer")
    resp = console_api.post(
        "/api/v1/users", json={"username": name, "password": VIEWER_PASSWORD, "role": "viewer"}
    )
    assert resp.status_code == 201, resp.text
    return name


def device_rows(console: Console) -> Any:
    return console.page.locator("table.devices tbody tr")


def row_names(console: Console) -> list[str]:
    names: list[str] = console.page.locator("table.devices a.device-link").all_inner_texts()
    return names


def test_search_filter_sort_and_pages(console: Console, fleet: Fleet) -> None:
    console.sign_in()
    console.goto("/devices")
    page = console.page
    expect(page.get_by_role("heading", name="Devices")).to_be_visible()

    filters = page.get_by_role("search", name="Filter devices")

    # Search finds one device by its name.
    filters.get_by_label("Search").fill(f"{fleet.prefix} till 07")
    filters.get_by_role("button", name="Filter").click()
    expect(device_rows(console)).to_have_count(1)
    expect(page.locator("table.devices")).to_contain_text(f"{fleet.prefix}-07")

    # Filtering by site narrows the fleet's 32 to the 12 of Hamburg.
    filters.get_by_label("Search").fill(fleet.prefix)
    filters.get_by_label("Site").fill(fleet.site_b)
    filters.get_by_role("button", name="Filter").click()
    expect(device_rows(console)).to_have_count(12)
    expect(page.locator(".pager")).to_contain_text("1–12 of 12")
    for cell in page.locator("table.devices tbody tr td:nth-child(5)").all_inner_texts():
        assert cell == "Hamburg Hafen"

    # Sorting by the Device column (name), then the other way round.
    page.get_by_role("link", name="Device", exact=True).click()
    page.wait_for_url(re.compile(r"sort=name"))
    names = row_names(console)
    assert names == sorted(names) and names[0].endswith("till 20")
    page.get_by_role("link", name="Device ▲").click()
    page.wait_for_url(re.compile(r"sort=-name"))
    expect(page.locator("table.devices a.device-link").first).to_have_text(
        f"{fleet.prefix} till 31"
    )

    # Page 2 shows the next rows, not the same ones.
    console.goto(f"/devices?q={fleet.prefix}&size=10&sort=id")
    first = row_names(console)
    assert len(first) == 10
    page.get_by_role("link", name="Next ›").click()
    expect(page.locator(".pager")).to_contain_text("11–20 of 32")
    second = row_names(console)
    assert len(second) == 10 and not set(first) & set(second)
    assert second[0] == f"{fleet.prefix} till 10"

    # A filter the API refuses is told, not a server error.
    console.goto("/devices?tag=:nokey")
    expect(page.get_by_role("alert")).to_contain_text("tag")
    assert console.foreign_requests() == []


def test_register_a_device_and_edit_it(console: Console, console_api: Api, fleet: Fleet) -> None:
    console.sign_in()
    console.goto("/devices")
    page = console.page
    device_id = unique("new")
    page.get_by_text("Register a device").click()
    form = page.get_by_role("form", name="Register a device")
    form.get_by_label("ID").fill(device_id)
    form.get_by_label("Name").fill("Self-checkout 1")
    form.get_by_label("Site").fill(fleet.site_a)
    form.get_by_label("Tags").fill("store=berlin-1, floor=2")
    form.get_by_role("button", name="Register").click()
    page.wait_for_url(f"**/devices/{device_id}")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Self-checkout 1")
    expect(page.locator("#tags-title + ul")).to_contain_text("floor: 2")

    # Edit a field: saved, shown, and in the API.
    inventory = page.get_by_role("form", name="Inventory fields")
    inventory.get_by_label("Name").fill("Self-checkout 1 (renamed)")
    inventory.get_by_role("button", name="Save inventory").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Self-checkout 1 (renamed)")
    assert console_api.get(f"/api/v1/devices/{device_id}").json()["name"] == (
        "Self-checkout 1 (renamed)"
    )

    # Notes.
    page.get_by_role("form", name="Notes").get_by_role("textbox").fill("Screen replaced in May.")
    with page.expect_navigation():  # saved, then the page reloads
        page.get_by_role("button", name="Save notes").click()
    expect(page.get_by_role("form", name="Notes").get_by_role("textbox")).to_have_value(
        "Screen replaced in May."
    )
    assert console_api.get(f"/api/v1/devices/{device_id}").json()["notes"] == (
        "Screen replaced in May."
    )

    # Add a tag, then remove another.
    page.get_by_label("Add tags").fill("lane=7")
    page.get_by_role("form", name="New tags").get_by_role("button", name="Add").click()
    expect(page.locator("ul.chips")).to_contain_text("lane: 7")
    page.get_by_role("button", name="Remove tag floor").click()
    expect(page.locator("ul.chips")).not_to_contain_text("floor")
    assert console_api.get(f"/api/v1/devices/{device_id}").json()["tags"] == {
        "store": "berlin-1",
        "lane": "7",
    }

    # The change history lists the rename.
    page.get_by_role("link", name="History").click()
    page.wait_for_url(f"**/devices/{device_id}/history")
    history = page.locator("table.history")
    expect(history).to_contain_text("Self-checkout 1 (renamed)")
    expect(history.locator("tbody > tr").first).to_contain_text("update")
    assert console.foreign_requests() == []


def test_components_are_added_edited_and_removed(console: Console, console_api: Api) -> None:
    device = make_device(console_api)
    console.sign_in()
    console.goto(f"/devices/{device.id}")
    page = console.page
    page.on("dialog", lambda dialog: dialog.accept())
    page.get_by_text("Add a component").click()
    form = page.get_by_role("form", name="Add a component")
    form.get_by_label("Name").fill("Receipt printer")
    form.get_by_label("Kind").fill("printer")
    form.get_by_label("Serial number").fill("PR-0042")
    form.get_by_role("button", name="Add component").click()
    expect(page.locator("table.components")).to_contain_text("PR-0042")

    # A MAC address the API refuses: its message is shown in the form.
    page.get_by_text("Edit Receipt printer").click()
    edit = page.get_by_role("form", name="Edit component Receipt printer")
    edit.get_by_label("MAC address").fill("not-a-mac")
    edit.get_by_role("button", name="Save component").click()
    expect(edit.get_by_role("alert")).to_contain_text("mac")
    edit.get_by_label("MAC address").fill("00:1a:2b:3c:4d:5e")
    edit.get_by_label("Name").fill("Thermal printer")
    edit.get_by_role("button", name="Save component").click()
    expect(page.locator("table.components")).to_contain_text("Thermal printer")
    (component,) = console_api.get(f"/api/v1/devices/{device.id}/components").json()["items"]
    assert component["mac_address"].lower() == "00:1a:2b:3c:4d:5e"

    page.get_by_role("button", name="Remove Thermal printer").click()
    expect(page.locator("table.components")).to_have_count(0)
    assert console_api.get(f"/api/v1/devices/{device.id}/components").json()["total"] == 0
    assert console.foreign_requests() == []


def test_select_two_devices_and_add_them_to_a_group(
    console: Console, console_api: Api, fleet: Fleet
) -> None:
    console.sign_in()
    console.goto(f"/devices?q={fleet.prefix}&sort=id")
    page = console.page
    first, second = fleet.devices[2], fleet.devices[3]
    page.get_by_label(f"Select {fleet.prefix} till 02").check()
    page.get_by_label(f"Select {fleet.prefix} till 03").check()
    expect(page.locator("[data-selected-count]")).to_have_text("2")
    page.get_by_label("Add to group").select_option(fleet.group)
    with page.expect_navigation():  # added, then the list reloads
        page.get_by_role("button", name="Add selected").click()
    expect(device_rows(console).nth(2)).to_contain_text(fleet.group)
    expect(device_rows(console).nth(3)).to_contain_text(fleet.group)
    expect(device_rows(console).nth(4)).not_to_contain_text(fleet.group)

    members = console_api.get(f"/api/v1/groups/{fleet.group}/devices").json()["items"]
    assert {m["id"] for m in members} >= {first, second}
    console.goto(f"/devices?group={fleet.group}")
    expect(page.locator("table.devices")).to_contain_text(f"{fleet.prefix}-02")

    # The device page shows the group, and a device leaves it from there.
    console.goto(f"/devices/{first}")
    expect(page.locator("#groups-title + ul")).to_contain_text("Pilot stores")
    page.get_by_role("button", name="Leave group Pilot stores").click()
    expect(page.get_by_text("In no group.")).to_be_visible()
    members = console_api.get(f"/api/v1/groups/{fleet.group}/devices").json()["items"]
    assert first not in {m["id"] for m in members}

    # "Create a job for the selected" opens the job form with the selection.
    console.goto(f"/devices?q={fleet.prefix}&sort=id")
    page.get_by_label("Select every device on this page").check()
    expect(page.locator("[data-selected-count]")).to_have_text("32")
    page.get_by_role("button", name="Create a job for the selected").click()
    page.wait_for_url(re.compile(r"/jobs/new\?devices="))
    assert page.url.split("devices=")[1].replace("%2C", ",").split(",")[:2] == fleet.devices[:2]
    assert console.foreign_requests() == []


def test_a_bad_input_shows_the_api_error(console: Console, console_api: Api) -> None:
    device = make_device(console_api)
    console.sign_in()
    console.goto(f"/devices/{device.id}")
    page = console.page
    inventory = page.get_by_role("form", name="Inventory fields")
    inventory.get_by_label("Site").fill("no-such-site")
    inventory.get_by_role("button", name="Save inventory").click()
    expect(inventory.get_by_role("alert")).to_contain_text("no site 'no-such-site'")
    inventory.get_by_label("Site").fill("")
    inventory.get_by_label("Heartbeat interval").fill("0")
    inventory.get_by_role("button", name="Save inventory").click()
    expect(inventory.get_by_role("alert")).to_contain_text("heartbeat_interval_s")
    assert console_api.get(f"/api/v1/devices/{device.id}").json()["site_id"] is None

    console.goto("/devices")
    page.get_by_text("Register a device").click()
    form = page.get_by_role("form", name="Register a device")
    form.get_by_label("ID").fill(device.id)
    form.get_by_role("button", name="Register").click()
    expect(form.get_by_role("alert")).to_contain_text(device.id)
    assert console.foreign_requests() == []


def test_presence_and_latest_values_of_a_device(
    console: Console, console_api: Api, console_server: RoostServer
) -> None:
    device = make_device(console_api)
    console.sign_in()
    console.goto(f"/devices/{device.id}")
    page = console.page
    card = page.locator("#presence")
    expect(card.locator("[data-presence-status]")).to_contain_text("never_seen")
    expect(page.get_by_text("No value received yet")).to_be_visible()

    mqtt = MqttDevice(console_server, device)
    mqtt.connect()
    try:
        assert mqtt.publish("telemetry", json.dumps({"temperature": 21.5})) == 0
        eventually(lambda: console_api.get(f"/api/v1/devices/{device.id}/latest").json()["items"])
        eventually(
            lambda: (
                console_api.get(f"/api/v1/devices/{device.id}/presence").json()["status"]
                == "online"
            )
        )
        page.reload()
        expect(card.locator("[data-presence-status]")).to_contain_text("online")
        expect(card.locator(".presence-timeline .seg-online")).to_have_count(1)
        expect(card).to_contain_text("connected")
        latest = page.locator("table.latest")
        expect(latest).to_contain_text("temperature")
        expect(latest).to_contain_text("21.5")
    finally:
        mqtt.close()
    assert console.foreign_requests() == []


def test_a_viewer_sees_no_write_actions(console: Console, fleet: Fleet, viewer: str) -> None:
    console.sign_in(viewer, VIEWER_PASSWORD)
    console.goto(f"/devices?q={fleet.prefix}")
    page = console.page
    expect(device_rows(console)).to_have_count(32)
    expect(page.get_by_text("Register a device")).to_have_count(0)
    expect(page.locator('input[type="checkbox"]')).to_have_count(0)
    expect(page.get_by_role("button", name="Add selected")).to_have_count(0)
    expect(page.get_by_role("button", name="Create a job for the selected")).to_have_count(0)

    console.goto(f"/devices/{fleet.devices[0]}")
    expect(page.get_by_role("heading", name="Inventory")).to_be_visible()
    expect(page.locator("main form")).to_have_count(0)
    expect(page.locator("main button[data-api]")).to_have_count(0)
    expect(page.locator("main textarea, main input")).to_have_count(0)
    expect(page.locator("ul.chips")).to_contain_text("store: s0")

    console.goto(f"/devices/{fleet.devices[0]}/history")
    expect(page.locator("table.history")).to_contain_text("create")
    assert console.foreign_requests() == []


def test_an_unknown_device_is_a_not_found_page(console: Console) -> None:
    console.sign_in()
    response = console.goto("/devices/no-such-device")
    assert response.status == 404
    expect(console.page.get_by_role("main")).to_contain_text("no-such-device")


def test_the_presence_timeline_is_drawn_from_the_changes() -> None:
    end = datetime(2026, 5, 2, 12, tzinfo=UTC)
    start = end - timedelta(hours=24)
    changes = [
        {"at": end - timedelta(hours=6), "status": "online"},
        {"at": end - timedelta(hours=12), "status": "offline"},
        {"at": end - timedelta(hours=3), "status": "online"},  # no change: merged
    ]
    segments = timeline(changes, start=start, end=end, before="online")
    assert [(s.status, s.left, s.width) for s in segments] == [
        ("online", 0.0, 50.0),
        ("offline", 50.0, 25.0),
        ("online", 75.0, 25.0),
    ]
    # Registered 2 h before the end and never heard from.
    late = timeline(
        [], start=start, end=end, before="never_seen", created_at=end - timedelta(hours=2)
    )
    assert [(s.status, round(s.width, 1)) for s in late] == [
        ("unregistered", 91.7),
        ("never_seen", 8.3),
    ]
