"""Alarm history is kept for ``ROOST_ALARM_RETENTION_DAYS``: cleared alarms older than that are
deleted, active ones and recent ones stay (a real Roost on SQLite and PostgreSQL, a test clock)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from roost.config import load_settings
from roost.core.access import local_admin
from roost.inventory.tables import devices
from roost.runtime import Roost
from roost.store.queries import PageRequest


class Clock:
    """A wall clock the test moves."""

    def __init__(self) -> None:
        self.now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def roost(tmp_path: Path, database_url: str) -> AsyncIterator[tuple[Roost, Clock]]:
    settings = load_settings(
        {"ROOST_CONFIG": str(tmp_path / "none.toml")},
        data_dir=tmp_path,
        database_url=database_url,
        admin_password="admin-password-for-tests",
        alarm_retention_days=30,
    )
    clock = Clock()
    running = Roost.build(settings, clock=clock)
    await running.start(serve=False)
    try:
        yield running, clock
    finally:
        await running.close()


async def test_cleared_alarms_older_than_the_retention_are_deleted(
    roost: tuple[Roost, Clock],
) -> None:
    running, clock = roost
    actor = local_admin()
    await running.devices.create(actor, {"id": "d1"})
    alarms = running.alarms
    start = clock.now
    async with running.db.write() as conn:
        pk = (await conn.execute(sa.select(devices.c.pk).where(devices.c.id == "d1"))).scalar_one()
        for kind in ("old", "recent", "open"):
            await alarms.raise_in(
                conn, tenant_id="default", device_pk=pk, device_id="d1", type=kind,
                severity="minor", rule_id=None, summary=kind, details={}, now=start,
            )  # fmt: skip
        await alarms.clear_in(conn, tenant_id="default", device_pk=pk, type="old", now=start)
        later = start + timedelta(days=20)
        await alarms.clear_in(conn, tenant_id="default", device_pk=pk, type="recent", now=later)
    clock.now = start + timedelta(days=31)
    assert await alarms.prune() == 1
    kept = await alarms.list(actor, PageRequest(limit=10))
    assert sorted(a["type"] for a in kept.items) == ["open", "recent"]
    clock.now = start + timedelta(days=400)
    assert await alarms.prune() == 1  # the recent one, now old; the open one stays
    assert [a["type"] for a in (await alarms.list(actor, PageRequest(limit=10))).items] == ["open"]
