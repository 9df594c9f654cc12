"""The migrations build exactly the schema of every room's ``tables.py`` on every backend,
idempotently."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection

from roost.config import load_settings
from roost.core.access import Actor, Role
from roost.identity.passwords import hash_password
from roost.runtime import Roost  # importing the runtime puts every room's tables on the metadata
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
    assert differences == [], f"migrations and the rooms' tables disagree: {differences}"


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


async def test_a_database_made_at_revision_0010_upgrades_to_head_and_keeps_its_rows(
    database_url: str, tmp_path: Path
) -> None:
    """An installation made by an earlier Roost (revision 0010, before the rooms) starts on this
    one: the schema reaches head, matches every room's tables, and its rows read back."""
    old = open_database(database_url)
    try:
        assert await migrate.upgrade(old, "0010") == (None, "0010")
        now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
        async with old.write() as conn:
            # The tables as they were at 0010 (reflected), not as today's code declares them.
            tables = sa.MetaData()
            await conn.run_sync(tables.reflect)
            t = tables.tables
            stamps = {"created_at": now, "updated_at": now}
            await conn.execute(
                t["tenants"].insert(), {"id": "acme", "name": "Acme", "description": "", **stamps}
            )
            await conn.execute(
                t["users"].insert(),
                {
                    "tenant_id": "acme",
                    "username": "olivia",
                    "password_hash": hash_password("correct horse battery"),
                    "role": "operator",
                    **stamps,
                },
            )
            await conn.execute(
                t["sites"].insert(),
                {"tenant_id": "acme", "id": "paris", "name": "Paris", "time_zone": "UTC", **stamps},
            )
            await conn.execute(
                t["devices"].insert(),
                {
                    "tenant_id": "acme",
                    "id": "display-1",
                    "name": "Window display",
                    "site_id": "paris",
                    **stamps,
                },
            )
            device_pk = (
                await conn.execute(
                    sa.select(t["devices"].c.pk).where(t["devices"].c.id == "display-1")
                )
            ).scalar_one()
            await conn.execute(
                t["device_tags"].insert(), {"device_pk": device_pk, "key": "floor", "value": "0"}
            )
            await conn.execute(
                t["sensors"].insert(),
                {
                    "device_pk": device_pk,
                    "id": "temperature",
                    "type": "double",
                    "unit": "°C",
                    **stamps,
                },
            )
    finally:
        await old.dispose()

    roost = Roost.build(load_settings({}, data_dir=tmp_path, database_url=database_url))
    await roost.start(serve=False)
    try:
        assert await migrate.current_revision(roost.db) == migrate.head_revision()

        def diff(conn: Connection) -> list[object]:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(context, metadata))

        async with roost.db.read() as conn:
            assert await conn.run_sync(diff) == []
        login = await roost.identity.login("olivia", "correct horse battery", "127.0.0.1")
        assert login.user["tenant_id"] == "acme" and login.user["role"] == "operator"
        operator = Actor(tenant_id="acme", name="olivia", role=Role.OPERATOR)
        device = await roost.devices.get(operator, "display-1")
        assert (device["name"], device["site_id"], device["tags"]) == (
            "Window display",
            "paris",
            {"floor": "0"},
        )
        sensor = await roost.devices.get_sensor(operator, "display-1", "temperature")
        assert (sensor["type"], sensor["unit"]) == ("double", "°C")
    finally:
        await roost.close()
