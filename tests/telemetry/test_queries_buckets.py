"""Calendar buckets: where they start (pure), and aggregates over uneven buckets in the store
matching brute force, whether the points sit in the log tail or in compacted blocks."""

from __future__ import annotations

import math
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from roost.core.timeparse import parse_zone, to_ns
from roost.errors import InvalidInput
from roost.telemetry.engine import open_timeseries
from roost.telemetry.engine.base import AGGREGATES
from roost.telemetry.engine.engine import BlockStore
from roost.telemetry.queries.buckets import DAY_NS, bucket_edges
from tests.telemetry.test_engine import BLOCK, compact_all, make_batch

HOUR = 3_600_000_000_000
MINUTE = 60_000_000_000
PARIS = parse_zone("Europe/Paris")


def utc(*fields: int) -> int:
    return to_ns(datetime(*fields, tzinfo=UTC))  # type: ignore[misc]


def starts(start: int, end: int, interval: int, zone: Any = None) -> list[int]:
    return [int(e) for e in bucket_edges(start, end, interval, zone)]


def test_without_a_zone_buckets_sit_on_epoch_multiples_and_utc_days() -> None:
    start, end = utc(2026, 3, 27, 10, 17), utc(2026, 3, 27, 12)
    assert starts(start, end, HOUR) == [utc(2026, 3, 27, h) for h in (10, 11, 12, 13)]
    edges = starts(start, end, 7 * MINUTE)
    assert all(e % (7 * MINUTE) == 0 for e in edges) and edges[0] <= start < edges[1]
    assert edges[-1] > end >= edges[-2]
    assert starts(start, utc(2026, 3, 29, 1), DAY_NS) == [utc(2026, 3, d) for d in (27, 28, 29, 30)]
    # Weeks start on Mondays (2026-03-23 and 2026-03-30 are Mondays).
    assert starts(start, utc(2026, 3, 31), 7 * DAY_NS) == [
        utc(2026, 3, 23), utc(2026, 3, 30), utc(2026, 4, 6)
    ]  # fmt: skip


def test_days_and_hours_of_a_zone_follow_its_daylight_saving_changes() -> None:
    # March 29, 2026 lasts 23 hours in Paris and October 25 lasts 25.
    spring = starts(utc(2026, 3, 28, 12), utc(2026, 3, 30, 12), DAY_NS, PARIS)
    assert spring == [utc(2026, 3, 27, 23), utc(2026, 3, 28, 23), utc(2026, 3, 29, 22),
                      utc(2026, 3, 30, 22)]  # fmt: skip
    assert spring[2] - spring[1] == 23 * HOUR
    autumn = starts(utc(2026, 10, 24, 22), utc(2026, 10, 25, 23) - 1, HOUR, PARIS)
    assert len(autumn) == 26 and all(b - a == HOUR for a, b in itertools_pairs(autumn))
    autumn_days = starts(utc(2026, 10, 25, 12), utc(2026, 10, 25, 13), DAY_NS, PARIS)
    assert autumn_days == [utc(2026, 10, 24, 22), utc(2026, 10, 25, 23)]
    # Two-hour buckets keep to even wall-clock hours: none starts at the skipped 02:00.
    two = starts(utc(2026, 3, 28, 23), utc(2026, 3, 29, 4), 2 * HOUR, PARIS)
    assert two == [utc(2026, 3, 28, 23), utc(2026, 3, 29, 2), utc(2026, 3, 29, 4),
                   utc(2026, 3, 29, 6)]  # fmt: skip
    # A zone half an hour off UTC puts its hours at half past.
    kolkata = starts(utc(2026, 3, 29, 0), utc(2026, 3, 29, 1), HOUR, parse_zone("Asia/Kolkata"))
    assert kolkata == [utc(2026, 3, 28, 23, 30), utc(2026, 3, 29, 0, 30), utc(2026, 3, 29, 1, 30)]


def itertools_pairs(values: list[int]) -> list[tuple[int, int]]:
    return list(zip(values, values[1:], strict=False))


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[BlockStore]:
    from roost.store import migrate
    from roost.store.database import open_database

    db = open_database(database_url)
    try:
        await migrate.upgrade(db)
    finally:
        await db.dispose()
    ts_store = open_timeseries(database_url, block_points=BLOCK)
    assert isinstance(ts_store, BlockStore)
    async with ts_store:
        yield ts_store


def brute_force(
    points: dict[int, Any], start: int, end: int, edges: list[int]
) -> list[tuple[int, dict[str, Any]]]:
    buckets: dict[int, list[Any]] = {}
    for ts in sorted(points):
        if start <= ts < end:
            k = max(i for i, edge in enumerate(edges) if edge <= ts)
            buckets.setdefault(k, []).append(points[ts])
    out = []
    for k, values in sorted(buckets.items()):
        nums = [float(v) for v in values]
        row = {
            "count": len(values), "avg": math.fsum(nums) / len(nums), "sum": math.fsum(nums),
            "min": min(nums), "max": max(nums), "first": nums[0], "last": nums[-1],
        }  # fmt: skip
        out.append((edges[k], row))
    return out


async def test_uneven_buckets_match_brute_force_in_tail_and_blocks(store: BlockStore) -> None:
    rng = random.Random(11)
    points: dict[int, Any] = {}
    for round_ in range(12):
        batch = []
        for _ in range(rng.randint(5, 40)):
            ts = rng.randint(0, 5000)
            value = rng.uniform(-50, 50) if rng.random() < 0.7 else rng.randint(-9, 9)
            batch.append((1, ts, value))
            points[ts] = value
        await store.append(make_batch(batch))
        if round_ % 3 == 2:
            await store.compact(max_log_rows=2)
        if round_ % 4 == 3:
            await compact_all(store)
        for _ in range(4):
            start = rng.randint(-100, 4000)
            end = start + rng.randint(1, 3000)
            first = start - rng.randint(0, 300)
            edges = sorted({first, *(rng.randint(first + 1, end + 500) for _ in range(12))})
            got = await store.aggregate(1, start, end, 1, AGGREGATES, edges=edges)
            expected = brute_force(points, start, end, edges)
            assert [b.start for b in got] == [s for s, _ in expected]
            for bucket, (_, row) in zip(got, expected, strict=True):
                for name, value in row.items():
                    assert bucket.values[name] == pytest.approx(value, rel=1e-9, abs=1e-9)


async def test_edges_that_do_not_rise_or_start_late_are_refused(store: BlockStore) -> None:
    await store.append(make_batch([(1, 10, 1.0)]))
    with pytest.raises(InvalidInput, match="bucket edges"):
        await store.aggregate(1, 0, 100, 1, ["count"], edges=[5, 50])
    with pytest.raises(InvalidInput, match="bucket edges"):
        await store.aggregate(1, 0, 100, 1, ["count"], edges=[0, 50, 50])
    with pytest.raises(InvalidInput, match="bucket edges"):
        await store.aggregate(1, 0, 100, 1, ["count"], edges=[])
