"""What only the in-process bus does: bounded in-memory streams that live as long as the bus."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

import roost.bus.memory
from roost.bus.base import StreamMessage
from roost.bus.memory import MemoryBus
from roost.errors import Unavailable

WAIT_S = 10.0


async def test_a_full_stream_pushes_back_until_consumed() -> None:
    bus = MemoryBus(stream_max_bytes=10)
    await bus.start()
    try:
        await bus.stream_publish("roost.ingest.a", b"12345")
        await bus.stream_publish("roost.ingest.a", b"67890")
        with pytest.raises(Unavailable) as full:
            await bus.stream_publish("roost.ingest.a", b"x")
        assert full.value.retry_after >= 1

        consumed = asyncio.Event()

        async def handler(batch: Sequence[StreamMessage]) -> None:
            if batch[-1].data == b"67890":
                consumed.set()

        await bus.stream_consume("roost.ingest.>", "writer", handler)
        await asyncio.wait_for(consumed.wait(), WAIT_S)
        # The worker acknowledged the batch as the handler returned, before this task resumed,
        # and acknowledged messages leave the stream (work-queue retention): room again.
        assert await _fits(bus)
    finally:
        await bus.close()


async def _fits(bus: MemoryBus) -> bool:
    try:
        await bus.stream_publish("roost.ingest.a", b"x")
    except Unavailable:
        return False
    return True


async def test_streams_live_as_long_as_the_bus() -> None:
    first = MemoryBus()
    await first.start()
    await first.stream_publish("roost.ingest.a", b"kept in memory only")
    await first.close()
    with pytest.raises(Unavailable):
        await first.stream_publish("roost.ingest.a", b"closed")

    second = MemoryBus()  # as after a restart: embedded mode commits to SQLite, not here
    await second.start()
    try:
        assert await second.stream_publish("roost.ingest.a", b"new") == 1
    finally:
        await second.close()


async def test_msg_id_is_forgotten_after_the_window(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(roost.bus.memory, "DEDUPE_WINDOW_S", 0.0)
    bus = MemoryBus()
    await bus.start()
    try:
        first = await bus.stream_publish("roost.ingest.a", b"a", msg_id="m")
        again = await bus.stream_publish("roost.ingest.a", b"a", msg_id="m")
        assert again == first + 1
    finally:
        await bus.close()
