"""roost-agent: footprint, local queue accept rate, catch-up forward rate, idle CPU.

    .venv/bin/python bench/agent.py [--quick] [--points 100000] [--post-points 100] [--outage-s 60]

A real ``roost serve`` (SQLite, MQTT on) and a real ``roost-agent run`` subprocess on loopback:

1. **accept**: the server is stopped (it stays down ``--outage-s``, a minute); one local app
   posts ``--points`` points to the agent's ``POST /v1/telemetry`` in posts of
   ``--post-points`` (each answered after its fsync). Goal ≥ 5,000 points/s. Peer: the same
   posts straight to the server's ``POST /api/v1/telemetry`` (what the app would do without an
   agent, the server up).
2. **catch-up**: the server starts again; from the agent's reconnect to an empty queue, the
   backlog's points/s (500-point batches, 8 in flight, each deleted after its PUBACK). Goal
   ≥ 20,000 points/s. Peer: a bare paho client publishing the same points in the same 500-point
   messages, QoS 1, 8 in flight (MQTT alone, no queue). Every point is then counted through the
   query API: a lost or extra point fails the run.
3. **footprint**: the agent's RSS now and at its peak (VmHWM); goal ≤ 40 MB. Peer: the floor of
   any Python agent, an interpreter that imports paho, sqlite3, http.server and ssl only.
4. **idle**: the agent's CPU over ``--idle-s`` seconds, connected, nothing to do; goal ≈ 0.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.support import (
    V1,
    Results,
    RoostProcess,
    base_parser,
    cpu_seconds,
    free_port,
    load_average,
    rss_kib,
    stop_process,
)

BATCH = 500
WINDOW = 8
FLOOR = (
    "import paho.mqtt.client, sqlite3, http.server, ssl, json, threading, concurrent.futures, "
    "urllib.request, time; time.sleep(30)"
)


def status(url: str) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{url}/v1/status", timeout=10).json()
    return body


def items(base_ms: int, start: int, count: int, sensor: str) -> list[dict[str, Any]]:
    return [
        {"sensor_id": sensor, "ts": base_ms + i, "value": i} for i in range(start, start + count)
    ]


def post_all(
    url: str,
    path: str,
    base_ms: int,
    total: int,
    per_post: int,
    sensor: str,
    headers: dict[str, str] | None = None,
) -> float:
    """Post ``total`` points in posts of ``per_post``; points/s."""
    with httpx.Client(timeout=60, headers=headers) as client:
        started = time.perf_counter()
        for start in range(0, total, per_post):
            body = orjson.dumps(items(base_ms, start, min(per_post, total - start), sensor))
            resp = client.post(
                f"{url}{path}", content=body, headers={"Content-Type": "application/json"}
            )
            if resp.status_code != 200:
                raise RuntimeError(f"{path}: {resp.status_code} {resp.text[:300]}")
        return total / (time.perf_counter() - started)


def paho_forward(port: int, device_id: str, token: str, base_ms: int, total: int) -> float:
    """A bare paho client: the same 500-point messages, QoS 1, WINDOW in flight; points/s."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-peer", protocol=mqtt.MQTTv5)
    client.username_pw_set(device_id, token)
    client.max_inflight_messages_set(WINDOW)
    done = threading.Event()
    acked = [0]

    def on_publish(c: Any, u: Any, mid: int, reason: Any, props: Any) -> None:
        acked[0] += 1
        if acked[0] == messages:
            done.set()

    client.on_publish = on_publish
    payloads = [
        orjson.dumps({"msg_id": f"peer-{start}", "items": items(base_ms, start, BATCH, "peer")})
        for start in range(0, total, BATCH)
    ]
    messages = len(payloads)
    client.connect("127.0.0.1", port)
    client.loop_start()
    started = time.perf_counter()
    for payload in payloads:
        client.publish(f"devices/{device_id}/telemetry", payload, 1)
    done.wait(300)
    elapsed = time.perf_counter() - started
    client.disconnect()
    client.loop_stop()
    return total / elapsed


def hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def count(server: RoostProcess, device_id: str, sensor: str, base_ms: int, total: int) -> int:
    start, end = base_ms * 1_000_000, (base_ms + total) * 1_000_000
    return server.count_points([(device_id, sensor)], start, end)[(device_id, sensor)]


