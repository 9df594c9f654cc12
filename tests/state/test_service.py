"""StateService on a real SQLite store with a clock the test moves: history retention, and the
pruning timer reading its due time from the clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from roost.config import load_settings
from roost.core.access import local_admin
from roost.errors import Conflict, InvalidInput
from roost.runtime import Roost
from roost.state.service import HISTORY_PRUNE_EVERY_S, MAX_NAMED_STATES, STATE_CHANGED_SUBJECT
from roost.store.queries import PageRequest


class Clock:
    """A wall clock the test sets."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def roost(tmp_path: Path, clock: Clock) -> AsyncIterator[Roost]:
    settings = load_settings({}, data_dir=tmp_path, state_history_days=7)
    running = Roost.build(settings, clock=clock)
    await running.start(serve=False)
    try:
        yield running
    finally:
        await running.close()


async def versions(roost: Roost, device_id: str) -> list[tuple[str, int]]:
    page = await roost.state.history(local_admin(), device_id, PageRequest(limit=100))
    return [(item["name"], item["version"]) for item in page.items]


async def test_history_older_than_the_retention_is_pruned(roost: Roost, clock: Clock) -> None:
    actor = local_admin()
    await roost.devices.create(actor, {"id": "d1", "name": "d1"})
    await roost.state.update(actor, "d1", {"desired": {"a": 1}})
    await roost.state.update(actor, "d1", {"desired": {"b": 1}}, "other")
    clock.now += timedelta(days=5)
    await roost.state.update(actor, "d1", {"desired": {"a": 2}})
    assert await roost.state.prune_history() == 0
    assert await versions(roost, "d1") == [("default", 2), ("other", 1), ("default", 1)]

    clock.now += timedelta(days=3)  # the first two versions are 8 days old, the third 3
    assert await roost.state.prune_history() == 2
    assert await versions(roost, "d1") == [("default", 2)]
    # The documents themselves are kept: only their history ages out.
    doc = await roost.state.get(actor, "d1")
    assert (doc["version"], doc["desired"]) == (2, {"a": 2})
    assert (await roost.state.get(actor, "d1", "other"))["version"] == 1


async def test_the_pruning_pass_prunes_at_most_every_interval(roost: Roost, clock: Clock) -> None:
    actor = local_admin()
    await roost.devices.create(actor, {"id": "d1", "name": "d1"})
    start = clock.now
    assert await roost.state._prune_pass() == start.timestamp() + HISTORY_PRUNE_EVERY_S
    # A version written 8 days before (the clock is set back to write it) ...
    clock.now = start - timedelta(days=8)
    await roost.state.update(actor, "d1", {"desired": {"a": 1}})
    # ... is kept by a pass within the interval, and pruned by the first one after it.
    clock.now = start + timedelta(seconds=HISTORY_PRUNE_EVERY_S / 2)
    assert await roost.state._prune_pass() == start.timestamp() + HISTORY_PRUNE_EVERY_S
    assert await versions(roost, "d1") == [("default", 1)]
    clock.now = start + timedelta(seconds=HISTORY_PRUNE_EVERY_S)
    await roost.state._prune_pass()
    assert await versions(roost, "d1") == []


async def test_retention_of_zero_days_keeps_history_forever(tmp_path: Path, clock: Clock) -> None:
    settings = load_settings({}, data_dir=tmp_path, state_history_days=0)
    running = Roost.build(settings, clock=clock)
    await running.start(serve=False)
    try:
        actor = local_admin()
        await running.devices.create(actor, {"id": "d1", "name": "d1"})
        await running.state.update(actor, "d1", {"desired": {"a": 1}})
        clock.now += timedelta(days=10_000)
        assert await running.state.prune_history() == 0
        assert await versions(running, "d1") == [("default", 1)]
    finally:
        await running.close()


async def test_a_device_holds_a_bounded_number_of_named_states(roost: Roost) -> None:
    actor = local_admin()
    await roost.devices.create(actor, {"id": "d1", "name": "d1"})
    for n in range(MAX_NAMED_STATES):
        await roost.state.update(actor, "d1", {"desired": {"n": n}}, f"s{n}")
    with pytest.raises(InvalidInput, match="at most"):
        await roost.state.update(actor, "d1", {"desired": {"n": 0}}, "one-more")
    # The default state does not count, existing ones stay writable, and a deleted one frees
    # its place.
    await roost.state.update(actor, "d1", {"desired": {"n": 0}})
    await roost.state.update(actor, "d1", {"desired": {"n": 1}}, "s0")
    await roost.state.delete(actor, "d1", "s0")
    await roost.state.update(actor, "d1", {"desired": {"n": 0}}, "one-more")
    with pytest.raises(InvalidInput, match="at most"):
        await roost.state.update(actor, "d1", {"desired": {"n": 0}}, "s0")


async def test_every_committed_change_is_announced_on_the_bus(roost: Roost) -> None:
    notices: list[dict[str, object]] = []
    got_three = asyncio.Event()

    async def collect(subject: str, data: bytes) -> None:
        notices.append(orjson.loads(data))
        if len(notices) == 3:
            got_three.set()

    subscription = await roost.bus.subscribe(STATE_CHANGED_SUBJECT, collect)
    try:
        actor = local_admin()
        await roost.devices.create(actor, {"id": "d1", "name": "d1"})
        await roost.state.update(actor, "d1", {"desired": {"a": 1}})
        with pytest.raises(Conflict):  # refused: no notice
            await roost.state.update(actor, "d1", {"desired": {"a": 2}, "version": 0})
        await roost.state.update(actor, "d1", {"reported": {"a": 1}}, "other")
        await roost.state.delete(actor, "d1", "other")
        await asyncio.wait_for(got_three.wait(), 10)
    finally:
        await subscription.stop()
    assert notices == [
        {"tenant_id": "default", "device_id": "d1", "name": "default", "version": 1},
        {"tenant_id": "default", "device_id": "d1", "name": "other", "version": 1},
        {"tenant_id": "default", "device_id": "d1", "name": "other", "version": 2},
    ]
