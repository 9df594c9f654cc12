"""The MQTT load generator of the benchmarks: many connections per process, hand-built frames.

Each connection is a bare ``asyncio.Protocol`` (uvloop) that keeps ``window`` QoS 1 PUBLISHes in
flight: a PUBACK (4 bytes in MQTT 3.1.1, acknowledgements come in order) lets it send the next
message, built on the spot (a ``%``-format of the payload and a few byte concatenations, ~1 µs,
because every message must carry its own timestamp to be a distinct stored point). CONNECT frames
come from Roost's codec (``roost.sim.mqtt_client`` builds its PUBLISH frames the same way; this
generator drops its per-message bookkeeping to stay well below the server's cost on 2 shared cores).

Payloads (every (device, sensor, timestamp) unique; timestamps in ms, 40 days back):

* ``points=1``: the seed's sensor form ``{"sensor_id": "t", "timestamp": T, "value": V}``;
* ``points=N`` (a multiple of 10): N/10 key/value items ``{"ts": T, "values": {"s0": V, …,
  "s9": V}}`` — ten sensors, N points per message.

:func:`run_load` starts ``procs`` generator processes (multiprocessing, spawn), each with a slice
of the devices; they connect, wait for a common start time, send for ``duration`` seconds (as fast
as acknowledgements allow, or at ``rate`` messages/s in total), then wait for the outstanding
acknowledgements and report. ``hold`` mode only connects and keeps the connections idle until
released (the idle-memory benchmark).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import resource
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from roost.mqtt.wire import encode_varint

# Connections opened at once by one generator process (a connection storm is a test of its own).
CONNECT_CONCURRENCY = 100
# How often a paced generator sends its share (5 ms: smooth enough, cheap enough).
TICK_S = 0.005
# How long to wait for the acknowledgements still outstanding when sending stops.
DRAIN_S = 120.0
# Latency samples kept per generator process.
MAX_SAMPLES = 200_000
TS_BASE_MS = (int(time.time()) - 40 * 86_400) * 1000


@dataclass
class LoadSpec:
    """One load run (what every generator process is told)."""

    host: str
    port: int
    duration: float = 10.0
    window: int = 20
    points: int = 1
    rate: float = 0.0  # messages/s in total; 0 = as fast as acknowledgements come back
    warmup: float = 1.0
    topic: str = "devices/{}/telemetry"
    ts_base_ms: int = TS_BASE_MS
    seq_start: int = 0  # where each device's message counter starts (a second run continues)
    sample_every: int = 16  # keep one acknowledgement latency in this many
    keep_alive: int = 600
    hold: bool = False  # connect only, keep idle until released
    max_messages: int = 0  # per connection; 0 = no limit (a run then ends once all are acked)


@dataclass
class LoadResult:
    """What the generator processes did, summed."""

    sent: int = 0
    acked: int = 0
    errors: int = 0
    connected: int = 0
    window_acked: int = 0  # acknowledged between warmup and the end of sending
    window_s: float = 0.0
    sent_per_device: dict[str, int] = field(default_factory=dict)
    acked_per_device: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    last_error: str = ""
    cpu_s: float = 0.0  # CPU seconds the generator processes used
    start_wall: float = 0.0  # time.time() when sending started
    end_wall: float = 0.0  # time.time() when the last acknowledgement came back

    @property
    def rate(self) -> float:
        """Acknowledged messages/s over the measurement window."""
        return self.window_acked / self.window_s if self.window_s else 0.0


def single_payload(ts_ms: int, value: int) -> bytes:
    return b'{"sensor_id":"t","timestamp":%d,"value":%d.5}' % (ts_ms, value)


_VALUES = b",".join(b'"s%d":%%d.25' % k for k in range(10))
_ITEM = b'{"ts":%d,"values":{' + _VALUES + b"}}"


def multi_payload(seq: int, items: int, ts_base_ms: int) -> bytes:
    """``items`` key/value items of ten sensors each; timestamps unique per device."""
    first = ts_base_ms + seq * items
    v = seq % 40
    return b"[" + b",".join(_ITEM % ((first + k,) + (v,) * 10) for k in range(items)) + b"]"


class Publisher(asyncio.Protocol):
    """One device's connection, keeping ``window`` QoS 1 messages in flight."""

    def __init__(self, gen: Generator, device_id: str, password: str) -> None:
        self.gen = gen
        self.device_id = device_id
        self.password = password
        self.topic = gen.spec.topic.format(device_id).encode()
        self.topic_head = len(self.topic).to_bytes(2, "big") + self.topic
        self.transport: asyncio.Transport | None = None
        self.connected: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.buf = b""
        self.seq = gen.spec.seq_start
        self.packet_id = 0
        self.inflight = 0
        self.sent_times: deque[float] = deque()
        self.sent = 0
        self.closed = False

    def connection_made(self, transport: Any) -> None:
        from roost.mqtt.codec import Connect, encode

        self.transport = transport
        transport.write(
            encode(
                Connect(
                    client_id=self.device_id,
                    protocol_level=4,
                    clean_start=True,
                    keep_alive=self.gen.spec.keep_alive,
                    username=self.device_id,
                    password=self.password.encode(),
                ),
                4,
            )
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.connected.done():
            self.connected.set_exception(ConnectionError(f"{self.device_id}: closed: {exc}"))
        elif not self.gen.stopping:
            self.gen.errors += 1
            self.gen.last_error = f"{self.device_id}: connection lost: {exc}"
        self.gen.check_drained()

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        pos, end, acks = 0, len(buf), 0
        while pos + 2 <= end:
            length = buf[pos + 1]
            head = 2
            if length & 0x80:  # only a DISCONNECT with properties or the like: parse fully
                length, shift, head = 0, 0, 1
                while True:
                    if pos + head >= end:
                        self.buf = buf[pos:]
                        return
                    byte = buf[pos + head]
                    length |= (byte & 0x7F) << shift
                    shift += 7
                    head += 1
                    if not byte & 0x80:
                        break
            if pos + head + length > end:
                break
            kind = buf[pos] >> 4
            if kind == 4:  # PUBACK
                acks += 1
            elif kind == 2:  # CONNACK
                code = buf[pos + 3]
                if code:
                    self.connected.set_exception(ConnectionError(f"CONNACK refused {code}"))
                elif not self.connected.done():
                    self.connected.set_result(None)
            elif kind != 13:  # anything but PINGRESP is unexpected
                self.gen.errors += 1
                self.gen.last_error = f"{self.device_id}: unexpected packet type {kind}"
            pos += head + length
        self.buf = buf[pos:] if pos < end else b""
        if acks:
            self._acked(acks)

    def _acked(self, acks: int) -> None:
        gen = self.gen
        self.inflight -= acks
        gen.acked += acks
        now = time.monotonic()
        times = self.sent_times
        for _ in range(acks):
            sent_at = times.popleft()
            gen.ack_count += 1
            if gen.ack_count % gen.spec.sample_every == 0 and len(gen.latencies) < MAX_SAMPLES:
                gen.latencies.append(now - sent_at)
        if gen.sending and gen.saturate:
            self.send(acks)
            if gen.spec.max_messages and not self.inflight:
                gen.check_finished()
        elif gen.stopping and not self.inflight:
            gen.check_drained()

    def send(self, n: int) -> None:
        """Send ``n`` new messages."""
        if self.transport is None or self.closed:
            return
        spec = self.gen.spec
        if spec.max_messages:
            n = min(n, spec.max_messages - self.sent)
            if n <= 0:
                return
        frames = []
        now = time.monotonic()
        for _ in range(n):
            self.seq += 1
            if spec.points == 1:
                payload = single_payload(spec.ts_base_ms + self.seq, self.seq % 40)
            else:
                payload = multi_payload(self.seq, spec.points // 10, spec.ts_base_ms)
            self.packet_id = self.packet_id % 65535 + 1
            body_len = len(self.topic_head) + 2 + len(payload)
            frames.append(
                b"\x32"
                + encode_varint(body_len)
                + self.topic_head
                + self.packet_id.to_bytes(2, "big")
                + payload
            )
            self.sent_times.append(now)
        self.transport.write(b"".join(frames))
        self.inflight += n
        self.sent += n
        self.gen.sent += n

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.write(b"\xe0\x00")
            self.transport.close()


class Generator:
    """One generator process's connections and counters."""

    def __init__(self, spec: LoadSpec) -> None:
        self.spec = spec
        self.sent = 0
        self.acked = 0
        self.ack_count = 0
        self.errors = 0
        self.last_error = ""
        self.latencies: list[float] = []
        self.sending = False
        self.stopping = False
        self.saturate = spec.rate <= 0
        self.publishers: list[Publisher] = []
        self.drained: asyncio.Event | None = None
        self.finished = asyncio.Event()

    def check_finished(self) -> None:
        """With ``max_messages``: set :attr:`finished` once every connection sent and got all."""
        limit = self.spec.max_messages
        if all(p.closed or (p.sent >= limit and not p.inflight) for p in self.publishers):
            self.finished.set()

    def check_drained(self) -> None:
        if self.stopping and self.drained is not None:
            if all(p.inflight <= 0 or p.closed for p in self.publishers):
                self.drained.set()

    async def connect(self, devices: list[tuple[str, str]]) -> None:
        loop = asyncio.get_running_loop()
        limiter = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def one(device_id: str, password: str) -> None:
            async with limiter:
                _, publisher = await loop.create_connection(
                    lambda: Publisher(self, device_id, password), self.spec.host, self.spec.port
                )
                await asyncio.wait_for(publisher.connected, 60)
                self.publishers.append(publisher)

        await asyncio.gather(*(one(d, p) for d, p in devices))

    async def run(self, start_at: float) -> dict[str, Any]:
        spec = self.spec
        await asyncio.sleep(max(0.0, start_at - time.time()))
        self.drained = asyncio.Event()
        start_wall = time.time()
        self.sending = True
        if self.saturate:
            for publisher in self.publishers:
                publisher.send(spec.window)
            if spec.max_messages:
                t0 = time.monotonic()
                self.check_finished()
                try:
                    await asyncio.wait_for(self.finished.wait(), spec.duration)
                except TimeoutError:
                    self.errors += 1
                    self.last_error = f"not every message acknowledged within {spec.duration}s"
                return await self._report(start_wall, self.acked, time.monotonic() - t0)
            await asyncio.sleep(spec.warmup)
            acked_at_warmup = self.acked
            t0 = time.monotonic()
            await asyncio.sleep(max(0.0, spec.duration - spec.warmup))
        else:
            acked_at_warmup, t0 = -1, 0.0
            deadline = time.monotonic() + spec.duration
            warm_at = time.monotonic() + spec.warmup
            budget, last, index = 0.0, time.monotonic(), 0
            count = len(self.publishers)
            while (now := time.monotonic()) < deadline:
                if acked_at_warmup < 0 and now >= warm_at:
                    acked_at_warmup, t0 = self.acked, now
                budget += (now - last) * spec.rate
                last = now
                tries = 0
                while budget >= 1 and tries < count:
                    publisher = self.publishers[index]
                    index = (index + 1) % count
                    if publisher.inflight < spec.window and not publisher.closed:
                        publisher.send(1)
                        budget -= 1
                        tries = 0
                    else:
                        tries += 1
                await asyncio.sleep(TICK_S)
        return await self._report(start_wall, self.acked - acked_at_warmup, time.monotonic() - t0)

    async def _report(
        self, start_wall: float, window_acked: int, window_s: float
    ) -> dict[str, Any]:
        assert self.drained is not None
        self.sending = False
        self.stopping = True
        self.check_drained()
        try:
            await asyncio.wait_for(self.drained.wait(), DRAIN_S)
        except TimeoutError:
            self.errors += 1
            self.last_error = f"acknowledgements still outstanding after {DRAIN_S}s"
        end_wall = time.time()
        for publisher in self.publishers:
            publisher.close()
        return {
            "sent": self.sent,
            "acked": self.acked,
            "errors": self.errors,
            "connected": len(self.publishers),
            "window_acked": window_acked,
            "window_s": window_s,
            "sent_per_device": {p.device_id: p.sent for p in self.publishers},
            "acked_per_device": {p.device_id: p.sent - p.inflight for p in self.publishers},
            "latencies": self.latencies,
            "last_error": self.last_error,
            "start_wall": start_wall,
            "end_wall": end_wall,
            "cpu_s": time.process_time(),
        }


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def child_main(
    spec: LoadSpec, devices: list[tuple[str, str]], ready: Any, start_at: Any, go: Any,
    release: Any, out: Any,
) -> None:  # fmt: skip
    """A generator process: connect, say ready, wait for the start time, run, report."""
    import uvloop

    _raise_nofile()

    async def main() -> dict[str, Any]:
        gen = Generator(spec)
        try:
            await gen.connect(devices)
        except Exception as exc:
            ready.put(f"connect failed: {exc!r}")
            return {}
        ready.put("ok")
        if spec.hold:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, release.wait)
            for publisher in gen.publishers:
                publisher.close()
            await asyncio.sleep(0.2)
            return {"connected": len(gen.publishers)}
        await asyncio.get_running_loop().run_in_executor(None, go.wait)
        return await gen.run(start_at.value)

    try:
        result = uvloop.run(main())
    except Exception as exc:  # report rather than hang the parent
        result = {"errors": 1, "last_error": repr(exc)}
    out.put(result)


class LoadRun:
    """Generator processes over a list of devices (see :func:`run_load`)."""

    def __init__(self, spec: LoadSpec, devices: list[tuple[str, str]], procs: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.spec = spec
        self.ready = ctx.Queue()
        self.out = ctx.Queue()
        self.start_at = ctx.Value("d", 0.0)
        self.release = ctx.Event()
        self.go_event = ctx.Event()
        procs = max(1, min(procs, len(devices)))
        self.processes = [
            ctx.Process(
                target=child_main,
                args=(
                    spec,
                    devices[i::procs],
                    self.ready,
                    self.start_at,
                    self.go_event,
                    self.release,
                    self.out,
                ),  # fmt: skip
                daemon=True,
            )
            for i in range(procs)
        ]

    def connect(self, timeout: float = 600) -> float:
        """Start the processes and wait until every connection is up; seconds it took."""
        started = time.monotonic()
        for process in self.processes:
            process.start()
        for _ in self.processes:
            answer = self.ready.get(timeout=timeout)
            if answer != "ok":
                self.stop()
                raise RuntimeError(f"load generator: {answer}")
        return time.monotonic() - started

    def go(self, delay: float = 0.3) -> None:
        self.start_at.value = time.time() + delay
        self.go_event.set()

    def results(self, timeout: float) -> LoadResult:
        total = LoadResult()
        parts = [self.out.get(timeout=timeout) for _ in self.processes]
        for process in self.processes:
            process.join(30)
        starts, ends = [], []
        for part in parts:
            total.sent += part.get("sent", 0)
            total.acked += part.get("acked", 0)
            total.errors += part.get("errors", 0)
            total.connected += part.get("connected", 0)
            total.window_acked += part.get("window_acked", 0)
            total.window_s = max(total.window_s, part.get("window_s", 0.0))
            total.sent_per_device.update(part.get("sent_per_device", {}))
            total.acked_per_device.update(part.get("acked_per_device", {}))
            total.latencies.extend(part.get("latencies", []))
            total.last_error = part.get("last_error") or total.last_error
            total.cpu_s += part.get("cpu_s", 0.0)
            if "start_wall" in part:
                starts.append(part["start_wall"])
                ends.append(part["end_wall"])
        total.start_wall = min(starts) if starts else 0.0
        total.end_wall = max(ends) if ends else 0.0
        return total

    def stop(self) -> None:
        self.release.set()
        for process in self.processes:
            process.join(10)
            if process.is_alive():
                process.kill()


def run_load(
    spec: LoadSpec, devices: list[tuple[str, str]], procs: int = 1
) -> tuple[LoadResult, float]:
    """Connect, send, drain; answers the summed result and the seconds connecting took."""
    run = LoadRun(spec, devices, procs)
    try:
        connect_s = run.connect()
        run.go()
        result = run.results(timeout=spec.duration + DRAIN_S + 120)
    finally:
        run.stop()
    return result, connect_s


def cpu_count() -> int:
    return os.cpu_count() or 1
