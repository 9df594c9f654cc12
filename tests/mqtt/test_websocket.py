"""MQTT over WebSocket (roost.mqtt.websocket): a real uvicorn in the test's loop, the
``websockets`` client, the scripted authenticator and ingest behind it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import uvicorn
import websockets
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute

from roost.mqtt.codec import Connack, MQTTDecoder, Puback, Publish, encode
from roost.mqtt.gateway import Gateway
from roost.mqtt.websocket import mqtt_websocket
from roost.runtime import device_topics
from tests.mqtt.fakes import FakeAuthenticator, ScriptedIngest, connect_bytes
from tests.support import free_port


@pytest.fixture
async def ws_url() -> AsyncIterator[tuple[str, ScriptedIngest]]:
    ingest = ScriptedIngest()
    ingest.ticket.resolve()  # every message joins a batch that is already durable
    gateway = Gateway(FakeAuthenticator(), ingest, topics=device_topics())
    app = Starlette(routes=[WebSocketRoute("/mqtt", mqtt_websocket(lambda: gateway))])
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.get_running_loop().create_task(server.serve())
    for _ in range(1000):  # uvicorn has no "started" event to await
        if server.started:
            break
        await asyncio.sleep(0.01)
    yield f"ws://127.0.0.1:{port}/mqtt", ingest
    server.should_exit = True
    await task
    await gateway.close()


async def test_connect_and_publish_over_websocket(ws_url: tuple[str, ScriptedIngest]) -> None:
    url, ingest = ws_url
    decoder = MQTTDecoder(role="client", protocol_level=4)
    async with websockets.connect(url, subprotocols=["mqtt"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "mqtt"
        connect = connect_bytes(4)
        await ws.send(connect[:5])  # any slicing of the byte stream is fine
        await ws.send(connect[5:])
        assert decoder.feed(await ws.recv()) == [Connack(False, 0)]  # type: ignore[arg-type]
        await ws.send(encode(Publish("devices/dev-a/telemetry", b"{}", 1, packet_id=9), 4))
        assert decoder.feed(await ws.recv()) == [Puback(9)]  # type: ignore[arg-type]
        await ws.send(b"\xe0\x00")
        await ws.wait_closed()
    assert [payload for _, payload in ingest.stored] == [b"{}"]


async def test_websocket_without_the_mqtt_subprotocol_is_refused(
    ws_url: tuple[str, ScriptedIngest],
) -> None:
    url, _ = ws_url
    with pytest.raises(websockets.InvalidStatus):
        async with websockets.connect(url):
            pass


async def test_text_frame_closes_the_connection(ws_url: tuple[str, ScriptedIngest]) -> None:
    url, _ = ws_url
    async with websockets.connect(url, subprotocols=["mqtt"]) as ws:  # type: ignore[list-item]
        await ws.send("hello")
        await ws.wait_closed()
        assert ws.close_code == 1002
