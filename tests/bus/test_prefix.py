"""The installation prefix (``ROOST_BUS_PREFIX``): two installations on one NATS stay apart.

Each test runs its own ``nats-server -js`` (``private_nats``), so the streams the prefixes make
(``ROOST_INGEST``, ``ACME_INGEST``) are the test's alone and vanish with it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import nats
import pytest

from roost.bus.base import Bus, StreamHandler, StreamMessage, open_bus
from roost.bus.nats import NatsBus
from roost.bus.subjects import with_prefix, without_prefix
from roost.config import load_settings
from roost.errors import ConfigError
from tests.support import private_nats

WAIT_S = 15.0
# How long "nothing arrives" is watched for, after a positive control has arrived.
QUIET_S = 0.3


@asynccontextmanager
async def started(url: str, prefix: str) -> AsyncIterator[Bus]:
    bus = open_bus(url, prefix=prefix)
    await bus.start()
    try:
        yield bus
    finally:
        await bus.close()


async def test_two_prefixes_on_one_nats_never_see_each_others_messages(tmp_path: Path) -> None:
    with private_nats(tmp_path) as url:
        async with (
            started(url, "roost") as roost,
            started(url, "acme") as acme,
            started(url, "acme") as acme_peer,
        ):
            heard: dict[str, list[tuple[str, bytes]]] = {"roost": [], "acme": []}
            news = {"roost": asyncio.Event(), "acme": asyncio.Event()}

            async def to(name: str, subject: str, data: bytes) -> None:
                heard[name].append((subject, data))
                news[name].set()

            await roost.subscribe("roost.>", lambda s, d: to("roost", s, d))
            await acme_peer.subscribe("roost.>", lambda s, d: to("acme", s, d))
            await acme.publish("roost.commands.changed", b"from acme")
            await roost.publish("roost.commands.changed", b"from roost")
            async with asyncio.timeout(WAIT_S):
                await news["acme"].wait()
                await news["roost"].wait()
            await asyncio.sleep(QUIET_S)
            # Each hears its own installation only, under the subject the rooms use.
            assert heard["acme"] == [("roost.commands.changed", b"from acme")]
            assert heard["roost"] == [("roost.commands.changed", b"from roost")]

            # Streams: acme's batches land in ACME_INGEST, and only acme's consumer gets them.
            got: dict[str, list[StreamMessage]] = {"roost": [], "acme": []}
            batches = {"roost": asyncio.Event(), "acme": asyncio.Event()}

            def keep(name: str) -> StreamHandler:
                async def handler(messages: Sequence[StreamMessage]) -> None:
                    got[name].extend(messages)
                    batches[name].set()

                return handler

            await roost.stream_consume("roost.ingest.>", "writers", keep("roost"))
            await acme_peer.stream_consume("roost.ingest.>", "writers", keep("acme"))
            await acme.stream_publish("roost.ingest.batches", b"acme batch")
            await roost.stream_publish("roost.ingest.batches", b"roost batch")
            async with asyncio.timeout(WAIT_S):
                await batches["acme"].wait()
                await batches["roost"].wait()
            await asyncio.sleep(QUIET_S)
            assert [(m.subject, m.data) for m in got["acme"]] == [
                ("roost.ingest.batches", b"acme batch")
            ]
            assert [(m.subject, m.data) for m in got["roost"]] == [
                ("roost.ingest.batches", b"roost batch")
            ]

        # On the wire: each installation has a stream of its own, on its own subjects.
        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            assert (await js.stream_info("ACME_INGEST")).config.subjects == ["acme.ingest.>"]
            assert (await js.stream_info("ROOST_INGEST")).config.subjects == ["roost.ingest.>"]
        finally:
            await nc.close()


def test_the_prefix_stands_for_the_leading_roost_token_only() -> None:
    assert with_prefix("roost.ingest.batches", "acme") == "acme.ingest.batches"
    assert with_prefix("roost.>", "acme") == "acme.>"
    assert with_prefix("roosters.x", "acme") == "roosters.x"
    assert without_prefix("acme.ingest.batches", "acme") == "roost.ingest.batches"
    assert without_prefix("acmex.y", "acme") == "acmex.y"
    assert with_prefix("roost.a", "roost") == without_prefix("roost.a", "roost") == "roost.a"


@pytest.mark.parametrize("prefix", ["", "Acme", "a.b", "a b", "a*", ">"])
def test_a_prefix_that_cannot_start_a_subject_is_a_config_error(prefix: str) -> None:
    with pytest.raises(ConfigError, match="ROOST_BUS_PREFIX"):
        open_bus("memory://", prefix=prefix)
    with pytest.raises(ConfigError, match="ROOST_BUS_PREFIX"):
        open_bus("nats://127.0.0.1:4222", prefix=prefix)


def test_the_setting_defaults_to_roost_and_reaches_the_nats_bus() -> None:
    assert load_settings({}).bus_prefix == "roost"
    settings = load_settings({"ROOST_BUS_PREFIX": "site-2"})
    bus = open_bus("nats://127.0.0.1:4222", prefix=settings.bus_prefix)
    assert isinstance(bus, NatsBus) and bus.prefix == "site-2"
