"""The asyncio listener with real paho clients, over the scripted authenticator and ingest.

A focused check of the socket layer and of paho's view of the protocol (CONNACK, PUBACK/PUBREC
reason codes, delivery to a subscriber, takeover), independent of the ingest service; the full
``roost serve`` path is in ``test_gateway.py``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from roost.core.ingest import IngestKind, IngestOutcome
from roost.mqtt.gateway import Gateway
from roost.mqtt.server import MQTTServer
from roost.runtime import device_topics
from tests.mqtt.fakes import FakeAuthenticator, ScriptedIngest

TIMEOUT = 10


class AutoCommitIngest(ScriptedIngest):
    """Every message is durable on the next loop turn."""

    def try_submit(self, ctx: Any, kind: IngestKind, payload: bytes, recv_ns: int,
                   msg_id: str | None = None) -> IngestOutcome | None:  # fmt: skip
        outcome = super().try_submit(ctx, kind, payload, recv_ns, msg_id)
        asyncio.get_running_loop().call_soon(self.new_batch().resolve)
        return outcome


@pytest.fixture
async def server() -> AsyncIterator[tuple[MQTTServer, AutoCommitIngest]]:
    ingest = AutoCommitIngest()
    gateway = Gateway(FakeAuthenticator(), ingest, topics=device_topics())
    listener = MQTTServer(gateway, "127.0.0.1", 0)
    await listener.start()
    yield listener, ingest
    await listener.close()
    await gateway.close()


class Paho:
    def __init__(self, port: int, protocol: int, client_id: str = "p1") -> None:
        self.port = port
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=protocol)  # fmt: skip
        self.connack: Any = None
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.disconnect_reason: Any = None
        self.acks: dict[int, Any] = {}
        self.messages: list[mqtt.MQTTMessage] = []
        self.got_message = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = lambda c, u, mid, reason, props: self.acks.__setitem__(mid, reason)
        self.client.on_message = self._on_message

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self.connack = reason
        self.connected.set()

    def _on_disconnect(self, client: Any, _: Any, flags: Any, reason: Any, props: Any) -> None:
        self.disconnect_reason = reason
        self.disconnected.set()

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self.messages.append(message)
        self.got_message.set()

    def connect(self) -> Any:
        self.client.username_pw_set("dev-a", "token-a")
        self.client.connect("127.0.0.1", self.port, keepalive=30)
        self.client.loop_start()
        assert self.connected.wait(TIMEOUT)
        return self.connack

    def publish(self, topic: str, payload: bytes, qos: int) -> Any:
        info = self.client.publish(topic, payload, qos)
        info.wait_for_publish(TIMEOUT)
        return self.acks.get(info.mid)

    def subscribe(self, topic_filter: str, qos: int) -> None:
        done = threading.Event()
        self.client.on_subscribe = lambda *args: done.set()
        self.client.subscribe(topic_filter, qos)
        assert done.wait(TIMEOUT)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.mark.parametrize("protocol", [mqtt.MQTTv311, mqtt.MQTTv5], ids=["v311", "v5"])
async def test_paho_connects_and_publishes_at_every_qos(
    server: tuple[MQTTServer, AutoCommitIngest], protocol: int
) -> None:
    listener, ingest = server
    paho = Paho(listener.port, protocol)
    try:
        assert await asyncio.to_thread(paho.connect) == 0
        for qos in (0, 1, 2):
            await asyncio.to_thread(paho.publish, "devices/dev-a/telemetry", b"%d" % qos, qos)
        await asyncio.sleep(0.1)
        assert [payload for _, payload in ingest.stored] == [b"0", b"1", b"2"]
        if protocol == mqtt.MQTTv5:
            reason = await asyncio.to_thread(paho.publish, "devices/dev-b/telemetry", b"x", 1)
            assert reason == 0x87
    finally:
        paho.close()


async def test_delivery_reaches_a_subscribed_paho_client(
    server: tuple[MQTTServer, AutoCommitIngest],
) -> None:
    listener, _ = server
    paho = Paho(listener.port, mqtt.MQTTv5)
    try:
        await asyncio.to_thread(paho.connect)
        await asyncio.to_thread(paho.subscribe, "devices/dev-a/commands/#", 1)
        assert listener.gateway.deliver(1, "devices/dev-a/commands/7", b"go", 2)
        assert await asyncio.to_thread(paho.got_message.wait, TIMEOUT)
        [message] = paho.messages
        assert (message.topic, message.payload, message.qos) == (
            "devices/dev-a/commands/7",
            b"go",
            1,
        )
        await asyncio.sleep(0.1)  # paho's PUBACK
        [state] = listener.gateway.sessions_of(1)
        assert not state.inflight
    finally:
        paho.close()


async def test_takeover_disconnects_the_older_paho_client(
    server: tuple[MQTTServer, AutoCommitIngest],
) -> None:
    listener, _ = server
    first = Paho(listener.port, mqtt.MQTTv5, "same")
    second = Paho(listener.port, mqtt.MQTTv5, "same")
    try:
        await asyncio.to_thread(first.connect)
        first.client.reconnect_delay_set(60, 120)  # do not fight back during the test
        await asyncio.to_thread(second.connect)
        assert await asyncio.to_thread(first.disconnected.wait, TIMEOUT)
        assert first.disconnect_reason == 0x8E
        assert not second.disconnected.is_set()
    finally:
        first.close()
        second.close()
