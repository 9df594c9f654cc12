"""The ingest door over MQTT against a running ``roost serve``: a refused message is explained on
``devices/{id}/telemetry/rejected`` / ``…/events/rejected`` for MQTT 3.1, 3.1.1 and 5 (paho,
mosquitto_pub/sub), and a number sent as text is stored as that number on every door (HTTP,
WebSocket, MQTT)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import websockets

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

TIMEOUT = 10
SEED = 1526717967  # the seed's sample timestamp
PAYLOAD_FORMAT_INVALID = 0x99
PROTOCOLS = [mqtt.MQTTv31, mqtt.MQTTv311, mqtt.MQTTv5]
PROTOCOL_IDS = ["v31", "v311", "v5"]


@pytest.fixture(scope="module")
def mqtt_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoostServer]:
    """A Roost (SQLite) with its MQTT listener on, shared by this module."""
    with RoostServer(
        tmp_path_factory.mktemp("roost-ingest-mqtt"), mqtt_port=free_port()
    ).running() as server:
        yield server


@pytest.fixture(scope="module")
def admin(mqtt_server: RoostServer) -> Iterator[Api]:
    with admin_client(mqtt_server) as api:
        yield api


@pytest.fixture
def device(admin: Api) -> Device:
    """A device with a double sensor ``level`` and a long sensor ``count`` declared."""
    made = make_device(admin)
    for sensor, kind in (("level", "double"), ("count", "long")):
        resp = admin.post(f"/api/v1/devices/{made.id}/sensors", json={"id": sensor, "type": kind})
        assert resp.status_code == 201, resp.text
    return made


class Client:
    """A paho device (any protocol version) keeping what it received as (topic, JSON)."""

    def __init__(self, server: RoostServer, device: Device, protocol: int) -> None:
        self.device = device
        self.paho = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=unique("c"), protocol=protocol
        )
        self.paho.username_pw_set("JWT", device.token)  # the seed fleets' convention
        self.connected = threading.Event()
        self.connack: Any = None
        self.acks: dict[int, Any] = {}
        self.subacks: dict[int, Any] = {}
        self.messages: list[tuple[str, Any]] = []
        self._lock = threading.Lock()
        self.paho.on_connect = self._on_connect
        self.paho.on_publish = lambda c, u, mid, reason, props: self.acks.__setitem__(mid, reason)
        self.paho.on_subscribe = lambda c, u, mid, codes, p: self.subacks.__setitem__(mid, codes)
        self.paho.on_message = self._on_message
        self.paho.connect("127.0.0.1", server.mqtt_port, keepalive=30)
        self.paho.loop_start()
        assert self.connected.wait(TIMEOUT), "no CONNACK"
        assert self.connack == 0, self.connack

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self.connack = reason
        self.connected.set()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self._lock:
            self.messages.append((msg.topic, json.loads(msg.payload)))

    def subscribe(self, *topics: str) -> None:
        """Subscribe at QoS 1 and check each was granted."""
        _, mid = self.paho.subscribe([(topic, 1) for topic in topics])
        assert eventually(lambda: mid in self.subacks), "no SUBACK"
        assert [int(getattr(c, "value", c)) for c in self.subacks[mid]] == [1] * len(topics)

    def publish(self, topic: str, payload: bytes | str) -> int:
        """Publish at QoS 1; answer the PUBACK's reason code (0 for MQTT 3.1/3.1.1)."""
        info = self.paho.publish(topic, payload, 1)
        info.wait_for_publish(TIMEOUT)
        assert eventually(lambda: info.mid in self.acks), "no PUBACK"
        return int(getattr(self.acks[info.mid], "value", 0))

    def received(self, topic: str, count: int) -> list[Any]:
        """The first ``count`` messages on ``topic`` (waiting for them)."""

        def arrived() -> list[Any]:
            with self._lock:
                found = [payload for t, payload in self.messages if t == topic]
            return found if len(found) >= count else []

        found: list[Any] = eventually(arrived)
        return found[:count]

    def topics(self) -> list[str]:
        """The topic of every message received so far, in order."""
        with self._lock:
            return [topic for topic, _ in self.messages]

    def close(self) -> None:
        self.paho.disconnect()
        self.paho.loop_stop()


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    made: list[Client] = []
    yield made
    for client in made:
        client.close()


