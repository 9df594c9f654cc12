"""The sans-IO session over a real Roost (SQLite in a temporary directory): real device tokens,
the real device authenticator and its revocations, and the real ingest service."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from roost.config import load_settings
from roost.core.access import local_admin
from roost.mqtt.codec import Connack, Disconnect, Puback, Publish, encode
from roost.mqtt.gateway import Gateway
from roost.runtime import Roost, device_topics
from tests.mqtt.fakes import RecordingLink, ScriptedIngest, connect_bytes

V3, V5 = 4, 5
HAS_INGEST = hasattr(Roost, "ingest")


@pytest.fixture
async def roost(tmp_path: Path) -> AsyncIterator[Roost]:
    settings = load_settings({}, data_dir=tmp_path, admin_password="admin-password-for-tests")
    running = Roost.build(settings)
    await running.start()
    try:
        yield running
    finally:
        await running.close()


async def device_with_token(roost: Roost, device_id: str) -> tuple[str, str]:
    """Create a device and a token for it; answer (token id, token)."""
    actor = local_admin()
    await roost.devices.create(actor, {"id": device_id, "name": device_id})
    record, token = await roost.credentials.issue_token(actor, device_id)
    return str(record["id"]), token


def gateway_over(roost: Roost, ingest: Any = None) -> Gateway:
    gateway = Gateway(roost.device_auth, ingest or ScriptedIngest(), topics=device_topics())
    gateway.start()
    return gateway


async def open_session(
    gateway: Gateway, level: int, username: str, token: str, client_id: str = "c1"
) -> tuple[RecordingLink, Any]:
    link = RecordingLink()
    session = gateway.open(link, "test")
    session.feed(connect_bytes(level, client_id, username=username, password=token.encode()))
    await until(lambda: bool(link.out) or link.closed)  # the authenticator may use the database
    return link, session


async def until(condition: Callable[[], bool], seconds: float = 10) -> None:
    """Wait (in real time: the database works in threads) until ``condition`` holds."""
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out")


@pytest.mark.parametrize("level", [V3, V5])
async def test_real_tokens_by_device_id_or_jwt(roost: Roost, level: int) -> None:
    _, token = await device_with_token(roost, "pump-1")
    gateway = gateway_over(roost)
    for username in ("pump-1", "JWT"):
        link, session = await open_session(gateway, level, username, token, username)
        [connack] = link.packets(level)
        assert isinstance(connack, Connack) and connack.reason_code == 0
        assert session.identity.device_id == "pump-1"
    await gateway.close()


@pytest.mark.parametrize(("level", "bad", "other"), [(V3, 4, 5), (V5, 0x86, 0x87)])
async def test_real_refusals(roost: Roost, level: int, bad: int, other: int) -> None:
    _, token = await device_with_token(roost, "pump-1")
    await device_with_token(roost, "pump-2")
    gateway = gateway_over(roost)
    link, _ = await open_session(gateway, level, "pump-1", token[:-2] + "xx")
    [connack] = link.packets(level)
    assert isinstance(connack, Connack) and connack.reason_code == bad and link.closed
    link, _ = await open_session(gateway, level, "pump-2", token)
    [connack] = link.packets(level)
    assert isinstance(connack, Connack) and connack.reason_code == other and link.closed
    await gateway.close()


async def test_revoking_a_real_token_closes_its_session(roost: Roost) -> None:
    token_id, token = await device_with_token(roost, "pump-1")
    gateway = gateway_over(roost)
    link, session = await open_session(gateway, V5, "pump-1", token)
    link.take()
    await roost.credentials.revoke_token(local_admin(), "pump-1", token_id)
    await until(lambda: link.closed)
    [pkt] = link.packets(V5)
    assert isinstance(pkt, Disconnect) and pkt.reason_code == 0x87
    assert link.closed and session.closed
    await gateway.close()


@pytest.mark.skipif(not HAS_INGEST, reason="the ingest service is not wired into Roost yet")
async def test_real_ingest_acknowledges_after_commit(roost: Roost) -> None:
    _, token = await device_with_token(roost, "pump-1")
    gateway = gateway_over(roost, roost.ingest)
    link, session = await open_session(gateway, V5, "pump-1", token)
    link.take()
    session.feed(encode(Publish("devices/pump-1/telemetry", b'{"rpm": 1200}', 1, packet_id=1), V5))
    session.feed(encode(Publish("devices/pump-1/telemetry", b'{"rpm": "x"', 1, packet_id=2), V5))
    await until(lambda: len(link.out) >= 8)
    acks = link.packets(V5)
    assert [(a.packet_id, a.reason_code) for a in acks] == [(1, 0), (2, 0x99)]  # type: ignore[union-attr]
    assert isinstance(acks[0], Puback)
    await gateway.close()
