"""Commands over MQTT: paho clients play devices against a running ``roost serve`` (SQLite and
PostgreSQL); every outcome is read back over HTTP. Includes a restart of the server mid-way."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from tests.support import (
    Api,
    Device,
    RoostServer,
    admin_client,
    eventually,
    free_port,
    fresh_postgres_database,
    make_device,
    postgres_reachable,
    skip_or_fail,
    unique,
)

TIMEOUT = 20
ENV = {"ROOST_TIMER_CHECK_S": "0.2"}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def mqtt_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RoostServer]:
    """A Roost with its MQTT listener on and quick timers, per backend, shared by this module."""
    tmp = tmp_path_factory.mktemp(f"roost-commands-{request.param}")
    if request.param == "postgresql":
        reason = postgres_reachable()
        if reason:
            skip_or_fail(reason)
        with fresh_postgres_database() as url:
            server = RoostServer(tmp, database_url=url, mqtt_port=free_port(), env_overrides=ENV)
            yield from _run(server)
    else:
        yield from _run(RoostServer(tmp, mqtt_port=free_port(), env_overrides=ENV))


def _run(server: RoostServer) -> Iterator[RoostServer]:
    server.start()
    try:
        yield server
    finally:
        server.stop()
    assert not server.unhandled_errors(), server.unhandled_errors()
    log = server.log_path.read_text(errors="replace")
    assert "ERROR roost.commands" not in log, log
    for module in ("service.py", "schedules.py", "mqtt.py", "store.py"):
        assert f"commands/{module}" not in log, log


@pytest.fixture(scope="module")
def admin(mqtt_server: RoostServer) -> Iterator[Api]:
    with admin_client(mqtt_server) as api:
        yield api


@pytest.fixture
def device(admin: Api) -> Device:
    return make_device(admin)


def iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def send(admin: Api, device_id: str, **body: Any) -> dict[str, Any]:
    resp = admin.post(f"/api/v1/devices/{device_id}/commands", json={"name": "reboot", **body})
    assert resp.status_code == 201, resp.text
    record: dict[str, Any] = resp.json()
    return record


def command(admin: Api, device_id: str, command_id: str) -> dict[str, Any]:
    resp = admin.get(f"/api/v1/devices/{device_id}/commands/{command_id}")
    assert resp.status_code == 200, resp.text
    record: dict[str, Any] = resp.json()
    return record


def status_becomes(admin: Api, device_id: str, command_id: str, status: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        record = command(admin, device_id, command_id)
        return record if record["status"] == status else None

    result: dict[str, Any] = eventually(check)
    return result


class Client:
    """A paho client playing a device; what it receives is kept, and it may answer by itself."""

    def __init__(
        self, server: RoostServer, protocol: int, client_id: str = "", *, clean: bool = True
    ) -> None:
        self.server = server
        self.protocol = protocol
        self.clean = clean
        self.paho = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id or unique("c"),
            protocol=protocol,
            # MQTT 3.1.1 takes its clean-session flag here; v5 takes clean_start at connect.
            clean_session=None if protocol == mqtt.MQTTv5 else clean,
        )
        self.connected = threading.Event()
        self.acks: dict[int, Any] = {}
        self.subscribed: dict[int, Any] = {}
        self.messages: list[tuple[str, Any]] = []
        self.answer: Callable[[str, Any], Any] | None = None
        self.paho.on_connect = lambda c, u, f, reason, p: self.connected.set()
        self.paho.on_publish = self._on_publish
        self.paho.on_subscribe = self._on_subscribe
        self.paho.on_message = self._on_message

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        self.acks[mid] = reason

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        self.subscribed[mid] = reasons

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        payload = json.loads(msg.payload)
        self.messages.append((msg.topic, payload))
        if self.answer is not None and not msg.topic.endswith("/rejected"):
            reply = self.answer(msg.topic, payload)
            if reply is not None:
                self.paho.publish(f"{msg.topic}/response", json.dumps(reply), 1)

    def connect(self, device: Device) -> Client:
        self.paho.username_pw_set(device.id, device.token)
        if self.protocol == mqtt.MQTTv5:
            port = self.server.mqtt_port
            self.paho.connect("127.0.0.1", port, keepalive=30, clean_start=self.clean)
        else:
            self.paho.connect("127.0.0.1", self.server.mqtt_port, keepalive=30)
        self.paho.loop_start()
        assert self.connected.wait(TIMEOUT), "no CONNACK"
        return self

    def subscribe(self, topic_filter: str) -> None:
        _, mid = self.paho.subscribe(topic_filter, 1)
        eventually(lambda: mid in self.subscribed)

    def publish(self, topic: str, payload: bytes | str) -> int:
        """Publish at QoS 1 and answer the PUBACK's reason code (0 for 3.1.1)."""
        info = self.paho.publish(topic, payload, 1)
        info.wait_for_publish(TIMEOUT)
        reason = self.acks.get(info.mid)
        return int(reason.value) if reason is not None and hasattr(reason, "value") else 0

    def commands(self) -> list[dict[str, Any]]:
        return [p for t, p in self.messages if not t.endswith("/rejected")]

    def close(self) -> None:
        self.paho.disconnect()
        self.paho.loop_stop()


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    made: list[Client] = []
    yield made
    for client in made:
        client.close()


