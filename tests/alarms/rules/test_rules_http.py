"""Rules and alarms through the HTTP door on a running ``roost serve`` (SQLite and PostgreSQL):
devices post telemetry and events with their tokens, rules raise and clear alarms, people
acknowledge and clear them; bad rules are refused with the field named."""

from __future__ import annotations

import time
from typing import Any

from tests.alarms.conftest import alarms_of, wait_alarm
from tests.conftest import Tenant
from tests.support import Api, assert_problem, eventually, make_device

V1 = "/api/v1"


def rule(api: Api, **body: Any) -> dict[str, Any]:
    resp = api.post(f"{V1}/rules", json=body)
    assert resp.status_code == 201, resp.text
    made: dict[str, Any] = resp.json()
    return made


def post(api: Api, path: str, body: Any) -> None:
    resp = api.post(f"{V1}/{path}", json=body)
    assert resp.status_code == 200, resp.text


HOT = {
    "source": {"kind": "telemetry", "sensor": "temperature"},
    "condition": {"type": "threshold", "op": ">", "value": 70},
    "clear": {"type": "threshold", "op": "<", "value": 65},
    "actions": [{"type": "alarm", "severity": "critical", "summary": "{device_id} at {value}"}],
}


def test_a_threshold_rule_raises_an_alarm_and_clears_it_with_hysteresis(tenant: Tenant) -> None:
    op = tenant.operator
    dev = make_device(op)
    other = make_device(op)
    device = tenant.client(dev.token)
    post(device, "telemetry", {"temperature": 20})
    rule(op, id="hot", name="Too hot", targets={"devices": [dev.id]}, **HOT)
    post(tenant.client(other.token), "telemetry", {"temperature": 99})  # not a target
    post(device, "telemetry", {"temperature": 75.5})
    alarm = wait_alarm(op, status="active")
    assert alarm["device_id"] == dev.id and alarm["type"] == "hot"
    assert alarm["severity"] == "critical" and alarm["rule_id"] == "hot"
    assert alarm["summary"] == f"{dev.id} at 75.5" and alarm["details"]["value"] == 75.5
    assert alarm["count"] == 1 and not alarm["acknowledged"]
    assert op.get(f"{V1}/alarms/counts").json()["by_severity"]["critical"] == 1
    # Still hot, then in the hysteresis band: nothing changes; below 65 it clears.
    post(device, "telemetry", [{"temperature": 80}, {"temperature": 67}])
    post(device, "telemetry", {"temperature": 60})
    cleared = eventually(lambda: alarms_of(op, status="cleared"))
    assert cleared[0]["id"] == alarm["id"] and cleared[0]["ended_at"]
    assert cleared[0]["cleared_by"] is None  # the rule cleared it
    assert alarms_of(op, status="active") == []
    assert len(alarms_of(op)) == 1  # the other device never had one
    assert op.get(f"{V1}/alarms/counts").json()["active"] == 0


def test_people_acknowledge_and_clear_alarms_and_it_is_audited(tenant: Tenant) -> None:
    op, viewer = tenant.operator, tenant.viewer
    dev = make_device(op)
    device = tenant.client(dev.token)
    post(device, "telemetry", {"temperature": 20})  # the sensor exists before a rule watches it
    rule(op, id="hot", **HOT)
    post(device, "telemetry", {"temperature": 90})
    alarm = wait_alarm(op, status="active")
    assert_problem(viewer.post(f"{V1}/alarms/{alarm['id']}/ack"), 403)
    acked = op.post(f"{V1}/alarms/{alarm['id']}/ack")
    assert acked.status_code == 200, acked.text
    assert acked.json()["acknowledged"] and acked.json()["acked_by"] == tenant.usernames["operator"]
    assert_problem(op.post(f"{V1}/alarms/{alarm['id']}/ack"), 409, "acknowledged")
    assert op.get(f"{V1}/alarms/counts").json()["unacknowledged"] == 0
    cleared = op.post(f"{V1}/alarms/{alarm['id']}/clear")
    assert cleared.status_code == 200 and cleared.json()["status"] == "cleared"
    assert cleared.json()["cleared_by"] == tenant.usernames["operator"]
    assert_problem(op.post(f"{V1}/alarms/{alarm['id']}/clear"), 409, "cleared already")
    audit = tenant.admin.get(f"{V1}/audit", params={"entity_type": "alarm"}).json()["items"]
    assert {e["action"] for e in audit} == {"acknowledge", "clear"}
    # Another tenant's alarm does not exist for this one; a bad id is a clear 422/404.
    assert_problem(op.get(f"{V1}/alarms/999999999"), 404)
    assert_problem(op.get(f"{V1}/alarms/abc"), 422)


