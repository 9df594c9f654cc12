"""Bus fixtures: a started bus on each backend, and a stream family of its own for every test."""

from __future__ import annotations

import asyncio
import secrets
import socket
from collections.abc import AsyncIterator
from functools import cache
from urllib.parse import urlsplit

import pytest

from roost.bus.base import Bus, open_bus
from roost.bus.subjects import stream_name
from tests.support import NATS_URL, skip_or_fail

BUS_BACKENDS = ["memory", "nats"]


@cache
def nats_reachable() -> str | None:
    """None when something listens at NATS_URL, else the reason it does not."""
    parts = urlsplit(NATS_URL)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 4222), 2):
            return None
    except OSError as exc:
        return f"NATS not reachable at {NATS_URL}: {exc}"


def require_nats() -> None:
    """Skip (locally) or fail (CI) unless the NATS server is there."""
    reason = nats_reachable()
    if reason:
        skip_or_fail(reason)


@pytest.fixture(params=BUS_BACKENDS)
def bus_url(request: pytest.FixtureRequest) -> str:
    """The URL of each backend."""
    if request.param == "nats":
        require_nats()
        return NATS_URL
    return "memory://"


@pytest.fixture
async def bus(bus_url: str, family: str) -> AsyncIterator[Bus]:
    """A started bus (set up after ``family``, so closed before its stream is deleted)."""
    the_bus = open_bus(bus_url)
    await the_bus.start()
    try:
        yield the_bus
    finally:
        await the_bus.close()


@pytest.fixture
async def peer(bus_url: str, bus: Bus) -> AsyncIterator[Bus]:
    """Another process's view of the same bus: a second connection on NATS, the same bus in
    memory (an in-process bus has no other view)."""
    if bus_url.startswith("memory"):
        yield bus
        return
    other = open_bus(bus_url)
    await other.start()
    try:
        yield other
    finally:
        await other.close()


async def delete_streams(*families: str) -> None:
    """Remove the JetStream streams (and so their consumers) of a test's families."""
    import nats
    import nats.js.errors

    nc = await nats.connect(NATS_URL, allow_reconnect=False)
    try:
        js = nc.jetstream()
        for family in families:
            try:
                await js.delete_stream(stream_name(family))
            except nats.js.errors.NotFoundError:
                pass
    finally:
        await nc.close()


@pytest.fixture
async def family(bus_url: str) -> AsyncIterator[str]:
    """A subject family (``roost.t…``, so a stream ``ROOST_T…``) used by one test only; its
    NATS stream is deleted afterwards."""
    name = f"roost.t{secrets.token_hex(5)}"
    yield name
    if not bus_url.startswith("memory"):
        await asyncio.wait_for(delete_streams(name), 10)
