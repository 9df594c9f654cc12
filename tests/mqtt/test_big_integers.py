"""One rule for JSON integers on the MQTT doors (:mod:`roost.core.json`), with paho devices (MQTT 5
and 3.1.1) against a running ``roost serve`` on each backend: an integer outside -2**63 .. 2**64-1
in a command response, a job update, a state report, telemetry or an event is refused — PUBACK
0x99 with the field in the reason string for MQTT 5, the room's ``…/rejected`` topic where it has
one — and nothing is stored as a float; the edges are stored and read back exactly."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties as PahoProperties

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

TIMEOUT = 15
PAYLOAD_FORMAT_INVALID = 0x99
SEED = 1526717967
BIG = 2**64
SMALL = -(2**63) - 1
EDGES = {"max_signed": 2**63 - 1, "min_signed": -(2**63), "max_unsigned": 2**64 - 1}
V1 = "/api/v1"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def mqtt_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RoostServer]:
    """A Roost with its MQTT listener on, per backend, shared by this module."""
    tmp = tmp_path_factory.mktemp(f"roost-bigint-{request.param}")
    env = {"ROOST_TIMER_CHECK_S": "0.2"}
    if request.param == "postgresql":
        reason = postgres_reachable()
        if reason:
            skip_or_fail(reason)
        with fresh_postgres_database() as url:
            server = RoostServer(tmp, database_url=url, mqtt_port=free_port(), env_overrides=env)
            with server.running():
                yield server
    else:
        with RoostServer(tmp, mqtt_port=free_port(), env_overrides=env).running() as server:
            yield server


@pytest.fixture(scope="module")
def admin(mqtt_server: RoostServer) -> Iterator[Api]:
    with admin_client(mqtt_server) as api:
        yield api


class Client:
    """A paho device: PUBACK reasons and reason strings, and what it received, are kept."""

    def __init__(self, server: RoostServer, device: Device, protocol: int) -> None:
        self.device = device
        self.protocol = protocol
        v311 = {"clean_session": True} if protocol == mqtt.MQTTv311 else {}
        self.paho = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=unique("c"),
            protocol=protocol,
            **v311,  # type: ignore[arg-type]
        )
        self.paho.username_pw_set(device.id, device.token)
        self.connected = threading.Event()
        self.acks: dict[int, tuple[int, str]] = {}
        self.subacks: set[int] = set()
        self.messages: list[tuple[str, Any]] = []
        self._lock = threading.Lock()
        self.paho.on_connect = lambda c, u, f, reason, p: self.connected.set()
        self.paho.on_publish = self._on_publish
        self.paho.on_subscribe = lambda c, u, mid, codes, p: self.subacks.add(mid)
        self.paho.on_message = self._on_message
        if protocol == mqtt.MQTTv5:
            props = PahoProperties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 0
            self.paho.connect("127.0.0.1", server.mqtt_port, 30, properties=props)
        else:
            self.paho.connect("127.0.0.1", server.mqtt_port, 30)
        self.paho.loop_start()
        assert self.connected.wait(TIMEOUT), "no CONNACK"

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        text = getattr(props, "ReasonString", "") if props is not None else ""
        self.acks[mid] = (int(getattr(reason, "value", reason)), text)

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self._lock:
            self.messages.append((msg.topic, json.loads(msg.payload)))

    def subscribe(self, suffix: str) -> None:
        _, mid = self.paho.subscribe(f"devices/{self.device.id}/{suffix}", 1)
        assert eventually(lambda: mid in self.subacks), "no SUBACK"

    def publish(self, suffix: str, body: Any) -> tuple[int, str]:
        """Publish ``body`` (the standard library writes any integer) at QoS 1; the PUBACK."""
        info = self.paho.publish(f"devices/{self.device.id}/{suffix}", json.dumps(body), 1)
        info.wait_for_publish(TIMEOUT)
        assert eventually(lambda: info.mid in self.acks), "no PUBACK"
        return self.acks[info.mid]

    def received(self, suffix: str) -> Any:
        topic = f"devices/{self.device.id}/{suffix}"

        def first() -> Any:
            with self._lock:
                return next((p for t, p in self.messages if t == topic), None)

        return eventually(first)

    def close(self) -> None:
        self.paho.disconnect()
        self.paho.loop_stop()


@pytest.fixture(params=[mqtt.MQTTv5, mqtt.MQTTv311], ids=["v5", "v311"])
def device(
    request: pytest.FixtureRequest, admin: Api, mqtt_server: RoostServer
) -> Iterator[Client]:
    client = Client(mqtt_server, make_device(admin), request.param)
    yield client
    client.close()


def refused(client: Client, ack: tuple[int, str], field: str) -> None:
    """MQTT 5 got 0x99 naming ``field``; 3.1.1 got its PUBACK (it learns on a rejected topic)."""
    code, reason = ack
    if client.protocol == mqtt.MQTTv5:
        assert code == PAYLOAD_FORMAT_INVALID, ack
        assert field in reason and "18446744073709551615" in reason, reason
    else:
        assert code == 0, ack


def command(admin: Api, device_id: str, **body: Any) -> str:
    resp = admin.post(f"{V1}/devices/{device_id}/commands", json={"name": "read", **body})
    assert resp.status_code == 201, resp.text
    command_id: str = resp.json()["id"]
    return command_id


def get(admin: Api, path: str) -> Any:
    resp = admin.get(f"{V1}{path}")
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_a_command_response_beyond_64_bits_is_refused(admin: Api, device: Client) -> None:
    device_id = device.device.id
    device.subscribe("commands/#")
    command_id = command(admin, device_id)
    ack = device.publish(
        f"commands/{command_id}/response", {"status": "SUCCEEDED", "result": {"count": BIG}}
    )
    refused(device, ack, "result.count")
    rejection = device.received(f"commands/{command_id}/response/rejected")
    assert "result.count" in rejection["error"], rejection
    record = get(admin, f"/devices/{device_id}/commands/{command_id}")
    assert record["status"] != "SUCCEEDED" and record["result"] is None

    assert device.publish(
        f"commands/{command_id}/response", {"status": "SUCCEEDED", "result": EDGES}
    ) == (0, "")
    record = get(admin, f"/devices/{device_id}/commands/{command_id}")
    assert (record["status"], record["result"]) == ("SUCCEEDED", EDGES)


def test_a_reported_state_beyond_64_bits_is_refused(admin: Api, device: Client) -> None:
    device_id = device.device.id
    device.subscribe("state/rejected")
    refused(device, device.publish("state/reported", {"meter": {"total": SMALL}}), "meter.total")
    assert "meter.total" in device.received("state/rejected")["message"]
    assert get(admin, f"/devices/{device_id}/state")["reported"] == {}

    assert device.publish("state/reported", {"meter": EDGES}) == (0, "")
    assert get(admin, f"/devices/{device_id}/state")["reported"] == {"meter": EDGES}


def test_a_job_update_beyond_64_bits_is_refused(admin: Api, device: Client) -> None:
    device_id = device.device.id
    resp = admin.post(f"{V1}/jobs", json={"document": EDGES, "targets": {"devices": [device_id]}})
    assert resp.status_code == 201, resp.text
    job_id = resp.json()["id"]
    with Api(str(admin.base_url), device.device.token) as http_device:
        jobs = eventually(lambda: http_device.get(f"{V1}/device/jobs").json()["jobs"])
    assert [j["document"] for j in jobs] == [EDGES]
    device.subscribe(f"jobs/{job_id}/update/rejected")
    ack = device.publish(
        f"jobs/{job_id}/update", {"status": "IN_PROGRESS", "status_details": {"bytes": BIG}}
    )
    refused(device, ack, "status_details.bytes")
    rejection = device.received(f"jobs/{job_id}/update/rejected")
    assert rejection["code"] == "InvalidRequest" and "status_details.bytes" in rejection["message"]
    execution = get(admin, f"/jobs/{job_id}/executions/{device_id}")
    assert execution["status"] == "QUEUED" and execution["status_details"] is None

    ack = device.publish(
        f"jobs/{job_id}/update", {"status": "IN_PROGRESS", "status_details": EDGES}
    )
    assert ack == (0, "")
    execution = get(admin, f"/jobs/{job_id}/executions/{device_id}")
    assert (execution["status"], execution["status_details"]) == ("IN_PROGRESS", EDGES)


def test_telemetry_and_events_beyond_64_bits_are_refused(admin: Api, device: Client) -> None:
    device_id = device.device.id
    ack = device.publish("events", [{"event": "meter", "ts": SEED}, {"event": "meter", "n": BIG}])
    refused(device, ack, "item 1 n")
    ack = device.publish("telemetry", {"sensor_id": "t", "timestamp": SEED, "value": BIG})
    refused(device, ack, "item 0 value")
    ack = device.publish("telemetry", [{"ts": SEED, "big": SMALL}])
    refused(device, ack, "item 0 big")

    assert device.publish("events", {"event": "meter", "ts": SEED, **EDGES}) == (0, "")
    assert device.publish("telemetry", {"sensor_id": "t", "timestamp": SEED, "value": 1e20}) == (
        0,
        "",
    )
    events = get(admin, f"/devices/{device_id}/events?type=meter")["items"]
    assert [{k: e["body"].get(k) for k in EDGES} for e in events] == [EDGES]
    points = get(admin, f"/devices/{device_id}/telemetry?sensor=t")["items"]
    assert [p["value"] for p in points] == [1e20]
    sensors = [s["id"] for s in get(admin, f"/devices/{device_id}/sensors")["items"]]
    assert "big" not in sensors  # the refused message created nothing
