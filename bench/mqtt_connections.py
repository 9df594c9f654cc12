"""Idle MQTT connections: memory per connection of one ``roost serve`` process, beside Mosquitto.

    .venv/bin/python bench/mqtt_connections.py [--quick] [--connections 10000] [--procs 2]

10,000 devices are provisioned (import API, a token each), then 10,000 MQTT 3.1.1 connections,
one per device (username = device id, password = its token), connect to one Roost process and stay
idle. RSS per connection = (RSS with every connection up and settled − RSS just before the first
one) / connections, both read from /proc/<pid>/status (VmRSS). Peer: a Mosquitto 2 of our own
(temp config, free port) with the same number of connections, measured the same way in the same
run. The generator processes raise their open-file limit (``resource.setrlimit``) and so does this
script for the servers it starts. Goal: ≤ 10 KiB per connection.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.mqtt_load import LoadRun, LoadSpec
from bench.support import (
    Mosquitto,
    Results,
    RoostProcess,
    base_parser,
    load_average,
    raise_fd_limit,
    rss_kib,
)

# Time for the server to take in the last CONNECTs and settle before RSS is read.
SETTLE_S = 3.0


def measure(
    pid: int, port: int, devices: list[tuple[str, str]], procs: int
) -> tuple[int, int, float]:
    """RSS before, RSS with every connection idle, seconds to connect them."""
    time.sleep(1.0)
    before = rss_kib(pid)
    run = LoadRun(LoadSpec("127.0.0.1", port, hold=True, keep_alive=0), devices, procs)
    try:
        connect_s = run.connect()
        time.sleep(SETTLE_S)
        after = rss_kib(pid)
    finally:
        run.stop()
    return before, after, connect_s


def main() -> int:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--procs", type=int, default=2, help="load generator processes")
    args = parser.parse_args()
    n = 1000 if args.quick else args.connections
    limit = raise_fd_limit(max(65536, 2 * n + 1000))
    results = Results("mqtt_connections", f"{n:,} idle MQTT connections on one process")
    print(f"idle MQTT connections: {n:,}, {args.procs} generator processes, fd limit {limit}")
    print(f"load average before: {load_average():.2f}", flush=True)

    with Mosquitto() as broker:
        before, after, connect_s = measure(
            broker.pid, broker.port, [(f"m-{i:05d}", "x") for i in range(n)], args.procs
        )
    mosquitto = (after - before) / n
    print(
        f"  Mosquitto: RSS {before:,} → {after:,} KiB = {mosquitto:.2f} KiB/connection "
        f"(connected in {connect_s:.1f} s)",
        flush=True,
    )

    with RoostProcess(mqtt=True) as roost:
        t = time.monotonic()
        ids = [f"m-{i:05d}" for i in range(n)]
        roost.import_devices([{"id": d, "name": d} for d in ids])
        tokens = roost.device_tokens(ids)
        print(f"  Roost: provisioned {n:,} devices with tokens in {time.monotonic() - t:.1f} s")
        before, after, connect_s = measure(
            roost.pid, roost.mqtt_port, list(zip(ids, tokens, strict=True)), args.procs
        )
        errors = roost.unhandled_errors()
        if errors:
            results.fail(f"server logged errors: {errors[:3]}")
    per = (after - before) / n
    print(
        f"  Roost: RSS {before:,} → {after:,} KiB = {per:.2f} KiB/connection "
        f"(connected in {connect_s:.1f} s, {n / connect_s:,.0f} connections/s)",
        flush=True,
    )
    results.figures["roost KiB/connection"] = per
    results.figures["mosquitto KiB/connection"] = mosquitto
    results.add(
        f"RSS per idle connection ({n:,} connections)",
        f"{per:.2f} KiB",
        f"{mosquitto:.2f} KiB",
        peer_name="Mosquitto 2",
        goal="≤ 10 KiB",
        met=per <= 10,
        note=f"Roost RSS {before / 1024:.0f} → {after / 1024:.0f} MiB; connect rate "
        f"{n / connect_s:,.0f}/s (token check per CONNECT)",
    )
    results.write(args.json)
    return results.exit_code()


if __name__ == "__main__":
    sys.exit(main())
