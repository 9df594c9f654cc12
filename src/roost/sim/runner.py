"""Run a simulated fleet against a Roost server: provision devices, send, count acknowledgements.

Provisioning goes through the REST API (one bulk import for the devices, then a token per device)
with an API key or admin credentials. Sending: MQTT (one connection per device, QoS 0/1/2) or HTTP
(``POST /api/v1/telemetry`` and ``/events`` with the device token). Rate: messages per second for
the whole fleet, or 0 for "as fast as acknowledgements come back" (each connection keeps
``inflight`` messages outstanding) — the load-generator mode of the benchmarks.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlparse

import httpx
import orjson

from roost.sim.mqtt_client import SimConnection, Stats, open_connection
from roost.sim.profiles import DisplayProfile, now

# Pace of the rate controller: often enough for smooth sending, rarely enough to cost nothing.
TICK_S = 0.01
# Devices provisioned per import request and tokens requested concurrently.
IMPORT_CHUNK = 5000
TOKEN_CONCURRENCY = 32


@dataclass(slots=True)
class SimConfig:
    """One simulation run."""

    url: str = "http://127.0.0.1:8000"
    mqtt_url: str = ""  # mqtt://host:port; default: the API host, port 1883
    api_key: str | None = None
    username: str = "admin"
    password: str | None = None
    devices: int = 10
    prefix: str = "sim"
    protocol: str = "mqtt"  # mqtt or http
    rate: float = 10.0  # messages/s for the whole fleet; 0 = as fast as acks allow
    duration: float = 10.0
    qos: int = 1
    mqtt_version: int = 4
    points_per_message: int = 1
    events_share: float = 0.1  # share of messages that are shopper events
    inflight: int = 32
    site_id: str | None = None
    fast_payloads: bool = False  # pre-built payloads with unique timestamps (benchmarks)
    seed: int = 1


@dataclass(slots=True)
class SimDevice:
    """A provisioned simulated device."""

    device_id: str
    token: str
    profile: DisplayProfile
    connection: SimConnection | None = None
    http: httpx.AsyncClient | None = None
    counter: int = 0


@dataclass(slots=True)
class SimResult:
    """What a run did."""

    stats: Stats
    elapsed: float
    devices: int
    per_device_sent: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        """Acknowledged messages per second."""
        return self.stats.acked / self.elapsed if self.elapsed else 0.0


async def _admin_headers(config: SimConfig, client: httpx.AsyncClient) -> dict[str, str]:
    if config.api_key:
        return {"Authorization": f"Bearer {config.api_key}"}
    if not config.password:
        raise SystemExit("give --api-key, or --password for the admin user, to provision devices")
    resp = await client.post(
        "/api/v1/auth/login", json={"username": config.username, "password": config.password}
    )
    if resp.status_code != 200:
        raise SystemExit(f"login failed: {resp.status_code} {resp.text}")
    return {"Authorization": f"Bearer {resp.json()['token']}"}


async def provision(config: SimConfig, log: Callable[[str], None] = print) -> list[SimDevice]:
    """Create (or reuse) the simulated devices and give each a fresh token."""
    ids = [f"{config.prefix}-{n:05d}" for n in range(config.devices)]
    async with httpx.AsyncClient(base_url=config.url, timeout=60) as client:
        headers = await _admin_headers(config, client)
        for start in range(0, len(ids), IMPORT_CHUNK):
            chunk = ids[start : start + IMPORT_CHUNK]
            body = [
                {
                    "id": device_id,
                    "name": f"Simulated display {device_id}",
                    "tags": {"simulated": "true"},
                    **({"site_id": config.site_id} if config.site_id else {}),
                }
                for device_id in chunk
            ]
            resp = await client.post(
                "/api/v1/devices/import",
                params={"on_existing": "skip"},
                content=orjson.dumps(body),
                headers={**headers, "Content-Type": "application/json"},
            )
            if resp.status_code != 200:
                raise SystemExit(f"device import failed: {resp.status_code} {resp.text}")
        log(f"provisioned {len(ids)} devices ({config.prefix}-*)")
        limiter = asyncio.Semaphore(TOKEN_CONCURRENCY)

        async def token(device_id: str) -> str:
            async with limiter:
                resp = await client.post(
                    f"/api/v1/devices/{device_id}/tokens",
                    json={"name": "roost sim"},
                    headers=headers,
                )
            if resp.status_code != 201:
                raise SystemExit(f"token for {device_id} failed: {resp.status_code} {resp.text}")
            value: str = resp.json()["token"]
            return value

        tokens = await asyncio.gather(*(token(d) for d in ids))
    return [
        SimDevice(d, t, DisplayProfile(config.seed * 1_000_003 + i))
        for i, (d, t) in enumerate(zip(ids, tokens, strict=True))
    ]


def _message(config: SimConfig, device: SimDevice, rng: random.Random) -> tuple[str, bytes]:
    """(kind, payload) of the device's next message."""
    device.counter += 1
    if config.fast_payloads:
        # Unique (sensor, timestamp) per message: every message is a distinct stored point.
        ts = 1_700_000_000_000_000 + device.counter
        return "telemetry", b'{"sensor_id":"temperature","timestamp":%d,"value":%d.5}' % (
            ts,
            device.counter % 40,
        )
    moment = now()
    if config.events_share and rng.random() < config.events_share:
        return "events", orjson.dumps(device.profile.event(moment))
    return "telemetry", orjson.dumps(device.profile.telemetry(moment, config.points_per_message))


