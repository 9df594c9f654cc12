"""Queries on 10M stored points: a sensor's day hourly, and the latest values of 10,000 devices.

    .venv/bin/python bench/queries.py [--quick] [--devices 10000] [--points 1000] [--no-influx]

The fleet: 10,000 devices (import API), each with a ``temperature`` sensor and in the group
``fleet``; 1,000 points per sensor over the last day (one every 86.4 s, two-decimal random walk)
= 10M points. Loading goes **directly through the Roost store API in-process**
(``open_timeseries(url).append`` of 5,000-point batches, time-major as a fleet reports them: each
batch holds one point of 5,000 devices; then ``compact`` until the log is empty) with the server
stopped; the server is then started again on the same data directory. Measured, p50/p99 over
``--repeat`` calls each (different sensors for the aggregate):

* ``GET /api/v1/devices/{id}/telemetry?sensor=temperature&from=&to=&agg=avg,min,max&interval=1h``
  (24 buckets) — goal < 20 ms;
* ``GET /api/v1/telemetry/latest?group=fleet`` (10,000 devices) — goal < 50 ms;

over HTTP (httpx on a keep-alive connection; the time until the whole answer is read, JSON
parsing on the client not counted), and, for reference, the store calls in-process
(``aggregate`` of the sensor's series, ``latest`` of the 10,000 series).

Peer: InfluxDB 1.6 with the same points (line protocol, 5,000 a request, then a full compaction
wait), ``SELECT mean,min,max … GROUP BY time(1h)`` of one device's day, and
``SELECT last(value) … GROUP BY "device"`` over the fleet, through its HTTP ``/query``.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.support import (
    InfluxDB,
    Profiler,
    Results,
    RoostProcess,
    Sender,
    base_parser,
    load_average,
    percentile,
)

HOUR_NS = 3_600 * 10**9
DAY_NS = 24 * HOUR_NS
BATCH = 5_000
# The day ends at the last whole hour before the run: buckets align on hours.
END_NS = (time.time_ns() // HOUR_NS) * HOUR_NS
START_NS = END_NS - DAY_NS


def batches(n_series: int, n_points: int, seed: int = 1) -> Iterator[tuple[Any, Any, Any]]:
    """(series index, ts, value) numpy columns, BATCH points each, time-major."""
    rng = np.random.default_rng(seed)
    level = 20 + rng.normal(0, 5, n_series)
    step = DAY_NS // n_points
    total = n_series * n_points
    for start in range(0, total, BATCH):
        idx = np.arange(start, min(total, start + BATCH))
        series = idx % n_series
        k = idx // n_series
        ts = START_NS + k * step + (series * 7919) % step  # spread within the step
        level[series] += rng.normal(0, 0.05, len(idx))
        yield series, ts, np.round(level[series], 2)


async def load_store(url: str, pks: np.ndarray, n_points: int) -> tuple[float, float]:
    """Append and compact through the store API; seconds for each."""
    from roost.telemetry.engine import open_timeseries
    from roost.telemetry.engine.batch import DecodedBatch, decode

    store = open_timeseries(url)
    await store.open()
    try:
        t = time.perf_counter()
        for series, ts, values in batches(len(pks), n_points):
            n = len(series)
            batch = DecodedBatch(
                pks[series], ts, ts + 200_000_000, values.view(np.int64), np.zeros(n, np.uint8)
            )
            await store.append(decode(batch.encode()))
        appended = time.perf_counter() - t
        t = time.perf_counter()
        while (await store.compact(max_log_rows=500)).log_rows:  # type: ignore[attr-defined]
            pass
        return appended, time.perf_counter() - t
    finally:
        await store.close()


async def store_timings(
    url: str, pks: list[int], repeat: int
) -> tuple[list[float], list[float], int]:
    from roost.telemetry.engine import open_timeseries

    store = open_timeseries(url)
    await store.open()
    try:
        rng = random.Random(3)
        agg: list[float] = []
        for _ in range(3):
            await store.aggregate(pks[0], START_NS, END_NS, HOUR_NS, ["avg", "min", "max"])
        for _ in range(repeat):
            pk = rng.choice(pks)
            t = time.perf_counter()
            buckets = await store.aggregate(pk, START_NS, END_NS, HOUR_NS, ["avg", "min", "max"])
            agg.append(time.perf_counter() - t)
            assert len(buckets) == 24, len(buckets)
        latest: list[float] = []
        got = 0
        for _ in range(repeat):
            t = time.perf_counter()
            got = len(await store.latest(pks))
            latest.append(time.perf_counter() - t)
        return agg, latest, got
    finally:
        await store.close()


def timed(call: Callable[[], Any], repeat: int, warm: int = 3) -> list[float]:
    for _ in range(warm):
        call()
    samples = []
    for _ in range(repeat):
        t = time.perf_counter()
        call()
        samples.append(time.perf_counter() - t)
    return samples


def ms(samples: list[float]) -> str:
    return f"{percentile(samples, 0.5) * 1000:.1f} / {percentile(samples, 0.99) * 1000:.1f} ms"


def run_roost(args: Any, results: Results) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    ids = [f"d-{i:05d}" for i in range(args.devices)]
    with RoostProcess() as roost:
        with roost.admin() as api:
            resp = api.post("/api/v1/groups", json={"id": "fleet", "name": "Fleet"})
            resp.raise_for_status()
        roost.import_devices(
            [
                {
                    "id": d,
                    "name": d,
                    "group_ids": ["fleet"],
                    "sensors": [{"id": "temperature", "type": "double"}],
                }
                for d in ids
            ]
        )
        roost.stop()
        db = sqlite3.connect(roost.sqlite_path)
        rows = dict(
            db.execute(
                "SELECT d.id, s.pk FROM sensors s JOIN devices d ON d.pk = s.device_pk "
                "WHERE s.id = 'temperature'"
            ).fetchall()
        )
        db.close()
        pks = np.array([rows[d] for d in ids], dtype=np.int64)
        url = f"sqlite:///{roost.sqlite_path}"
        total = args.devices * args.points
        appended, compacted = asyncio.run(load_store(url, pks, args.points))
        print(
            f"  loaded {total:,} points through the store API: append {total / appended:,.0f} "
            f"points/s ({appended:.1f} s), compaction {total / compacted:,.0f} points/s",
            flush=True,
        )
        agg, latest, got = asyncio.run(store_timings(url, pks.tolist(), args.repeat))
        out["store agg"], out["store latest"] = agg, latest
        print(f"  in-process: aggregate {ms(agg)}, latest of {got:,} series {ms(latest)}")
        if got != args.devices:
            results.fail(f"store latest answered {got} of {args.devices} series")
        roost.start()
        rng = random.Random(5)
        with roost.admin() as api:

            def aggregate() -> None:
                device = rng.choice(ids)
                resp = api.get(
                    f"/api/v1/devices/{device}/telemetry",
                    params={
                        "sensor": "temperature",
                        "from": str(START_NS),
                        "to": str(END_NS),
                        "agg": "avg,min,max",
                        "interval": "1h",
                    },
                )
                if resp.status_code != 200 or resp.content.count(b'"avg"') != 24:
                    raise RuntimeError(f"aggregate: {resp.status_code} {resp.text[:300]}")

            def fleet() -> None:
                resp = api.get("/api/v1/telemetry/latest", params={"group": "fleet"})
                if resp.status_code != 200:
                    raise RuntimeError(f"latest: {resp.status_code} {resp.text[:300]}")

            profile = Path(args.profile) if args.profile else None
            with Profiler(roost.pid, profile / "query_agg.txt" if profile else None) as prof:
                out["http agg"] = timed(aggregate, args.repeat)
            if profile:
                print(prof.summary(), flush=True)
            with Profiler(roost.pid, profile / "query_latest.txt" if profile else None) as prof:
                out["http latest"] = timed(fleet, args.repeat)
            if profile:
                print(prof.summary(), flush=True)
            resp = api.get("/api/v1/telemetry/latest", params={"group": "fleet"})
            answer = resp.json()
            if answer["total"] != args.devices:
                results.fail(f"latest over the group: {answer['total']} of {args.devices}")
            print(
                f"  HTTP: aggregate {ms(out['http agg'])}, latest of {answer['total']:,} "
                f"devices {ms(out['http latest'])} ({len(resp.content) / 1e6:.1f} MB answer)",
                flush=True,
            )
        errors = roost.unhandled_errors()
        if errors:
            results.fail(f"server logged errors: {errors[:3]}")
    return out


def run_influx(args: Any, results: Results) -> dict[str, list[float]]:
    ids = [f"d-{i:05d}".encode() for i in range(args.devices)]
    out: dict[str, list[float]] = {}
    with InfluxDB() as influx:
        sender = Sender(influx.http_port, {"Content-Type": "text/plain; charset=utf-8"})
        t = time.perf_counter()
        spent = 0.0
        for series, ts, values in batches(args.devices, args.points):
            body = b"\n".join(
                b"telemetry,device=%s value=%r %d" % (ids[s], v, t_)
                for s, t_, v in zip(series.tolist(), ts.tolist(), values.tolist(), strict=True)
            )
            s0 = time.perf_counter()
            status, answer = sender.post("/write?db=bench&precision=ns", body)
            spent += time.perf_counter() - s0
            if status != 204:
                raise RuntimeError(f"influx write: {status} {answer[:300]!r}")
        sender.close()
        total = args.devices * args.points
        print(
            f"  InfluxDB: loaded {total:,} points at {total / spent:,.0f} points/s "
            f"({time.perf_counter() - t:.1f} s with line building)",
            flush=True,
        )
        count = influx.query("SELECT count(value) FROM telemetry", db="bench")
        stored = count["results"][0]["series"][0]["values"][0][1]
        if stored != total:
            results.fail(f"InfluxDB holds {stored:,} of {total:,} points")
        rng = random.Random(5)
        client = influx.client
        assert client is not None

        def aggregate() -> None:
            device = rng.choice(ids).decode()
            q = (
                "SELECT mean(value), min(value), max(value) FROM telemetry WHERE "
                f"device = '{device}' AND time >= {START_NS} AND time < {END_NS} "
                "GROUP BY time(1h)"
            )
            resp = client.get("/query", params={"db": "bench", "q": q})
            if resp.status_code != 200 or b'"error"' in resp.content:
                raise RuntimeError(f"influx aggregate: {resp.text[:300]}")

        def fleet() -> None:
            q = 'SELECT last(value) FROM telemetry GROUP BY "device"'
            resp = client.get("/query", params={"db": "bench", "q": q})
            if resp.status_code != 200 or b'"error"' in resp.content:
                raise RuntimeError(f"influx latest: {resp.text[:300]}")

        out["agg"] = timed(aggregate, args.repeat)
        out["latest"] = timed(fleet, max(5, args.repeat // 4), warm=1)
        print(f"  InfluxDB: aggregate {ms(out['agg'])}, last of every device {ms(out['latest'])}")
    return out


def main() -> int:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--points", type=int, default=1_000, help="points per sensor (a day)")
    parser.add_argument("--repeat", type=int, default=50, help="calls timed per query (≥ 20)")
    parser.add_argument("--no-influx", action="store_true")
    parser.add_argument("--profile", metavar="DIR", help="py-spy the Roost server into DIR")
    args = parser.parse_args()
    if args.quick:
        args.points, args.repeat = 100, 20
    total = args.devices * args.points
    results = Results("queries", f"Queries on {total / 1e6:g}M stored points")
    print(f"queries: {args.devices:,} devices x {args.points:,} points = {total:,} points")
    print(f"load average before: {load_average():.2f}", flush=True)
    roost = run_roost(args, results)
    influx = {} if args.no_influx else run_influx(args, results)
    agg, latest = roost["http agg"], roost["http latest"]
    results.figures.update(
        {
            "http agg p50": percentile(agg, 0.5),
            "http agg p99": percentile(agg, 0.99),
            "http latest p50": percentile(latest, 0.5),
            "http latest p99": percentile(latest, 0.99),
        }
    )
    results.add(
        "one sensor's day, agg=avg,min,max&interval=1h, HTTP p50 / p99",
        ms(agg),
        ms(influx["agg"]) if influx else "",
        peer_name="InfluxDB 1.6 (HTTP /query)",
        goal="< 20 ms",
        met=percentile(agg, 0.99) < 0.020,
        note=f"in-process store.aggregate {ms(roost['store agg'])}",
    )
    results.add(
        f"latest of {args.devices:,} devices (group), HTTP p50 / p99",
        ms(latest),
        ms(influx["latest"]) if influx else "",
        peer_name="InfluxDB 1.6, last(value) GROUP BY device",
        goal="< 50 ms",
        met=percentile(latest, 0.99) < 0.050,
        note=f"in-process store.latest {ms(roost['store latest'])}",
    )
    results.write(args.json)
    return results.exit_code()


if __name__ == "__main__":
    sys.exit(main())
