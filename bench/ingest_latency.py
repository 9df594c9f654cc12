"""Ingest-to-queryable latency at half the maximum MQTT rate: send → seen on the live WebSocket.

    .venv/bin/python bench/ingest_latency.py [--quick] [--rate MSG_PER_S] [--seconds 20]

Roost on SQLite with 1,000 connected devices (``bench/mqtt_load.py``, QoS 1, one point per
message) sending at half the maximum rate: ``--rate`` (``bench/run_all.py`` passes half of
``mqtt_ingest.py``'s figure), or, without it, half of what a 5 s saturation run here reaches.
Beside that load, 10 probe devices send one point every 5 ms in turn (200/s), each carrying its
send time (wall clock) as its value. A user subscribed to ``GET /api/v1/ws/stream?device=probe-…``
(the live stream of committed points, admin token) takes the time each probe point arrives:
latency = arrival − send, p50/p99. The probes' PUBACK latency (after the commit: the point is
durable and queryable from then on) is given too.

Peer: the DIY stack (Mosquitto + paho subscriber → SQLite, as in ``mqtt_ingest.py``) at half of
its own maximum, the same probes: latency = the subscriber's commit of the row − send.
Goal: p99 < 100 ms.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.mqtt_load import TS_BASE_MS, LoadRun, LoadSpec, run_load
from bench.support import (
    Mosquitto,
    Results,
    RoostProcess,
    base_parser,
    load_average,
    percentile,
)

PROBES = 10
PROBE_INTERVAL_S = 0.005
PROBE_TS_BASE_MS = TS_BASE_MS + 2 * 10**9


async def probe_run(
    mqtt_port: int, probes: list[tuple[str, str]], seconds: float, ws_url: str | None
) -> tuple[list[float], list[float], int]:
    """Send probe points; answers (send → visible latencies, send → PUBACK latencies, sent)."""
    from roost.sim.mqtt_client import Stats, open_connection

    stats = Stats()
    conns = [
        await open_connection("127.0.0.1", mqtt_port, d, d, token, stats, max_inflight=1000)
        for d, token in probes
    ]
    visible: list[float] = []
    all_seen = asyncio.Event()
    expected = [0]
    reader_task = None
    ws = None
    if ws_url is not None:
        import websockets

        ws = await websockets.connect(ws_url, max_size=None)

        async def reader() -> None:
            async for frame in ws:
                now = time.time()
                visible.extend(now - item["value"] for item in orjson.loads(frame).get("items", ()))
                if expected[0] and len(visible) >= expected[0]:
                    all_seen.set()

        reader_task = asyncio.create_task(reader())
        await asyncio.sleep(0.5)
    topics = [f"devices/{d}/telemetry".encode() for d, _ in probes]
    sent = 0
    deadline = time.monotonic() + seconds
    next_at = time.monotonic()
    while time.monotonic() < deadline:
        i = sent % len(conns)
        payload = b'{"sensor_id":"t","timestamp":%d,"value":%.6f}' % (
            PROBE_TS_BASE_MS + sent,
            time.time(),
        )
        conns[i].publish(topics[i], payload, 1)
        sent += 1
        next_at += PROBE_INTERVAL_S
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    for conn in conns:
        await conn.drain(30)
    if reader_task is not None:
        expected[0] = sent
        if len(visible) < sent:
            try:
                await asyncio.wait_for(all_seen.wait(), 10)
            except TimeoutError:
                pass
        reader_task.cancel()
        assert ws is not None
        await ws.close()
    for conn in conns:
        conn.close()
    return visible, stats.latencies, sent


def roost_latency(args: Any, results: Results) -> dict[str, float]:
    with RoostProcess(mqtt=True) as roost:
        ids = [f"m-{n:05d}" for n in range(args.devices)]
        probe_ids = [f"probe-{n:02d}" for n in range(PROBES)]
        roost.import_devices(
            [
                {"id": d, "name": d, "sensors": [{"id": "t", "type": "double"}]}
                for d in ids + probe_ids
            ]
        )
        tokens = roost.device_tokens(ids + probe_ids)
        devices = list(zip(ids, tokens[: len(ids)], strict=True))
        probes = list(zip(probe_ids, tokens[len(ids) :], strict=True))
        port = roost.mqtt_port
        rate = args.rate
        if not rate:
            spec = LoadSpec("127.0.0.1", port, duration=5, window=20, points=1)
            maximum, _ = run_load(spec, devices, args.procs)
            rate = maximum.rate / 2
            print(f"  Roost max here: {maximum.rate:,.0f} msg/s → half: {rate:,.0f} msg/s")
        background = max(0.0, rate - 1 / PROBE_INTERVAL_S)
        spec = LoadSpec(
            "127.0.0.1", port, duration=args.seconds + 2, window=20, points=1, rate=background,
            ts_base_ms=TS_BASE_MS + 10**9,
        )  # fmt: skip
        run = LoadRun(spec, devices, args.procs)
        run.connect()
        run.go(delay=0.1)
        time.sleep(1.0)  # the load reaches its rate
        query = "&".join(f"device={d}" for d in probe_ids)
        ws_url = (
            f"ws://127.0.0.1:{roost.http_port}/api/v1/ws/stream?{query}&token={roost.admin_token()}"
        )
        visible, acked, sent = asyncio.run(
            probe_run(port, probes, args.seconds, None if args.no_stream else ws_url)
        )
        load = run.results(timeout=args.seconds + 200)
        run.stop()
        errors = roost.unhandled_errors()
        if errors:
            results.fail(f"server logged errors: {errors[:3]}")
    achieved = load.rate + 1 / PROBE_INTERVAL_S
    print(
        f"  Roost at {achieved:,.0f} msg/s (target {rate:,.0f}): {len(visible):,} of {sent:,} "
        f"probe points seen on the live stream; send → visible p50 "
        f"{percentile(visible, 0.5) * 1000:.1f} ms, p99 {percentile(visible, 0.99) * 1000:.1f} ms, "
        f"max {max(visible, default=0) * 1000:.1f} ms; send → PUBACK p50 "
        f"{percentile(acked, 0.5) * 1000:.1f} ms, p99 {percentile(acked, 0.99) * 1000:.1f} ms",
        flush=True,
    )
    if len(visible) < sent and not args.no_stream:
        results.fail(f"Roost: {sent - len(visible)} probe points never seen on the live stream")
    if load.errors:
        results.fail(f"Roost load: {load.last_error}")
    return {
        "rate": achieved,
        "p50": percentile(visible, 0.5),
        "p99": percentile(visible, 0.99),
        "ack p50": percentile(acked, 0.5),
        "ack p99": percentile(acked, 0.99),
    }


# -- the DIY peer ---------------------------------------------------------------------------------


def diy_probe_subscriber(port: int, ready: Any, stop: Any, out: Any) -> None:
    """The DIY subscriber of mqtt_ingest.py, also timing the commit of each probe row."""
    import paho.mqtt.client as mqtt

    tmp = tempfile.mkdtemp(prefix="bench-diy-")
    conn = sqlite3.connect(Path(tmp) / "diy.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE points (device TEXT, sensor TEXT, ts INTEGER, value REAL)")
    pending: list[tuple[str, str, int, float]] = []
    probes: list[float] = []
    latencies: list[float] = []
    first = [0.0]

    def flush() -> None:
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO points VALUES (?, ?, ?, ?)", pending)
        conn.execute("COMMIT")
        now = time.time()
        latencies.extend(now - sent for sent in probes)
        probes.clear()
        pending.clear()

    def on_message(client: Any, userdata: Any, msg: Any) -> None:
        device = msg.topic.split("/")[1]
        doc = orjson.loads(msg.payload)
        if not pending:
            first[0] = time.monotonic()
        pending.append((device, doc["sensor_id"], doc["timestamp"], doc["value"]))
        if device.startswith("probe-"):
            probes.append(doc["value"])
        if len(pending) >= 5000:
            flush()

    done = [False]
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="diy-sub")
    client.on_message = on_message
    client.on_subscribe = lambda *a: done.__setitem__(0, True)
    client.connect("127.0.0.1", port, keepalive=600)
    client.subscribe("devices/+/telemetry", qos=1)
    while not done[0]:
        client.loop(timeout=0.1)
    ready.set()
    while not stop.is_set():
        client.loop(timeout=0.005)
        if pending and time.monotonic() - first[0] >= 0.02:
            flush()
    if pending:
        flush()
    out.put(latencies)


def diy_latency(args: Any, results: Results) -> dict[str, float]:
    ctx = multiprocessing.get_context("spawn")
    ids = [(f"m-{n:05d}", "x") for n in range(args.devices)]
    probes = [(f"probe-{n:02d}", "x") for n in range(PROBES)]
    with Mosquitto("max_queued_messages 0\n") as broker:
        ready, stop, out = ctx.Event(), ctx.Event(), ctx.Queue()
        sub = ctx.Process(target=diy_probe_subscriber, args=(broker.port, ready, stop, out))
        sub.start()
        ready.wait(30)
        rate = args.diy_rate
        background = max(0.0, rate - 1 / PROBE_INTERVAL_S)
        spec = LoadSpec(
            "127.0.0.1", broker.port, duration=args.seconds + 2, window=20, points=1,
            rate=background,
        )  # fmt: skip
        run = LoadRun(spec, ids, args.procs)
        run.connect()
        run.go(delay=0.1)
        time.sleep(1.0)
        _, acked, sent = asyncio.run(probe_run(broker.port, probes, args.seconds, None))
        load = run.results(timeout=args.seconds + 200)
        run.stop()
        time.sleep(3)
        stop.set()
        visible = out.get(timeout=120)
        sub.join(30)
    achieved = load.rate + 1 / PROBE_INTERVAL_S
    print(
        f"  DIY at {achieved:,.0f} msg/s (target {rate:,.0f}): {len(visible):,} of {sent:,} probe "
        f"rows committed; send → committed p50 {percentile(visible, 0.5) * 1000:.1f} ms, "
        f"p99 {percentile(visible, 0.99) * 1000:.1f} ms; broker PUBACK p50 "
        f"{percentile(acked, 0.5) * 1000:.1f} ms",
        flush=True,
    )
    return {"rate": achieved, "p50": percentile(visible, 0.5), "p99": percentile(visible, 0.99)}


def main() -> int:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--rate", type=float, default=0.0, help="total msg/s (default: measure)")
    parser.add_argument(
        "--diy-rate", type=float, default=5000.0, help="msg/s for the DIY peer (half its max)"
    )
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--procs", type=int, default=1, help="load generator processes")
    parser.add_argument("--no-diy", action="store_true")
    parser.add_argument(
        "--no-stream", action="store_true", help="no live-stream reader: PUBACK latency only"
    )
    args = parser.parse_args()
    if args.quick:
        args.devices, args.seconds = min(args.devices, 200), min(args.seconds, 5.0)
    results = Results("ingest_latency", "Ingest-to-queryable latency at half the maximum rate")
    print(f"ingest → queryable latency, {args.devices} devices, {args.seconds:.0f} s of probes")
    print(f"load average before: {load_average():.2f}", flush=True)
    diy = {} if args.no_diy else diy_latency(args, results)
    roost = roost_latency(args, results)
    results.figures.update({f"roost {k}": v for k, v in roost.items()})
    results.add(
        f"send → visible on /api/v1/ws/stream at {roost['rate']:,.0f} msg/s: p50 / p99",
        f"{roost['p50'] * 1000:.1f} / {roost['p99'] * 1000:.1f} ms",
        f"{diy['p50'] * 1000:.1f} / {diy['p99'] * 1000:.1f} ms at {diy['rate']:,.0f} msg/s"
        if diy
        else "",
        peer_name="DIY: send → row committed",
        goal="p99 < 100 ms",
        met=roost["p99"] < 0.1,
        note=f"PUBACK (after commit) p50 {roost['ack p50'] * 1000:.1f} ms, p99 "
        f"{roost['ack p99'] * 1000:.1f} ms",
    )
    results.write(args.json)
    return results.exit_code()


if __name__ == "__main__":
    sys.exit(main())
