"""SAS tokens, group enrollment and attestation bootstrap over MQTT with paho: a device that
provisioned itself publishes; expired, forged, malformed and revoked-key tokens get their
CONNACK refusal with nothing stored; revoking a key closes the live session."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from collections.abc import Iterator
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest

from roost.credentials.keys import sas
from tests.mqtt.test_gateway import TIMEOUT, Client
from tests.support import Api, RoostServer, admin_client, free_port, unique

V1 = "/api/v1"
TENANT = "default"  # the superuser acts in the default tenant


@pytest.fixture(scope="module")
def mqtt_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoostServer]:
    """A Roost with its MQTT listener on, shared by this module."""
    with RoostServer(
        tmp_path_factory.mktemp("roost-sas-mqtt"), mqtt_port=free_port()
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


def keyed_device(admin: Api) -> tuple[str, dict[str, Any]]:
    device_id = unique("dev")
    assert admin.post(f"{V1}/devices", json={"id": device_id}).status_code == 201
    resp = admin.post(f"{V1}/devices/{device_id}/keys", json={})
    assert resp.status_code == 201, resp.text
    return device_id, resp.json()


def token_for(device_id: str, key: str, expiry: int | None = None) -> str:
    expiry = int(time.time()) + 3600 if expiry is None else expiry
    return sas.sign(base64.b64decode(key), sas.device_resource(TENANT, device_id), expiry)


def stored(admin: Api, device_id: str) -> list[Any]:
    resp = admin.get(f"{V1}/devices/{device_id}/telemetry", params={"sensor": "t", "order": "asc"})
    if resp.status_code == 404:
        return []
    assert resp.status_code == 200, resp.text
    return [item["value"] for item in resp.json()["items"]]


def publish_and_check(server: RoostServer, admin: Api, clients: list[Client], device_id: str,
                      password: str, protocol: int = mqtt.MQTTv5) -> None:  # fmt: skip
    client = Client(server, protocol)
    clients.append(client)
    assert client.connect(device_id, password) == 0
    ack = client.publish(f"devices/{device_id}/telemetry", json.dumps({"t": 21.5}), 1)
    assert ack == 0 or not ack.is_failure
    assert stored(admin, device_id) == [21.5]


@pytest.mark.parametrize("protocol", [mqtt.MQTTv311, mqtt.MQTTv5], ids=["v311", "v5"])
def test_a_sas_token_is_an_mqtt_password(
    mqtt_server: RoostServer, admin: Api, clients: list[Client], protocol: int
) -> None:
    device_id, key = keyed_device(admin)
    publish_and_check(
        mqtt_server, admin, clients, device_id, token_for(device_id, key["key"]), protocol
    )


@pytest.mark.parametrize("protocol", [mqtt.MQTTv311, mqtt.MQTTv5], ids=["v311", "v5"])
def test_bad_sas_tokens_get_the_connack_refusal(
    mqtt_server: RoostServer, admin: Api, clients: list[Client], protocol: int
) -> None:
    device_id, key = keyed_device(admin)
    other_id, _ = keyed_device(admin)
    refusals = {
        "expired": (token_for(device_id, key["key"], int(time.time()) - 1), device_id, 0x86),
        "forged": (token_for(device_id, sas.new_key()), device_id, 0x86),
        "malformed": ("SharedAccessSignature sr=&sig=x", device_id, 0x86),
        "another device's username": (token_for(device_id, key["key"]), other_id, 0x87),
    }
    for label, (password, username, code) in refusals.items():
        client = Client(mqtt_server, protocol)
        clients.append(client)
        # paho reports 3.1.1's return codes 4 and 5 as 0x86 and 0x87.
        assert client.connect(username, password) == code, label
    assert stored(admin, device_id) == []


def test_revoking_a_key_closes_its_live_session_and_refuses_it(
    mqtt_server: RoostServer, admin: Api, clients: list[Client]
) -> None:
    device_id, key = keyed_device(admin)
    password = token_for(device_id, key["key"])
    client = Client(mqtt_server, mqtt.MQTTv5)
    clients.append(client)
    assert client.connect(device_id, password) == 0
    resp = admin.delete(f"{V1}/devices/{device_id}/keys/{key['id']}")
    assert resp.status_code == 204, resp.text
    assert client.disconnected.wait(TIMEOUT)
    assert client.disconnect_reason == 0x87
    again = Client(mqtt_server, mqtt.MQTTv5)
    clients.append(again)
    assert again.connect(device_id, password) == 0x87
    assert stored(admin, device_id) == []


def test_a_device_of_an_enrollment_group_registers_then_publishes_over_mqtt(
    mqtt_server: RoostServer, admin: Api, clients: list[Client]
) -> None:
    resp = admin.post(f"{V1}/enrollments", json={"tags": {"via": "dps"}})
    assert resp.status_code == 201, resp.text
    enrollment = resp.json()
    registration_id = unique("sn")
    # What the device holds: its derived key only, never the group key.
    derived = sas.derive_key(base64.b64decode(enrollment["key"]), registration_id)
    token = sas.sign(
        derived,
        sas.registration_resource(enrollment["id"], registration_id),
        int(time.time()) + 600,
        key_name="registration",
    )
    resp = httpx.post(
        f"{mqtt_server.url}{V1}/provisioning/register",
        json={"registration_id": registration_id},
        headers={"Authorization": token},
    )
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert answer["device_id"] == registration_id
    publish_and_check(mqtt_server, admin, clients, registration_id, answer["token"])


def test_a_bootstrapped_device_publishes_over_mqtt(
    mqtt_server: RoostServer, admin: Api, clients: list[Client]
) -> None:
    value = hashlib.sha256(secrets.token_bytes(16)).hexdigest()
    resp = admin.post(f"{V1}/attestation-hashes", json={"hashes": [value]})
    assert resp.status_code == 201, resp.text
    hostname = unique("pos")
    resp = httpx.post(
        f"{mqtt_server.url}{V1}/provisioning/bootstrap", json={"hostname": hostname, "hash": value}
    )
    assert resp.status_code == 201, resp.text
    answer = resp.json()
    assert answer["device_id"] == hostname
    publish_and_check(mqtt_server, admin, clients, hostname, answer["token"], mqtt.MQTTv311)
