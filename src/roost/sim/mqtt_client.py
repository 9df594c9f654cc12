"""A lean asyncio MQTT client for simulated devices and load generation.

Built on Roost's own codec for what the server sends (CONNACK, PUBACK), and on hand-made PUBLISH
frames for what it sends (a few hundred nanoseconds each): a load generator must cost much less
than the server it loads, on the same machine.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from roost.mqtt.codec import (
    Connack,
    Connect,
    MQTTDecoder,
    MQTTProtocolError,
    Puback,
    Pubcomp,
    Pubrec,
    Pubrel,
    encode,
)
from roost.mqtt.wire import encode_varint

# Latency samples kept per run (a reservoir would be overkill: the newest ones are what matter).
MAX_LATENCY_SAMPLES = 200_000
_PINGREQ = b"\xc0\x00"


def publish_frame(topic: bytes, payload: bytes, qos: int, packet_id: int, level: int) -> bytes:
    """A PUBLISH packet, built directly (what the encoder would make, without the objects)."""
    header = len(topic).to_bytes(2, "big") + topic
    if qos:
        header += packet_id.to_bytes(2, "big")
    if level == 5:
        header += b"\x00"  # no properties
    return (
        bytes((0x30 | (qos << 1),)) + encode_varint(len(header) + len(payload)) + header + payload
    )


@dataclass(slots=True)
class Stats:
    """Counters of a simulation run, shared by every connection."""

    sent: int = 0
    acked: int = 0
    refused: int = 0
    errors: int = 0
    connected: int = 0
    latencies: list[float] = field(default_factory=list)
    last_error: str = ""

    def latency_ms(self, quantile: float) -> float | None:
        """A latency percentile in ms over the kept samples."""
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(quantile * len(ordered)))] * 1000


class SimConnection(asyncio.Protocol):
    """One simulated device's MQTT connection, with a window of QoS 1/2 messages in flight."""

    def __init__(
        self,
        client_id: str,
        username: str,
        password: str,
        stats: Stats,
        *,
        level: int = 4,
        max_inflight: int = 64,
        keep_alive: int = 60,
    ) -> None:
        self.client_id = client_id
        self.username = username
        self.password = password
        self.stats = stats
        self.level = level
        self.max_inflight = max_inflight
        self.keep_alive = keep_alive
        self.decoder = MQTTDecoder(role="client", protocol_level=level)
        self.transport: asyncio.Transport | None = None
        self.connected: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.inflight: dict[int, float] = {}
        self.room = asyncio.Event()
        self.room.set()
        self.on_ack: Callable[[], None] | None = None
        self._next_id = 0
        self._last_sent = time.monotonic()

    # -- asyncio callbacks -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        connect = Connect(
            client_id=self.client_id,
            protocol_level=self.level,
            clean_start=True,
            keep_alive=self.keep_alive,
            username=self.username,
            password=self.password.encode(),
        )
        transport.write(encode(connect, self.level))

    def data_received(self, data: bytes) -> None:
        try:
            packets = self.decoder.feed(data)
        except MQTTProtocolError as exc:
            self._fail(f"protocol error from the server: {exc}")
            return
        now = time.monotonic()
        for packet in packets:
            if isinstance(packet, Puback | Pubcomp):
                sent = self.inflight.pop(packet.packet_id, None)
                if sent is not None:
                    if packet.reason_code >= 0x80:
                        self.stats.refused += 1
                    else:
                        self.stats.acked += 1
                        if len(self.stats.latencies) < MAX_LATENCY_SAMPLES:
                            self.stats.latencies.append(now - sent)
                    if self.on_ack is not None:
                        self.on_ack()
            elif isinstance(packet, Pubrec):
                if self.transport is not None:
                    self.transport.write(encode(Pubrel(packet.packet_id), self.level))
            elif isinstance(packet, Connack):
                if packet.reason_code:
                    self._fail(f"connection refused (reason {packet.reason_code:#x})")
                elif not self.connected.done():
                    self.stats.connected += 1
                    self.connected.set_result(None)
        if len(self.inflight) < self.max_inflight:
            self.room.set()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.connected.done() and not self.connected.exception():
            self.stats.connected -= 1
        self._fail(f"connection lost: {exc}" if exc else "connection closed by the server")

    def _fail(self, reason: str) -> None:
        if not self.connected.done():
            self.connected.set_exception(ConnectionError(reason))
        if not self.closed.done():
            self.stats.errors += 1
            self.stats.last_error = reason
            self.closed.set_result(None)
        self.room.set()
        if self.transport is not None:
            self.transport.close()

    # -- sending -----------------------------------------------------------------------------

    def publish(self, topic: bytes, payload: bytes, qos: int) -> bool:
        """Send one message; False (nothing sent) when the in-flight window is full."""
        if self.transport is None or self.closed.done():
            return False
        packet_id = 0
        if qos:
            if len(self.inflight) >= self.max_inflight:
                self.room.clear()
                return False
            packet_id = self._next_id = self._next_id % 65535 + 1
            while packet_id in self.inflight:
                packet_id = self._next_id = self._next_id % 65535 + 1
            self.inflight[packet_id] = time.monotonic()
        self.transport.write(publish_frame(topic, payload, qos, packet_id, self.level))
        self.stats.sent += 1
        if not qos:
            self.stats.acked += 1
        self._last_sent = time.monotonic()
        return True

    def ping_if_idle(self) -> None:
        """Keep the connection alive when nothing was sent for a while."""
        if self.transport is not None and time.monotonic() - self._last_sent > self.keep_alive / 2:
            self.transport.write(_PINGREQ)
            self._last_sent = time.monotonic()

    async def drain(self, within_s: float) -> None:
        """Wait until every message in flight is acknowledged (or ``within_s`` has passed)."""
        deadline = time.monotonic() + within_s
        while self.inflight and not self.closed.done() and time.monotonic() < deadline:
            self.room.clear()
            try:
                await asyncio.wait_for(self.room.wait(), max(0.01, deadline - time.monotonic()))
            except TimeoutError:
                break

    def close(self) -> None:
        """Disconnect politely."""
        if self.transport is not None and not self.closed.done():
            self.transport.write(b"\xe0\x00")  # DISCONNECT
            self.transport.close()
            self.closed.set_result(None)


async def open_connection(
    host: str, port: int, client_id: str, username: str, password: str, stats: Stats, **kwargs: int
) -> SimConnection:
    """Connect and wait for the CONNACK."""
    loop = asyncio.get_running_loop()
    _transport, connection = await loop.create_connection(
        lambda: SimConnection(client_id, username, password, stats, **kwargs), host, port
    )
    await asyncio.wait_for(connection.connected, 30)
    return connection
