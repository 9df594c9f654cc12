"""MQTT QoS 1 ingest from 1,000 connected devices: Roost beside Mosquitto 2 + a paho subscriber.

    .venv/bin/python bench/mqtt_ingest.py [--quick] [--devices 1000] [--seconds 10] [--procs 1]
        [--sqlite-synchronous NORMAL]

Every device holds one MQTT 3.1.1 connection and keeps ``--window`` QoS 1 PUBLISHes in flight
(``bench/mqtt_load.py``: hand-built frames, every message a distinct point). Phases, each against:

* **Roost** (``roost serve``, SQLite; then PostgreSQL + NATS JetStream): the devices and their
  sensors are declared beforehand through the import API, so this is the steady state. A PUBACK
  leaves after the commit (SQLite) or the JetStream acknowledgement (scale mode; the worker's
  PostgreSQL commit follows, and the rate at which points land there is given too).
* **the DIY stack**: a Mosquitto 2 of our own (temp config, free port; the queue per client made
  unlimited, ``max_queued_messages 0``, so that it drops nothing) and a paho-mqtt subscriber
  (``devices/+/telemetry``, QoS 1) inserting the same rows into SQLite (``executemany`` per batch
  of up to 5,000 rows or 20 ms, a commit each). Mosquitto acknowledges on receipt; the figure is
  the rate at which rows land in SQLite, first publish to last commit. With Mosquitto's default
  queue (1,000 messages) the same run is repeated to count what it drops.

1. one point per message (the seed's sensor form); goal ≥ 100k messages/s and ≥ 5× the DIY stack;
2. 100 points per message (ten key/value items of ten sensors); goal ≥ 300k points/s;
3. first contact: other devices, nothing declared, one message each on a new sensor (the sensor is
   created on the slow path): messages/s until every one is acknowledged.

Every phase is counted afterwards — Roost through the query API (an ``agg=count`` per device and
sensor), the subscriber's table with COUNT(DISTINCT) — and compared with what each device sent:
a message acknowledged but not stored fails the run, and so does a message lost by the DIY stack
(reported as such). The generator and the server share the machine's cores: see the output.
"""

from __future__ import annotations

import multiprocessing
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.mqtt_load import LoadResult, LoadSpec, run_load
from bench.support import (
    Mosquitto,
    NatsServer,
    Profiler,
    Results,
    RoostProcess,
    base_parser,
    cpu_seconds,
    fresh_postgres,
    load_average,
    percentile,
    postgres_copy,
    sqlite_append,
    synthetic_rows,
)

SENSORS = ["t", *[f"s{k}" for k in range(10)]]
NS_PER_MS = 1_000_000
# The DIY subscriber's batch: what a careful script would do.
DIY_BATCH_ROWS = 5000
DIY_BATCH_S = 0.02


# -- the DIY subscriber ---------------------------------------------------------------------------


def diy_subscriber(port: int, db_path: str, ready: Any, stop: Any, stored: Any, last: Any) -> None:
    """paho-mqtt subscriber: QoS 1 on devices/+/telemetry, rows into SQLite in batches."""
    import orjson
    import paho.mqtt.client as mqtt

    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE points (device TEXT, sensor TEXT, ts INTEGER, value REAL)")
    pending: list[tuple[str, str, int, float]] = []
    first_pending = [0.0]

    def flush() -> None:
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO points VALUES (?, ?, ?, ?)", pending)
        conn.execute("COMMIT")
        with stored.get_lock():
            stored.value += len(pending)
        last.value = time.time()
        pending.clear()

    def on_message(client: Any, userdata: Any, msg: Any) -> None:
        device = msg.topic.split("/")[1]
        doc = orjson.loads(msg.payload)
        if not pending:
            first_pending[0] = time.monotonic()
        if isinstance(doc, dict):
            pending.append((device, doc["sensor_id"], doc["timestamp"], doc["value"]))
        else:
            for item in doc:
                ts = item["ts"]
                pending.extend((device, name, ts, value) for name, value in item["values"].items())
        if len(pending) >= DIY_BATCH_ROWS:
            flush()

    subscribed = [False]

    def on_subscribe(*args: Any) -> None:
        subscribed[0] = True

    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id="diy-subscriber", clean_session=True
    )
    client.on_message = on_message
    client.on_subscribe = on_subscribe
    client.connect("127.0.0.1", port, keepalive=600)
    client.subscribe("devices/+/telemetry", qos=1)
    while not subscribed[0]:
        client.loop(timeout=0.1)
    ready.set()
    while not stop.is_set():
        client.loop(timeout=0.005)
        if pending and time.monotonic() - first_pending[0] >= DIY_BATCH_S:
            flush()
    if pending:
        flush()
    client.disconnect()
    conn.close()