def test_for_s_waits_and_a_drop_within_it_cancels(tenant: Tenant) -> None:
    op = tenant.operator
    dev = make_device(op)
    device = tenant.client(dev.token)
    post(device, "telemetry", {"temperature": 20})
    rule(op, id="hot-for", **{**HOT, "for_s": 1.5})
    post(device, "telemetry", {"temperature": 80})
    time.sleep(0.5)
    post(device, "telemetry", {"temperature": 50})  # dropped before 1.5 s: cancelled
    time.sleep(2.0)
    assert alarms_of(op) == []
    post(device, "telemetry", {"temperature": 80})
    start = time.monotonic()
    eventually(lambda: op.get(f"{V1}/rules/hot-for").json()["pending"] == 1)
    alarm = wait_alarm(op, status="active")
    assert time.monotonic() - start >= 1.0  # not before the window is over (less the poll)
    assert alarm["count"] == 1
    assert op.get(f"{V1}/rules/hot-for").json()["active"] == 1


def test_an_event_rule_fires_per_event_and_repeats_count_on_the_open_alarm(tenant: Tenant) -> None:
    op = tenant.operator
    dev = make_device(op)
    device = tenant.client(dev.token)
    rule(
        op,
        id="charge-error",
        source={"kind": "event", "event_type": "charge_error"},
        condition={"type": "expression", "expression": "msg.code >= `500`"},
        clear={"type": "expression", "expression": "msg.code == `0`"},
        actions=[{"type": "alarm", "alarm_type": "charging", "severity": "major"}],
    )
    post(device, "events", [{"event": "charge_error", "code": 501}, {"event": "x", "code": 900}])
    post(device, "events", {"event": "charge_error", "code": 12})  # below: no match
    post(device, "events", {"event": "charge_error", "code": 503})
    alarm = eventually(lambda: [a for a in alarms_of(op) if a["count"] == 2])[0]
    assert alarm["type"] == "charging" and alarm["status"] == "active"
    post(device, "events", {"event": "charge_error", "code": 0})
    eventually(lambda: alarms_of(op, status="cleared"))
    assert len(alarms_of(op)) == 1


def test_bad_rules_are_refused_with_the_field_named(tenant: Tenant) -> None:
    op = tenant.operator
    dev = make_device(op)
    post(tenant.client(dev.token), "telemetry", {"temperature": 20})
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"source": {"kind": "telemetry", "sensor": "nope"}}, "source.sensor", "nope"),
        ({"targets": {"groups": ["no-such-group"]}}, "targets.groups", "no-such-group"),
        (
            {"condition": {"type": "expression", "expression": "msg.value > 70"}},
            "condition.expression",
            "column 13",
        ),
        ({"where": "device.tags.floor == "}, "where", "ends too early"),
        ({"condition": {"type": "threshold", "op": "=>", "value": 1}}, "condition.op", "one of"),
        (
            {"condition": {"type": "range", "min": 10, "max": 1}},
            "condition",
            "min must not be above max",
        ),
        (
            {"actions": [{"type": "alarm"}, {"type": "notify", "channels": ["nope"]}]},
            "actions[1].channels",
            "no notification channel",
        ),
        (
            {"enrich": [{"table": "products", "key": "msg.id", "as": "p"}]},
            "enrich[0].table",
            "no reference table",
        ),
        ({"actions": [{"type": "notify", "channels": ["x"]}]}, "actions", "add an alarm"),
        ({"actions": [{"type": "explode"}]}, "actions[0].type", "one of"),
        ({"for_s": -1}, "for_s", ""),
    ]
    for change, field, phrase in cases:
        body = {**HOT, **change}
        resp = op.post(f"{V1}/rules", json=body)
        problem = assert_problem(resp, 422)
        fields = [e.get("field", e.get("loc")) for e in problem.get("errors", [])]
        assert any(field in str(f) for f in fields), (change, problem)
        assert phrase.lower() in resp.text.lower(), (change, problem)
    # A rule that would read what it emits is refused when made.
    loop = op.post(
        f"{V1}/rules",
        json={
            "source": {"kind": "event", "event_type": "a"},
            "condition": {"type": "always"},
            "actions": [{"type": "emit_event", "event_type": "a"}],
        },
    )
    assert_problem(loop, 422, "trigger itself")
    rule(
        op,
        id="a-to-b",
        source={"kind": "event", "event_type": "a"},
        condition={"type": "always"},
        actions=[{"type": "emit_event", "event_type": "b"}],
    )
    round_trip = op.post(
        f"{V1}/rules",
        json={
            "source": {"kind": "event", "event_type": "b"},
            "condition": {"type": "always"},
            "actions": [{"type": "emit_event", "event_type": "a"}],
        },
    )
    assert_problem(round_trip, 422, "loop")
    # Viewers read rules but may not make them; ids are unique.
    assert_problem(tenant.viewer.post(f"{V1}/rules", json=HOT), 403)
    assert tenant.viewer.get(f"{V1}/rules").json()["total"] == 1
    assert_problem(op.post(f"{V1}/rules", json={**HOT, "id": "a-to-b"}), 409)
    assert_problem(op.get(f"{V1}/rules/nope"), 404)