async def run(
    config: SimConfig,
    devices: list[SimDevice],
    progress: Callable[[Stats, float], None] | None = None,
) -> SimResult:
    """Send for ``config.duration`` seconds; answer what was acknowledged."""
    stats = Stats()
    rng = random.Random(config.seed)
    if config.protocol == "mqtt":
        await _connect_all(config, devices, stats)
    else:
        _open_http(config, devices)
    started = time.monotonic()
    deadline = started + config.duration
    reporter = asyncio.create_task(_report(stats, started, progress)) if progress else None
    try:
        if config.protocol == "mqtt":
            await _send_mqtt(config, devices, stats, rng, deadline)
        else:
            await _send_http(config, devices, stats, rng, deadline)
    finally:
        if reporter is not None:
            reporter.cancel()
        for device in devices:
            if device.connection is not None:
                await device.connection.drain(10)
                device.connection.close()
            if device.http is not None:
                await device.http.aclose()
    elapsed = time.monotonic() - started
    if progress:
        progress(stats, elapsed)
    return SimResult(stats, elapsed, len(devices), {d.device_id: d.counter for d in devices})


async def _report(stats: Stats, started: float, progress: Callable[[Stats, float], None]) -> None:
    while True:
        await asyncio.sleep(0.5)
        progress(stats, time.monotonic() - started)


async def _connect_all(config: SimConfig, devices: list[SimDevice], stats: Stats) -> None:
    target = urlparse(config.mqtt_url or f"mqtt://{urlparse(config.url).hostname}:1883")
    host, port = target.hostname or "127.0.0.1", target.port or 1883
    limiter = asyncio.Semaphore(200)  # connection storms are a test of their own

    async def connect(device: SimDevice) -> None:
        async with limiter:
            device.connection = await open_connection(
                host,
                port,
                device.device_id,
                device.device_id,
                device.token,
                stats,
                level=config.mqtt_version,
                max_inflight=config.inflight,
            )

    await asyncio.gather(*(connect(d) for d in devices))


def _open_http(config: SimConfig, devices: list[SimDevice]) -> None:
    limits = httpx.Limits(
        max_connections=config.inflight, max_keepalive_connections=config.inflight
    )
    for device in devices:
        device.http = httpx.AsyncClient(
            base_url=config.url,
            timeout=30,
            limits=limits,
            headers={"Authorization": f"Bearer {device.token}"},
        )


async def _send_mqtt(
    config: SimConfig, devices: list[SimDevice], stats: Stats, rng: random.Random, deadline: float
) -> None:
    topics = {
        (d.device_id, kind): f"devices/{d.device_id}/{kind}".encode()
        for d in devices
        for kind in ("telemetry", "events")
    }
    if config.rate <= 0:

        async def saturate(device: SimDevice) -> None:
            connection = device.connection
            assert connection is not None
            while time.monotonic() < deadline and not connection.closed.done():
                kind, payload = _message(config, device, rng)
                while not connection.publish(topics[device.device_id, kind], payload, config.qos):
                    if connection.closed.done():
                        return
                    await connection.room.wait()
                if config.qos == 0 and stats.sent % 256 == 0:
                    await asyncio.sleep(0)

        await asyncio.gather(*(saturate(d) for d in devices))
        return
    budget = 0.0
    cycle = itertools.cycle(devices)
    last = time.monotonic()
    while (moment := time.monotonic()) < deadline:
        budget += (moment - last) * config.rate
        last = moment
        while budget >= 1:
            device = next(cycle)
            assert device.connection is not None
            kind, payload = _message(config, device, rng)
            if not device.connection.publish(topics[device.device_id, kind], payload, config.qos):
                break  # that device's window is full: try again next tick
            budget -= 1
        for device in devices:
            if device.connection is not None:
                device.connection.ping_if_idle()
        await asyncio.sleep(TICK_S)


async def _send_http(
    config: SimConfig, devices: list[SimDevice], stats: Stats, rng: random.Random, deadline: float
) -> None:
    window = asyncio.Semaphore(max(1, config.inflight))

    async def post(device: SimDevice) -> None:
        assert device.http is not None
        kind, payload = _message(config, device, rng)
        sent = time.monotonic()
        stats.sent += 1
        try:
            resp = await device.http.post(
                f"/api/v1/{kind}", content=payload, headers={"Content-Type": "application/json"}
            )
        except httpx.HTTPError as exc:
            stats.errors += 1
            stats.last_error = str(exc)
            return
        finally:
            window.release()
        if resp.status_code == 200:
            stats.acked += 1
            stats.latencies.append(time.monotonic() - sent)
        elif resp.status_code in {400, 422}:
            stats.refused += 1
            stats.last_error = resp.text[:200]
        else:
            stats.errors += 1
            stats.last_error = f"{resp.status_code} {resp.text[:200]}"

    tasks: set[asyncio.Task[None]] = set()
    cycle = itertools.cycle(devices)
    budget, last = 0.0, time.monotonic()
    while (moment := time.monotonic()) < deadline:
        if config.rate > 0:
            budget += (moment - last) * config.rate
            last = moment
            if budget < 1:
                await asyncio.sleep(TICK_S)
                continue
            budget -= 1
        await window.acquire()
        task = asyncio.create_task(post(next(cycle)))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.gather(*tasks)