class DiyStack:
    """Mosquitto + the subscriber process, for one phase."""

    def __init__(self, default_queue: bool = False) -> None:
        extra = "" if default_queue else "max_queued_messages 0\n"
        self.broker = Mosquitto(extra)
        self._dir = tempfile.TemporaryDirectory(prefix="bench-diy-")
        self.db_path = str(Path(self._dir.name) / "diy.db")
        ctx = multiprocessing.get_context("spawn")
        self.ready = ctx.Event()
        self.stop = ctx.Event()
        self.stored = ctx.Value("q", 0)
        self.last = ctx.Value("d", 0.0)
        self._ctx = ctx
        self.proc: Any = None

    def __enter__(self) -> DiyStack:
        self.broker.__enter__()
        self.proc = self._ctx.Process(
            target=diy_subscriber,
            args=(self.broker.port, self.db_path, self.ready, self.stop, self.stored, self.last),
            daemon=True,
        )
        self.proc.start()
        if not self.ready.wait(30):
            raise RuntimeError("the DIY subscriber did not subscribe")
        return self

    def wait_stored(self, expected: int, stall_s: float = 10.0) -> float:
        """Wait until ``expected`` rows are stored or nothing moved for ``stall_s``."""
        seen, moved = -1, time.monotonic()
        while self.stored.value < expected:
            if self.stored.value != seen:
                seen, moved = self.stored.value, time.monotonic()
            elif time.monotonic() - moved > stall_s:
                break
            time.sleep(0.02)
        return float(self.last.value)

    def count(self) -> tuple[int, int]:
        """Rows, and distinct (device, sensor, ts) among them."""
        self.stop.set()
        self.proc.join(30)
        conn = sqlite3.connect(self.db_path)
        (rows,) = conn.execute("SELECT COUNT(*) FROM points").fetchone()
        (distinct,) = conn.execute(
            "SELECT COUNT(*) FROM (SELECT DISTINCT device, sensor, ts FROM points)"
        ).fetchone()
        conn.close()
        return int(rows), int(distinct)

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        if self.proc is not None:
            self.proc.join(10)
            if self.proc.is_alive():
                self.proc.kill()
        self.broker.__exit__(*exc)
        self._dir.cleanup()


# -- phases -------------------------------------------------------------------------------------


def describe(result: LoadResult, points: int) -> str:
    lat = result.latencies
    elapsed = result.end_wall - result.start_wall
    return (
        f"sent {result.sent:,}, acked {result.acked:,}; generator CPU {result.cpu_s:.1f} s "
        f"in {elapsed:.1f} s; PUBACK latency p50 "
        f"{percentile(lat, 0.5) * 1000:.1f} ms, p99 {percentile(lat, 0.99) * 1000:.1f} ms"
        + (f"; {result.errors} errors: {result.last_error}" if result.errors else "")
    )


