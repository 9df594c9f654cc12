"""JobService and the jobs pass on a real SQLite store with a clock the test moves: release
rate, scheduled start, in-progress timeout and retry, and the bus notices of changes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from roost.config import load_settings
from roost.core.access import local_admin
from roost.core.device_identity import DeviceIdentity
from roost.inventory.tables import devices
from roost.jobs.service import CHANGED_SUBJECT
from roost.runtime import Roost
from roost.store.queries import PageRequest


class Clock:
    """A wall clock the test sets."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def roost(tmp_path: Path, clock: Clock) -> AsyncIterator[Roost]:
    running = Roost.build(load_settings({}, data_dir=tmp_path), clock=clock)
    await running.start(serve=False)  # no timers: the test runs the jobs pass itself
    try:
        yield running
    finally:
        await running.close()


async def make_devices(roost: Roost, n: int) -> list[DeviceIdentity]:
    actor = local_admin()
    made = []
    for i in range(n):
        await roost.devices.create(actor, {"id": f"d{i}"})
        async with roost.db.read() as conn:
            pk = (
                await conn.execute(sa.select(devices.c.pk).where(devices.c.id == f"d{i}"))
            ).scalar_one()
        made.append(DeviceIdentity("default", f"d{i}", pk, "test"))
    return made


async def released(roost: Roost, job_id: str) -> int:
    page = await roost.jobs.list_executions(local_admin(), job_id, [], None, PageRequest(limit=100))
    return sum(1 for e in page.items if e["released_at"] is not None)


async def test_releases_follow_the_rate_on_the_stored_clock(roost: Roost, clock: Clock) -> None:
    ids = [d.device_id for d in await make_devices(roost, 5)]
    job = await roost.jobs.create(
        local_admin(),
        {
            "id": "j",
            "document": {},
            "targets": {"devices": ids},
            "rollout": {"max_per_minute": 6},
        },  # fmt: skip
    )
    assert job["counts"]["QUEUED"] == 5
    start = clock.now.timestamp()
    assert await roost.jobs.passes.run_pass() == pytest.approx(start + 10)
    assert await released(roost, "j") == 1
    clock.advance(9.9)
    await roost.jobs.passes.run_pass()
    assert await released(roost, "j") == 1
    clock.advance(0.1)
    await roost.jobs.passes.run_pass()
    assert await released(roost, "j") == 2
    clock.advance(600)  # a long pause does not save up releases
    await roost.jobs.passes.run_pass()
    assert await released(roost, "j") == 3


async def test_a_scheduled_job_starts_at_its_time(roost: Roost, clock: Clock) -> None:
    (device,) = await make_devices(roost, 1)
    at = clock.now + timedelta(hours=1)
    job = await roost.jobs.create(
        local_admin(),
        {"id": "later", "document": {}, "targets": {"devices": ["d0"]}, "schedule_at": at},
    )
    assert job["status"] == "SCHEDULED"
    assert await roost.jobs.passes.run_pass() == pytest.approx(at.timestamp())
    assert (await roost.jobs.pending(device))["jobs"] == []
    clock.now = at
    await roost.jobs.passes.run_pass()
    assert [j["job_id"] for j in (await roost.jobs.pending(device))["jobs"]] == ["later"]
    assert (await roost.jobs.get(local_admin(), "later"))["status"] == "IN_PROGRESS"


async def test_timeout_then_retry_then_final_timeout(roost: Roost, clock: Clock) -> None:
    (device,) = await make_devices(roost, 1)
    await roost.jobs.create(
        local_admin(),
        {
            "id": "t",
            "document": {},
            "targets": {"devices": ["d0"]},
            "timeout_in_progress_s": 60,
            "retries": [{"failure_type": "TIMED_OUT", "max_attempts": 1}],
        },  # fmt: skip
    )
    await roost.jobs.passes.run_pass()
    started = (await roost.jobs.start_next(device, None))["execution"]
    assert (started["status"], started["attempt"]) == ("IN_PROGRESS", 1)
    # A progress update with a step timeout shortens the deadline to 10 s from now.
    clock.advance(30)
    await roost.jobs.update(device, "t", {"status": "IN_PROGRESS", "step_timeout_s": 10})
    assert await roost.jobs.passes.run_pass() == pytest.approx(clock.now.timestamp() + 10)
    clock.advance(10)
    await roost.jobs.passes.run_pass()
    (retry,) = (await roost.jobs.pending(device))["jobs"]
    assert (retry["status"], retry["attempt"]) == ("QUEUED", 2)
    assert (await roost.jobs.start_next(device, None))["execution"]["attempt"] == 2
    clock.advance(60)  # the in-progress timeout of the second attempt; no retry left
    await roost.jobs.passes.run_pass()
    assert (await roost.jobs.pending(device))["jobs"] == []
    job = await roost.jobs.get(local_admin(), "t")
    assert job["status"] == "COMPLETED" and job["counts"]["TIMED_OUT"] == 1


async def test_changes_are_announced_on_the_bus(roost: Roost, clock: Clock) -> None:
    (device,) = await make_devices(roost, 1)
    notices: list[dict[str, Any]] = []

    async def keep(subject: str, data: bytes) -> None:
        notices.append(orjson.loads(data))

    subscription = await roost.bus.subscribe(CHANGED_SUBJECT, keep)
    try:
        await roost.jobs.create(
            local_admin(), {"id": "n", "document": {}, "targets": {"devices": ["d0"]}}
        )
        await roost.jobs.passes.run_pass()
        await roost.jobs.start_next(device, None)
        await roost.jobs.update(device, "n", {"status": "SUCCEEDED"})
        await roost.jobs.passes.run_pass()
        expected = [
            {"tenant_id": "default", "job_id": "n", "status": "IN_PROGRESS"},
            {"tenant_id": "default", "job_id": "n"},  # released
            {"tenant_id": "default", "job_id": "n", "device_id": "d0",
             "execution_status": "IN_PROGRESS"},
            {"tenant_id": "default", "job_id": "n", "device_id": "d0",
             "execution_status": "SUCCEEDED"},
            {"tenant_id": "default", "job_id": "n", "status": "COMPLETED"},
        ]  # fmt: skip
        for _ in range(200):
            if len(notices) >= len(expected):
                break
            await asyncio.sleep(0.01)
        assert notices == expected
    finally:
        await subscription.stop()
