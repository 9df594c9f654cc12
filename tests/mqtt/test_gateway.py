"""The MQTT gateway end to end: a real ``roost serve``, real clients (paho 3.1, 3.1.1 and 5.0,
mosquitto_pub/sub, raw sockets), everything stored read back over HTTP."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties as PahoProperties

from roost.mqtt.codec import Connect, Disconnect, MQTTDecoder, Publish, Will, encode
from tests.support import (
    Api,
    Device,
    RoostServer,
    admin_client,
    eventually,
    free_port,
    make_device,
    unique,
)

MAX_PACKET = 64 * 1024
TIMEOUT = 10


@pytest.fixture(scope="module")
def mqtt_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoostServer]:
    """A Roost with its MQTT listener on, shared by this module."""
    with RoostServer(
        tmp_path_factory.mktemp("roost-mqtt"),
        mqtt_port=free_port(),
        env_overrides={"ROOST_MQTT_MAX_PACKET_BYTES": str(MAX_PACKET)},
    ).running() as server:
        yield server


@pytest.fixture(scope="module")
def admin(mqtt_server: RoostServer) -> Iterator[Api]:
    with admin_client(mqtt_server) as api:
        yield api


@pytest.fixture
def device(admin: Api) -> Device:
    return make_device(admin)


def values(admin: Api, device_id: str, sensor: str) -> list[Any]:
    resp = admin.get(
        f"/api/v1/devices/{device_id}/telemetry", params={"sensor": sensor, "order": "asc"}
    )
    assert resp.status_code == 200, resp.text
    return [item["value"] for item in resp.json()["items"]]


class Client:
    """A paho client with the callbacks' results kept for the test to look at."""

    def __init__(self, server: RoostServer, protocol: int, client_id: str = "",
                 transport: str = "tcp", clean_session: bool = True) -> None:  # fmt: skip
        self.server = server
        self.protocol = protocol
        self.transport = transport
        # MQTT 3.1.1's clean session flag is fixed when paho's client is made (v5 sets clean
        # start per CONNECT instead).
        self.clean_session = clean_session
        self.paho = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id or unique("c"),
            protocol=protocol,
            transport=transport,  # type: ignore[arg-type]
            clean_session=None if protocol == mqtt.MQTTv5 else clean_session,
        )
        self.connack: Any = None
        self.session_present: bool | None = None
        self.disconnect_reason: Any = None
        self.disconnected = threading.Event()
        self.connected = threading.Event()
        self.acks: dict[int, Any] = {}
        self.subacks: dict[int, list[Any]] = {}
        self.messages: list[Any] = []
        self.paho.on_connect = self._on_connect
        self.paho.on_disconnect = self._on_disconnect
        self.paho.on_publish = self._on_publish
        self.paho.on_subscribe = self._on_subscribe
        self.paho.on_message = lambda c, u, msg: self.messages.append(msg)
        if transport == "websockets":
            self.paho.ws_set_options(path="/mqtt")

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self.connack = reason
        self.session_present = flags.session_present
        self.connected.set()

    def _on_disconnect(self, client: Any, _: Any, flags: Any, reason: Any, props: Any) -> None:
        self.disconnect_reason = reason
        self.disconnected.set()

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        self.acks[mid] = reason

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        self.subacks[mid] = reasons

    def connect(self, username: str, password: str, *, clean: bool = True,
                expiry: int | None = None) -> Any:  # fmt: skip
        self.paho.username_pw_set(username, password)
        port = self.server.port if self.transport == "websockets" else self.server.mqtt_port
        if self.protocol == mqtt.MQTTv5:
            props = None
            if expiry is not None:
                props = PahoProperties(PacketTypes.CONNECT)
                props.SessionExpiryInterval = expiry
            self.paho.connect("127.0.0.1", port, keepalive=30, clean_start=clean, properties=props)
        else:
            assert clean == self.clean_session, "MQTT 3.1.1: pass clean_session to Client()"
            self.paho.connect("127.0.0.1", port, keepalive=30)
        self.paho.loop_start()
        assert self.connected.wait(TIMEOUT) or self.disconnected.wait(TIMEOUT), "no CONNACK"
        return self.connack

    def publish(self, topic: str, payload: bytes | str, qos: int) -> Any:
        info = self.paho.publish(topic, payload, qos)
        if qos:
            info.wait_for_publish(TIMEOUT)
            return self.acks.get(info.mid)
        return None

    def close(self) -> None:
        self.paho.disconnect()
        self.paho.loop_stop()


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    made: list[Client] = []
    yield made
    for client in made:
        client.close()


