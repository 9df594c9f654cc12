"""Presence from connections: MQTT and WebSocket sessions, and a server restart."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import websockets

from tests.mqtt.test_gateway import Client
from tests.support import Api, RoostServer, admin_client, eventually, free_port, make_device


@pytest.fixture(scope="module")
def mqtt_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoostServer]:
    with RoostServer(
        tmp_path_factory.mktemp("roost-presence"), mqtt_port=free_port()
    ).running() as server:
        yield server


@pytest.fixture(scope="module")
def admin(mqtt_server: RoostServer) -> Iterator[Api]:
    with admin_client(mqtt_server) as api:
        yield api


def presence(admin: Api, device_id: str) -> dict[str, Any]:
    resp = admin.get(f"/api/v1/devices/{device_id}/presence")
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def reasons(admin: Api, device_id: str) -> list[tuple[str, str]]:
    items = admin.get(f"/api/v1/devices/{device_id}/presence/history").json()["items"]
    return [(item["status"], item["reason"]) for item in reversed(items)]


@pytest.mark.parametrize("protocol", [mqtt.MQTTv311, mqtt.MQTTv5], ids=["v311", "v5"])
def test_an_mqtt_session_makes_a_device_online_until_it_disconnects(
    mqtt_server: RoostServer, admin: Api, protocol: int
) -> None:
    device = make_device(admin)
    client = Client(mqtt_server, protocol)
    assert client.connect(device.id, device.token) == 0
    try:
        assert eventually(lambda: presence(admin, device.id)["status"] == "online")
        assert presence(admin, device.id)["connected"] is True
        # A second connection of the same device, then the first goes: still online.
        second = Client(mqtt_server, protocol)
        assert second.connect(device.id, device.token) == 0
        second.close()
        assert eventually(lambda: len(reasons(admin, device.id)) >= 1)
        assert presence(admin, device.id)["status"] == "online"
    finally:
        client.close()
    assert eventually(lambda: presence(admin, device.id)["status"] == "offline")
    assert reasons(admin, device.id) == [("online", "connected"), ("offline", "disconnected")]
    assert presence(admin, device.id)["connected"] is False


def test_a_websocket_ingest_session_counts_as_a_connection(
    mqtt_server: RoostServer, admin: Api
) -> None:
    device = make_device(admin)
    url = mqtt_server.url.replace("http", "ws") + "/api/v1/ws/ingest?token=" + device.token

    async def hold() -> None:
        async with websockets.connect(url) as ws:
            await ws.send('{"temperature": 20}')
            assert '"ack":1' in str(await ws.recv()).replace(" ", "")
            online = await asyncio.to_thread(
                eventually, lambda: presence(admin, device.id)["status"] == "online"
            )
            assert online
            assert presence(admin, device.id)["connected"] is True

    asyncio.run(hold())
    assert eventually(lambda: presence(admin, device.id)["status"] == "offline")
    assert reasons(admin, device.id)[-1] == ("offline", "disconnected")


def test_after_a_restart_devices_that_were_connected_go_offline_unless_they_come_back(
    tmp_path: Path,
) -> None:
    server = RoostServer(tmp_path, mqtt_port=free_port()).start()
    clients: list[Client] = []
    try:
        with admin_client(server) as api:
            gone, back = make_device(api), make_device(api)
            for device in (gone, back):
                resp = api.patch(f"/api/v1/devices/{device.id}", json={"heartbeat_interval_s": 1})
                assert resp.status_code == 200, resp.text
                client = Client(server, mqtt.MQTTv5)
                clients.append(client)
                assert client.connect(device.id, device.token) == 0
            assert eventually(
                lambda: all(presence(api, d.id)["status"] == "online" for d in (gone, back))
            )
        server.stop(9)  # killed: no disconnect is ever recorded
        for client in clients:
            client.close()
        server.start()
        with admin_client(server) as api:
            again = Client(server, mqtt.MQTTv5)
            clients.append(again)
            assert again.connect(back.id, back.token) == 0
            assert eventually(lambda: presence(api, gone.id)["status"] == "offline")
            assert reasons(api, gone.id)[-1] == ("offline", "missed heartbeats")
            assert presence(api, gone.id)["connected"] is False
            assert presence(api, back.id)["status"] == "online"
            assert presence(api, back.id)["connected"] is True
    finally:
        for client in clients:
            client.close()
        server.stop()
