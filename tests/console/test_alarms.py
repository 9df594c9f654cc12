"""The console's alarm and rule pages in a real Chromium: a device posts telemetry over HTTP with
its token, a rule made through the API raises an alarm, and the browser lists it, acknowledges and
clears it (the API agrees), sees a new alarm arrive without reload, shows the API's message naming
the field of a rule with a bad expression, edits a rule, and the overview counts active alarms by
severity. Channels (add, send a test to a local webhook, the delivery log) and silences (add,
expire). A viewer sees no write actions."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import pytest
from playwright.sync_api import expect

from tests.console.conftest import Console
from tests.support import Api, Device, RoostServer, eventually, make_device, unique

VIEWER_PASSWORD = "viewer-password-123"
SENSOR = "temperature"


def post_temperature(server: RoostServer, device: Device, value: float) -> None:
    """The device sends one point over HTTP with its own token."""
    point = [{"sensor_id": SENSOR, "timestamp": time.time(), "value": value}]
    with Api(server.url, device.token) as api:
        resp = api.post(
            "/api/v1/telemetry",
            content=orjson.dumps(point),
            headers={"Content-Type": "application/json"},
        )
        assert resp.status_code == 200, resp.text


def hot_rule(api: Api, device: Device, severity: str = "critical") -> str:
    """A rule raising a ``severity`` alarm when the device's temperature passes 50."""
    rule_id = unique("hot")
    resp = api.post(
        "/api/v1/rules",
        json={
            "id": rule_id,
            "name": f"Too hot {rule_id}",
            "source": {"kind": "telemetry", "sensor": SENSOR},
            "targets": {"devices": [device.id]},
            "condition": {"type": "threshold", "op": ">", "value": 50},
            "actions": [
                {
                    "type": "alarm",
                    "alarm_type": "overheat",
                    "severity": severity,
                    "summary": "{device_id} is at {value}",
                }
            ],
        },
    )
    assert resp.status_code == 201, resp.text
    return rule_id


def warm_device(server: RoostServer, api: Api) -> Device:
    """A device that reported its temperature once (so a rule may name the sensor)."""
    device = make_device(api)
    post_temperature(server, device, 20)
    return device


def alarms_of(api: Api, device: Device, rule_id: str | None = None) -> list[dict[str, Any]]:
    params = {"device_id": device.id, **({"rule_id": rule_id} if rule_id else {})}
    resp = api.get("/api/v1/alarms", params=params)
    assert resp.status_code == 200, resp.text
    items: list[dict[str, Any]] = resp.json()["items"]
    return items


def raise_alarm(server: RoostServer, api: Api, severity: str = "critical") -> dict[str, Any]:
    """A device, a rule over it, and the alarm its hot reading raised (as the API shows it)."""
    device = warm_device(server, api)
    rule_id = hot_rule(api, device, severity)
    post_temperature(server, device, 80)
    found: list[dict[str, Any]] = eventually(lambda: alarms_of(api, device, rule_id))
    return found[0]


@pytest.fixture(scope="module")
def viewer(console_api: Api) -> str:
    name = unique("viewer")
    resp = console_api.post(
        "/api/v1/users", json={"username": name, "password": VIEWER_PASSWORD, "role": "viewer"}
    )
    assert resp.status_code == 201, resp.text
    return name


def test_an_alarm_is_listed_acknowledged_and_cleared(
    console: Console, console_server: RoostServer, console_api: Api
) -> None:
    alarm = raise_alarm(console_server, console_api)
    assert (alarm["status"], alarm["severity"], alarm["type"]) == ("active", "critical", "overheat")
    console.sign_in()
    console.goto("/alarms")
    page = console.page
    row = page.locator(f'tr[data-alarm-id="{alarm["id"]}"]')
    expect(row).to_contain_text(alarm["device_id"])
    expect(row).to_contain_text("critical")
    expect(row).to_contain_text(f"{alarm['device_id']} is at 80")

    row.get_by_role("button", name="Acknowledge").click()
    expect(row).to_have_attribute("data-acknowledged", "yes")
    expect(row).to_contain_text("acknowledged by admin")
    after = console_api.get(f"/api/v1/alarms/{alarm['id']}").json()
    assert (after["acknowledged"], after["acked_by"]) == (True, "admin")
    expect(row.get_by_role("button", name="Acknowledge")).to_have_count(0)

    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Clear").click()
    # The list shows active alarms: the cleared one leaves it.
    expect(row).to_have_count(0)
    after = console_api.get(f"/api/v1/alarms/{alarm['id']}").json()
    assert (after["status"], after["cleared_by"]) == ("cleared", "admin")

    # Every alarm, filtered by the device: the cleared one is there, with no more buttons.
    page.get_by_label("Status").select_option("all")
    page.get_by_label("Device").fill(alarm["device_id"])
    page.get_by_role("button", name="Apply").click()
    expect(row).to_have_attribute("data-status", "cleared")
    expect(row.get_by_role("button")).to_have_count(0)
    row.get_by_role("link", name="overheat").click()
    expect(page.get_by_test_id("alarm-status")).to_have_text("cleared")
    expect(page.locator("h1")).to_contain_text(alarm["device_id"])
    assert console.foreign_requests() == []


