"""The time-series store contract, on SQLite and PostgreSQL (``telemetry/engine/base.py``).

Every test runs on a fresh database migrated to head. Blocks are kept small (``BLOCK`` points) so
that a few hundred points already exercise splitting, the open run and late merges.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from roost.errors import ConfigError, InvalidInput
from roost.identity.tables import tenants
from roost.inventory.tables import devices, sensors
from roost.store import migrate
from roost.store.database import open_database
from roost.telemetry.engine import open_timeseries
from roost.telemetry.engine.base import AGGREGATES, Point
from roost.telemetry.engine.batch import KIND_BY_TYPE, BatchBuilder, DecodedBatch, Event, decode
from roost.telemetry.engine.compaction import OPEN_RUN_BLOCKS
from roost.telemetry.engine.engine import BlockStore

BLOCK = 16
EVERYTHING = (-(2**63), 2**63 - 1)

# (series, ts, value) or (series, ts, value, recv)
PointSpec = tuple[Any, ...]


def kind_of(value: Any) -> tuple[int, Any]:
    """The batch kind of a Python value, and the value as the batch builder takes it."""
    if isinstance(value, bool):
        return KIND_BY_TYPE["boolean"], value
    if isinstance(value, int):
        return KIND_BY_TYPE["long"], value
    if isinstance(value, float):
        return KIND_BY_TYPE["double"], value
    if isinstance(value, str):
        return KIND_BY_TYPE["string"], value
    return KIND_BY_TYPE["json"], orjson.dumps(value).decode()


def make_batch(
    points: Iterable[PointSpec] = (),
    events: Iterable[Event] = (),
    msg_ids: Iterable[tuple[int, str]] = (),
) -> DecodedBatch:
    """A batch as the ingest writer hands it to the store (decoded from its blob)."""
    builder = BatchBuilder()
    for spec in points:
        series, ts, value = spec[:3]
        recv = spec[3] if len(spec) > 3 else ts + 1
        kind, stored = kind_of(value)
        builder.add_point(series, ts, recv, kind, stored)
    for event in events:
        builder.add_event(event)
    builder.msg_ids.extend(msg_ids)
    return decode(builder.encode())


def event(device_pk: int, ts: int, body: dict[str, Any], recv: int | None = None) -> Event:
    return Event(
        device_pk, ts, recv or ts + 1, str(body.get("event", "")), orjson.dumps(body).decode()
    )


async def all_points(store: BlockStore, series: int) -> list[Point]:
    return await store.points(series, *EVERYTHING, limit=1_000_000)


def values(points: Sequence[Point]) -> list[tuple[int, Any]]:
    return [(p.ts, p.value) for p in points]


async def compact_all(store: BlockStore) -> None:
    while (await store.compact()).log_rows:
        pass


@pytest.fixture
async def migrated_url(database_url: str) -> str:
    db = open_database(database_url)
    try:
        await migrate.upgrade(db)
    finally:
        await db.dispose()
    return database_url


@pytest.fixture
async def store(migrated_url: str) -> AsyncIterator[BlockStore]:
    ts_store = open_timeseries(migrated_url, block_points=BLOCK)
    assert isinstance(ts_store, BlockStore)
    async with ts_store:
        yield ts_store


# -- values and visibility -------------------------------------------------------------------


EVERY_KIND: list[tuple[int, Any]] = [
    (1, 21.5),
    (2, -0.0),
    (3, 2**53 + 1),  # not representable as a double
    (4, -(2**63)),
    (5, 2**63 - 1),
    (6, True),
    (7, False),
    (8, "héllo, wörld ✓"),
    (9, ""),
    (10, {"a": [1, 2.5, None], "b": {"c": "d"}}),
    (11, [1, "two"]),
]


async def test_every_kind_round_trips_before_and_after_compaction(store: BlockStore) -> None:
    await store.append(make_batch([(s, 1000 + s, v, 5000 + s) for s, v in EVERY_KIND]))
    for compacted in (False, True):
        for s, v in EVERY_KIND:
            (point,) = await all_points(store, s)
            assert point == Point(1000 + s, v, 5000 + s), (compacted, s)
            assert type(point.value) is type(v)
        await compact_all(store)
    latest = {x.series: x for x in await store.latest([s for s, _ in EVERY_KIND])}
    for s, v in EVERY_KIND:
        assert (latest[s].ts, latest[s].value, latest[s].recv) == (1000 + s, v, 5000 + s)
        assert type(latest[s].value) is type(v)


async def test_points_are_queryable_at_once_and_identical_after_compaction(
    store: BlockStore,
) -> None:
    rng = random.Random(1)
    specs = [
        (s, ts, rng.choice([rng.random(), rng.randint(-5, 5), "x", True]), ts + 7)
        for s in (1, 2, 3)
        for ts in rng.sample(range(10_000), 300)
    ]
    rng.shuffle(specs)
    for chunk in range(0, len(specs), 100):
        await store.append(make_batch(specs[chunk : chunk + 100]))
    before = {s: await all_points(store, s) for s in (1, 2, 3)}
    for s in (1, 2, 3):
        assert [p.ts for p in before[s]] == sorted(ts for x, ts, _, _ in specs if x == s)
        assert all(p.recv == p.ts + 7 for p in before[s])
    await compact_all(store)
    assert {s: await all_points(store, s) for s in (1, 2, 3)} == before


async def test_late_and_out_of_order_points_read_back_in_time_order(store: BlockStore) -> None:
    stamps = list(range(0, 2000, 5))
    random.Random(2).shuffle(stamps)
    for i in range(0, len(stamps), 37):
        await store.append(make_batch([(1, ts, float(ts)) for ts in stamps[i : i + 37]]))
        if i % 3 == 0:
            await store.compact(max_log_rows=1)
    expected = [(ts, float(ts)) for ts in sorted(stamps)]
    assert values(await all_points(store, 1)) == expected
    assert values(await store.points(1, 100, 200, limit=1000)) == expected[20:40]
    assert values(await store.points(1, 100, 200, limit=3)) == expected[20:23]
    newest = await store.points(1, *EVERYTHING, limit=7, descending=True)
    assert values(newest) == expected[::-1][:7]
    assert values(await store.points(1, 0, 1000, limit=4, descending=True)) == expected[199:195:-1]


async def test_limits_cut_correctly_across_blocks_and_tail(store: BlockStore) -> None:
    await store.append(make_batch([(1, ts, 1.0) for ts in range(0, 200, 2)]))
    await compact_all(store)
    # Odd instants in the tail interleave with the even ones in blocks; some overwrite.
    await store.append(make_batch([(1, ts, 2.0) for ts in range(1, 200, 2)]))
    await store.append(make_batch([(1, ts, 3.0) for ts in range(0, 200, 50)]))
    model = {ts: 1.0 for ts in range(0, 200, 2)} | {ts: 2.0 for ts in range(1, 200, 2)}
    model |= {ts: 3.0 for ts in range(0, 200, 50)}
    ordered = sorted(model.items())
    for limit in (1, 5, 17, 40, 199, 500):
        assert values(await store.points(1, 0, 200, limit=limit)) == ordered[:limit]
        tail_first = await store.points(1, 0, 200, limit=limit, descending=True)
        assert values(tail_first) == ordered[::-1][:limit]
    assert await store.points(1, 0, 200, limit=0) == []
    assert await store.points(1, 200, 0, limit=10) == []


# -- last write wins -------------------------------------------------------------------------


async def test_last_write_wins_within_a_batch_and_across_the_tail(store: BlockStore) -> None:
    await store.append(make_batch([(1, 10, 1.0), (1, 10, 2.0), (1, 20, 5.0)]))
    await store.append(make_batch([(1, 20, 6.0)]))
    assert values(await all_points(store, 1)) == [(10, 2.0), (20, 6.0)]
    await compact_all(store)
    assert values(await all_points(store, 1)) == [(10, 2.0), (20, 6.0)]


async def test_last_write_wins_across_blocks(store: BlockStore) -> None:
    await store.append(make_batch([(1, ts, 1.0) for ts in range(100)]))
    await compact_all(store)
    await store.append(make_batch([(1, ts, 2.0) for ts in range(0, 100, 3)]))
    await compact_all(store)
    expected = [(ts, 2.0 if ts % 3 == 0 else 1.0) for ts in range(100)]
    assert values(await all_points(store, 1)) == expected


async def test_last_write_wins_across_tail_and_blocks(store: BlockStore) -> None:
    await store.append(make_batch([(1, ts, 1.0) for ts in range(100)]))
    await compact_all(store)
    await store.append(make_batch([(1, ts, 10.0) for ts in range(0, 100, 10)]))
    expected = [(ts, 10.0 if ts % 10 == 0 else 1.0) for ts in range(100)]
    assert values(await all_points(store, 1)) == expected
    # A block wholly inside one bucket must not answer from its (stale) summary.
    (bucket,) = await store.aggregate(1, 0, 100, 100, ["sum", "count", "max", "first"])
    assert bucket.values == {"sum": 190.0, "count": 100, "max": 10.0, "first": 10.0}
    await compact_all(store)
    assert values(await all_points(store, 1)) == expected


async def test_an_exact_resend_is_stored_once(store: BlockStore) -> None:
    batch = make_batch(
        [(1, ts, float(ts)) for ts in range(50)],
        [event(7, 5, {"event": "door", "open": True})],
        [(7, "m-1")],
    )
    await store.append(batch)
    await compact_all(store)
    await store.append(batch)
    for _ in range(2):
        assert values(await all_points(store, 1)) == [(ts, float(ts)) for ts in range(50)]
        (bucket,) = await store.aggregate(1, 0, 50, 1000, ["count", "sum"])
        assert bucket.values == {"count": 50, "sum": float(sum(range(50)))}
        assert len(await store.events(7, *EVERYTHING, limit=10)) == 1
        await compact_all(store)


# -- events ----------------------------------------------------------------------------------


async def test_events_dedupe_and_keep_different_events_at_one_instant(store: BlockStore) -> None:
    pickup = event(7, 100, {"event": "pickup", "product": 162})
    drop = event(7, 100, {"event": "drop", "product": 162})
    first = await store.append(make_batch([(1, 1, 1.0)], [pickup, drop, pickup]))
    await store.append(make_batch([], [pickup, event(8, 100, {"event": "pickup"})]))
    got = await store.events(7, *EVERYTHING, limit=10)
    assert [(e.type, e.body) for e in got] == [
        ("pickup", {"event": "pickup", "product": 162}),
        ("drop", {"event": "drop", "product": 162}),
    ]
    # Item offsets: the batch's one point is first_offset, its events follow.
    assert [e.offset for e in got] == [first.first_offset + 1, first.first_offset + 2]
    assert all((e.device_pk, e.ts, e.recv) == (7, 100, 101) for e in got)
    assert [e.type for e in await store.events(7, *EVERYTHING, types=["drop"], limit=10)] == [
        "drop"
    ]
    assert await store.events(7, *EVERYTHING, types=[], limit=10) == []
    assert len(await store.events(8, *EVERYTHING, limit=10)) == 1


async def test_events_by_time_range_order_and_limit(store: BlockStore) -> None:
    evs = [event(3, ts, {"event": "tick", "n": ts}) for ts in (50, 10, 40, 20, 30)]
    await store.append(make_batch([], evs))
    ticks = await store.events(3, 20, 50, limit=10)
    assert [e.ts for e in ticks] == [20, 30, 40]
    assert [e.ts for e in await store.events(3, *EVERYTHING, limit=2, descending=True)] == [50, 40]
    assert [e.body["n"] for e in await store.events(3, 0, 25, limit=10)] == [10, 20]


# -- aggregates ------------------------------------------------------------------------------


def model_aggregate(
    points: dict[int, Any], start: int, end: int, interval: int, functions: Sequence[str]
) -> list[tuple[int, dict[str, Any]]]:
    """Brute force: bucket every point of the model and compute each function in Python."""
    buckets: dict[int, list[tuple[int, Any]]] = {}
    for ts in sorted(points):
        if start <= ts < end:
            buckets.setdefault((ts - start) // interval, []).append((ts, points[ts]))
    out = []
    for b, items in sorted(buckets.items()):
        nums = [float(v) for _, v in items if isinstance(v, int | float)]
        row: dict[str, Any] = {}
        for name in functions:
            if name == "count":
                row[name] = len(items)
            elif not nums:
                row[name] = None
            else:
                row[name] = {
                    "avg": math.fsum(nums) / len(nums),
                    "sum": math.fsum(nums),
                    "min": min(nums),
                    "max": max(nums),
                    "first": nums[0],
                    "last": nums[-1],
                }[name]
        out.append((start + b * interval, row))
    return out


async def assert_aggregates_match(
    store: BlockStore, series: int, model: dict[int, Any], start: int, end: int, interval: int
) -> None:
    got = await store.aggregate(series, start, end, interval, AGGREGATES)
    expected = model_aggregate(model, start, end, interval, AGGREGATES)
    assert [b.start for b in got] == [b for b, _ in expected]
    for bucket, (_, row) in zip(got, expected, strict=True):
        assert set(bucket.values) == set(AGGREGATES)
        for name, value in row.items():
            if value is None or name == "count":
                assert bucket.values[name] == value, (bucket, name)
            else:
                assert bucket.values[name] == pytest.approx(value, rel=1e-9, abs=1e-9), name


async def test_aggregates_match_brute_force_over_random_history(store: BlockStore) -> None:
    rng = random.Random(3)
    model: dict[int, Any] = {}
    for round_ in range(30):
        batch = []
        for _ in range(rng.randint(1, 40)):
            ts = (
                rng.randint(0, 3000)
                if rng.random() < 0.3
                else 3000 + round_ * 50 + rng.randint(0, 60)
            )
            value = rng.choice(
                [rng.uniform(-100, 100), rng.randint(-1000, 1000), True, "s", {"j": 1}]
            )
            batch.append((1, ts, value))
            model[ts] = value
        await store.append(make_batch(batch))
        if rng.random() < 0.5:
            await store.compact(max_log_rows=rng.randint(1, 3))
        if round_ % 10 == 9:
            for _ in range(5):
                start = rng.randint(-100, 4000)
                end = start + rng.randint(1, 5000)
                await assert_aggregates_match(store, 1, model, start, end, rng.randint(1, 700))
    await compact_all(store)
    await assert_aggregates_match(store, 1, model, 0, 10_000, 100)
    await assert_aggregates_match(store, 1, model, *EVERYTHING, 2**62)
    await assert_aggregates_match(store, 1, model, -(2**63), 2**63 - 1, 97)


async def test_aggregate_answers_only_the_asked_functions_and_refuses_unknown_ones(
    store: BlockStore,
) -> None:
    await store.append(make_batch([(1, ts, "text only") for ts in range(10)]))
    (bucket,) = await store.aggregate(1, 0, 10, 10, ["count", "avg"])
    assert bucket.values == {"count": 10, "avg": None}
    with pytest.raises(InvalidInput):
        await store.aggregate(1, 0, 10, 10, ["median"])
    with pytest.raises(InvalidInput):
        await store.aggregate(1, 0, 10, 0, ["avg"])
    assert await store.aggregate(2, 0, 10, 10, ["avg"]) == []


# -- latest and message ids ------------------------------------------------------------------


async def test_latest_never_regresses_on_late_data(store: BlockStore) -> None:
    await store.append(make_batch([(1, 100, 1.0), (1, 50, 0.5), (2, 10, "a")]))
    await store.append(make_batch([(1, 90, 9.0), (2, 20, "b")]))  # 1 is late, 2 is newer
    latest = {x.series: (x.ts, x.value) for x in await store.latest([1, 2, 3])}
    assert latest == {1: (100, 1.0), 2: (20, "b")}
    await store.append(make_batch([(1, 100, 7.0)]))  # same instant: the later write wins
    await compact_all(store)
    (one,) = await store.latest([1])
    assert (one.ts, one.value) == (100, 7.0)
    assert await store.latest([]) == []


async def test_latest_of_some_series_among_many(store: BlockStore) -> None:
    kinds = [1.5, 7, True, "text", {"j": [1]}, ""]
    await store.append(make_batch([(s, 10, kinds[s % len(kinds)]) for s in range(1, 61)]))
    for wanted in ([2, 4, 5, 6, 7], list(range(1, 61, 7)), [1, 60], [4], [1, 10**9], [70]):
        got = {x.series: (x.ts, x.value) for x in await store.latest(wanted)}
        assert got == {s: (10, kinds[s % len(kinds)]) for s in wanted if s <= 60}


async def test_known_msg_ids(store: BlockStore) -> None:
    await store.append(make_batch([(1, 1, 1.0)], msg_ids=[(7, "a"), (7, "b"), (8, "a")]))
    await store.append(make_batch([], msg_ids=[(7, "a"), (9, "c")]))
    known = await store.known_msg_ids([(7, "a"), (7, "c"), (8, "a"), (9, "c"), (9, "a")])
    assert known == {(7, "a"), (8, "a"), (9, "c")}
    assert await store.known_msg_ids([]) == set()


# -- the log ---------------------------------------------------------------------------------


async def test_read_log_by_offset(store: BlockStore) -> None:
    assert await store.log_bounds() == (0, 0)
    a = await store.append(make_batch([(1, 1, 1.0), (2, 2, 2.0)], [event(7, 1, {"event": "e"})]))
    b = await store.append(make_batch([(1, 3, 3.0)], [event(7, 2, {"event": "f"})]))
    assert (a.first_offset, a.count) == (0, 3)
    assert (b.first_offset, b.count) == (3, 2)
    assert await store.log_bounds() == (0, 5)
    entries = await store.read_log(-1, 10)
    assert [e.first_offset for e in entries] == [0, 3]
    first = entries[0].batch
    assert (first.points, len(first.events), first.series.tolist()) == (2, 1, [1, 2])
    assert [e.first_offset for e in await store.read_log(1, 10)] == [0, 3]  # mid-batch
    assert [e.first_offset for e in await store.read_log(2, 10)] == [3]
    assert [e.first_offset for e in await store.read_log(3, 10)] == [3]
    assert await store.read_log(4, 10) == []
    assert [e.first_offset for e in await store.read_log(-1, 1)] == [0]
    empty = await store.append(make_batch())
    assert (empty.first_offset, empty.count) == (5, 0)
    assert await store.log_bounds() == (0, 5)


async def test_trim_log_keeps_uncompacted_rows(store: BlockStore) -> None:
    for ts in range(3):
        await store.append(make_batch([(1, ts, float(ts))], msg_ids=[(7, f"m{ts}")]))
    report = await store.compact(max_log_rows=1)
    assert (report.log_rows, report.points, report.upto_offset) == (1, 1, 1)
    assert await store.trim_log(2**63 - 1) == 1
    assert await store.log_bounds() == (1, 3)
    assert [e.first_offset for e in await store.read_log(-1, 10)] == [1, 2]
    assert values(await all_points(store, 1)) == [(0, 0.0), (1, 1.0), (2, 2.0)]
    # Message ids are remembered as long as the log keeps their batch.
    assert await store.known_msg_ids([(7, "m0"), (7, "m1")]) == set()
    await compact_all(store)
    assert await store.trim_log(0) == 0  # nothing committed that long ago
    assert await store.trim_log(2**63 - 1) == 2
    assert await store.log_bounds() == (3, 3)
    assert values(await all_points(store, 1)) == [(0, 0.0), (1, 1.0), (2, 2.0)]
    assert (await store.append(make_batch([(1, 9, 9.0)]))).first_offset == 3


async def test_compaction_is_bounded_and_reports_progress(store: BlockStore) -> None:
    for i in range(5):
        await store.append(make_batch([(1, i * 10 + j, 1.0) for j in range(10)]))
    report = await store.compact(max_log_rows=2)
    assert (report.log_rows, report.points, report.upto_offset) == (2, 20, 20)
    assert report.more  # three rows wait behind the limit
    report = await store.compact(max_log_rows=100)
    assert (report.log_rows, report.points, report.upto_offset) == (3, 30, 50)
    assert not report.more
    report = await store.compact()
    assert (report.log_rows, report.points, report.blocks_written, report.more) == (0, 0, 0, False)


async def test_a_pass_cut_by_its_point_limit_says_more_is_waiting(migrated_url: str) -> None:
    async with open_timeseries(migrated_url, compact_max_points=25) as store:
        for i in range(4):
            await store.append(make_batch([(1, i * 10 + j, 1.0) for j in range(10)]))
        passes = []
        while True:
            report = await store.compact(max_log_rows=100)
            passes.append((report.log_rows, report.more))
            if not report.more:
                break
        assert passes == [(2, True), (2, False)]


async def test_concurrent_appends_take_contiguous_offsets(store: BlockStore) -> None:
    batches = [make_batch([(1, i * 10 + j, float(i)) for j in range(i % 3 + 1)]) for i in range(20)]
    committed = await asyncio.gather(*(store.append(b) for b in batches))
    spans = sorted((c.first_offset, c.count) for c in committed)
    assert spans[0][0] == 0
    for (offset, count), (following, _) in itertools.pairwise(spans):
        assert offset + count == following
    assert await store.log_bounds() == (0, sum(c for _, c in spans))
    assert [e.first_offset for e in await store.read_log(-1, 100)] == [o for o, _ in spans]


async def test_concurrent_compactions_reads_and_appends_lose_nothing(store: BlockStore) -> None:
    model: dict[int, float] = {}

    async def writer(n: int) -> None:
        for i in range(15):
            stamps = [n * 10_000 + i * 7 + j for j in range(5)] + [i]  # and a shared late one
            await store.append(make_batch([(1, ts, float(n)) for ts in stamps]))

    async def compactor() -> None:
        for _ in range(20):
            await store.compact(max_log_rows=2)
            await asyncio.sleep(0)

    async def reader() -> None:
        for _ in range(20):
            points = await all_points(store, 1)
            assert [p.ts for p in points] == sorted({p.ts for p in points})

    await asyncio.gather(writer(1), writer(2), compactor(), compactor(), reader())
    for entry in await store.read_log(-1, 1000):  # the model, replayed in offset order
        batch = entry.batch
        model |= dict(zip(batch.ts.tolist(), batch.numeric().tolist(), strict=True))
    await compact_all(store)
    assert values(await all_points(store, 1)) == sorted(model.items())
    assert_well_formed(await store.block_layout(1))


# -- retention and deletion ------------------------------------------------------------------


async def add_sensors(url: str, tenant_id: str, count: int) -> tuple[int, list[int]]:
    """A tenant with one device and ``count`` sensors: (device pk, sensor pks)."""
    now = datetime.now(UTC)
    stamps = {"created_at": now, "updated_at": now}
    db = open_database(url)
    try:
        async with db.write() as conn:
            await conn.execute(tenants.insert().values(id=tenant_id, name=tenant_id, **stamps))
            device_pk = (
                await conn.execute(
                    devices.insert()
                    .values(tenant_id=tenant_id, id="dev", **stamps)
                    .returning(devices.c.pk)
                )
            ).scalar_one()
            pks = [
                (
                    await conn.execute(
                        sensors.insert()
                        .values(device_pk=device_pk, id=f"s{i}", type="double", **stamps)
                        .returning(sensors.c.pk)
                    )
                ).scalar_one()
                for i in range(count)
            ]
    finally:
        await db.dispose()
    return device_pk, pks


async def test_retention_drops_only_old_data_of_one_tenant(
    store: BlockStore, migrated_url: str
) -> None:
    dev_a, (a1, a2) = await add_sensors(migrated_url, "acme", 2)
    dev_b, (b1,) = await add_sensors(migrated_url, "bolt", 1)
    for s, stop in ((a1, 200), (a2, 50), (b1, 200)):  # a2 went quiet long ago
        await store.append(make_batch([(s, ts, float(ts)) for ts in range(stop)]))
    for dev in (dev_a, dev_b):
        evs = [event(dev, ts, {"event": "e", "n": ts}) for ts in (10, 150)]
        await store.append(make_batch([], evs))
    await compact_all(store)
    cutoff = 100
    dropped = 0
    while (n := await store.drop_before("acme", cutoff, max_rows=3)) > 0:
        assert n <= 3
        dropped += n
    assert dropped > 0
    kept = await all_points(store, a1)
    # Whole blocks older than the cutoff went; the block straddling it stays.
    assert kept[-1].ts == 199 and cutoff - BLOCK < kept[0].ts <= cutoff
    assert all(t_end >= cutoff for _, t_end, _ in await store.block_layout(a1))
    assert await all_points(store, a2) == []
    assert len(await all_points(store, b1)) == 200
    assert [e.ts for e in await store.events(dev_a, *EVERYTHING, limit=10)] == [150]
    assert [e.ts for e in await store.events(dev_b, *EVERYTHING, limit=10)] == [10, 150]
    assert {x.series: x.ts for x in await store.latest([a1, a2, b1])} == {a1: 199, b1: 199}
    assert await store.drop_before("nobody", cutoff) == 0


async def test_delete_series_forgets_blocks_tail_and_latest(store: BlockStore) -> None:
    await store.append(make_batch([(1, ts, 1.0) for ts in range(40)] + [(2, 1, 2.0)]))
    await compact_all(store)
    await store.append(make_batch([(1, ts, 1.0) for ts in range(40, 60)] + [(2, 2, 2.0)]))
    await store.delete_series([1])
    assert await all_points(store, 1) == []
    assert await store.latest([1]) == []
    assert await store.aggregate(1, *EVERYTHING, 2**62, ["count"]) == []
    await store.append(make_batch([(1, 500, 5.0)]))  # the series' pk used again
    assert values(await all_points(store, 1)) == [(500, 5.0)]
    await compact_all(store)
    assert values(await all_points(store, 1)) == [(500, 5.0)]
    assert await store.block_layout(1) == [(500, 500, 1)]
    assert values(await all_points(store, 2)) == [(1, 2.0), (2, 2.0)]


# -- block shape -----------------------------------------------------------------------------


def assert_well_formed(layout: list[tuple[int, int, int]]) -> None:
    for t_start, t_end, count in layout:
        assert 1 <= count <= BLOCK and t_start <= t_end
    for (_, end, _), (start, _, _) in itertools.pairwise(layout):
        assert end < start, "blocks overlap"


async def test_blocks_stay_bounded_under_a_long_in_order_stream(store: BlockStore) -> None:
    ts = 0
    for _ in range(120):
        batch = []
        for _ in range(3):
            batch += [(s, ts, float(ts)) for s in (1, 2)]
            ts += 1
        await store.append(make_batch(batch))
        await store.compact()
    for s in (1, 2):
        layout = await store.block_layout(s)
        assert_well_formed(layout)
        assert sum(c for _, _, c in layout) == 360
        partial = [c for _, _, c in layout if c < BLOCK]
        assert len(partial) < OPEN_RUN_BLOCKS
        assert len(layout) <= 360 // BLOCK + OPEN_RUN_BLOCKS
        assert [p.ts for p in await all_points(store, s)] == list(range(360))


async def test_blocks_stay_bounded_under_heavy_late_data(store: BlockStore) -> None:
    rng = random.Random(4)
    stamps = rng.sample(range(100_000), 1500)
    model = {}
    for i in range(0, len(stamps), 50):
        chunk = stamps[i : i + 50] + rng.sample(stamps[: i + 50], 10)  # and some overwrites
        await store.append(make_batch([(1, ts, float(i)) for ts in chunk]))
        model |= {ts: float(i) for ts in chunk}
        await store.compact(max_log_rows=rng.randint(1, 2))
    await compact_all(store)
    layout = await store.block_layout(1)
    assert_well_formed(layout)
    assert sum(c for _, _, c in layout) == len(model)
    assert values(await all_points(store, 1)) == sorted(model.items())


async def test_large_texts_split_blocks_by_size(migrated_url: str) -> None:
    ts_store = open_timeseries(migrated_url, block_points=BLOCK, block_text_bytes=1000)
    assert isinstance(ts_store, BlockStore)
    async with ts_store:
        docs = [(1, ts, {"blob": "x" * 300, "n": ts}) for ts in range(12)]
        await ts_store.append(make_batch(docs))
        await compact_all(ts_store)
        layout = await ts_store.block_layout(1)
        assert_well_formed(layout)
        assert len(layout) >= 4
        assert values(await all_points(ts_store, 1)) == [(ts, v) for _, ts, v in docs]


# -- configuration ---------------------------------------------------------------------------


async def test_open_refuses_unknown_urls_and_unmigrated_databases(database_url: str) -> None:
    with pytest.raises(ConfigError):
        open_timeseries("mysql://localhost/roost")
    with pytest.raises(ConfigError):
        open_timeseries("sqlite:///:memory:")
    with pytest.raises(ConfigError):
        await open_timeseries(database_url).open()


# -- a model-based property ------------------------------------------------------------------

_numbers = st.one_of(
    st.floats(-1e6, 1e6, allow_nan=False),
    st.integers(-(10**6), 10**6),
    st.booleans(),
)
_values = st.one_of(_numbers, _numbers, st.text(max_size=3), st.fixed_dictionaries({"k": _numbers}))
_writes = st.lists(st.tuples(st.sampled_from([0, 1]), st.integers(0, 400), _values), max_size=40)
_operations = st.lists(
    st.one_of(
        st.tuples(st.just("append"), _writes),
        st.tuples(st.just("compact"), st.integers(1, 3)),
    ),
    min_size=1,
    max_size=25,
)
_fresh_series = itertools.count(1000, 2)


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(operations=_operations, data=st.data())
async def test_reads_match_a_last_write_wins_model(
    store: BlockStore, operations: list[tuple[str, Any]], data: st.DataObject
) -> None:
    base = next(_fresh_series)  # examples share the store: each gets series of its own
    model: dict[int, dict[int, Any]] = {base: {}, base + 1: {}}
    for op, arg in operations:
        if op == "append":
            await store.append(make_batch([(base + s, ts, v) for s, ts, v in arg]))
            for s, ts, v in arg:
                model[base + s][ts] = v
        else:
            await store.compact(max_log_rows=arg)
    for series, points in model.items():
        assert values(await all_points(store, series)) == sorted(points.items())
        start = data.draw(st.integers(-10, 400))
        end = data.draw(st.integers(start, 420))
        limit = data.draw(st.integers(1, 50))
        descending = data.draw(st.booleans())
        window = [(ts, v) for ts, v in sorted(points.items()) if start <= ts < end]
        expected = (window[::-1] if descending else window)[:limit]
        got = await store.points(series, start, end, limit=limit, descending=descending)
        assert values(got) == expected
        interval = data.draw(st.integers(1, 200))
        await assert_aggregates_match(store, series, points, start, end, interval)
        if points:
            (latest,) = await store.latest([series])
            newest = max(points)
            assert (latest.ts, latest.value) == (newest, points[newest])
