"""Device state over MQTT against a running ``roost serve``: paho devices receive deltas when
desired changes, on subscribe and on every reconnect, report and ask for their document, and
see their bad reports refused (MQTT 5 reason code and the ``…/state/rejected`` topic)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from tests.mqtt_device import MqttDevice as Client
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

TIMEOUT = 10
PAYLOAD_FORMAT_INVALID = 0x99
ENV = {"ROOST_TIMER_CHECK_S": "0.2"}


@pytest.fixture(scope="module")
def mqtt_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoostServer]:
    """A Roost (SQLite) with its MQTT listener on, shared by this module."""
    with RoostServer(
        tmp_path_factory.mktemp("roost-state-mqtt"), mqtt_port=free_port(), env_overrides=ENV
    ).running() as server:
        yield server


@pytest.fixture(scope="module")
def admin(mqtt_server: RoostServer) -> Iterator[Api]:
    with admin_client(mqtt_server) as api:
        yield api


@pytest.fixture
def device(admin: Api) -> Device:
    return make_device(admin)


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    made: list[Client] = []
    yield made
    for client in made:
        if client.connected.is_set() and not client.disconnected.is_set():
            client.close()


def set_desired(admin: Api, device_id: str, desired: dict[str, Any], name: str = "") -> Any:
    path = f"/api/v1/devices/{device_id}/" + (f"states/{name}" if name else "state")
    resp = admin.patch(path, json={"desired": desired})
    assert resp.status_code == 200, resp.text
    return resp.json()


def get_state(admin: Api, device_id: str) -> Any:
    resp = admin.get(f"/api/v1/devices/{device_id}/state")
    assert resp.status_code == 200, resp.text
    return resp.json()


def delta_flow(server: RoostServer, admin: Api, device: Device, clients: list[Client]) -> None:
    """A desired change reaches the device as a delta and clears when it reports."""
    client = Client(server, device)
    clients.append(client)
    client.connect()
    client.subscribe("state/delta", "state/desired")
    set_desired(admin, device.id, {"light": "on", "temp": 21})
    delta = client.wait_for("state/delta")
    assert (delta["version"], delta["delta"]) == (1, {"light": "on", "temp": 21})
    assert isinstance(delta["timestamp"], int)
    desired = client.wait_for("state/desired")
    assert (desired["version"], desired["desired"]) == (1, {"light": "on", "temp": 21})

    assert client.publish("state/reported", json.dumps({"light": "on", "temp": 21})) == 0
    # Acknowledged means committed: the delta is empty at once.
    doc = get_state(admin, device.id)
    assert (doc["version"], doc["delta"], doc["reported"]) == (2, {}, {"light": "on", "temp": 21})

    client.clear()
    set_desired(admin, device.id, {"temp": 22})
    delta = client.wait_for("state/delta")
    assert (delta["version"], delta["delta"]) == (3, {"temp": 22})


def test_a_desired_change_reaches_the_device_as_a_delta_and_clears_when_reported(
    mqtt_server: RoostServer, admin: Api, device: Device, clients: list[Client]
) -> None:
    delta_flow(mqtt_server, admin, device, clients)


def test_a_clean_session_gets_the_current_delta_when_it_subscribes(
    mqtt_server: RoostServer, admin: Api, device: Device, clients: list[Client]
) -> None:
    set_desired(admin, device.id, {"mode": "eco"})  # while the device is away
    client = Client(mqtt_server, device, mqtt.MQTTv5)
    clients.append(client)
    client.connect()
    client.subscribe("state/delta")
    delta = client.wait_for("state/delta")
    assert (delta["version"], delta["delta"]) == (1, {"mode": "eco"})

    # Reconnecting with a clean session and subscribing again gives it again.
    client.close()
    client = Client(mqtt_server, device, mqtt.MQTTv5)
    clients.append(client)
    client.connect()
    client.subscribe("state/#")
    assert client.wait_for("state/delta")["delta"] == {"mode": "eco"}


def test_a_persistent_session_gets_the_current_delta_on_reconnect_without_subscribing(
    mqtt_server: RoostServer, admin: Api, device: Device, clients: list[Client]
) -> None:
    client_id = unique("persistent")
    client = Client(mqtt_server, device, mqtt.MQTTv5, client_id, clean=False)
    clients.append(client)
    client.connect(expiry=300)
    client.subscribe("state/delta")
    set_desired(admin, device.id, {"valve": "open"})
    assert client.wait_for("state/delta")["delta"] == {"valve": "open"}
    # The device does not act on it; it goes away and comes back, resuming its session. The
    # delta it already acknowledged is sent again because it is still outstanding.
    client.close()
    client = Client(mqtt_server, device, mqtt.MQTTv5, client_id, clean=False)
    clients.append(client)
    client.connect(expiry=300)
    assert client.session_present
    delta = client.wait_for("state/delta")
    assert (delta["version"], delta["delta"]) == (1, {"valve": "open"})

    # The same with MQTT 3.1.1 persistent sessions (clean session 0).
    other = make_device(admin)
    client_id = unique("persistent")
    old = Client(mqtt_server, other, mqtt.MQTTv311, client_id, clean=False)
    clients.append(old)
    old.connect()
    old.subscribe("state/delta")
    old.close()
    set_desired(admin, other.id, {"valve": "closed"})
    old = Client(mqtt_server, other, mqtt.MQTTv311, client_id, clean=False)
    clients.append(old)
    old.connect()
    assert old.session_present
    assert old.wait_for("state/delta")["delta"] == {"valve": "closed"}


def test_state_get_answers_the_whole_document(
    mqtt_server: RoostServer, admin: Api, device: Device, clients: list[Client]
) -> None:
    set_desired(admin, device.id, {"light": "off"})
    client = Client(mqtt_server, device)
    clients.append(client)
    client.connect()
    client.subscribe("state/get/accepted")
    assert client.publish("state/reported", json.dumps({"light": "on", "fw": "1.0"})) == 0
    assert client.publish("state/get", b"") == 0
    doc = client.wait_for("state/get/accepted")
    assert doc["version"] == 2
    assert doc["desired"] == {"light": "off"}
    assert doc["reported"] == {"light": "on", "fw": "1.0"}
    assert doc["delta"] == {"light": "off"}
    assert set(doc["metadata"]) == {"desired", "reported"}


def test_named_state_deltas_go_to_their_own_topic(
    mqtt_server: RoostServer, admin: Api, device: Device, clients: list[Client]
) -> None:
    client = Client(mqtt_server, device)
    clients.append(client)
    client.connect()
    client.subscribe("state/name/+/delta")
    set_desired(admin, device.id, {"level": 40}, name="lights")
    delta = client.wait_for("state/name/lights/delta")
    assert (delta["version"], delta["delta"]) == (1, {"level": 40})
    # The default state's delta is not on that filter.
    set_desired(admin, device.id, {"mode": "eco"})
    client.close()
    client = Client(mqtt_server, device)
    clients.append(client)
    client.connect()
    client.subscribe("state/name/+/delta")
    assert client.wait_for("state/name/lights/delta")["delta"] == {"level": 40}
    assert client.received("state/delta") == []

    # The device reports and reads the named state on its own topics; the delta clears.
    client.subscribe("state/name/lights/get/accepted")
    assert client.publish("state/name/lights/reported", json.dumps({"level": 40})) == 0
    assert client.publish("state/name/lights/get", b"") == 0
    doc = client.wait_for("state/name/lights/get/accepted")
    assert (doc["reported"], doc["delta"]) == ({"level": 40}, {})
    resp = admin.get(f"/api/v1/devices/{device.id}/state")
    assert resp.json()["reported"] == {}  # the default state is untouched
    # A state that does not exist is answered on get/rejected.
    client.subscribe("state/name/+/get/rejected")
    assert client.publish("state/name/nothing/get", b"") == 0
    assert client.wait_for("state/name/nothing/get/rejected")["code"] == 404


@pytest.mark.parametrize("protocol", [mqtt.MQTTv311, mqtt.MQTTv5], ids=["v311", "v5"])
def test_bad_reports_are_refused_and_published_on_rejected(
    mqtt_server: RoostServer, admin: Api, clients: list[Client], protocol: int
) -> None:
    device = make_device(admin)
    client = Client(mqtt_server, device, protocol)
    clients.append(client)
    client.connect()
    client.subscribe("state/rejected")
    deep: dict[str, Any] = {"v": 1}
    for _ in range(8):
        deep = {"n": deep}
    cases = [
        (b"{not json", 400, "malformed"),
        (b"[1, 2]", 400, "object"),
        (b'"on"', 400, "object"),
        (json.dumps(deep).encode(), 400, "deeper"),
        (json.dumps({"big": "x" * 9000}).encode(), 413, "limit"),
    ]
    for payload, code, phrase in cases:
        client.clear()
        reason = client.publish("state/reported", payload)
        if protocol == mqtt.MQTTv5:
            assert int(reason.value) == PAYLOAD_FORMAT_INVALID, (payload, reason)
        rejected = client.wait_for("state/rejected")
        assert rejected["code"] == code, rejected
        assert phrase in rejected["message"].lower(), rejected
    # Nothing was stored, and a good report still works on the same connection.
    assert get_state(admin, device.id)["version"] == 0
    assert client.publish("state/reported", b'{"ok": true}') == 0
    assert get_state(admin, device.id)["reported"] == {"ok": True}


def test_another_devices_state_topics_are_refused(
    mqtt_server: RoostServer, admin: Api, device: Device, clients: list[Client]
) -> None:
    other = make_device(admin)
    client = Client(mqtt_server, device, mqtt.MQTTv5)
    clients.append(client)
    client.connect()
    _, mid = client.paho.subscribe(f"devices/{other.id}/state/delta", 1)
    assert eventually(lambda: mid in client.subacks)
    assert client.subacks[mid][0].is_failure
    info = client.paho.publish(f"devices/{other.id}/state/reported", b'{"a": 1}', 1)
    info.wait_for_publish(TIMEOUT)
    assert eventually(lambda: info.mid in client.acks)
    assert client.acks[info.mid].is_failure
    assert get_state(admin, other.id)["version"] == 0


# Last in the module: restarts the module's server.
def test_the_last_reported_state_survives_a_restart(
    mqtt_server: RoostServer, admin: Api, device: Device, clients: list[Client]
) -> None:
    client = Client(mqtt_server, device)
    clients.append(client)
    client.connect()
    assert client.publish("state/reported", json.dumps({"fw": "2.0", "light": "on"})) == 0
    client.close()
    set_desired(admin, device.id, {"light": "off"})
    mqtt_server.stop()
    mqtt_server.start()
    with admin_client(mqtt_server) as api:
        doc = get_state(api, device.id)
    assert doc["reported"] == {"fw": "2.0", "light": "on"}
    assert (doc["version"], doc["delta"]) == (2, {"light": "off"})
    client = Client(mqtt_server, device)
    clients.append(client)
    client.connect()
    client.subscribe("state/delta")
    assert client.wait_for("state/delta")["delta"] == {"light": "off"}


def test_postgresql_delta_flow(tmp_path_factory: pytest.TempPathFactory,
                               clients: list[Client]) -> None:  # fmt: skip
    reason = postgres_reachable()
    if reason:
        skip_or_fail(reason)
    with fresh_postgres_database() as url:
        server = RoostServer(
            tmp_path_factory.mktemp("roost-state-pg"),
            database_url=url,
            mqtt_port=free_port(),
            env_overrides=ENV,
        ).start()
        try:
            with admin_client(server) as api:
                delta_flow(server, api, make_device(api), clients)
            for client in clients:
                client.close()
            clients.clear()
        finally:
            server.stop()
        assert not server.unhandled_errors()