def main() -> int:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--points", type=int, default=100_000, help="points of the backlog")
    parser.add_argument("--post-points", type=int, default=100, help="points per local post")
    parser.add_argument("--idle-s", type=float, default=10.0, help="seconds of idle measured")
    parser.add_argument(
        "--outage-s",
        type=float,
        default=60.0,
        help="seconds the server stays stopped (at least; the issue's 'a minute')",
    )
    args = parser.parse_args()
    total = 20_000 if args.quick else args.points
    idle_s = 3.0 if args.quick else args.idle_s
    results = Results("agent", "roost-agent: footprint, local queue, catch-up, idle")
    print(f"roost-agent bench: {total} points, posts of {args.post_points}", flush=True)

    with RoostProcess(mqtt=True) as server, tempfile.TemporaryDirectory() as tmp:
        device_id = "bench-agent"
        with server.admin() as api:
            api.post(f"{V1}/devices", json={"id": device_id}).raise_for_status()
        token = server.device_tokens([device_id])[0]
        base_ms = int(time.time() * 1000) - 3_600_000

        # Peer of the accept rate: the server's own HTTP ingest, same posts.
        http_rate = post_all(
            server.url,
            f"{V1}/telemetry",
            base_ms,
            min(total, 20_000),
            args.post_points,
            "http",
            {"Authorization": f"Bearer {token}"},
        )
        peer_forward = paho_forward(server.mqtt_port, device_id, token, base_ms, total)

        local_port = free_port()
        config = Path(tmp) / "agent.toml"
        config.write_text(
            f'[device]\nid = "{device_id}"\ntoken = "{token}"\napi_url = "{server.url}"\n'
            f'[mqtt]\nhost = "127.0.0.1"\nport = {server.mqtt_port}\nreconnect_max_s = 1\n'
            f'[agent]\ndata_dir = "{Path(tmp) / "agent-data"}"\n'
            f"[local_api]\nport = {local_port}\n[health]\ninterval_s = 0\n"
        )
        url = f"http://127.0.0.1:{local_port}"
        server.stop()
        stopped_at = time.monotonic()
        outage_s = 2.0 if args.quick else args.outage_s
        with (Path(tmp) / "agent.log").open("wb") as log:
            agent = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "roost_agent",
                    "run",
                    "--config",
                    str(config),
                    "--log-level",
                    "warning",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or agent.poll() is not None:
                    raise RuntimeError((Path(tmp) / "agent.log").read_text())
                time.sleep(0.05)

            accept = post_all(url, "/v1/telemetry", base_ms, total, args.post_points, "agent")
            results.add(
                "local queue accepts (points/s)",
                f"{accept:,.0f}",
                f"{http_rate:,.0f}",
                peer_name="server HTTP ingest, same posts",
                goal=">= 5,000",
                met=accept >= 5000,
            )
            queued = status(url)["queue"]["queued_points"]
            if queued != total:
                results.fail(f"{queued} points queued, {total} posted")

            time.sleep(max(0.0, stopped_at + outage_s - time.monotonic()))
            results.note(
                f"the server was down {time.monotonic() - stopped_at:.0f} s "
                f"while the {total:,} points were posted to the agent"
            )
            server.start()
            while not status(url)["connected"]:
                time.sleep(0.005)
            started = time.perf_counter()
            while status(url)["queue"]["queued_points"]:
                time.sleep(0.01)
            forward = total / (time.perf_counter() - started)
            results.add(
                "catch-up forward (points/s)",
                f"{forward:,.0f}",
                f"{peer_forward:,.0f}",
                peer_name="bare paho, same messages",
                goal=">= 20,000",
                met=forward >= 20_000,
            )
            stored = count(server, device_id, "agent", base_ms, total)
            if stored != total:
                results.fail(f"{stored} points stored of {total} forwarded")

            rss, peak = rss_kib(agent.pid) / 1024, hwm_kib(agent.pid) / 1024
            floor_proc = subprocess.Popen([sys.executable, "-c", FLOOR])
            time.sleep(2)
            floor = rss_kib(floor_proc.pid) / 1024
            stop_process(floor_proc)
            results.add(
                "agent RSS now / peak (MB)",
                f"{rss:.1f} / {peak:.1f}",
                f"{floor:.1f}",
                peer_name="python + paho/sqlite3/http.server/ssl only",
                goal="<= 40 MB",
                met=peak <= 40,
            )

            before = cpu_seconds(agent.pid)
            time.sleep(idle_s)
            idle = (cpu_seconds(agent.pid) - before) / idle_s * 100
            results.add("idle CPU (% of a core)", f"{idle:.2f}", goal="~0 (< 1 %)", met=idle < 1)
        finally:
            stop_process(agent)
        results.note(f"load average at the end: {load_average():.1f}")
    results.write(args.json)
    return results.exit_code()


if __name__ == "__main__":
    sys.exit(main())
