"""BatchLoader: concurrent lookups share one bulk call, and no answer is older than its question."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from roost.core.batching import BatchLoader


class Table:
    """A dict standing for a table, with the bulk reads made of it recorded."""

    def __init__(self) -> None:
        self.rows = {n: f"v{n}" for n in range(1000)}
        self.calls: list[list[int]] = []
        self.gate: asyncio.Event | None = None

    async def bulk(self, keys: Sequence[int]) -> dict[int, str]:
        self.calls.append(list(keys))
        snapshot = {k: self.rows[k] for k in keys if k in self.rows}
        if self.gate is not None:
            await self.gate.wait()
        return snapshot


async def test_concurrent_loads_share_bulk_calls_of_bounded_size() -> None:
    table = Table()
    loader = BatchLoader(table.bulk, max_keys=300)
    keys = [*range(700), 5, 5, 999_999]
    got = await asyncio.gather(*(loader.load(k) for k in keys))
    assert got == [f"v{k}" for k in range(700)] + ["v5", "v5", None]
    assert [len(call) for call in table.calls] == [300, 300, 101]
    assert sorted(k for call in table.calls for k in call) == sorted({*range(700), 999_999})


async def test_a_key_asked_during_a_running_bulk_call_is_read_again() -> None:
    table = Table()
    table.gate = asyncio.Event()
    loader = BatchLoader(table.bulk)
    first = asyncio.create_task(loader.load(1))
    await asyncio.sleep(0.01)  # the bulk call for key 1 has read its snapshot and waits
    table.rows[1] = "changed"
    second = asyncio.create_task(loader.load(1))
    table.gate.set()
    assert await first == "v1"
    assert await second == "changed"
    assert table.calls == [[1], [1]]


async def test_a_failing_bulk_call_fails_its_callers_only() -> None:
    calls = 0

    async def bulk(keys: Sequence[int]) -> dict[int, int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("database gone")
        return {k: k for k in keys}

    loader: BatchLoader[int, int] = BatchLoader(bulk)
    results = await asyncio.gather(loader.load(1), loader.load(2), return_exceptions=True)
    assert [type(r) for r in results] == [RuntimeError, RuntimeError]
    assert await loader.load(3) == 3


async def test_a_cancelled_caller_does_not_cancel_the_others() -> None:
    table = Table()
    table.gate = asyncio.Event()
    loader = BatchLoader(table.bulk)
    gone = asyncio.create_task(loader.load(7))
    stays = asyncio.create_task(loader.load(7))
    await asyncio.sleep(0.01)
    gone.cancel()
    table.gate.set()
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert await stays == "v7"