# -- paho, both versions, every QoS --------------------------------------------------------------


@pytest.mark.parametrize(
    "protocol", [mqtt.MQTTv31, mqtt.MQTTv311, mqtt.MQTTv5], ids=["v31", "v311", "v5"]
)
def test_paho_publishes_at_every_qos_and_all_is_stored(
    mqtt_server: RoostServer, admin: Api, device: Device, clients: list[Client], protocol: int
) -> None:
    client = Client(mqtt_server, protocol)
    clients.append(client)
    assert client.connect(device.id, device.token) == 0
    topic = f"devices/{device.id}/telemetry"
    client.publish(topic, json.dumps({"temperature": 20.0}), 0)
    for qos in (1, 2):  # QoS 2: PUBREC once durable, PUBCOMP on PUBREL
        reason = client.publish(topic, json.dumps({"temperature": 20.0 + qos}), qos)
        assert reason == 0 or not reason.is_failure
    # QoS 1 and 2 were acknowledged, hence durable: readable at once. QoS 0 shares their batch.
    assert sorted(values(admin, device.id, "temperature")) == [20.0, 21.0, 22.0]
    client.publish(device.id, json.dumps({"sensor_id": "door", "value": True}), 1)  # bare topic
    assert values(admin, device.id, "door") == [True]


@pytest.mark.parametrize(
    ("protocol", "code"),
    [(mqtt.MQTTv31, 0x87), (mqtt.MQTTv311, 0x87), (mqtt.MQTTv5, 0x90)],
    ids=["v31", "v311", "v5"],
)
def test_a_will_to_a_topic_the_device_may_not_use_is_refused_at_connect(
    mqtt_server: RoostServer, admin: Api, device: Device, clients: list[Client], protocol: int,
    code: int,
) -> None:  # fmt: skip
    other = make_device(admin)
    client = Client(mqtt_server, protocol)
    clients.append(client)
    client.paho.will_set(f"devices/{other.id}/events", b'{"event": "gone"}', 1)
    # 3.1 / 3.1.1: CONNACK 5, which paho reports as 0x87 (the bytes are checked below).
    assert client.connect(device.id, device.token) == code
    assert client.disconnected.wait(TIMEOUT)
    will = Will(f"devices/{other.id}/events", b'{"event": "gone"}', 1)
    connect = encode(Connect("raw-will", 4, True, 30, device.id, device.token.encode(), will), 4)
    with raw_connect(mqtt_server, connect) as sock:
        assert read_all(sock) == b"\x20\x02\x00\x05"
    resp = admin.get(f"/api/v1/devices/{other.id}/events")
    assert resp.status_code == 200 and resp.json()["items"] == []
    # The device's own topic is accepted as before.
    mine = Client(mqtt_server, protocol)
    clients.append(mine)
    mine.paho.will_set(f"devices/{device.id}/events", b'{"event": "gone"}', 1)
    assert mine.connect(device.id, device.token) == 0


def test_v5_refusals_come_back_as_reason_codes(
    mqtt_server: RoostServer, admin: Api, device: Device, clients: list[Client]
) -> None:
    client = Client(mqtt_server, mqtt.MQTTv5)
    clients.append(client)
    client.connect("JWT", device.token)
    assert client.publish("devices/someone-else/telemetry", b"{}", 1) == 0x87
    assert client.publish(f"devices/{device.id}/telemetry", b"not json", 1) == 0x99
    assert client.publish(f"devices/{device.id}/state/reported", b"[1]", 1) == 0x99
    _, mid = client.paho.subscribe(
        [(f"devices/{device.id}/commands/#", 1), ("devices/someone-else/commands/#", 1)]
    )
    assert eventually(lambda: mid in client.subacks)
    assert [int(code.value) for code in client.subacks[mid]] == [1, 0x87]
    assert not client.disconnected.is_set()