def roost_phase(
    roost: RoostProcess, devices: list[tuple[str, str]], spec: LoadSpec, procs: int,
    results: Results, label: str, profile: Path | None,
) -> dict[str, float]:  # fmt: skip
    """Run one load phase against Roost and count what it stored."""
    scale = bool(roost.bus_url)
    offset_before = roost.log_next_offset() if scale else 0
    cpu_before = cpu_seconds(roost.pid)
    with Profiler(roost.pid, profile) as profiler:
        result, connect_s = run_load(spec, devices, procs)
    cpu = cpu_seconds(roost.pid) - cpu_before
    msg_rate = result.rate
    points_per_msg = spec.points
    out = {"msg/s": msg_rate, "points/s": msg_rate * points_per_msg}
    print(f"  {label}: {msg_rate:,.0f} msg/s acknowledged ({describe(result, points_per_msg)})")
    print(
        f"    server CPU {cpu / max(1, result.acked) * 1e6:.1f} µs/message over the phase "
        f"(connect {connect_s:.1f} s)",
        flush=True,
    )
    if profile is not None:
        print(profiler.summary(), flush=True)
    if result.errors:
        results.fail(f"{label}: load generator errors: {result.last_error}")
    if result.acked != result.sent:
        results.fail(f"{label}: {result.sent - result.acked:,} messages never acknowledged")
    total_points = result.sent * points_per_msg
    if scale:
        landed_at = roost.wait_for_store(offset_before + total_points, 180)
        landed_wall = time.time() - (time.monotonic() - landed_at)
        landed = total_points / (landed_wall - result.start_wall)
        out["stored points/s"] = landed
        print(f"    all {total_points:,} points in PostgreSQL at {landed:,.0f} points/s end to end")
    # Count what was stored: per device (and sensor), through the query API.
    sensors = ["t"] if points_per_msg == 1 else SENSORS[1:]
    pairs = [(device, sensor) for device, _ in devices for sensor in sensors]
    start = (spec.ts_base_ms - 1) * NS_PER_MS
    end = (spec.ts_base_ms + 10**9) * NS_PER_MS
    counts = roost.count_points(pairs, start, end)
    stored = 0
    lost_acked = 0  # acknowledged, not stored: a broken promise
    missing = 0  # sent, never acknowledged, not stored: the device would send it again
    per_sensor = points_per_msg // len(sensors)
    for device, _ in devices:
        sent = result.sent_per_device.get(device, 0) * per_sensor
        acked = result.acked_per_device.get(device, 0) * per_sensor
        for sensor in sensors:
            got = counts[device, sensor]
            stored += got
            lost_acked += max(0, acked - got)
            missing += max(0, sent - max(got, acked))
    expected = sum(result.sent_per_device.values()) * points_per_msg
    print(f"    counted {stored:,} points stored of {expected:,} sent", flush=True)
    if lost_acked:
        results.fail(f"{label}: {lost_acked:,} ACKNOWLEDGED points not stored")
    if missing:
        results.fail(
            f"{label}: {missing:,} points sent but neither acknowledged nor stored "
            "(refused or failed: a device would resend them)"
        )
    out["lost"] = float(lost_acked)
    return out


def diy_phase(
    devices: list[tuple[str, str]], spec: LoadSpec, procs: int, results: Results, label: str,
    *, default_queue: bool = False,
) -> dict[str, float]:  # fmt: skip
    with DiyStack(default_queue) as diy:
        spec.port = diy.broker.port
        cpu_before = cpu_seconds(diy.broker.pid)
        result, _ = run_load(spec, devices, procs)
        expected = result.sent * spec.points
        last_commit = diy.wait_stored(expected)
        broker_cpu = cpu_seconds(diy.broker.pid) - cpu_before
        rows, distinct = diy.count()
    lost = expected - distinct
    stored_rate = distinct / (last_commit - result.start_wall) if last_commit else 0.0
    print(
        f"  {label}: broker acked {result.rate:,.0f} msg/s ({describe(result, spec.points)}); "
        f"rows in SQLite at {stored_rate / spec.points:,.0f} msg/s = {stored_rate:,.0f} points/s "
        f"end to end; broker CPU {broker_cpu:.1f} s",
        flush=True,
    )
    print(
        f"    counted {distinct:,} distinct rows of {expected:,} sent ({rows - distinct:,} "
        f"duplicates): {lost:,} lost",
        flush=True,
    )
    if lost and not default_queue:
        results.fail(f"{label}: the DIY stack lost {lost:,} of {expected:,} points")
    return {
        "msg/s": stored_rate / spec.points,
        "points/s": stored_rate,
        "broker msg/s": result.rate,
        "lost": float(lost),
    }