def test_rules_are_listed_changed_and_deleted(tenant: Tenant) -> None:
    op = tenant.operator
    dev = make_device(op)
    device = tenant.client(dev.token)
    post(device, "telemetry", {"temperature": 20})
    made = rule(op, id="hot", **HOT)
    assert made["version"] == 1 and made["enabled"] is True
    listed = op.get(f"{V1}/rules", params={"source": "telemetry"}).json()
    assert [r["id"] for r in listed["items"]] == ["hot"] and listed["total"] == 1
    off = op.patch(f"{V1}/rules/hot", json={"enabled": False})
    assert off.status_code == 200 and off.json()["version"] == 2
    post(device, "telemetry", {"temperature": 90})
    time.sleep(1.0)
    assert alarms_of(op) == []  # disabled
    bad = op.patch(f"{V1}/rules/hot", json={"condition": {"type": "threshold", "op": ">"}})
    assert_problem(bad, 422, "condition.value")
    on = op.patch(
        f"{V1}/rules/hot",
        json={"enabled": True, "condition": {"type": "threshold", "op": ">", "value": 85}},
    )
    assert on.status_code == 200, on.text
    post(device, "telemetry", {"temperature": 90})
    wait_alarm(op, status="active")
    assert op.delete(f"{V1}/rules/hot").status_code == 204
    assert_problem(op.get(f"{V1}/rules/hot"), 404)
    assert len(alarms_of(op)) == 1  # the alarm stays as history


def test_state_reports_and_command_outcomes_are_sources(tenant: Tenant) -> None:
    op = tenant.operator
    dev = make_device(op)
    device = tenant.client(dev.token)
    rule(
        op,
        id="battery",
        source={"kind": "state"},
        condition={"type": "threshold", "path": "msg.reported.battery", "op": "<", "value": 20},
        actions=[{"type": "alarm", "alarm_type": "battery-low", "severity": "warning"}],
    )
    rule(
        op,
        id="command-failed",
        source={"kind": "command"},
        condition={"type": "threshold", "op": "==", "value": "FAILED"},
        where="msg.name == 'reboot'",
        actions=[{"type": "alarm", "alarm_type": "reboot-failed", "severity": "minor"}],
    )
    post(device, "device/state/reported", {"battery": 55})
    post(device, "device/state/reported", {"battery": 12})
    low = wait_alarm(op, type="battery-low", status="active")
    assert low["details"]["value"] == 12
    post(device, "device/state/reported", {"battery": 80})
    eventually(lambda: alarms_of(op, type="battery-low", status="cleared"))
    # A reboot the device answers FAILED raises an alarm (after the completion settles).
    for name in ("reboot", "blink"):
        made = op.post(f"{V1}/devices/{dev.id}/commands", json={"name": name})
        assert made.status_code == 201, made.text
        assert device.get(f"{V1}/device/commands").status_code == 200  # the device takes it
        answer = device.post(
            f"{V1}/device/commands/{made.json()['id']}/response",
            json={"status": "FAILED", "result": {"why": "busy"}},
        )
        assert answer.status_code == 200, answer.text
    failed = wait_alarm(op, type="reboot-failed")
    assert failed["details"]["value"] == "FAILED"
    time.sleep(1.5)
    assert len(alarms_of(op, type="reboot-failed")) == 1  # blink failing is not this rule's


def test_a_refused_mqtt_message_is_a_source(alarm_server: Any) -> None:
    from tests.mqtt_device import MqttDevice
    from tests.support import admin_client

    with admin_client(alarm_server) as admin:
        dev = make_device(admin)
        rule(
            admin,
            id=f"refused-{dev.id}",
            source={"kind": "refused"},
            targets={"devices": [dev.id]},
            condition={"type": "always"},
            actions=[{"type": "alarm", "alarm_type": "bad-payload", "severity": "info"}],
        )
        device = MqttDevice(alarm_server, dev)
        device.connect()
        try:
            device.publish("telemetry", b"{not json")
            device.publish("telemetry", b'{"temperature": "very hot", "ts": "yesterday"}')
        finally:
            device.close()
        alarm = eventually(
            lambda: [a for a in alarms_of(admin, device_id=dev.id) if a["count"] == 2]
        )[0]
        assert alarm["type"] == "bad-payload" and alarm["severity"] == "info"
