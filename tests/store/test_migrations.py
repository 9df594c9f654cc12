"""The migrations build exactly the schema of every room's ``tables.py`` on every backend,
idempotently."""

from __future__ import annotations

import asyncio

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection

import roost.runtime  # noqa: F401  (imports every room's tables onto the metadata)
from roost.store import migrate
from roost.store.database import Database, open_database
from roost.store.metadata import metadata


async def test_upgrade_from_empty_reaches_head_and_matches_schema(db: Database) -> None:
    assert await migrate.current_revision(db) is None
    before, after = await migrate.upgrade(db)
    assert (before, after) == (None, migrate.head_revision())

    def diff(conn: Connection) -> list[object]:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))

    async with db.read() as conn:
        differences = await conn.run_sync(diff)
    assert differences == [], f"migrations and schema.py disagree: {differences}"


async def test_upgrade_twice_is_a_no_op(db: Database) -> None:
    await migrate.upgrade(db)
    assert await migrate.upgrade(db) == (migrate.head_revision(), migrate.head_revision())


async def test_concurrent_upgrades_from_several_processes_do_not_race(database_url: str) -> None:
    # Several Roost processes starting at once each run the upgrade; the lock (PostgreSQL
    # advisory lock / SQLite's write lock) makes the later ones find the schema done.
    databases = [open_database(database_url) for _ in range(3)]
    try:
        results = await asyncio.gather(*(migrate.upgrade(d) for d in databases))
    finally:
        for d in databases:
            await d.dispose()
    heads = [after for _, after in results]
    assert heads == [migrate.head_revision()] * 3
    assert sum(1 for before, _ in results if before is None) == 1
