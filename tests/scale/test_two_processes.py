"""Two ``roost serve`` processes on one PostgreSQL and one NATS: the calls go to process A, the
device holds its MQTT connection to process B, and still gets what A's calls send it.

Commands (``?wait=`` included: the device's answer arrives at B and wakes A's waiting request),
desired-state deltas and job notifications are relayed over the bus to the process holding the
connection; a token revoked through A closes the device's connection on B. Each outcome is
awaited with a deadline of a few seconds: before the relay, none of them ever arrived.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
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
    private_nats,
    skip_or_fail,
    unique,
)

V1 = "/api/v1"
# A relayed delivery takes milliseconds; the deadline only bounds a failure on a loaded machine.
DELIVERY_DEADLINE_S = 5.0
CONNECT_TIMEOUT_S = 10.0


@dataclass
class Pair:
    """Process A (where the calls go) and process B (where the device connects)."""

    a: RoostServer
    b: RoostServer


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    reason = postgres_reachable()
    if reason:
        skip_or_fail(reason)
    with (
        fresh_postgres_database() as database_url,
        private_nats(tmp_path_factory.mktemp("nats")) as nats_url,
    ):
        servers = [
            RoostServer(
                tmp_path_factory.mktemp(f"roost-{name}"),
                database_url=database_url,
                mqtt_port=free_port(),
                env_overrides={"ROOST_BUS_URL": nats_url},
            )
            for name in ("a", "b")
        ]
        # One after the other: the first one upgrades the schema, the second finds it current.
        for server in servers:
            server.start()
        try:
            yield Pair(*servers)
        finally:
            for server in servers:
                server.stop()
        for server in servers:
            log = server.log_path.read_text(errors="replace")
            assert "Traceback" not in log, log
            assert not server.unhandled_errors()


@pytest.fixture(scope="module")
def admin(pair: Pair) -> Iterator[Api]:
    """The superuser, talking to process A only."""
    with admin_client(pair.a) as api:
        yield api


class DeviceOnB:
    """A paho MQTT 5 device connected to process B; it answers every command it gets."""

    def __init__(self, server: RoostServer, device: Device) -> None:
        self.id = device.id
        self.lock = threading.Lock()
        self.received: list[tuple[str, Any]] = []
        self.disconnected = threading.Event()
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2, client_id=unique("c"), protocol=paho.MQTTv5
        )
        self.client.username_pw_set(device.id, device.token)
        connected = threading.Event()
        subscribed = threading.Event()
        self.client.on_connect = lambda c, u, flags, reason, props: connected.set()
        self.client.on_subscribe = lambda c, u, mid, reasons, props: subscribed.set()
        self.client.on_disconnect = lambda c, u, flags, reason, props: self.disconnected.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", server.mqtt_port, keepalive=30)
        self.client.loop_start()
        assert connected.wait(CONNECT_TIMEOUT_S), "no CONNACK from process B"
        base = f"devices/{device.id}"
        self.client.subscribe(
            [(f"{base}/commands/+", 1), (f"{base}/state/#", 1), (f"{base}/jobs/#", 1)]
        )
        assert subscribed.wait(CONNECT_TIMEOUT_S), "no SUBACK from process B"

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        body = json.loads(msg.payload)
        with self.lock:
            self.received.append((msg.topic, body))
        parts = msg.topic.split("/")
        if len(parts) == 4 and parts[2] == "commands":  # a command: answer it
            answer = {"status": "SUCCEEDED", "result": {"echo": body.get("params")}}
            client.publish(f"{msg.topic}/response", json.dumps(answer), qos=1)

    def messages(self, suffix: str) -> list[Any]:
        topic = f"devices/{self.id}/{suffix}"
        with self.lock:
            return [body for t, body in self.received if t == topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def device(pair: Pair, admin: Api) -> Iterator[tuple[Device, DeviceOnB]]:
    """A device connected to B, once A sees it connected (the device row counts connections)."""
    made = make_device(admin)
    on_b = DeviceOnB(pair.b, made)
    try:
        eventually(lambda: admin.get(f"{V1}/devices/{made.id}/presence").json()["connected"])
        yield made, on_b
    finally:
        on_b.close()


def test_a_command_waited_for_on_a_is_answered_by_the_device_on_b(
    admin: Api, device: tuple[Device, DeviceOnB]
) -> None:
    made, on_b = device
    resp = admin.post(
        f"{V1}/devices/{made.id}/commands",
        params={"wait": 5},
        json={"name": "reboot", "params": {"delay": 3}},
    )
    assert resp.status_code == 200, resp.text
    command = resp.json()
    assert command["status"] == "SUCCEEDED"
    assert command["result"] == {"echo": {"delay": 3}}
    assert [m["id"] for m in on_b.messages(f"commands/{command['id']}")] == [command["id"]]


def test_a_desired_change_on_a_reaches_the_device_on_b_as_a_delta(
    admin: Api, device: tuple[Device, DeviceOnB]
) -> None:
    made, on_b = device
    resp = admin.patch(f"{V1}/devices/{made.id}/state", json={"desired": {"light": "on"}})
    assert resp.status_code == 200, resp.text
    deltas = eventually(lambda: on_b.messages("state/delta"), timeout=DELIVERY_DEADLINE_S)
    assert [(d["version"], d["delta"]) for d in deltas] == [(1, {"light": "on"})]
    assert on_b.messages("state/desired")[0]["desired"] == {"light": "on"}


def test_a_job_created_on_a_notifies_the_device_on_b(
    admin: Api, device: tuple[Device, DeviceOnB]
) -> None:
    made, on_b = device
    resp = admin.post(
        f"{V1}/jobs", json={"targets": {"devices": [made.id]}, "document": {"firmware": "2.0"}}
    )
    assert resp.status_code == 201, resp.text
    job_id = resp.json()["id"]

    def notified() -> list[Any]:
        lists = on_b.messages("jobs/notify")
        return [j for j in (lists[-1]["jobs"] if lists else []) if j["job_id"] == job_id]

    jobs = eventually(notified, timeout=DELIVERY_DEADLINE_S)
    assert jobs[0]["document"] == {"firmware": "2.0"}


def test_a_token_revoked_on_a_disconnects_the_device_on_b(
    pair: Pair, admin: Api, device: tuple[Device, DeviceOnB]
) -> None:
    made, on_b = device
    assert not on_b.disconnected.is_set()
    resp = admin.delete(f"{V1}/devices/{made.id}/tokens/{made.token_id}")
    assert resp.status_code == 204, resp.text
    assert on_b.disconnected.wait(DELIVERY_DEADLINE_S), "B kept the revoked device connected"
    # And B refuses the token from now on.
    again = paho.Client(
        paho.CallbackAPIVersion.VERSION2, client_id=unique("c"), protocol=paho.MQTTv5
    )
    again.username_pw_set(made.id, made.token)
    refused: list[Any] = []
    answered = threading.Event()

    def on_connect(c: paho.Client, u: Any, flags: Any, reason: Any, props: Any) -> None:
        refused.append(reason)
        answered.set()

    again.on_connect = on_connect
    again.connect("127.0.0.1", pair.b.mqtt_port, keepalive=30)
    again.loop_start()
    try:
        assert answered.wait(CONNECT_TIMEOUT_S)
        assert refused[0].is_failure, refused
    finally:
        again.loop_stop()
        again.disconnect()


def test_a_device_away_from_every_process_answers_a_wait_at_once(admin: Api) -> None:
    made = make_device(admin)
    started = time.monotonic()
    resp = admin.post(f"{V1}/devices/{made.id}/commands", params={"wait": 30}, json={"name": "x"})
    assert resp.status_code == 202, resp.text
    assert resp.json()["status"] == "QUEUED"
    # Not a timing measurement: a wait that was not cut short would take the whole 30 s.
    assert time.monotonic() - started < 25
