"""Test doubles for the MQTT session tests: a recording link, a scripted authenticator and ingest.

The scripted ingest lets a test decide when a commit ticket completes (or fails), when the writer
is busy, and which payloads need the slow path, which the real service cannot be made to do on
cue. Tests that need real storage use a real Roost instead (``test_session_roost.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from roost.core.device_identity import DeviceIdentity
from roost.core.ingest import CommitTicket, IngestKind, IngestOutcome
from roost.errors import AuthenticationFailed, PermissionDenied
from roost.mqtt.codec import (
    PROTOCOL_V5,
    Connect,
    MQTTDecoder,
    Packet,
    Properties,
    Will,
    encode,
)
from roost.mqtt.gateway import Gateway
from roost.mqtt.host import GatewayConfig
from roost.mqtt.session import MQTTSession
from roost.runtime import device_topics

TOKENS = {
    b"token-a": DeviceIdentity("t1", "dev-a", 1, "cred-a"),
    b"token-b": DeviceIdentity("t1", "dev-b", 2, "cred-b"),
}


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class RecordingLink:
    """A Link that records what the session wrote and whether it closed or paused."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.writes = 0
        self.closed = False
        self.paused = False
        self._decoder: MQTTDecoder | None = None

    def write(self, data: bytes) -> None:
        assert not self.closed, "write after close"
        self.out += data
        self.writes += 1

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def peer_certificate(self) -> bytes | None:
        return None

    def take(self) -> bytes:
        """The bytes written since the last take."""
        data = bytes(self.out)
        self.out.clear()
        self.writes = 0
        return data

    def packets(self, level: int) -> list[Packet]:
        """Decode (as a client would) what was written since the last call."""
        if self._decoder is None:
            self._decoder = MQTTDecoder(role="client", protocol_level=level)
        return self._decoder.feed(self.take())


class FakeAuthenticator:
    """Accepts the tokens in TOKENS, with username = the device id or JWT."""

    def __init__(self) -> None:
        self.callbacks: list[Callable[[str], None]] = []
        self.unavailable = False

    async def authenticate_mqtt(
        self, username: str | None, password: bytes | None, client_certificate: bytes | None = None
    ) -> DeviceIdentity:
        await asyncio.sleep(0)
        if self.unavailable:
            raise RuntimeError("authenticator down")
        identity = TOKENS.get(password or b"")
        if identity is None:
            raise AuthenticationFailed("bad token")
        if username not in ("JWT", identity.device_id):
            raise PermissionDenied("token of another device")
        return identity

    def on_revoked(self, callback: Callable[[str], None]) -> Callable[[], None]:
        self.callbacks.append(callback)
        return lambda: self.callbacks.remove(callback)

    def revoke(self, credential_id: str) -> None:
        for callback in list(self.callbacks):
            callback(credential_id)


@dataclass
class ScriptedIngest:
    """An ingest port whose tickets, busy state and slow path the test controls.

    Payloads: ``b"bad"`` is refused; ``b"slow"`` needs the slow path; anything else is taken and
    joins :attr:`ticket` (a new one after :meth:`new_batch`).
    """

    stored: list[tuple[IngestKind, bytes]] = field(default_factory=list)
    refusals: list[tuple[str, list[dict[str, Any]]]] = field(default_factory=list)
    ticket: CommitTicket = field(default_factory=CommitTicket)
    busy: bool = False
    capacity: asyncio.Event = field(default_factory=asyncio.Event)

    def new_batch(self) -> CommitTicket:
        """Start a new batch; answer the previous batch's ticket."""
        old, self.ticket = self.ticket, CommitTicket()
        return old

    async def device_context(self, identity: DeviceIdentity) -> Any:
        return ("ctx", identity.device_id)

    def try_submit(
        self, ctx: Any, kind: IngestKind, payload: bytes, recv_ns: int, msg_id: str | None = None
    ) -> IngestOutcome | None:
        if self.busy:
            return IngestOutcome(busy=True)
        if payload == b"slow":
            return None
        return self._take(kind, payload)

    def _take(self, kind: IngestKind, payload: bytes) -> IngestOutcome:
        if payload == b"bad":
            error = {"index": 0, "field": "value", "message": "not a number"}
            return IngestOutcome(errors=[error])
        self.stored.append((kind, payload))
        return IngestOutcome(accepted=1, ticket=self.ticket)

    async def submit(
        self, ctx: Any, kind: IngestKind, payload: bytes, recv_ns: int, msg_id: str | None = None
    ) -> IngestOutcome:
        await asyncio.sleep(0)
        return self._take(kind, payload)

    async def wait_for_capacity(self) -> None:
        await self.capacity.wait()
        self.busy = False

    async def record_refusal(
        self, ctx: Any, topic: str, errors: list[dict[str, Any]], recv_ns: int
    ) -> None:
        self.refusals.append((topic, errors))


def make_gateway(
    config: GatewayConfig | None = None,
) -> tuple[Gateway, FakeAuthenticator, ScriptedIngest, FakeClock]:
    """A gateway over the fakes, on a hand-moved clock."""
    auth = FakeAuthenticator()
    ingest = ScriptedIngest()
    clock = FakeClock()
    gateway = Gateway(
        auth,
        ingest,
        config,
        topics=device_topics(),
        clock=clock,
        clock_ns=lambda: 1_700_000_000 * 10**9,
    )
    return gateway, auth, ingest, clock


def connect_bytes(
    level: int,
    client_id: str = "c1",
    *,
    username: str | None = "dev-a",
    password: bytes | None = b"token-a",
    clean_start: bool = True,
    keep_alive: int = 60,
    will: Will | None = None,
    properties: Properties | None = None,
) -> bytes:
    """A CONNECT packet's bytes."""
    props = properties or Properties()
    if level != PROTOCOL_V5:
        props = Properties()
    pkt = Connect(client_id, level, clean_start, keep_alive, username, password, will, props)
    return encode(pkt, level)


async def settle(gateway: Gateway) -> None:
    """Let the tasks the gateway started run as far as they can (some wait on the test)."""
    for _ in range(20):
        await asyncio.sleep(0)


async def connected(
    gateway: Gateway, level: int, client_id: str = "c1", **kwargs: Any
) -> tuple[MQTTSession, RecordingLink, list[Packet]]:
    """A session that sent CONNECT, with what it received (CONNACK first)."""
    link = RecordingLink()
    session = gateway.open(link, "test")
    session.feed(connect_bytes(level, client_id, **kwargs))
    await settle(gateway)
    packets = link.packets(level)
    assert packets, "no CONNACK"
    return session, link, packets