def test_v311_publish_to_another_device_closes_the_connection(
    mqtt_server: RoostServer, device: Device, clients: list[Client]
) -> None:
    client = Client(mqtt_server, mqtt.MQTTv311)
    clients.append(client)
    client.connect(device.id, device.token)
    client.paho.publish("devices/someone-else/telemetry", b"{}", 1)
    assert client.disconnected.wait(TIMEOUT)


@pytest.mark.parametrize("protocol", [mqtt.MQTTv311, mqtt.MQTTv5], ids=["v311", "v5"])
def test_bad_token_is_refused(
    mqtt_server: RoostServer, device: Device, clients: list[Client], protocol: int
) -> None:
    client = Client(mqtt_server, protocol)
    clients.append(client)
    # paho reports the 3.1.1 return code 4 as the v5 code 0x86 (the bytes are checked in
    # test_session.py).
    assert client.connect(device.id, device.token + "x") == 0x86


def test_token_of_another_device_is_not_authorized(
    mqtt_server: RoostServer, admin: Api, device: Device, clients: list[Client]
) -> None:
    other = make_device(admin)
    client = Client(mqtt_server, mqtt.MQTTv5)
    clients.append(client)
    assert client.connect(other.id, device.token) == 0x87


def test_revoking_the_token_closes_the_live_session(
    mqtt_server: RoostServer, admin: Api, device: Device, clients: list[Client]
) -> None:
    client = Client(mqtt_server, mqtt.MQTTv5)
    clients.append(client)
    assert client.connect(device.id, device.token) == 0
    resp = admin.delete(f"/api/v1/devices/{device.id}/tokens/{device.token_id}")
    assert resp.status_code in (200, 204), resp.text
    assert client.disconnected.wait(TIMEOUT)
    assert client.disconnect_reason == 0x87
    again = Client(mqtt_server, mqtt.MQTTv5)
    clients.append(again)
    assert again.connect(device.id, device.token) == 0x87  # revoked: PermissionDenied


def test_persistent_session_keeps_its_subscription(
    mqtt_server: RoostServer, device: Device, clients: list[Client]
) -> None:
    client_id = unique("persist")
    first = Client(mqtt_server, mqtt.MQTTv5, client_id)
    first.connect(device.id, device.token, clean=False, expiry=300)
    assert first.session_present is False
    _, mid = first.paho.subscribe(f"devices/{device.id}/commands/#", 1)
    assert eventually(lambda: mid in first.subacks)
    first.close()
    second = Client(mqtt_server, mqtt.MQTTv5, client_id)
    clients.append(second)
    second.connect(device.id, device.token, clean=False, expiry=300)
    assert second.session_present is True


def test_persistent_session_of_a_v311_client(
    mqtt_server: RoostServer, device: Device, clients: list[Client]
) -> None:
    client_id = unique("persist311")
    first = Client(mqtt_server, mqtt.MQTTv311, client_id, clean_session=False)
    first.connect(device.id, device.token, clean=False)
    assert first.session_present is False
    first.close()
    second = Client(mqtt_server, mqtt.MQTTv311, client_id, clean_session=False)
    clients.append(second)
    second.connect(device.id, device.token, clean=False)
    assert second.session_present is True


def test_mqtt_over_websocket(
    mqtt_server: RoostServer, admin: Api, device: Device, clients: list[Client]
) -> None:
    client = Client(mqtt_server, mqtt.MQTTv311, transport="websockets")
    clients.append(client)
    assert client.connect(device.id, device.token) == 0
    assert client.publish(f"devices/{device.id}/telemetry", b'{"ws": 7}', 1) == 0
    assert values(admin, device.id, "ws") == [7]


# -- mosquitto clients ---------------------------------------------------------------------------

needs_mosquitto = pytest.mark.skipif(
    shutil.which("mosquitto_pub") is None, reason="mosquitto clients not installed"
)


@needs_mosquitto
@pytest.mark.parametrize("version", ["mqttv31", "mqttv311", "mqttv5"])
def test_mosquitto_pub_with_jwt_and_with_the_device_id(
    mqtt_server: RoostServer, admin: Api, device: Device, version: str
) -> None:
    for n, username in enumerate(("JWT", device.id)):
        cmd = [
            "mosquitto_pub", "-h", "127.0.0.1", "-p", str(mqtt_server.mqtt_port), "-V", version,
            "-u", username, "-P", device.token, "-q", "1",
            "-t", f"devices/{device.id}/telemetry", "-m", json.dumps({"mp": n}),
        ]  # fmt: skip
        result = subprocess.run(cmd, capture_output=True, timeout=TIMEOUT, check=False)
        assert result.returncode == 0, result.stderr
    assert values(admin, device.id, "mp") == [0, 1]


