"""The rules engine's lookups: answered from memory, and never stale after a replace — in the
process that made it at once, in another process through the bus (real NATS, PostgreSQL), and
without the bus within the recheck time."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from roost.alarms.reference import cache
from roost.alarms.reference.service import ReferenceService
from roost.bus.base import open_bus
from roost.config import load_settings
from roost.core.access import local_admin
from roost.runtime import Roost
from tests.support import fresh_postgres_database, postgres_reachable, private_nats, skip_or_fail

ACTOR = local_admin()
TENANT = ACTOR.tenant_id


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'roost.db'}"
        return
    reason = postgres_reachable()
    if reason:
        skip_or_fail(reason)
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture
async def roost(tmp_path: Path, database_url: str) -> AsyncIterator[Roost]:
    running = Roost.build(load_settings({}, data_dir=tmp_path, database_url=database_url))
    await running.start(serve=False)
    try:
        yield running
    finally:
        await running.close()


async def upload(service: ReferenceService, table: str, text: str) -> int:
    made = await service.replace(ACTOR, table, text.encode(), "csv")
    version: int = made["version"]
    return version


async def test_lookups_answer_rows_from_memory_and_see_a_replace_at_once(roost: Roost) -> None:
    reference = roost.reference
    assert not await reference.exists(TENANT, "products")
    assert await reference.lookup(TENANT, "products", "P1") is None
    await upload(reference, "products", "id,name,price\nP1,Beans,18.5\nP2,Milk,2\n")
    assert await reference.exists(TENANT, "products")
    assert not await reference.exists("another-tenant", "products")
    assert await reference.lookup("another-tenant", "products", "P1") is None

    reference.cache.clear()
    lookups, hits = cache.LOOKUPS.values[()], cache.CACHE_HITS.values[()]
    row = await reference.lookup(TENANT, "products", "P1")  # loads the table
    assert row == {"id": "P1", "name": "Beans", "price": 18.5}
    assert await reference.lookup(TENANT, "products", "P3") is None  # from memory
    assert cache.LOOKUPS.values[()] == lookups + 2
    assert cache.CACHE_HITS.values[()] == hits + 1
    row["price"] = 0  # a caller's change does not reach the cache
    assert (await reference.lookup(TENANT, "products", "P1") or {})["price"] == 18.5

    await upload(reference, "products", "id,name,price\nP1,Beans,19\n")
    assert await reference.lookup(TENANT, "products", "P1") == {
        "id": "P1",
        "name": "Beans",
        "price": 19,
    }
    assert await reference.lookup(TENANT, "products", "P2") is None
    await reference.delete(ACTOR, "products")
    assert await reference.lookup(TENANT, "products", "P1") is None
    assert not await reference.exists(TENANT, "products")


async def test_many_concurrent_lookups_load_a_table_once(roost: Roost) -> None:
    reference = roost.reference
    await upload(reference, "t", "k,v\n" + "".join(f"k{i},{i}\n" for i in range(1000)))
    reference.cache.clear()
    loads = 0
    real_load = reference.cache._load

    async def counting(tenant_id: str, table: str) -> tuple[int, dict[str, dict[str, object]]]:
        nonlocal loads
        loads += 1
        return await real_load(tenant_id, table)

    reference.cache._load = counting
    rows = await asyncio.gather(*(reference.lookup(TENANT, "t", f"k{i}") for i in range(1000)))
    assert [r and r["v"] for r in rows] == list(range(1000))
    assert loads == 1
    started = time.perf_counter()
    for i in range(10_000):
        await reference.lookup(TENANT, "t", f"k{i % 1000}")
    # From memory: microseconds each, not a query (a generous bound for a loaded machine).
    assert time.perf_counter() - started < 2.0


async def test_without_a_notice_another_process_rechecks_the_version(
    roost: Roost, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another process on the same database, whose bus does not reach this one.
    bus = open_bus("memory://")
    await bus.start()
    other = ReferenceService(dataclasses.replace(roost.reference.deps, bus=bus))
    await other.start()
    try:
        monkeypatch.setattr(cache, "RECHECK_S", 0.3)
        await upload(roost.reference, "t", "k,v\na,1\n")
        assert await other.lookup(TENANT, "t", "a") == {"k": "a", "v": 1}
        await upload(roost.reference, "t", "k,v\na,2\n")
        assert await other.lookup(TENANT, "t", "a") == {"k": "a", "v": 1}  # its copy, for now
        await asyncio.sleep(0.4)
        assert await other.lookup(TENANT, "t", "a") == {"k": "a", "v": 2}
    finally:
        await other.close()
        await bus.close()


async def test_a_replace_reaches_the_other_processes_through_nats(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reason = postgres_reachable()
    if reason:
        skip_or_fail(reason)
    # The recheck would hide a lost notice: make it far longer than the test.
    monkeypatch.setattr(cache, "RECHECK_S", 3600.0)
    with fresh_postgres_database() as url, private_nats(tmp_path / "nats") as nats_url:
        roost = Roost.build(load_settings({}, data_dir=tmp_path, database_url=url))
        await roost.start(serve=False)
        services: list[ReferenceService] = []
        try:
            for _ in range(2):
                bus = open_bus(nats_url)
                await bus.start()
                service = ReferenceService(dataclasses.replace(roost.reference.deps, bus=bus))
                await service.start()
                services.append(service)
            reader, writer = services
            await upload(writer, "stores", "store,city\nS1,Paris\n")
            assert await reader.lookup(TENANT, "stores", "S1") == {"store": "S1", "city": "Paris"}
            await upload(writer, "stores", "store,city\nS1,Lyon\n")
            deadline = time.monotonic() + 10
            while (await reader.lookup(TENANT, "stores", "S1") or {}).get("city") != "Lyon":
                assert time.monotonic() < deadline, "the reader never heard of the replace"
                await asyncio.sleep(0.02)
            await writer.delete(ACTOR, "stores")
            deadline = time.monotonic() + 10
            while await reader.exists(TENANT, "stores"):
                assert time.monotonic() < deadline, "the reader never heard of the delete"
                await asyncio.sleep(0.02)
        finally:
            for service in services:
                await service.close()
                await service.deps.bus.close()
            await roost.close()