def values(admin: Api, device_id: str, sensor: str) -> list[Any]:
    resp = admin.get(
        f"/api/v1/devices/{device_id}/telemetry",
        params={"sensor": sensor, "order": "asc", "from": SEED - 10},
    )
    assert resp.status_code == 200, resp.text
    return [item["value"] for item in resp.json()["items"]]


# -- refusals explained on the rejected topics ----------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=PROTOCOL_IDS)
def test_a_refused_message_is_explained_on_the_rejected_topic(
    mqtt_server: RoostServer, admin: Api, device: Device, clients: list[Client], protocol: int
) -> None:
    client = Client(mqtt_server, device, protocol)
    clients.append(client)
    rejected = f"devices/{device.id}/telemetry/rejected"
    events_rejected = f"devices/{device.id}/events/rejected"
    client.subscribe(rejected, events_rejected)
    telemetry, events = f"devices/{device.id}/telemetry", f"devices/{device.id}/events"
    # MQTT 5 keeps its negative acknowledgement; 3.1 and 3.1.1 are acknowledged (a resend could
    # never be taken) and learn why on the rejected topic only.
    refused = PAYLOAD_FORMAT_INVALID if protocol == mqtt.MQTTv5 else 0
    assert client.publish(telemetry, b"not json") == refused
    assert client.publish(telemetry, json.dumps({"sensor_id": "level", "value": "hot"})) == refused
    assert client.publish(device.id, b"{") == refused  # the bare id: refusals go with telemetry
    assert client.publish(events, json.dumps({"event": ""})) == refused
    assert client.publish(telemetry, json.dumps({"level": 1.5})) == 0  # taken: nothing said

    bad_json, wrong_type, bare = client.received(rejected, 3)
    assert bad_json["topic"] == telemetry and bad_json["code"] == 400
    assert bad_json["message"].startswith("item 0: malformed JSON")
    assert bad_json["errors"][0]["index"] == 0
    assert wrong_type["topic"] == telemetry
    assert wrong_type["errors"] == [
        {
            "index": 0,
            "field": "value",
            "message": "sensor 'level': expected a number for a double sensor, got text 'hot' "
            "(text counts only when it is exactly a JSON number)",
        }
    ]
    assert wrong_type["message"] == "item 0 value: " + wrong_type["errors"][0]["message"]
    assert bare["topic"] == device.id and "malformed JSON" in bare["message"]
    [event] = client.received(events_rejected, 1)
    assert event["topic"] == events and event["errors"][0]["field"] == "event"
    assert values(admin, device.id, "level") == [1.5]
    # The accepted message was not answered: the next refusal is the next message to arrive.
    assert client.publish(telemetry, b"[]") == refused
    assert client.received(rejected, 4)[3]["message"] == "item 0: the message holds no items"
    assert sorted(client.topics()) == [events_rejected] + [rejected] * 4


def test_a_device_may_not_subscribe_to_another_devices_rejected_topic(
    mqtt_server: RoostServer, admin: Api, device: Device, clients: list[Client]
) -> None:
    other = make_device(admin)
    client = Client(mqtt_server, device, mqtt.MQTTv311)
    clients.append(client)
    _, mid = client.paho.subscribe(
        [(f"devices/{other.id}/telemetry/rejected", 1), (f"devices/{device.id}/telemetry/#", 1)]
    )
    assert eventually(lambda: mid in client.subacks)
    assert [int(getattr(c, "value", c)) for c in client.subacks[mid]] == [0x80, 0x80]


needs_mosquitto = pytest.mark.skipif(
    shutil.which("mosquitto_sub") is None, reason="mosquitto clients not installed"
)