def provision(roost: RoostProcess, ids: list[str], declare: bool) -> list[tuple[str, str]]:
    records = [
        {
            "id": device_id,
            "name": f"MQTT bench {device_id}",
            **({"sensors": [{"id": s, "type": "double"} for s in SENSORS]} if declare else {}),
        }
        for device_id in ids
    ]
    roost.import_devices(records)
    return list(zip(ids, roost.device_tokens(ids), strict=True))


def run_roost_backend(
    args: Any, results: Results, label: str, database_url: str = "", bus_url: str = ""
) -> dict[str, dict[str, float]]:
    figures: dict[str, dict[str, float]] = {}
    profile_dir = Path(args.profile) if args.profile else None
    tag = "pg" if database_url else "sqlite"
    env = (
        {"ROOST_SQLITE_SYNCHRONOUS": args.sqlite_synchronous}
        if args.sqlite_synchronous and not database_url
        else None
    )
    with RoostProcess(database_url=database_url, bus_url=bus_url, mqtt=True, env=env) as roost:
        t = time.monotonic()
        ids = [f"m-{n:05d}" for n in range(args.devices)]
        devices = provision(roost, ids, declare=True)
        first_contact = []
        if args.first_contact:
            fc_ids = [f"fc-{n:05d}" for n in range(args.devices)]
            first_contact = provision(roost, fc_ids, declare=False)
        print(f"  {label}: provisioned in {time.monotonic() - t:.1f} s", flush=True)
        host, port = "127.0.0.1", roost.mqtt_port
        one = LoadSpec(host, port, duration=args.seconds, window=args.window, points=1)
        figures["1"] = roost_phase(
            roost, devices, one, args.procs, results, f"{label}, 1 point/message",
            profile_dir / f"mqtt_{tag}_1.txt" if profile_dir else None,
        )  # fmt: skip
        hundred = LoadSpec(
            host, port, duration=args.seconds, window=args.window_100, points=100,
            ts_base_ms=one.ts_base_ms + 10**9,
        )  # fmt: skip
        figures["100"] = roost_phase(
            roost, devices, hundred, args.procs, results, f"{label}, 100 points/message",
            profile_dir / f"mqtt_{tag}_100.txt" if profile_dir else None,
        )  # fmt: skip
        if first_contact:
            fc = LoadSpec(host, port, duration=120, window=1, points=1, max_messages=1)
            result, _ = run_load(fc, first_contact, args.procs)
            rate = result.acked / result.window_s if result.window_s else 0.0
            figures["first"] = {"msg/s": rate}
            print(
                f"  {label}, first contact (sensor auto-created): {result.acked:,} messages in "
                f"{result.window_s:.2f} s = {rate:,.0f} msg/s",
                flush=True,
            )
            counts = roost.count_points(
                [(d, "t") for d, _ in first_contact],
                (fc.ts_base_ms - 1) * NS_PER_MS,
                (fc.ts_base_ms + 10**9) * NS_PER_MS,
            )
            if sum(counts.values()) != result.acked:
                results.fail(f"{label} first contact: {sum(counts.values())} of {result.acked}")
        errors = roost.unhandled_errors()
        if errors:
            results.fail(f"{label}: server logged errors: {errors[:3]}")
    return figures