def test_a_new_alarm_appears_without_reload(
    console: Console, console_server: RoostServer, console_api: Api
) -> None:
    device = warm_device(console_server, console_api)
    rule_id = hot_rule(console_api, device, "major")
    console.sign_in()
    console.goto("/alarms?severity=major")
    page = console.page
    expect(page.locator("[data-live-state]")).to_have_attribute("data-state", "live")
    page.evaluate("window.notReloaded = true")

    post_temperature(console_server, device, 90)
    alarm = eventually(lambda: alarms_of(console_api, device, rule_id))[0]
    row = page.locator(f'tr[data-alarm-id="{alarm["id"]}"]')
    expect(row).to_contain_text(device.id)
    expect(row).to_contain_text("major")
    assert page.evaluate("window.notReloaded") is True

    # Another operator clears it through the API: the row leaves the active list, still live.
    resp = console_api.post(f"/api/v1/alarms/{alarm['id']}/clear")
    assert resp.status_code == 200, resp.text
    expect(row).to_have_count(0)
    assert page.evaluate("window.notReloaded") is True
    assert console.foreign_requests() == []


def test_a_rule_with_a_bad_expression_shows_the_api_message_at_its_field(
    console: Console, console_api: Api
) -> None:
    rule_id = unique("expr")
    console.sign_in()
    console.goto("/rules")
    page = console.page
    page.get_by_role("link", name="New rule").click()
    expect(page.locator("h1")).to_have_text("New rule")
    page.get_by_label("Rule id").fill(rule_id)
    page.get_by_label("Name").fill("Expression rule")
    page.get_by_label("Source").fill('{"kind": "telemetry"}')
    page.locator("#rule-condition").fill('{"type": "expression", "expression": "msg.value > 5"}')
    page.get_by_label("Clear condition").fill("")
    # Disabled: it would watch every device of the server the other tests share.
    page.get_by_label("Enabled").uncheck()
    page.get_by_role("button", name="Create rule").click()

    problem = page.locator("[data-problem]")
    expect(problem).to_be_visible()
    expect(problem).to_contain_text("condition.expression")
    expect(problem).to_contain_text("column")
    note = page.locator('.field-error[data-field="condition.expression"]')
    expect(note).to_contain_text("not a valid JMESPath expression")
    expect(page.locator("#rule-condition")).to_have_attribute("aria-invalid", "true")
    assert console_api.get(f"/api/v1/rules/{rule_id}").status_code == 404

    # JSON that does not parse is shown at its part before anything is sent.
    page.get_by_label("Actions").fill("[{")
    page.get_by_role("button", name="Create rule").click()
    expect(page.locator('.field-error[data-field="actions"]')).to_contain_text("not valid JSON")
    expect(page.locator('.field-error[data-field="condition.expression"]')).to_have_count(0)

    # Fixed: the rule is made and its page opens.
    page.locator("#rule-condition").fill('{"type": "expression", "expression": "msg.value > `5`"}')
    page.get_by_label("Actions").fill('[{"type": "alarm", "severity": "minor"}]')
    page.get_by_role("button", name="Create rule").click()
    page.wait_for_url(f"**/rules/{rule_id}")
    rule = console_api.get(f"/api/v1/rules/{rule_id}").json()
    assert rule["condition"] == {"type": "expression", "expression": "msg.value > `5`"}
    assert rule["name"] == "Expression rule"
    assert rule["clear"] is None
    assert rule["enabled"] is False
    assert console.foreign_requests() == []


