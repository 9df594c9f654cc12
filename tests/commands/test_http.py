"""Commands over HTTP against a running server: users send, list, wait and cancel; an HTTP-only
device long-polls and answers; timeouts, expiry, scheduled commands and command schedules."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from roost.commands.cron import next_fire, parse_timezone
from tests.conftest import Tenant
from tests.support import Api, assert_problem, eventually, unique

DEADLINE_S = 20


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def make_device(tenant: Tenant) -> tuple[str, Api]:
    """A device of the tenant and an HTTP client holding its token."""
    device_id = unique("dev")
    resp = tenant.operator.post("/api/v1/devices", json={"id": device_id})
    assert resp.status_code == 201, resp.text
    resp = tenant.operator.post(f"/api/v1/devices/{device_id}/tokens", json={})
    assert resp.status_code in (200, 201), resp.text
    return device_id, tenant.client(resp.json()["token"])


def send(api: Api, device_id: str, **body: Any) -> dict[str, Any]:
    resp = api.post(f"/api/v1/devices/{device_id}/commands", json={"name": "reboot", **body})
    assert resp.status_code == 201, resp.text
    record: dict[str, Any] = resp.json()
    return record


def command(api: Api, device_id: str, command_id: str) -> dict[str, Any]:
    resp = api.get(f"/api/v1/devices/{device_id}/commands/{command_id}")
    assert resp.status_code == 200, resp.text
    record: dict[str, Any] = resp.json()
    return record


def status_becomes(api: Api, device_id: str, command_id: str, status: str) -> dict[str, Any]:
    """The command once it reached ``status`` (fails at the deadline)."""

    def check() -> dict[str, Any] | None:
        record = command(api, device_id, command_id)
        return record if record["status"] == status else None

    result: dict[str, Any] = eventually(check)
    return result


def poll(device: Api, wait: int = 0) -> list[dict[str, Any]]:
    resp = device.get("/api/v1/device/commands", params={"wait": wait})
    assert resp.status_code == 200, resp.text
    items: list[dict[str, Any]] = resp.json()["items"]
    return items


@pytest.fixture
def responder(tenant: Tenant) -> Iterator[Callable[[Api], None]]:
    """Run an HTTP-only device in a thread: it long-polls and answers every command."""
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def run(device: Api) -> None:
        while not stop.is_set():
            resp = device.get("/api/v1/device/commands", params={"wait": 2})
            assert resp.status_code == 200, resp.text
            for item in resp.json()["items"]:
                answer = {"status": "SUCCEEDED", "result": {"echo": item["params"]}}
                reply = device.post(f"/api/v1/device/commands/{item['id']}/response", json=answer)
                assert reply.status_code == 200, reply.text

    def start(device: Api) -> None:
        thread = threading.Thread(target=run, args=(device,), daemon=True)
        threads.append(thread)
        thread.start()

    yield start
    stop.set()
    for thread in threads:
        thread.join(timeout=10)


# -- the round trip -------------------------------------------------------------------------------


def test_http_device_takes_a_command_and_its_answer_completes_it(tenant: Tenant) -> None:
    device_id, device = make_device(tenant)
    created = send(tenant.operator, device_id, name="set_light", params={"on": True}, timeout_s=30)
    assert created["status"] == "QUEUED"
    assert created["device_id"] == device_id
    assert created["params"] == {"on": True} and created["timeout_s"] == 30
    assert created["sent_at"] is None and created["result"] is None
    assert created["created_by"] == tenant.usernames["operator"]

    assert poll(device) == [{"id": created["id"], "name": "set_light", "params": {"on": True}}]
    taken = command(tenant.viewer, device_id, created["id"])
    assert taken["status"] == "DELIVERED" and taken["sent_at"] and taken["delivered_at"]
    assert poll(device) == []  # handed over once

    resp = device.post(
        f"/api/v1/device/commands/{created['id']}/response",
        json={"status": "SUCCEEDED", "result": {"brightness": 80}},
    )
    assert resp.status_code == 200, resp.text
    done = command(tenant.viewer, device_id, created["id"])
    assert done["status"] == "SUCCEEDED"
    assert done["result"] == {"brightness": 80}
    assert ts(done["completed_at"]) >= ts(done["delivered_at"]) >= ts(done["created_at"])
    assert done["completed_at"].endswith("Z")

    # A final command never moves again.
    again = device.post(
        f"/api/v1/device/commands/{created['id']}/response", json={"status": "FAILED"}
    )
    assert_problem(again, 409, "SUCCEEDED, which is final")

    audit = tenant.operator.get(
        "/api/v1/audit", params={"entity_type": "command", "entity_id": created["id"]}
    ).json()["items"]
    assert [entry["action"] for entry in audit] == ["create"]


def test_interim_acknowledgement_then_failure(tenant: Tenant) -> None:
    device_id, device = make_device(tenant)
    created = send(tenant.operator, device_id)
    poll(device)
    url = f"/api/v1/device/commands/{created['id']}/response"
    assert device.post(url, json={"status": "IN_PROGRESS"}).status_code == 200
    assert command(tenant.viewer, device_id, created["id"])["status"] == "DELIVERED"
    resp = device.post(url, json={"status": "FAILED", "result": "disk full"})
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"id": created["id"], "status": "FAILED"}
    done = command(tenant.viewer, device_id, created["id"])
    assert done["status"] == "FAILED" and done["result"] == "disk full"


def test_listing_filters_by_status_newest_first(tenant: Tenant) -> None:
    device_id, device = make_device(tenant)
    first = send(tenant.operator, device_id, name="one")
    assert first["timeout_s"] == 60  # the server's default (ROOST_COMMAND_TIMEOUT_S)
    poll(device)
    second = send(tenant.operator, device_id, name="two")
    url = f"/api/v1/devices/{device_id}/commands"
    page = tenant.viewer.get(url).json()
    assert [c["id"] for c in page["items"]] == [second["id"], first["id"]]
    assert page["total"] == 2 and page["limit"] == 50 and page["offset"] == 0
    queued = tenant.viewer.get(url, params={"status": "QUEUED"}).json()["items"]
    assert [c["id"] for c in queued] == [second["id"]]
    both = tenant.viewer.get(url, params={"status": "QUEUED,DELIVERED", "sort": "created_at"})
    assert [c["id"] for c in both.json()["items"]] == [first["id"], second["id"]]
    assert_problem(tenant.viewer.get(url, params={"status": "DONE"}), 422, "unknown command status")


def test_cancel_while_queued_and_never_delivered(tenant: Tenant) -> None:
    device_id, device = make_device(tenant)
    created = send(tenant.operator, device_id)
    url = f"/api/v1/devices/{device_id}/commands/{created['id']}/cancel"
    assert_problem(tenant.viewer.post(url), 403)
    resp = tenant.operator.post(url)
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "CANCELED" and resp.json()["completed_at"]
    assert poll(device) == []
    assert_problem(tenant.operator.post(url), 409, "CANCELED, which is final")
    actions = [
        e["action"]
        for e in tenant.operator.get(
            "/api/v1/audit", params={"entity_type": "command", "entity_id": created["id"]}
        ).json()["items"]
    ]
    assert sorted(actions) == ["cancel", "create"]


# -- waiting ------------------------------------------------------------------------------------


def test_long_poll_returns_a_command_queued_while_waiting(tenant: Tenant) -> None:
    device_id, device = make_device(tenant)
    got: list[list[dict[str, Any]]] = []
    waiting = threading.Thread(target=lambda: got.append(poll(device, wait=30)))
    waiting.start()
    created = send(tenant.operator, device_id, name="ping")
    waiting.join(timeout=DEADLINE_S)
    assert not waiting.is_alive()
    assert got == [[{"id": created["id"], "name": "ping", "params": {}}]]


def test_wait_answers_the_device_response_when_it_is_online(
    tenant: Tenant, responder: Callable[[Api], None]
) -> None:
    device_id, device = make_device(tenant)
    responder(device)
    # The device is online once it polls; until then ?wait answers at once.
    eventually(lambda: poll_started(tenant, device_id))
    resp = tenant.operator.post(
        f"/api/v1/devices/{device_id}/commands",
        params={"wait": 15},
        json={"name": "read", "params": {"register": 7}},
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "SUCCEEDED"
    assert resp.json()["result"] == {"echo": {"register": 7}}


def poll_started(tenant: Tenant, device_id: str) -> bool:
    """True once a ?wait=1 command to the device gets its answer (the responder is polling)."""
    resp = tenant.operator.post(
        f"/api/v1/devices/{device_id}/commands", params={"wait": 5}, json={"name": "probe"}
    )
    return resp.status_code == 200


def test_wait_on_an_offline_device_answers_202_at_once(tenant: Tenant) -> None:
    device_id, _ = make_device(tenant)
    resp = tenant.operator.post(
        f"/api/v1/devices/{device_id}/commands", params={"wait": 60}, json={"name": "x"}
    )
    assert resp.status_code == 202, resp.text
    assert resp.json()["status"] == "QUEUED"
    bad = tenant.operator.post(
        f"/api/v1/devices/{device_id}/commands", params={"wait": 61}, json={"name": "x"}
    )
    assert_problem(bad, 422)


# -- timers -------------------------------------------------------------------------------------


def test_a_command_without_an_answer_times_out(tenant: Tenant) -> None:
    device_id, device = make_device(tenant)
    created = send(tenant.operator, device_id, timeout_s=1)
    assert [c["id"] for c in poll(device)] == [created["id"]]
    done = status_becomes(tenant.viewer, device_id, created["id"], "TIMED_OUT")
    assert ts(done["completed_at"]) >= ts(done["sent_at"]) + timedelta(seconds=1)
    assert "no response within 1 s" in done["status_details"]["reason"]
    late = device.post(
        f"/api/v1/device/commands/{created['id']}/response", json={"status": "SUCCEEDED"}
    )
    assert_problem(late, 409, "TIMED_OUT")


def test_an_expired_command_is_never_delivered(tenant: Tenant) -> None:
    device_id, device = make_device(tenant)
    expires = datetime.now(UTC) + timedelta(seconds=2)
    created = send(tenant.operator, device_id, expires_at=iso(expires))
    done = status_becomes(tenant.viewer, device_id, created["id"], "EXPIRED")
    assert done["sent_at"] is None and done["delivered_at"] is None
    assert ts(done["completed_at"]) >= expires
    assert poll(device) == []
    assert_problem(
        tenant.operator.post(
            f"/api/v1/devices/{device_id}/commands",
            json={"name": "x", "expires_at": iso(datetime.now(UTC) - timedelta(seconds=1))},
        ),
        422,
        "expires_at must be in the future",
    )


def test_a_scheduled_command_is_not_sent_before_its_time(tenant: Tenant) -> None:
    device_id, device = make_device(tenant)
    # Seconds ahead: room for the next request to come first, even on a busy machine.
    at = datetime.now(UTC) + timedelta(seconds=4)
    created = send(tenant.operator, device_id, name="later", schedule_at=iso(at))
    assert created["status"] == "QUEUED" and ts(created["schedule_at"]) == at
    assert poll(device) == []  # not yet
    items = eventually(lambda: poll(device, wait=10))
    assert [c["id"] for c in items] == [created["id"]]
    sent = command(tenant.viewer, device_id, created["id"])
    assert ts(sent["sent_at"]) >= at


# -- schedules ----------------------------------------------------------------------------------


def test_a_snoozed_one_off_schedule_fires_later(tenant: Tenant) -> None:
    device_id, device = make_device(tenant)
    at = datetime.now(UTC) + timedelta(seconds=4)
    resp = tenant.operator.post(
        f"/api/v1/devices/{device_id}/command-schedules",
        json={"name": "alarm_on", "params": {"level": 2}, "schedule_at": iso(at)},
    )
    assert resp.status_code == 201, resp.text
    schedule = resp.json()
    assert ts(schedule["next_fire_at"]) == at and schedule["fire_count"] == 0

    resp = tenant.operator.post(
        f"/api/v1/command-schedules/{schedule['id']}/snooze", json={"seconds": 3}
    )
    assert resp.status_code == 200, resp.text
    snoozed_to = ts(resp.json()["next_fire_at"])
    assert snoozed_to == at + timedelta(seconds=3)

    items = eventually(lambda: poll(device, wait=10))
    assert [(c["name"], c["params"]) for c in items] == [("alarm_on", {"level": 2})]
    fired = command(tenant.viewer, device_id, items[0]["id"])
    assert fired["schedule_id"] == schedule["id"]
    assert ts(fired["created_at"]) >= snoozed_to  # not at the original time
    after = tenant.viewer.get(f"/api/v1/command-schedules/{schedule['id']}").json()
    assert after["fire_count"] == 1 and after["next_fire_at"] is None
    assert after["last_command_id"] == fired["id"]
    # Nothing left to snooze on a one-off that fired.
    assert_problem(
        tenant.operator.post(
            f"/api/v1/command-schedules/{schedule['id']}/snooze", json={"seconds": 5}
        ),
        409,
        "no next fire",
    )


def test_cron_schedules_in_a_time_zone_are_listed_changed_and_deleted(tenant: Tenant) -> None:
    device_id, _ = make_device(tenant)
    other_id, _ = make_device(tenant)
    body = {
        "name": "alarm_light_on",
        "cron": "0 18 * * 1-5",
        "timezone": "Europe/Berlin",
        "offset_s": -10800,
    }
    before = datetime.now(UTC)
    resp = tenant.operator.post(f"/api/v1/devices/{device_id}/command-schedules", json=body)
    assert resp.status_code == 201, resp.text
    schedule = resp.json()
    expected = next_fire("0 18 * * 1-5", parse_timezone("Europe/Berlin"), -10800, before)
    assert expected is not None and ts(schedule["next_fire_at"]) == expected
    assert schedule["cron"] == "0 18 * * 1-5" and schedule["enabled"] is True
    resp = tenant.operator.post(
        f"/api/v1/devices/{other_id}/command-schedules",
        json={"name": "x", "schedule_at": iso(before + timedelta(days=1))},
    )
    assert resp.status_code == 201, resp.text

    mine = tenant.viewer.get(f"/api/v1/devices/{device_id}/command-schedules").json()
    assert [s["id"] for s in mine["items"]] == [schedule["id"]]
    everything = tenant.viewer.get("/api/v1/command-schedules").json()
    assert everything["total"] == 2
    filtered = tenant.viewer.get("/api/v1/command-schedules", params={"device_id": other_id})
    assert [s["device_id"] for s in filtered.json()["items"]] == [other_id]

    url = f"/api/v1/command-schedules/{schedule['id']}"
    assert_problem(tenant.viewer.patch(url, json={"enabled": False}), 403)
    paused = tenant.operator.patch(url, json={"enabled": False})
    assert paused.status_code == 200, paused.text
    assert paused.json()["next_fire_at"] is None
    resumed = tenant.operator.patch(url, json={"enabled": True, "timezone": "UTC"})
    assert resumed.status_code == 200, resumed.text
    expected = next_fire("0 18 * * 1-5", parse_timezone("UTC"), -10800, before)
    assert expected is not None and ts(resumed.json()["next_fire_at"]) >= expected
    assert resumed.json()["timezone"] == "UTC"
    assert_problem(tenant.operator.patch(url, json={"cron": "0 25 * * *"}), 422, "hour")

    assert tenant.operator.delete(url).status_code == 204
    assert_problem(tenant.viewer.get(url), 404)
    actions = [
        e["action"]
        for e in tenant.operator.get(
            "/api/v1/audit", params={"entity_type": "command_schedule", "entity_id": schedule["id"]}
        ).json()["items"]
    ]
    assert sorted(actions) == ["create", "delete", "update", "update"]


def test_a_device_mirrors_its_schedules_and_a_fired_command_names_its_fire(
    tenant: Tenant,
) -> None:
    device_id, device = make_device(tenant)
    other_id, other = make_device(tenant)
    base = f"/api/v1/devices/{device_id}/command-schedules"
    at = datetime.now(UTC) + timedelta(seconds=3)
    once = tenant.operator.post(base, json={"name": "alarm_on", "schedule_at": iso(at)}).json()
    cron = {"cron": "0 18 * * 1-5", "timezone": "Europe/Berlin", "offset_s": -10800}
    light = tenant.operator.post(base, json={"name": "light", "params": {"on": 1}, **cron}).json()
    snoozy = tenant.operator.post(base, json={"name": "snoozy", **cron}).json()
    resp = tenant.operator.post(
        f"/api/v1/command-schedules/{snoozy['id']}/snooze", json={"seconds": 60}
    )
    assert resp.status_code == 200, resp.text
    paused = tenant.operator.post(base, json={"name": "off", "enabled": False, **cron}).json()
    tenant.operator.post(
        f"/api/v1/devices/{other_id}/command-schedules",
        json={"name": "theirs", "schedule_at": iso(at)},
    )

    resp = device.get("/api/v1/device/command-schedules")
    assert resp.status_code == 200, resp.text
    mirrored = {item["id"]: item for item in resp.json()["items"]}
    # Its own enabled schedules only (soonest first), with what firing them offline needs.
    assert list(mirrored) == [once["id"], light["id"], snoozy["id"]]
    assert paused["id"] not in mirrored
    assert ts(mirrored[once["id"]]["next_fire_at"]) == at
    assert mirrored[once["id"]]["cron"] is None and ts(mirrored[once["id"]]["schedule_at"]) == at
    assert {k: mirrored[light["id"]][k] for k in ("name", "params", *cron)} == {
        "name": "light", "params": {"on": 1}, **cron,
    }  # fmt: skip
    assert ts(mirrored[light["id"]]["next_fire_at"]) == ts(light["next_fire_at"])
    assert [mirrored[i]["snoozed"] for i in mirrored] == [False, False, True]
    assert ts(mirrored[snoozy["id"]]["next_fire_at"]) == ts(snoozy["next_fire_at"]) + timedelta(
        seconds=60
    )
    assert [i["name"] for i in other.get("/api/v1/device/command-schedules").json()["items"]] == [
        "theirs"
    ]

    # The fired command tells the device which fire it is: the schedule and its due time.
    items = eventually(lambda: poll(device, wait=10))
    assert [(c["name"], c["schedule_id"]) for c in items] == [("alarm_on", once["id"])]
    assert ts(items[0]["fire_at"]) == at
    fired = command(tenant.viewer, device_id, items[0]["id"])
    assert fired["schedule_id"] == once["id"] and ts(fired["schedule_at"]) == at
    # A one-off that fired is no longer mirrored.
    left = device.get("/api/v1/device/command-schedules").json()["items"]
    assert [i["id"] for i in left] == [light["id"], snoozy["id"]]


# -- refusals -----------------------------------------------------------------------------------


def test_bad_input_gets_clear_errors(tenant: Tenant, admin: Api) -> None:
    device_id, device = make_device(tenant)
    base = f"/api/v1/devices/{device_id}"
    op = tenant.operator
    assert_problem(op.post("/api/v1/devices/nope/commands", json={"name": "x"}), 404, "no device")
    assert_problem(op.get(f"{base}/commands/cmd-nope"), 404, "no command")
    assert_problem(tenant.viewer.post(f"{base}/commands", json={"name": "x"}), 403, "operator")
    assert_problem(op.post(f"{base}/commands", json={"name": ""}), 422)
    assert_problem(op.post(f"{base}/commands", json={"name": "x", "params": [1]}), 422)
    assert_problem(op.post(f"{base}/commands", json={"name": "x", "timeout_s": 0}), 422)
    assert_problem(op.post(f"{base}/commands", json={"name": "x", "colour": 1}), 422)
    at = datetime.now(UTC) + timedelta(hours=1)
    assert_problem(
        op.post(
            f"{base}/commands",
            json={"name": "x", "schedule_at": iso(at), "expires_at": iso(at)},
        ),
        422,
        "after schedule_at",
    )
    schedules = f"{base}/command-schedules"
    assert_problem(
        op.post(schedules, json={"name": "x", "cron": "0 18 * *"}), 422, "needs 5 fields"
    )
    assert_problem(op.post(schedules, json={"name": "x", "cron": "0 18 * * 9"}), 422, "day-of-week")
    assert_problem(
        op.post(schedules, json={"name": "x", "cron": "0 18 * * *", "timezone": "Mars/Olympus"}),
        422,
        "unknown time zone",
    )
    assert_problem(op.post(schedules, json={"name": "x"}), 422, "either")
    assert_problem(
        op.post(schedules, json={"name": "x", "cron": "* * * * *", "schedule_at": iso(at)}),
        422,
        "either",
    )
    assert_problem(op.post("/api/v1/command-schedules/sch-nope/snooze", json={"seconds": 1}), 404)

    # Another tenant's device (the superuser's default tenant) does not exist for this one.
    foreign = unique("dev")
    assert admin.post("/api/v1/devices", json={"id": foreign}).status_code == 201
    assert_problem(op.post(f"/api/v1/devices/{foreign}/commands", json={"name": "x"}), 404)
    foreign_cmd = admin.post(f"/api/v1/devices/{foreign}/commands", json={"name": "x"}).json()
    assert_problem(op.get(f"/api/v1/devices/{foreign}/commands/{foreign_cmd['id']}"), 404)
    # …and a device cannot answer another device's command.
    answer = device.post(
        f"/api/v1/device/commands/{foreign_cmd['id']}/response", json={"status": "SUCCEEDED"}
    )
    assert_problem(answer, 404, "no command")
    assert (
        admin.get(f"/api/v1/devices/{foreign}/commands/{foreign_cmd['id']}").json()["status"]
        == "QUEUED"
    )

    # Device-side refusals.
    mine = send(op, device_id)
    url = f"/api/v1/device/commands/{mine['id']}/response"
    assert_problem(device.post(url, json={"status": "DONE"}), 422)
    queued_answer = device.post(url, json={"status": "IN_PROGRESS"})
    assert_problem(queued_answer, 409, "QUEUED to DELIVERED")
    assert_problem(tenant.anonymous.get("/api/v1/device/commands"), 401)
    assert_problem(op.get("/api/v1/device/commands"), 403)