def main() -> int:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0, help="sending time per phase")
    parser.add_argument("--window", type=int, default=20, help="QoS 1 in flight per connection")
    parser.add_argument("--window-100", type=int, default=4, help="the same, 100-point messages")
    parser.add_argument("--procs", type=int, default=1, help="load generator processes")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--no-diy", action="store_true", help="skip the Mosquitto stack")
    parser.add_argument(
        "--nats-max-payload", type=int, default=0, help="NATS max_payload bytes (default: NATS's)"
    )
    parser.add_argument("--no-first-contact", dest="first_contact", action="store_false")
    parser.add_argument("--profile", metavar="DIR", help="py-spy the Roost server into DIR")
    parser.add_argument(
        "--sqlite-synchronous",
        metavar="LEVEL",
        help="ROOST_SQLITE_SYNCHRONOUS of the SQLite server (default: the server's own, FULL)",
    )
    args = parser.parse_args()
    if args.quick:
        args.devices, args.seconds = min(args.devices, 200), min(args.seconds, 4.0)
    backends = set(args.backends.split(","))
    results = Results("mqtt_ingest", "MQTT QoS 1 ingest, 1,000 connected devices")
    print(
        f"MQTT QoS 1: {args.devices} devices, window {args.window} (100-point messages: "
        f"{args.window_100}), {args.seconds:.0f} s a phase, {args.procs} generator process(es); "
        f"generator and servers share {multiprocessing.cpu_count()} cores"
    )
    print(f"load average before: {load_average():.2f}", flush=True)
    diy: dict[str, dict[str, float]] = {}
    ids = [f"m-{n:05d}" for n in range(args.devices)]
    anon = [(d, "x") for d in ids]
    if not args.no_diy:
        # The broker takes messages far faster than the subscriber stores them: half the sending
        # time is enough to measure the subscriber (the figure is first publish → last commit).
        diy_s = max(2.0, args.seconds / 2)
        one = LoadSpec("127.0.0.1", 0, duration=diy_s, window=args.window, points=1)
        hundred = LoadSpec("127.0.0.1", 0, duration=diy_s, window=args.window_100, points=100)
        for name, spec in (("1", one), ("100", hundred)):
            diy[name] = _diy(anon, spec, args.procs, results, name)
        default = LoadSpec("127.0.0.1", 0, duration=diy_s, window=args.window, points=1)
        diy["default"] = _diy(anon, default, args.procs, results, "1", default_queue=True)
    sqlite: dict[str, dict[str, float]] = {}
    pg: dict[str, dict[str, float]] = {}
    if "sqlite" in backends:
        sqlite = run_roost_backend(args, results, "Roost SQLite")
    if "postgresql" in backends:
        with fresh_postgres(args.pg_url) as url, NatsServer(args.nats_max_payload) as nats:
            pg = run_roost_backend(args, results, "Roost PostgreSQL+NATS", url, nats.url)
        rows = synthetic_rows(int(pg["1"]["msg/s"] * args.seconds) or 100_000, args.devices)
        with fresh_postgres(args.pg_url) as url:
            copy_rate, _ = postgres_copy(url, rows)
        print(f"  raw PostgreSQL copy_records_to_table, same row count: {copy_rate:,.0f} rows/s")
        pg["copy"] = {"rows/s": copy_rate}
    if "sqlite" in backends:
        raw_rate, _ = sqlite_append(synthetic_rows(1_000_000, args.devices))
        print(f"  raw SQLite executemany ceiling: {raw_rate:,.0f} rows/s")
        sqlite["raw"] = {"rows/s": raw_rate}
    summarize(results, args, diy, sqlite, pg)
    results.write(args.json)
    return results.exit_code()


