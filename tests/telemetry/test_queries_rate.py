"""The tenant's ingest rate (the console overview's figure): points of the tenant's series
committed within the window, counted from the ingest log; other tenants' points and older
batches are not counted, and the rows read are bounded."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from roost.config import load_settings
from roost.core.access import local_admin
from roost.inventory.tables import devices, sensors
from roost.runtime import Roost
from roost.telemetry.engine.batch import KIND_BY_TYPE, BatchBuilder, decode
from roost.telemetry.engine.tables import ts_log
from roost.telemetry.queries import service as queries


@pytest.fixture
async def roost(tmp_path: Path) -> AsyncIterator[Roost]:
    running = Roost.build(load_settings({}, data_dir=tmp_path))
    await running.start(serve=False)
    try:
        yield running
    finally:
        await running.close()


async def _series(running: Roost, tenant_id: str, device_id: str) -> int:
    actor = local_admin(tenant_id)
    await running.devices.create(actor, {"id": device_id})
    await running.devices.create_sensor(actor, device_id, {"id": "temp", "type": "double"})
    async with running.db.read() as conn:
        pk: int = (
            await conn.execute(
                sa.select(sensors.c.pk)
                .join(devices, devices.c.pk == sensors.c.device_pk)
                .where(devices.c.tenant_id == tenant_id, devices.c.id == device_id)
            )
        ).scalar_one()
    return pk


async def _commit(running: Roost, points: list[tuple[int, int]], committed_ns: int) -> None:
    """Store one batch of (series, count) points as committed at ``committed_ns``."""
    builder = BatchBuilder()
    ts = committed_ns
    for series, count in points:
        for _ in range(count):
            ts += 1
            builder.add_point(series, ts, ts, KIND_BY_TYPE["double"], 1.0)
    committed = await running.pipeline.store.append(decode(builder.encode()))
    # The store stamps the commit time itself: an older batch is dated afterwards.
    async with running.db.write() as conn:
        await conn.execute(
            sa.update(ts_log)
            .where(ts_log.c.first_offset == committed.first_offset)
            .values(committed_ns=committed_ns)
        )


async def test_counts_the_tenants_points_within_the_window(roost: Roost) -> None:
    await roost.identity.create_tenant(local_admin(), "other", "Other")
    ours = await _series(roost, "default", "meter-1")
    mine_too = await _series(roost, "default", "meter-2")
    theirs = await _series(roost, "other", "meter-3")
    now = time.time_ns()
    await _commit(roost, [(ours, 500)], now - 3600 * 1_000_000_000)  # an hour ago: not counted
    await _commit(roost, [(ours, 30), (theirs, 1000)], now)
    await _commit(roost, [(mine_too, 12), (theirs, 7)], now)

    rate = await roost.telemetry.ingest_rate(local_admin(), window_s=60)
    assert rate["points"] == 42
    assert rate["window_s"] == pytest.approx(60, abs=1)
    assert rate["points_per_s"] == pytest.approx(42 / rate["window_s"])

    other = await roost.telemetry.ingest_rate(local_admin("other"), window_s=60)
    assert other["points"] == 1007


async def test_a_busy_log_is_read_only_as_far_as_the_row_limit(
    roost: Roost, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(queries, "RATE_MAX_ROWS", 3)
    series = await _series(roost, "default", "meter-1")
    for _ in range(5):
        await _commit(roost, [(series, 10)], time.time_ns())
    rate = await roost.telemetry.ingest_rate(local_admin(), window_s=60)
    # Three newest rows: their points over the time they cover (far less than the minute).
    assert rate["points"] == 30
    assert rate["window_s"] < 30
