"""Benchmark of the time-series store (``roost.telemetry.engine``) on SQLite or PostgreSQL.

    python bench/timeseries_store.py --backend sqlite
    python bench/timeseries_store.py --backend postgresql   # ROOST_BENCH_PG_URL, else local

Measures, on a fresh database:

* append of 5,000-point batches (as the ingest writer hands them: decoded from their blob), beside
  the peer of the same rows inserted plainly in the same run: ``executemany`` of (series, ts,
  value) into a table without index on SQLite, ``copy_records_to_table`` on PostgreSQL, a
  transaction per 5,000 rows (DESIGN.md §4);
* compaction of the whole log (10M points), then steady-state compaction passes of ~1 s of ingest;
* ``aggregate`` of one sensor's day at hourly buckets, ``points`` of one hour, over 10M points
  (1,000 sensors × 10,000 points, one point every 8.64 s);
* ``latest`` of 50,000 series (10,000 devices × 5 sensors), each updated by time-major batches
  (every batch touches 5,000 distinct series: the worst case for the latest-value upserts);
* append when 100 series fill the batches (50 points of each per batch: the best case).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np

from roost.store import migrate
from roost.store.database import open_database
from roost.telemetry.engine import open_timeseries
from roost.telemetry.engine.batch import DecodedBatch, decode
from roost.telemetry.engine.engine import BlockStore

BATCH = 5_000
DAY_NS = 86_400 * 10**9
HOUR_NS = 3_600 * 10**9
T0 = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z
PG_URL = os.environ.get("ROOST_BENCH_PG_URL", "postgresql://root@127.0.0.1:5432/postgres")


def time_major(n_series: int, n_points: int, step_ns: int, seed: int) -> Iterator[DecodedBatch]:
    """Batches of BATCH points: every series at t, then every series at t + step, …

    Values are a random walk with two decimals (a thermometer), timestamps carry up to 1 s of
    jitter and the receive time is 50–550 ms later.
    """
    rng = np.random.default_rng(seed)
    level = 20 + rng.normal(0, 5, n_series)
    total = n_series * n_points
    series_all = np.tile(np.arange(1, n_series + 1, dtype=np.int64), BATCH // n_series + 2)
    for start in range(0, total, BATCH):
        n = min(BATCH, total - start)
        idx = np.arange(start, start + n)
        series = series_all[start % n_series : start % n_series + n]
        step = idx // n_series
        ts = T0 + step * step_ns + rng.integers(0, 10**9, n)
        level[series - 1] += rng.normal(0, 0.05, n)
        values = np.round(level[series - 1], 2)
        recv = ts + rng.integers(50_000_000, 550_000_000, n)
        batch = DecodedBatch(series, ts, recv, values.view(np.int64), np.zeros(n, dtype=np.uint8))
        yield decode(batch.encode())


async def timed_appends(store: BlockStore, batches: Iterator[DecodedBatch]) -> tuple[int, float]:
    """Points appended and seconds spent in append (batch generation not counted)."""
    points = 0
    spent = 0.0
    for batch in batches:
        t = time.perf_counter()
        await store.append(batch)
        spent += time.perf_counter() - t
        points += batch.points
    return points, spent


def peer_rows(batches: list[DecodedBatch]) -> list[list[tuple[int, int, float]]]:
    """The batches' points as (series, ts, value) rows, a list per batch."""
    return [
        list(zip(b.series.tolist(), b.ts.tolist(), b.numeric().tolist(), strict=True))
        for b in batches
    ]


