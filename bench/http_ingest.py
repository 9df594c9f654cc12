"""HTTP batch ingest: one sender, sequential 5,000-point requests, beside InfluxDB 1.6 and raw rows.

    .venv/bin/python bench/http_ingest.py [--quick] [--points N] [--backends sqlite,postgresql]
        [--sqlite-synchronous NORMAL]

The same points (50 sensors of one device, every timestamp unique, seconds, two-decimal values) go:

* to Roost on SQLite: ``POST /api/v1/telemetry`` (device token), sensor form, 5,000 per request,
  the next request sent when the previous one answered 200 (Roost answers after the commit);
* to InfluxDB 1.6 (Debian package; installed when ``influxd`` is missing, started on free
  loopback ports with a temp data directory): line protocol ``POST /write?db=bench&precision=s``,
  5,000 lines per request, the same one sender;
* into a plain SQLite rowid table (series, ts, value) by ``executemany``, WAL,
  ``synchronous=NORMAL``, a commit per 5,000 rows: the ceiling of appending rows to SQLite;
* to Roost on PostgreSQL + NATS JetStream (a fresh database, a nats-server of our own): 200 comes
  after the JetStream acknowledgement and a worker commits to PostgreSQL behind it, so both the
  acknowledged rate and the rate at which points land in PostgreSQL are given;
* into PostgreSQL by asyncpg ``copy_records_to_table`` of the same rows, a transaction per 5,000.

Every destination is then counted (Roost through the query API, one ``agg=count`` per sensor;
InfluxDB with ``SELECT count``; the raw tables with ``COUNT(*)``); a missing point fails the run.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.support import (
    InfluxDB,
    NatsServer,
    Profiler,
    Results,
    RoostProcess,
    Sender,
    base_parser,
    cpu_seconds,
    fresh_postgres,
    load_average,
    postgres_copy,
    sqlite_append,
)

DEVICE = "bench-http"
# The first point's timestamp: 40 days ago, so that 3.4M one-second steps stay in the past.
T0 = int(time.time()) - 40 * 86_400


class Workload:
    """The points, pre-built as request bodies (JSON and line protocol) and as plain rows."""

    def __init__(self, points: int, sensors: int, batch: int) -> None:
        self.points = points
        self.sensors = [f"s{j:02d}" for j in range(sensors)]
        self.batch = batch
        self.json_bodies: list[bytes] = []
        self.lines: list[bytes] = []
        self.rows: list[list[tuple[int, int, float]]] = []
        for start in range(0, points, batch):
            items = []
            lines = []
            rows = []
            for i in range(start, min(points, start + batch)):
                series = i % sensors
                value = 20 + (i % 1000) / 100
                items.append(
                    {"sensor_id": self.sensors[series], "timestamp": T0 + i, "value": value}
                )
                lines.append(b"telemetry,device=%s,sensor=%s value=%r %d" % (
                    DEVICE.encode(), self.sensors[series].encode(), value, T0 + i))  # fmt: skip
                rows.append((series + 1, (T0 + i) * 1_000_000_000, value))
            self.json_bodies.append(orjson.dumps(items))
            self.lines.append(b"\n".join(lines))
            self.rows.append(rows)

    @property
    def start_ns(self) -> int:
        return T0 * 1_000_000_000

    @property
    def end_ns(self) -> int:
        return (T0 + self.points) * 1_000_000_000


def send_all(sender: Sender, path: str, bodies: list[bytes], ok: int, expect: bytes = b"") -> float:
    """Send every body in turn; seconds from the first request to the last answer."""
    started = time.perf_counter()
    for body in bodies:
        status, answer = sender.post(path, body)
        if status != ok or (expect and expect not in answer):
            raise RuntimeError(f"{path}: {status} {answer[:300]!r}")
    return time.perf_counter() - started


def run_roost(
    work: Workload, results: Results, label: str, database_url: str = "", bus_url: str = "",
    profile: Path | None = None, server_env: dict[str, str] | None = None,
) -> float:  # fmt: skip
    """Send the workload to a fresh Roost (``server_env``: more ROOST_*); acknowledged points/s."""
    with RoostProcess(database_url=database_url, bus_url=bus_url, env=server_env) as roost:
        roost.import_devices(
            [
                {
                    "id": DEVICE,
                    "name": "HTTP ingest benchmark",
                    "sensors": [{"id": s, "type": "double"} for s in work.sensors],
                }
            ]
        )
        (token,) = roost.device_tokens([DEVICE])
        sender = Sender(
            roost.http_port,
            {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        cpu_before = cpu_seconds(roost.pid)
        with Profiler(roost.pid, profile) as profiler:
            started = time.monotonic()
            seconds = send_all(
                sender, "/api/v1/telemetry", work.json_bodies, 200, b'"accepted":%d' % work.batch
            )
            stored_at = roost.wait_for_store(work.points, 120) if bus_url else started + seconds
        cpu = cpu_seconds(roost.pid) - cpu_before
        sender.close()
        rate = work.points / seconds
        counts = roost.count_points(
            [(DEVICE, s) for s in work.sensors], work.start_ns, work.end_ns + 1
        )
        stored = sum(counts.values())
        if stored != work.points:
            results.fail(f"{label}: {work.points:,} points acknowledged, {stored:,} stored")
        results.figures[f"{label} points/s"] = rate
        note = f"server CPU {cpu / work.points * 1e6:.2f} µs/point; counted {stored:,}"
        if bus_url:
            landed = work.points / (stored_at - started)
            results.figures[f"{label} stored points/s"] = landed
            note += f"; in PostgreSQL at {landed:,.0f} points/s (ack → worker → commit)"
        print(f"  {label}: {rate:,.0f} points/s acknowledged, {note}", flush=True)
        if profile is not None:
            print(profiler.summary(), flush=True)
        errors = roost.unhandled_errors()
        if errors:
            results.fail(f"{label}: server logged errors: {errors[:3]}")
        return rate


def run_influx(work: Workload, results: Results) -> float:
    with InfluxDB() as influx:
        sender = Sender(influx.http_port, {"Content-Type": "text/plain; charset=utf-8"})
        cpu_before = cpu_seconds(influx.pid)
        seconds = send_all(sender, "/write?db=bench&precision=s", work.lines, 204)
        cpu = cpu_seconds(influx.pid) - cpu_before
        sender.close()
        body = influx.query("SELECT count(value) FROM telemetry", db="bench")
        stored = body["results"][0]["series"][0]["values"][0][1]
        if stored != work.points:
            results.fail(f"InfluxDB: {work.points:,} points written, {stored:,} stored")
        rate = work.points / seconds
        results.figures["influxdb points/s"] = rate
        print(
            f"  InfluxDB 1.6: {rate:,.0f} points/s, server CPU "
            f"{cpu / work.points * 1e6:.2f} µs/point; counted {stored:,}",
            flush=True,
        )
        return rate


def run_sqlite_raw(work: Workload, results: Results) -> float:
    rate, stored = sqlite_append(work.rows)
    if stored != work.points:
        results.fail(f"raw SQLite: {stored:,} rows of {work.points:,}")
    results.figures["sqlite raw rows/s"] = rate
    print(f"  raw SQLite executemany (rowid table, no index): {rate:,.0f} rows/s", flush=True)
    return rate


def run_postgres_copy(work: Workload, results: Results, url: str) -> float:
    rate, stored = postgres_copy(url, work.rows)
    if stored != work.points:
        results.fail(f"raw PostgreSQL COPY: {stored:,} rows of {work.points:,}")
    results.figures["postgres copy rows/s"] = rate
    print(f"  raw PostgreSQL copy_records_to_table (heap, no index): {rate:,.0f} rows/s")
    return rate


def main() -> int:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=5_000, help="points per request")
    parser.add_argument("--sensors", type=int, default=50)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--profile", metavar="DIR", help="py-spy the Roost server into DIR")
    parser.add_argument(
        "--sqlite-synchronous",
        metavar="LEVEL",
        help="ROOST_SQLITE_SYNCHRONOUS of the SQLite server (default: the server's own, FULL)",
    )
    args = parser.parse_args()
    points = 100_000 if args.quick else args.points
    sqlite_env = (
        {"ROOST_SQLITE_SYNCHRONOUS": args.sqlite_synchronous} if args.sqlite_synchronous else None
    )
    backends = set(args.backends.split(","))
    results = Results("http_ingest", "HTTP batch ingest, one sender, 5,000 points a request")
    print(f"HTTP batch ingest: {points:,} points, {args.sensors} sensors, {args.batch:,} a request")
    print(f"load average before: {load_average():.2f}", flush=True)
    work = Workload(points, args.sensors, args.batch)
    profile_dir = Path(args.profile) if args.profile else None

    influx = run_influx(work, results)
    if "sqlite" in backends:
        roost = run_roost(
            work, results, "Roost SQLite",
            profile=profile_dir / "http_sqlite.txt" if profile_dir else None,
            server_env=sqlite_env,
        )  # fmt: skip
        raw = run_sqlite_raw(work, results)
        results.add(
            "SQLite: points/s, acknowledged after commit",
            f"{roost:,.0f}",
            f"{influx:,.0f}",
            peer_name="InfluxDB 1.6",
            goal="≥ 1.0× InfluxDB",
            met=roost >= influx,
            note=f"{roost / influx:.2f}× InfluxDB; raw SQLite executemany ceiling {raw:,.0f} "
            f"rows/s (Roost = {roost / raw:.2f}× it)",
        )
    if "postgresql" in backends:
        with fresh_postgres(args.pg_url) as url, NatsServer() as nats:
            roost = run_roost(
                work, results, "Roost PostgreSQL+NATS", url, nats.url,
                profile=profile_dir / "http_pg.txt" if profile_dir else None,
            )  # fmt: skip
        with fresh_postgres(args.pg_url) as url:
            copy = run_postgres_copy(work, results, url)
        landed = results.figures.get("Roost PostgreSQL+NATS stored points/s", 0.0)
        results.add(
            "PostgreSQL + NATS: points/s, acknowledged after the JetStream ack",
            f"{roost:,.0f}",
            f"{copy:,.0f}",
            peer_name="raw asyncpg COPY (heap, no index)",
            note=f"{roost / influx:.2f}× InfluxDB; all points in PostgreSQL at {landed:,.0f} "
            "points/s (first request → last point committed by the worker)",
        )
    results.write(args.json)
    return results.exit_code()


if __name__ == "__main__":
    sys.exit(main())