def test_edit_a_rule_sends_only_what_changed(
    console: Console, console_server: RoostServer, console_api: Api
) -> None:
    device = warm_device(console_server, console_api)
    rule_id = hot_rule(console_api, device)
    post_temperature(console_server, device, 80)
    # The device is active under the rule; a rename must not start its state afresh.
    eventually(lambda: console_api.get(f"/api/v1/rules/{rule_id}").json()["active"] == 1)
    before = console_api.get(f"/api/v1/rules/{rule_id}").json()
    console.sign_in()
    console.goto(f"/rules/{rule_id}")
    page = console.page
    expect(page.locator("h1")).to_contain_text(rule_id)
    page.get_by_role("link", name="Edit").click()
    page.get_by_label("Name").fill("Renamed in the console")
    page.get_by_role("button", name="Save rule").click()
    page.wait_for_url(f"**/rules/{rule_id}")
    expect(page.locator("h1")).to_contain_text("Renamed in the console")
    after = console_api.get(f"/api/v1/rules/{rule_id}").json()
    assert after["name"] == "Renamed in the console"
    assert after["version"] == before["version"] + 1
    assert after["condition"] == before["condition"]
    assert console_api.get(f"/api/v1/rules/{rule_id}").json()["active"] == 1
    expect(page.get_by_test_id("rule-active").locator(".value")).to_have_text("1")

    # A bad threshold: the API's message names the field; nothing changes.
    page.get_by_role("link", name="Edit").click()
    page.locator("#rule-condition").fill('{"type": "threshold", "op": "~", "value": 50}')
    page.get_by_role("button", name="Save rule").click()
    expect(page.locator("[data-problem]")).to_contain_text("condition.op")
    expect(page.locator('.field-error[data-field^="condition"]')).to_be_visible()
    assert console_api.get(f"/api/v1/rules/{rule_id}").json()["version"] == after["version"]

    # Disable from the rule's page.
    console.goto(f"/rules/{rule_id}")
    page.get_by_role("button", name="Disable").click()
    expect(page.get_by_role("button", name="Enable")).to_be_visible()
    assert console_api.get(f"/api/v1/rules/{rule_id}").json()["enabled"] is False
    console.goto("/rules?enabled=no")
    expect(page.get_by_role("row", name=re.compile(rule_id))).to_contain_text("disabled")


def test_the_overview_counts_active_alarms_by_severity(
    console: Console, console_server: RoostServer, console_api: Api
) -> None:
    raise_alarm(console_server, console_api, "warning")
    counts = console_api.get("/api/v1/alarms/counts").json()
    assert counts["by_severity"]["warning"] >= 1
    console.sign_in()
    console.goto("/")
    page = console.page
    card = page.get_by_test_id("alarm-card")
    expect(card).to_contain_text("Active alarms by severity")
    for severity, count in counts["by_severity"].items():
        expect(page.get_by_test_id(f"alarms-{severity}").locator(".value")).to_have_text(
            f"{count:,}"
        )
    expect(page.get_by_test_id("alarms-active")).to_have_text(f"{counts['active']:,}")
    page.get_by_test_id("alarms-warning").click()
    page.wait_for_url("**/alarms?severity=warning")
    expect(page.locator("table.alarms tbody tr")).to_have_count(counts["by_severity"]["warning"])


def test_a_viewer_sees_alarms_and_rules_without_write_actions(
    console: Console, console_server: RoostServer, console_api: Api, viewer: str
) -> None:
    alarm = raise_alarm(console_server, console_api, "minor")
    console.sign_in(viewer, VIEWER_PASSWORD)
    console.goto("/alarms")
    page = console.page
    row = page.locator(f'tr[data-alarm-id="{alarm["id"]}"]')
    expect(row).to_contain_text(alarm["device_id"])
    expect(page.locator("main button[data-api]")).to_have_count(0)
    console.goto("/rules")
    expect(page.get_by_role("link", name="New rule")).to_have_count(0)
    console.goto(f"/rules/{alarm['rule_id']}")
    expect(page.locator("main button[data-api]")).to_have_count(0)
    expect(page.get_by_role("link", name="Edit")).to_have_count(0)
    response = console.goto("/rules/new")
    assert response.status == 403


