"""The database port: transactions commit or roll back, errors are translated, writers queue."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from roost.errors import ConfigError, Conflict
from roost.identity.tables import tenants
from roost.store import migrate
from roost.store.database import Database, open_database


def _tenant(tenant_id: str) -> dict[str, object]:
    now = datetime.now(UTC)
    return {
        "id": tenant_id,
        "name": tenant_id,
        "description": "",
        "created_at": now,
        "updated_at": now,
    }


async def _count(db: Database) -> int:
    async with db.read() as conn:
        return int(
            (await conn.execute(sa.select(sa.func.count()).select_from(tenants))).scalar_one()
        )


async def test_write_commits_and_failed_write_rolls_back(db: Database) -> None:
    await migrate.upgrade(db)
    async with db.write() as conn:
        await conn.execute(tenants.insert().values(**_tenant("a")))
    with pytest.raises(RuntimeError):
        async with db.write() as conn:
            await conn.execute(tenants.insert().values(**_tenant("b")))
            raise RuntimeError("abort")
    assert await _count(db) == 1


async def test_duplicate_key_becomes_conflict(db: Database) -> None:
    await migrate.upgrade(db)
    async with db.write() as conn:
        await conn.execute(tenants.insert().values(**_tenant("a")))
    with pytest.raises(Conflict):
        async with db.write() as conn:
            await conn.execute(tenants.insert().values(**_tenant("a")))


async def test_timestamps_come_back_as_aware_utc(db: Database) -> None:
    await migrate.upgrade(db)
    written = datetime(2026, 11, 22, 8, 30, 0, 123456, tzinfo=UTC)
    async with db.write() as conn:
        await conn.execute(
            tenants.insert().values(
                id="a", name="a", description="", created_at=written, updated_at=written
            )
        )
    async with db.read() as conn:
        read = (await conn.execute(sa.select(tenants.c.created_at))).scalar_one()
    assert read == written and read.tzinfo is not None and read.utcoffset().total_seconds() == 0


async def test_concurrent_read_modify_write_transactions_all_succeed(db: Database) -> None:
    # Each transaction reads then writes; on SQLite this is the pattern that fails with
    # SQLITE_BUSY under deferred transactions. All 50 must commit.
    await migrate.upgrade(db)

    async def add(n: int) -> None:
        async with db.write() as conn:
            await conn.execute(sa.select(sa.func.count()).select_from(tenants))
            await conn.execute(tenants.insert().values(**_tenant(f"t{n}")))

    await asyncio.gather(*(add(n) for n in range(50)))
    assert await _count(db) == 50


def test_unknown_url_scheme_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unsupported database URL"):
        open_database("mysql://localhost/roost")
