"""Abuse limits at the MQTT door, on a Roost with low limits and real paho clients: a device over
its message or byte rate is disconnected (v5 with 0x96 / 0x97, 3.1.1 closed) and every message it
had acknowledged is stored; a device over its connections is refused (0x97 / return code 5); an
address over its failed credential checks is refused even with a good token (0x9F / 3)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from tests.mqtt.test_gateway import TIMEOUT, Client
from tests.support import (
    Api,
    Device,
    RoostServer,
    admin_client,
    eventually,
    free_port,
    make_device,
)

MESSAGES_PER_S = 5
BYTES_PER_S = 2000
MAX_CONNECTIONS = 2
MAX_FAILURES = 3
SEED_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
PROTOCOLS = pytest.mark.parametrize("protocol", [mqtt.MQTTv311, mqtt.MQTTv5], ids=["v311", "v5"])


@pytest.fixture(scope="module")
def mqtt_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoostServer]:
    """A Roost with MQTT on and every device limit set low."""
    with RoostServer(
        tmp_path_factory.mktemp("roost-mqtt-limits"),
        mqtt_port=free_port(),
        env_overrides={
            "ROOST_DEVICE_MAX_MESSAGES_PER_S": str(MESSAGES_PER_S),
            "ROOST_DEVICE_MAX_BYTES_PER_S": str(BYTES_PER_S),
            "ROOST_DEVICE_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
            "ROOST_CREDENTIAL_MAX_FAILURES": str(MAX_FAILURES),
        },
    ).running() as server:
        yield server


@pytest.fixture(scope="module")
def admin(mqtt_server: RoostServer) -> Iterator[Api]:
    with admin_client(mqtt_server) as api:
        yield api


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    made: list[Client] = []
    yield made
    for client in made:
        client.close()


#: paho reports a 3.1.1 CONNACK return code as the MQTT 5 reason code of the same meaning.
V311 = {3: 0x88, 4: 0x86, 5: 0x87}


def connack_code(code: Any) -> int:
    """The CONNACK code paho reported, as an int."""
    return int(getattr(code, "value", code))


def new_client(server: RoostServer, protocol: int) -> Client:
    """A paho client that does not reconnect by itself within a test (paho's loop would, and
    resend what was not acknowledged, which is right for a device but blurs what is tested)."""
    client = Client(server, protocol)
    client.paho.reconnect_delay_set(min_delay=120, max_delay=120)
    return client


def stored(admin: Api, device_id: str) -> list[Any]:
    resp = admin.get(
        f"/api/v1/devices/{device_id}/telemetry",
        params={"sensor": "n", "order": "asc", "limit": 1000},
    )
    if resp.status_code == 404:
        return []
    assert resp.status_code == 200, resp.text
    return [item["value"] for item in resp.json()["items"]]


def flood(client: Client, device: Device, count: int, pad: int = 0) -> dict[int, int]:
    """Publish ``count`` QoS 1 messages without waiting; answer n → mid of each sent."""
    mids: dict[int, int] = {}
    for n in range(count):
        # Each its own timestamp: messages read in one go share a receive time, and one sensor
        # keeps one value per instant.
        values: dict[str, Any] = {"n": n, "pad": "x" * pad} if pad else {"n": n}
        body = {"ts": SEED_MS + n, "values": values}
        info = client.paho.publish(f"devices/{device.id}/telemetry", json.dumps(body), 1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            break
        mids[n] = info.mid
    return mids


def acknowledged(client: Client, mids: dict[int, int]) -> list[int]:
    """The messages the server acknowledged as taken."""
    return sorted(
        n
        for n, mid in mids.items()
        if mid in client.acks
        and (client.acks[mid] == 0 or not getattr(client.acks[mid], "is_failure", False))
    )


@PROTOCOLS
def test_over_the_message_rate_disconnects_and_loses_nothing_acknowledged(
    mqtt_server: RoostServer, admin: Api, clients: list[Client], protocol: int
) -> None:
    device = make_device(admin)
    client = new_client(mqtt_server, protocol)
    clients.append(client)
    assert client.connect(device.id, device.token) == 0
    mids = flood(client, device, 60)
    assert client.disconnected.wait(TIMEOUT), "a device at 60 msg/s was not stopped at 5 msg/s"
    if protocol == mqtt.MQTTv5:
        assert int(client.disconnect_reason.value) == 0x96  # Message rate too high
    taken = acknowledged(client, mids)
    assert set(taken) <= set(stored(admin, device.id)), "an acknowledged message was not stored"
    # The burst (2 s worth) went in (messages taken but not yet acknowledged when the connection
    # closed are committed a moment later), and the rest was refused, never stored.
    values = eventually(lambda: (v := stored(admin, device.id)) and len(v) >= 9 and v)
    assert len(values) < len(mids)
    assert len(set(values)) == len(values)  # and nothing twice (the client did not reconnect)


def test_v5_over_the_byte_rate_disconnects_with_quota_exceeded(
    mqtt_server: RoostServer, admin: Api, clients: list[Client]
) -> None:
    device = make_device(admin)
    client = new_client(mqtt_server, mqtt.MQTTv5)
    clients.append(client)
    assert client.connect(device.id, device.token) == 0
    mids = flood(client, device, 8, pad=1000)  # ~1 KB each against 2 KB/s (4 KB burst)
    assert client.disconnected.wait(TIMEOUT)
    assert int(client.disconnect_reason.value) == 0x97  # Quota exceeded
    taken = acknowledged(client, mids)
    assert taken and set(taken) <= set(stored(admin, device.id))


@PROTOCOLS
def test_connections_over_the_device_limit_are_refused(
    mqtt_server: RoostServer, admin: Api, clients: list[Client], protocol: int
) -> None:
    device = make_device(admin)
    for _ in range(MAX_CONNECTIONS):
        client = new_client(mqtt_server, protocol)
        clients.append(client)
        assert client.connect(device.id, device.token) == 0
    extra = new_client(mqtt_server, protocol)
    clients.append(extra)
    code = extra.connect(device.id, device.token)
    assert connack_code(code) == (0x97 if protocol == mqtt.MQTTv5 else V311[5])
    # Another device is not affected; and once a connection ends, the device may connect again.
    other = make_device(admin)
    for who in (other, device):
        if who is device:
            clients[0].close()
            assert clients[0].disconnected.wait(TIMEOUT)
        deadline = time.monotonic() + TIMEOUT
        while True:
            again = new_client(mqtt_server, protocol)
            clients.append(again)
            if again.connect(who.id, who.token) == 0:
                break
            assert time.monotonic() < deadline, "the freed connection slot was not given back"
            time.sleep(0.1)


def connect_from(client: Client, address: str, username: str, password: str) -> Any:
    """Connect with the client's socket bound to a source address."""
    client.paho.username_pw_set(username, password)
    client.paho.connect("127.0.0.1", client.server.mqtt_port, keepalive=30, bind_address=address)
    client.paho.loop_start()
    assert client.connected.wait(TIMEOUT) or client.disconnected.wait(TIMEOUT), "no CONNACK"
    return client.connack


@PROTOCOLS
def test_failed_credentials_lock_out_the_address_even_for_a_good_token(
    mqtt_server: RoostServer, admin: Api, clients: list[Client], protocol: int
) -> None:
    device = make_device(admin)
    # Each protocol's run uses its own loopback address (Linux routes all of 127/8 locally).
    attacker = "127.0.0.2" if protocol == mqtt.MQTTv5 else "127.0.0.3"
    for n in range(MAX_FAILURES):
        client = new_client(mqtt_server, protocol)
        clients.append(client)
        code = connect_from(client, attacker, device.id, f"forged.token.{n}")
        assert connack_code(code) == (0x86 if protocol == mqtt.MQTTv5 else V311[4])
    client = new_client(mqtt_server, protocol)
    clients.append(client)
    code = connect_from(client, attacker, device.id, device.token)
    assert connack_code(code) == (0x9F if protocol == mqtt.MQTTv5 else V311[3])
    # Another address connects with the same token.
    client = new_client(mqtt_server, protocol)
    clients.append(client)
    assert connect_from(client, "127.0.0.1", device.id, device.token) == 0
