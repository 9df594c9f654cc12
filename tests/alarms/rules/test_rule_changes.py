"""A rule change takes effect for everything committed after it returns, even when the engine was
in the middle of a step when the change was saved (the step that read the point under the old
rules gives way, and the point meets the changed rules after the reload)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from roost.alarms.tables import alarms
from roost.config import load_settings
from roost.core.access import local_admin
from roost.inventory.tables import devices, sensors
from roost.runtime import Roost
from roost.telemetry.engine.batch import KIND_BY_TYPE, BatchBuilder, decode

ACTOR = local_admin()
HOT = {
    "id": "hot",
    "source": {"kind": "telemetry", "sensor": "temp"},
    "condition": {"type": "threshold", "op": ">", "value": 70},
    "actions": [{"type": "alarm", "alarm_type": "hot", "severity": "critical"}],
}


@pytest.fixture
async def roost(tmp_path: Path) -> AsyncIterator[Roost]:
    running = Roost.build(load_settings({}, data_dir=tmp_path))
    await running.start(serve=False)
    try:
        yield running
    finally:
        await running.close()


async def _series(running: Roost) -> int:
    await running.devices.create(ACTOR, {"id": "oven"})
    await running.devices.create_sensor(ACTOR, "oven", {"id": "temp", "type": "double"})
    async with running.db.read() as conn:
        pk: int = (
            await conn.execute(
                sa.select(sensors.c.pk)
                .join(devices, devices.c.pk == sensors.c.device_pk)
                .where(devices.c.id == "oven")
            )
        ).scalar_one()
    return pk


async def _point(running: Roost, series: int, value: float) -> None:
    builder = BatchBuilder()
    ts = time.time_ns()
    builder.add_point(series, ts, ts, KIND_BY_TYPE["double"], value)
    await running.pipeline.store.append(decode(builder.encode()))


async def _alarm_count(running: Roost) -> int:
    async with running.db.read() as conn:
        count: int = (
            await conn.execute(sa.select(sa.func.count()).select_from(alarms))
        ).scalar_one()
    return count


async def test_a_point_after_a_disable_does_not_fire_even_mid_step(roost: Roost) -> None:
    series = await _series(roost)
    await roost.rules.create(ACTOR, HOT)
    engine = roost.rule_engine
    await engine.close()  # the test drives the steps itself
    await engine._load()  # the engine holds the enabled rule, as in a step begun before the change
    await roost.rules.update(ACTOR, "hot", {"enabled": False})
    await _point(roost, series, 90.0)  # committed after the disable returned
    assert await engine.step() is True  # the step gives way to the reload
    assert await _alarm_count(roost) == 0
    await engine._load()
    await engine.step()
    assert await _alarm_count(roost) == 0

    # The same point path fires once the rule is enabled again (the check above can fail).
    await roost.rules.update(ACTOR, "hot", {"enabled": True})
    await engine._load()
    await _point(roost, series, 95.0)
    await engine.step()
    assert await _alarm_count(roost) == 1