def _diy(
    devices: list[tuple[str, str]], spec: LoadSpec, procs: int, results: Results, name: str,
    *, default_queue: bool = False,
) -> dict[str, float]:  # fmt: skip
    label = f"DIY Mosquitto + paho → SQLite, {spec.points} point(s)/message" + (
        " (Mosquitto's default queue)" if default_queue else ""
    )
    return diy_phase(devices, spec, procs, results, label, default_queue=default_queue)


def summarize(
    results: Results, args: Any, diy: dict[str, dict[str, float]],
    sqlite: dict[str, dict[str, float]], pg: dict[str, dict[str, float]],
) -> None:  # fmt: skip
    diy1 = diy.get("1", {}).get("msg/s", 0.0)
    diy100 = diy.get("100", {}).get("points/s", 0.0)
    peer = "Mosquitto + paho → SQLite"
    results.figures["diy 1pt msg/s"] = diy1
    if sqlite:
        r1 = sqlite["1"]["msg/s"]
        results.figures["sqlite 1pt msg/s"] = r1
        results.add(
            "SQLite, 1 point/message: msg/s (PUBACK after commit)",
            f"{r1:,.0f}",
            f"{diy1:,.0f}" if diy else "",
            peer_name=peer,
            goal="≥ 100k msg/s and ≥ 5× DIY",
            met=r1 >= 100_000 and (not diy or r1 >= 5 * diy1),
            note=(f"{r1 / diy1:.1f}× DIY; " if diy1 else "")
            + f"lost: Roost {sqlite['1']['lost']:.0f}, DIY {diy.get('1', {}).get('lost', 0):.0f}",
        )
        r100 = sqlite["100"]["points/s"]
        results.figures["sqlite 100pt points/s"] = r100
        results.add(
            "SQLite, 100 points/message: points/s",
            f"{r100:,.0f}",
            f"{diy100:,.0f}" if diy else "",
            peer_name=peer,
            goal="≥ 300k points/s",
            met=r100 >= 300_000,
            note=(f"{r100 / diy100:.1f}× DIY; " if diy100 else "")
            + f"{sqlite['100']['msg/s']:,.0f} msg/s; raw SQLite executemany ceiling "
            f"{sqlite['raw']['rows/s']:,.0f} rows/s",
        )
        if "first" in sqlite:
            results.add(
                "SQLite, first contact (sensor auto-created): msg/s",
                f"{sqlite['first']['msg/s']:,.0f}",
                note="one message per new device, each creating its sensor",
            )
    if diy:
        results.add(
            "DIY with Mosquitto's default queue (max_queued_messages 1000)",
            "—",
            f"{diy['default']['lost']:,.0f} lost",
            peer_name=peer,
            note=f"broker acked {diy['default']['broker msg/s']:,.0f} msg/s, rows in SQLite at "
            f"{diy['default']['msg/s']:,.0f} msg/s",
        )
    if pg:
        r1 = pg["1"]["msg/s"]
        results.figures["pg 1pt msg/s"] = r1
        results.add(
            "PostgreSQL + NATS, 1 point/message: msg/s (PUBACK after JetStream ack)",
            f"{r1:,.0f}",
            f"{pg['copy']['rows/s']:,.0f} rows/s",
            peer_name="raw asyncpg COPY",
            note=f"in PostgreSQL at {pg['1'].get('stored points/s', 0):,.0f} points/s end to "
            f"end; {r1 / diy1:.1f}× DIY"
            if diy1
            else "",
        )
        r100 = pg["100"]["points/s"]
        results.add(
            "PostgreSQL + NATS, 100 points/message: points/s",
            f"{r100:,.0f}",
            f"{pg['copy']['rows/s']:,.0f} rows/s",
            peer_name="raw asyncpg COPY",
            note=f"in PostgreSQL at {pg['100'].get('stored points/s', 0):,.0f} points/s end to end",
        )
        if "first" in pg:
            results.add("PostgreSQL + NATS, first contact: msg/s", f"{pg['first']['msg/s']:,.0f}")


if __name__ == "__main__":
    sys.exit(main())