class _Hook(BaseHTTPRequestHandler):
    """A webhook receiver that keeps each body it gets and answers 200."""

    bodies: list[bytes] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.bodies.append(self.rfile.read(length))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[bytes]]]:
    """A local HTTP receiver: its URL and the bodies it got."""
    bodies: list[bytes] = []
    handler = type("Hook", (_Hook,), {"bodies": bodies})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", bodies
    server.shutdown()
    server.server_close()


def test_add_a_channel_send_a_test_and_see_it_in_the_delivery_log(
    console: Console, console_api: Api, webhook: tuple[str, list[bytes]]
) -> None:
    url, bodies = webhook
    name = unique("ops-hook")
    console.sign_in()
    console.goto("/alarms")
    page = console.page
    page.locator(".subnav").get_by_role("link", name="Channels").click()
    expect(page.locator("h1")).to_have_text("Notification channels")
    page.get_by_text("Add a channel").click()
    page.get_by_label("Name").fill(name)
    page.get_by_label("Kind").first.select_option("webhook")
    page.get_by_label("Config").fill(json.dumps({"url": url, "secret": "hook-secret"}))
    page.get_by_label("Group wait, s").fill("1")
    page.get_by_role("button", name="Add channel").click()
    row = page.get_by_role("row", name=re.compile(name))
    expect(row).to_contain_text("signed")
    channel = next(
        c
        for c in console_api.get("/api/v1/notification-channels").json()["items"]
        if c["name"] == name
    )
    assert (channel["kind"], channel["secret_set"], channel["group_wait_s"]) == ("webhook", True, 1)
    assert "secret" not in channel["config"]

    row.get_by_role("button", name="Send a test message").click()
    expect(row.locator("[data-test-result]")).to_contain_text("delivered in")
    assert len(bodies) == 1 and b"Test message" in bodies[0]

    # The attempt is in the delivery log, filtered by the channel.
    page.locator(".subnav").get_by_role("link", name="Delivery log").click()
    page.get_by_label("Channel").select_option(channel["id"])
    page.get_by_role("button", name="Apply").click()
    rows = page.locator("table.deliveries tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-status", "delivered")
    expect(rows.first).to_contain_text(name)

    # A bad config is refused with the API's message; delete removes the channel.
    console.goto("/notifications/channels")
    page.get_by_text("Add a channel").click()
    page.get_by_label("Name").fill(unique("bad"))
    page.get_by_label("Config").fill(json.dumps({"to": []}))
    page.get_by_role("button", name="Add channel").click()
    expect(page.locator("#new-channel [data-problem]")).to_be_visible()
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("row", name=re.compile(name)).get_by_role("button", name="Delete").click()
    expect(page.get_by_role("row", name=re.compile(name))).to_have_count(0)
    assert console_api.get(f"/api/v1/notification-channels/{channel['id']}").status_code == 404


def test_add_a_silence_and_expire_it(console: Console, console_api: Api) -> None:
    device_id = unique("quiet")
    console.sign_in()
    console.goto(f"/notifications/silences?device_id={device_id}")
    page = console.page
    expect(page.get_by_label("Device")).to_have_value(device_id)
    page.get_by_label("Severity").first.select_option("critical")
    page.get_by_label("Comment").fill("site visit")
    page.get_by_role("button", name="Add silence").click()
    row = page.get_by_role("row", name=re.compile(device_id))
    expect(row).to_have_attribute("data-state", "active")
    silence = next(
        s
        for s in console_api.get("/api/v1/silences").json()["items"]
        if s["matchers"].get("device_id") == device_id
    )
    assert silence["matchers"] == {"device_id": device_id, "severity": "critical"}
    assert silence["comment"] == "site visit"

    row.get_by_role("button", name="Expire silence").click()
    expect(row).to_have_attribute("data-state", "expired")
    assert console_api.get(f"/api/v1/silences/{silence['id']}").json()["state"] == "expired"
    page.get_by_label("State").select_option("active")
    page.get_by_role("button", name="Apply").click()
    expect(page.get_by_role("row", name=re.compile(device_id))).to_have_count(0)

    # A silence that ends before it starts: the API's message is shown in the form.
    page.get_by_text("Add a silence").click()
    page.get_by_label("Alarm type").fill("offline")
    page.get_by_label("Starts").fill("2030-01-02T10:00")
    page.get_by_label("Ends").fill("2030-01-01T10:00")
    page.get_by_role("button", name="Add silence").click()
    expect(page.locator("#new-silence [data-problem]")).to_contain_text("ends_at")