@needs_mosquitto
def test_mosquitto_31_clients_send_the_seed_sample_and_read_refusals(
    mqtt_server: RoostServer, admin: Api, device: Device
) -> None:
    base = ["-h", "127.0.0.1", "-p", str(mqtt_server.mqtt_port), "-V", "mqttv31",
            "-u", "JWT", "-P", device.token]  # fmt: skip
    sample = {"sensor_id": "level", "timestamp": SEED, "value": "91827364"}
    pub = ["mosquitto_pub", *base, "-q", "1", "-t", device.id, "-m", json.dumps(sample)]
    result = subprocess.run(pub, capture_output=True, timeout=TIMEOUT, check=False)
    assert result.returncode == 0, result.stderr
    assert values(admin, device.id, "level") == [91827364.0]

    sub = subprocess.Popen(
        ["mosquitto_sub", *base, "-q", "1", "-C", "1", "-W", str(TIMEOUT),
         "-t", f"devices/{device.id}/telemetry/rejected"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        # The subscriber may not be subscribed yet: send the refused message until it hears one.
        deadline = time.monotonic() + TIMEOUT
        bad = ["mosquitto_pub", *base, "-q", "1", "-t", device.id, "-m", '{"level": "0x1F"}']
        while sub.poll() is None and time.monotonic() < deadline:
            subprocess.run(bad, capture_output=True, timeout=TIMEOUT, check=True)
            time.sleep(0.2)
        out, err = sub.communicate(timeout=TIMEOUT)
    finally:
        if sub.poll() is None:
            sub.kill()
    assert sub.returncode == 0, err
    refusal = json.loads(out)
    assert refusal["topic"] == device.id and refusal["errors"][0]["field"] == "level"
    assert "0x1F" in refusal["message"]


# -- a number sent as text, on every door ---------------------------------------------------------


async def _ws_ingest(server: RoostServer, token: str, frames: list[Any]) -> list[Any]:
    url = server.url.replace("http://", "ws://") + "/api/v1/ws/ingest"
    async with websockets.connect(
        url, additional_headers={"Authorization": f"Bearer {token}"}
    ) as ws:
        for frame in frames:
            await ws.send(json.dumps(frame))
        return [json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT)) for _ in frames]


def test_a_number_sent_as_text_is_stored_as_that_number_on_every_door(
    mqtt_server: RoostServer, admin: Api, device: Device, clients: list[Client]
) -> None:
    def point(n: int, sensor: str, value: str) -> dict[str, Any]:
        return {"sensor_id": sensor, "timestamp": SEED + n, "value": value}

    with Api(mqtt_server.url, device.token) as http:
        resp = http.post(
            "/api/v1/telemetry",
            json=[point(0, "level", "91827364"), point(0, "count", "9223372036854775807")],
        )
        assert resp.status_code == 200, resp.text
        assert resp.json()["accepted"] == 2
        resp = http.post(
            "/api/v1/telemetry", json=[point(9, "level", "1"), point(9, "level", " 12")]
        )
        assert resp.status_code == 400, resp.text
        assert [e["index"] for e in resp.json()["errors"]] == [1]  # the whole message refused
        resp = http.post("/api/v1/telemetry", json=point(9, "count", "9223372036854775808"))
        assert resp.status_code == 400 and "64 bits" in resp.text

    acks = asyncio.run(
        _ws_ingest(
            mqtt_server,
            device.token,
            [point(1, "level", "-12.5"), point(1, "count", "-42"), point(9, "level", "NaN")],
        )
    )
    assert [a.get("accepted") for a in acks] == [1, 1, None]
    assert acks[2]["error"]["status"] == 400

    client = Client(mqtt_server, device, mqtt.MQTTv31)  # the seed's Node producer's protocol
    clients.append(client)
    client.subscribe(f"devices/{device.id}/telemetry/rejected")
    assert client.publish(device.id, json.dumps(point(2, "level", "1e3"))) == 0
    assert client.publish(device.id, json.dumps([point(2, "count", "1e3")])) == 0
    assert client.publish(device.id, json.dumps(point(9, "count", "12.5"))) == 0  # refused
    [refusal] = client.received(f"devices/{device.id}/telemetry/rejected", 1)
    assert "expected an integer for a long sensor" in refusal["message"]

    assert values(admin, device.id, "level") == [91827364.0, -12.5, 1000.0]
    assert values(admin, device.id, "count") == [9223372036854775807, -42, 1000]