@needs_mosquitto
def test_mosquitto_sub_on_a_forbidden_topic_is_refused(
    mqtt_server: RoostServer, device: Device
) -> None:
    cmd = [
        "mosquitto_sub", "-h", "127.0.0.1", "-p", str(mqtt_server.mqtt_port), "-V", "mqttv5",
        "-u", "JWT", "-P", device.token, "-t", "devices/someone-else/commands/#", "-W", "5",
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, timeout=TIMEOUT, check=False)
    # mosquitto_sub gives up at once (long before -W) and says why.
    assert b"all subscription requests were denied" in result.stderr.lower()


# -- raw sockets ---------------------------------------------------------------------------------


def raw_connect(server: RoostServer, packet: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.mqtt_port), timeout=TIMEOUT)
    sock.sendall(packet)
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_oversize_packet_is_disconnect_0x95(mqtt_server: RoostServer, device: Device) -> None:
    connect = encode(Connect("big", 5, True, 30, device.id, device.token.encode()), 5)
    sock = raw_connect(mqtt_server, connect)
    publish = encode(
        Publish(f"devices/{device.id}/telemetry", b"x" * (MAX_PACKET + 10), 1, packet_id=1), 5
    )
    sock.sendall(publish[:1024])
    with sock:
        packets = MQTTDecoder(role="client", protocol_level=5).feed(read_all(sock))
    assert packets[-1] == Disconnect(0x95, packets[-1].properties)  # type: ignore[union-attr]


def test_keepalive_timeout_publishes_the_will(
    mqtt_server: RoostServer, admin: Api, device: Device
) -> None:
    will = Will(f"devices/{device.id}/events", b'{"event": "gone", "why": "silent"}', 1)
    connect = encode(Connect("quiet", 4, True, 1, device.id, device.token.encode(), will), 4)
    sock = raw_connect(mqtt_server, connect)
    started = time.monotonic()
    with sock:
        assert read_all(sock) == b"\x20\x02\x00\x00"  # CONNACK, then closed for silence
    assert 1.4 < time.monotonic() - started < 4

    def gone_event() -> bool:
        resp = admin.get(f"/api/v1/devices/{device.id}/events")
        return resp.status_code == 200 and "gone" in resp.text

    assert eventually(gone_event)


def test_fuzz_targets_and_the_server_survives(
    mqtt_server: RoostServer, admin: Api, device: Device
) -> None:
    """Hypothesis: arbitrary and mutated packets at the live socket; then a good client works."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    connect = encode(Connect("fuzz", 4, True, 30, device.id, device.token.encode()), 4)
    publish = encode(Publish(f"devices/{device.id}/telemetry", b'{"f": 1}', 1, packet_id=3), 4)
    valid = connect + publish + b"\xc0\x00\xe0\x00"

    @st.composite
    def mutated(draw: st.DrawFn) -> bytes:
        data = bytearray(valid)
        for _ in range(draw(st.integers(1, 6))):
            pos = draw(st.integers(0, len(data) - 1))
            data[pos] = draw(st.integers(0, 255))
        cut = draw(st.integers(1, len(data)))
        return bytes(data[:cut])

    @settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.one_of(st.binary(min_size=1, max_size=300), mutated()))
    def throw(data: bytes) -> None:
        with socket.create_connection(("127.0.0.1", mqtt_server.mqtt_port), timeout=TIMEOUT) as s:
            try:
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)
                read_all(s)
            except OSError:
                pass  # reset by the server: a refusal is fine

    throw()
    client = Client(mqtt_server, mqtt.MQTTv311)
    try:
        assert client.connect(device.id, device.token) == 0
        assert client.publish(f"devices/{device.id}/telemetry", b'{"after_fuzz": 1}', 1) == 0
    finally:
        client.close()
    assert values(admin, device.id, "after_fuzz") == [1]