def sqlite_peer(path: str, batches: list[DecodedBatch], *, indexed: bool) -> float:
    """executemany of the same rows into a plain table, a commit per batch: rows/s."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE bench_peer (series INTEGER, ts INTEGER, value REAL)")
    if indexed:
        conn.execute("CREATE INDEX bench_peer_series_ts ON bench_peer (series, ts)")
    rows = peer_rows(batches)
    t = time.perf_counter()
    for chunk in rows:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO bench_peer VALUES (?, ?, ?)", chunk)
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - t
    conn.execute("DROP TABLE bench_peer")
    conn.close()
    return sum(len(r) for r in rows) / elapsed


async def postgres_peer(url: str, batches: list[DecodedBatch], *, indexed: bool) -> float:
    """copy_records_to_table of the same rows into a plain table, a transaction per batch."""
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute("CREATE TABLE bench_peer (series bigint, ts bigint, value float8)")
        if indexed:
            await conn.execute("CREATE INDEX bench_peer_series_ts ON bench_peer (series, ts)")
        rows = peer_rows(batches)
        t = time.perf_counter()
        for chunk in rows:
            async with conn.transaction():
                await conn.copy_records_to_table("bench_peer", records=chunk)
        elapsed = time.perf_counter() - t
        await conn.execute("DROP TABLE bench_peer")
    finally:
        await conn.close()
    return sum(len(r) for r in rows) / elapsed


async def median_ms(call: Callable[[], Awaitable[Any]], repeat: int) -> float:
    for _ in range(3):
        await call()  # warm the caches
    samples = []
    for _ in range(repeat):
        t = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - t) * 1000)
    return statistics.median(samples)


@asynccontextmanager
async def fresh_database(backend: str) -> AsyncIterator[str]:
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite:///{Path(tmp) / 'roost.db'}"
        return
    import asyncpg

    name = f"roost_bench_{os.getpid()}_{secrets.token_hex(3)}"
    admin = await asyncpg.connect(PG_URL)
    await admin.execute(f'CREATE DATABASE "{name}"')
    base = PG_URL.rpartition("/")[0]
    try:
        yield f"{base}/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def run(backend: str, n_series: int, n_points: int) -> None:
    async with fresh_database(backend) as url:
        db = open_database(url)
        await migrate.upgrade(db)
        await db.dispose()
        # synchronous=NORMAL like the SQLite peer: this measures the engine's work, not the
        # disk's fsync (the server's default, FULL, is measured by mqtt_ingest and http_ingest).
        store = open_timeseries(url, sqlite_synchronous="NORMAL")
        assert isinstance(store, BlockStore)
        async with store:
            await bench(backend, url, store, n_series, n_points)


async def bench(backend: str, url: str, store: BlockStore, n_series: int, n_points: int) -> None:
    step = DAY_NS // n_points
    total = n_series * n_points
    print(f"backend {backend}; store of {n_series:,} series x {n_points:,} points = {total:,}")

    # -- append, beside plain-insert peers on the first 1M points ---------------------------------
    sample = list(time_major(n_series, n_points, step, seed=1))[: 1_000_000 // BATCH]
    peers = {}
    for indexed in (False, True):
        name = "index (series, ts)" if indexed else "no index"
        if backend == "sqlite":
            path = url.partition(":///")[2]
            peers[f"sqlite3 executemany, {name}"] = sqlite_peer(path, sample, indexed=indexed)
        else:
            rate = await postgres_peer(url, sample, indexed=indexed)
            peers[f"asyncpg copy_records_to_table, {name}"] = rate
    del sample
    points, spent = await timed_appends(store, time_major(n_series, n_points, step, seed=1))
    print(
        f"append ({n_series:,} series, {min(n_series, BATCH):,} distinct per batch): "
        f"{points / spent:,.0f} points/s"
    )
    for name, rate in peers.items():
        print(f"  peer, same rows ({name}): {rate:,.0f} rows/s")

    # -- compaction -----------------------------------------------------------------------------
    t = time.perf_counter()
    passes = blocks = 0
    while (report := await store.compact(max_log_rows=500)).log_rows:
        passes += 1
        blocks += report.blocks_written
    elapsed = time.perf_counter() - t
    print(
        f"compaction of {total:,} points: {total / elapsed:,.0f} points/s "
        f"({passes} passes, {blocks:,} blocks, {elapsed:.1f} s)"
    )

    # -- queries --------------------------------------------------------------------------------
    rng = np.random.default_rng(7)
    picks = iter(rng.integers(1, n_series + 1, 10_000).tolist())
    functions = ["avg", "min", "max", "sum", "count", "first", "last"]
    agg = await median_ms(
        lambda: store.aggregate(next(picks), T0, T0 + DAY_NS, HOUR_NS, functions), 200
    )
    check = await store.aggregate(1, T0, T0 + DAY_NS, HOUR_NS, functions)
    assert len(check) == 24 and sum(int(b.values["count"] or 0) for b in check) == n_points
    print(f"aggregate one sensor's day ({n_points:,} points) hourly, 7 functions: {agg:.2f} ms")
    raw = await median_ms(
        lambda: store.points(next(picks), T0 + HOUR_NS, T0 + 2 * HOUR_NS, limit=100_000), 200
    )
    print(f"points of one sensor's hour ({n_points // 24:,} points): {raw:.2f} ms")

    # Steady state: ~1 s of ingest at 100k points/s arrives, then a compaction pass.
    rounds = 10
    fresh = time_major(n_series, 20 * BATCH * rounds // n_series, step, seed=3)
    appended = compacted = 0
    spent_append = spent_compact = 0.0
    shifted = (
        DecodedBatch(b.series, b.ts + DAY_NS, b.recv + DAY_NS, b.slots, b.kinds) for b in fresh
    )
    for _ in range(rounds):
        chunk = [decode(next(shifted).encode()) for _ in range(20)]
        n, s = await timed_appends(store, iter(chunk))
        appended += n
        spent_append += s
        t = time.perf_counter()
        report = await store.compact(max_log_rows=500)
        spent_compact += time.perf_counter() - t
        compacted += report.points
    print(
        f"steady state (100k points over {n_series:,} series per pass): append "
        f"{appended / spent_append:,.0f} points/s, compaction {compacted / spent_compact:,.0f} "
        f"points/s ({spent_compact / rounds * 1000:.0f} ms a pass)"
    )
    tail_agg = await median_ms(
        lambda: store.aggregate(next(picks), T0, T0 + 2 * DAY_NS, HOUR_NS, functions), 100
    )
    print(f"aggregate of two days hourly while ingest goes on: {tail_agg:.2f} ms")

    # -- latest of 50,000 series ------------------------------------------------------------------
    many = 50_000
    base = 10_000_000
    latest_batches = (
        DecodedBatch(b.series + base, b.ts, b.recv, b.slots, b.kinds)
        for b in time_major(many, 10, step, seed=5)
    )
    points, spent = await timed_appends(store, (decode(b.encode()) for b in latest_batches))
    print(f"append ({many:,} series, {BATCH:,} distinct per batch): {points / spent:,.0f} points/s")
    wanted = list(range(base + 1, base + many + 1))
    got = await store.latest(wanted)
    assert len(got) == many
    lat = await median_ms(lambda: store.latest(wanted), 30)
    print(f"latest of {many:,} series: {lat:.1f} ms")

    # -- append when series send many points per batch ------------------------------------------
    few = 100
    base = 20_000_000
    dense_batches = (
        DecodedBatch(b.series + base, b.ts, b.recv, b.slots, b.kinds)
        for b in time_major(few, 10_000, step, seed=9)
    )
    points, spent = await timed_appends(store, (decode(b.encode()) for b in dense_batches))
    print(f"append ({few:,} series, {few} distinct per batch): {points / spent:,.0f} points/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--series", type=int, default=1_000)
    parser.add_argument("--points", type=int, default=10_000, help="points per series")
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores")
    asyncio.run(run(args.backend, args.series, args.points))


if __name__ == "__main__":
    main()