def connect(
    clients: list[Client], server: RoostServer, device: Device, protocol: int = mqtt.MQTTv5,
    **kwargs: Any,
) -> Client:  # fmt: skip
    client = Client(server, protocol, **kwargs)
    clients.append(client)
    return client.connect(device)


# -- delivery -----------------------------------------------------------------------------------


def test_a_command_queued_while_offline_goes_out_on_subscribe_and_the_answer_completes_it(
    mqtt_server: RoostServer, admin: Api, device: Device, clients: list[Client]
) -> None:
    created = send(admin, device.id, name="set_light", params={"on": True})
    assert created["status"] == "QUEUED"  # never connected
    client = connect(clients, mqtt_server, device)
    assert command(admin, device.id, created["id"])["status"] == "QUEUED"  # not subscribed
    client.subscribe(f"devices/{device.id}/commands/+")
    eventually(client.commands)
    topic, payload = client.messages[0]
    assert topic == f"devices/{device.id}/commands/{created['id']}"
    assert payload == {"id": created["id"], "name": "set_light", "params": {"on": True}}
    delivered = status_becomes(admin, device.id, created["id"], "DELIVERED")  # the PUBACK
    assert delivered["sent_at"] and delivered["delivered_at"]

    reason = client.publish(
        f"{topic}/response", json.dumps({"status": "SUCCEEDED", "result": {"brightness": 80}})
    )
    assert reason == 0
    done = command(admin, device.id, created["id"])  # PUBACK came after the commit
    assert done["status"] == "SUCCEEDED" and done["result"] == {"brightness": 80}


def test_a_persistent_session_gets_commands_queued_while_it_was_away(
    mqtt_server: RoostServer, admin: Api, device: Device, clients: list[Client]
) -> None:
    first = connect(clients, mqtt_server, device, mqtt.MQTTv311, client_id="kiosk", clean=False)
    first.subscribe(f"devices/{device.id}/commands/#")
    first.close()
    clients.remove(first)
    created = send(admin, device.id, name="ping")

    # Back with the same session and no new SUBSCRIBE: the reconnect alone brings the command.
    again = connect(clients, mqtt_server, device, mqtt.MQTTv311, client_id="kiosk", clean=False)
    again.answer = lambda topic, payload: {"status": "SUCCEEDED", "result": "pong"}
    done = status_becomes(admin, device.id, created["id"], "SUCCEEDED")
    assert done["result"] == "pong"
    assert [c["id"] for c in again.commands()] == [created["id"]]


def test_an_expired_command_is_never_delivered(
    mqtt_server: RoostServer, admin: Api, device: Device, clients: list[Client]
) -> None:
    expires = datetime.now(UTC) + timedelta(seconds=1.5)
    stale = send(admin, device.id, name="stale", expires_at=iso(expires))
    expired = status_becomes(admin, device.id, stale["id"], "EXPIRED")
    assert expired["sent_at"] is None and ts(expired["completed_at"]) >= expires

    client = connect(clients, mqtt_server, device)
    client.subscribe(f"devices/{device.id}/commands/+")
    fresh = send(admin, device.id, name="fresh")
    # The fresh command arriving shows the subscription works; the expired one never came.
    eventually(client.commands)
    assert [c["id"] for c in client.commands()] == [fresh["id"]]


def test_an_unanswered_command_times_out_and_a_late_answer_is_refused(
    mqtt_server: RoostServer, admin: Api, device: Device, clients: list[Client]
) -> None:
    client = connect(clients, mqtt_server, device)
    client.subscribe(f"devices/{device.id}/commands/#")
    created = send(admin, device.id, timeout_s=1)
    eventually(client.commands)
    done = status_becomes(admin, device.id, created["id"], "TIMED_OUT")
    assert ts(done["completed_at"]) >= ts(done["sent_at"]) + timedelta(seconds=1)

    topic = f"devices/{device.id}/commands/{created['id']}/response"
    assert client.publish(topic, json.dumps({"status": "SUCCEEDED"})) == 0x99
    rejected = eventually(lambda: [p for t, p in client.messages if t == f"{topic}/rejected"])
    assert "TIMED_OUT" in rejected[0]["error"] and rejected[0]["id"] == created["id"]
    assert command(admin, device.id, created["id"])["status"] == "TIMED_OUT"


def test_wait_answers_the_device_response_when_it_is_online(
    mqtt_server: RoostServer, admin: Api, device: Device, clients: list[Client]
) -> None:
    client = connect(clients, mqtt_server, device)
    client.answer = lambda topic, payload: {"status": "SUCCEEDED", "result": payload["params"]}
    client.subscribe(f"devices/{device.id}/commands/+")
    resp = admin.post(
        f"/api/v1/devices/{device.id}/commands",
        params={"wait": 15},
        json={"name": "read", "params": {"register": 7}},
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "SUCCEEDED" and resp.json()["result"] == {"register": 7}

    client.answer = lambda topic, payload: {"status": "FAILED", "result": "no such register"}
    resp = admin.post(
        f"/api/v1/devices/{device.id}/commands", params={"wait": 15}, json={"name": "read"}
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "FAILED" and resp.json()["result"] == "no such register"


# -- refusals -----------------------------------------------------------------------------------


def test_answers_to_unknown_or_other_devices_commands_are_refused(
    mqtt_server: RoostServer, admin: Api, device: Device, clients: list[Client]
) -> None:
    other = make_device(admin)
    theirs = send(admin, other.id)
    mine = send(admin, device.id)
    v5 = connect(clients, mqtt_server, device)
    base = f"devices/{device.id}/commands"
    ok = json.dumps({"status": "SUCCEEDED"})
    assert v5.publish(f"{base}/{theirs['id']}/response", ok) == 0x99
    assert v5.publish(f"{base}/cmd-unknown/response", ok) == 0x99
    assert v5.publish(f"{base}/{mine['id']}/response", b"not json") == 0x99
    assert v5.publish(f"{base}/{mine['id']}/response", json.dumps({"status": "DONE"})) == 0x99
    assert v5.publish(f"{base}/{mine['id']}/response", json.dumps([1])) == 0x99
    # QUEUED (never sent) cannot be answered either.
    assert v5.publish(f"{base}/{mine['id']}/response", ok) == 0x99
    assert command(admin, other.id, theirs["id"])["status"] == "QUEUED"
    assert command(admin, device.id, mine["id"])["status"] == "QUEUED"

    # MQTT 3.1.1 has no reason codes: the refusal arrives on …/response/rejected.
    v3 = connect(clients, mqtt_server, device, mqtt.MQTTv311)
    v3.subscribe(f"devices/{device.id}/commands/+/response/rejected")
    v3.publish(f"{base}/cmd-unknown/response", ok)
    rejected = eventually(lambda: v3.messages)
    assert rejected[0][0] == f"{base}/cmd-unknown/response/rejected"
    assert "no command 'cmd-unknown'" in rejected[0][1]["error"]


# -- durability ---------------------------------------------------------------------------------


def test_a_restart_keeps_queued_commands_schedules_and_timeouts(
    mqtt_server: RoostServer, admin: Api, clients: list[Client]
) -> None:
    busy, away = make_device(admin), make_device(admin)
    client = connect(clients, mqtt_server, busy)
    client.subscribe(f"devices/{busy.id}/commands/+")
    pending = send(admin, busy.id, name="slow", timeout_s=4)
    status_becomes(admin, busy.id, pending["id"], "DELIVERED")
    client.close()
    clients.remove(client)

    queued = send(admin, away.id, name="queued")
    at = datetime.now(UTC) + timedelta(seconds=3)
    later = send(admin, away.id, name="later", schedule_at=iso(at))
    resp = admin.post(
        f"/api/v1/devices/{away.id}/command-schedules",
        json={"name": "from_schedule", "schedule_at": iso(at)},
    )
    assert resp.status_code == 201, resp.text

    mqtt_server.stop()
    mqtt_server.start()

    # The timeout set before the restart still fires.
    timed_out = status_becomes(admin, busy.id, pending["id"], "TIMED_OUT")
    assert ts(timed_out["completed_at"]) >= ts(timed_out["sent_at"]) + timedelta(seconds=4)
    # The queued, the scheduled and the schedule's commands all reach the device.
    device = connect(clients, mqtt_server, away)
    device.answer = lambda topic, payload: {"status": "SUCCEEDED", "result": payload["name"]}
    device.subscribe(f"devices/{away.id}/commands/+")
    names = eventually(
        lambda: len(device.commands()) == 3 and sorted(c["name"] for c in device.commands())
    )
    assert names == ["from_schedule", "later", "queued"]
    for record in (queued, later):
        done = status_becomes(admin, away.id, record["id"], "SUCCEEDED")
        assert done["result"] == record["name"]
    assert ts(command(admin, away.id, later["id"])["sent_at"]) >= at
