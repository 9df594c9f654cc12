"""MQTT gateway: cost per message of the gateway layer, idle memory per connection, QoS 1 rate.

Run::

    .venv/bin/python -m bench.mqtt_gateway micro [--messages 200000]
    .venv/bin/python -m bench.mqtt_gateway idle [--connections 10000]
    .venv/bin/python -m bench.mqtt_gateway rate [--connections 1000] [--seconds 10]

* ``micro``: the sans-IO session fed 64 KiB chunks of pre-encoded PUBLISH packets (no sockets),
  with a trivial ingest (every message joins a ticket resolved after each chunk of ~1,000
  messages, like a group commit). Printed beside the peer, the bare decoder on the same bytes:
  the difference is what the session layer (ACL, ingest call, ordered PUBACKs) costs per message.
* ``idle``: the gateway (uvloop, trivial ingest) in a child process; N clients CONNECT and stay
  idle; the child's RSS growth divided by N. Peer: Mosquitto (``/usr/sbin/mosquitto``) with the
  same clients, measured the same way.
* ``rate``: N connections each publishing QoS 1 with 100 messages in flight, for a while; acked
  messages/s. Peer: Mosquitto, same load (it acknowledges on receipt, storing nothing).

The trivial ingest means these figures are the gateway's own; the real ingest adds its work.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop

from roost.core.device_identity import DeviceIdentity
from roost.core.ingest import CommitTicket, IngestKind, IngestOutcome
from roost.mqtt.codec import Connect, MQTTDecoder, Publish, encode
from roost.mqtt.gateway import Gateway
from roost.mqtt.server import MQTTServer
from roost.runtime import device_topics

# A group commit every 2 ms is what the SQLite writer does under load.
COMMIT_INTERVAL_S = 0.002
PAYLOAD = b'{"temperature": 21.5, "humidity": 40}'


class TrivialAuthenticator:
    """Any username is a device of that id; no password check."""

    async def authenticate_mqtt(
        self, username: str | None, password: bytes | None
    ) -> DeviceIdentity:
        name = username or "anon"
        return DeviceIdentity("t", name, hash(name) & 0x7FFFFFFF, "c-" + name)

    def on_revoked(self, callback: Any) -> Any:
        return lambda: None


class TrivialIngest:
    """Takes every message into the current batch; ``commit()`` makes the batch durable."""

    def __init__(self) -> None:
        self.taken = 0
        self._new_batch()

    def _new_batch(self) -> None:
        self.ticket = CommitTicket()
        self.outcome = IngestOutcome(accepted=1, ticket=self.ticket)

    def commit(self) -> None:
        ticket = self.ticket
        self._new_batch()
        ticket.resolve()

    async def device_context(self, identity: DeviceIdentity) -> Any:
        return identity

    def try_submit(self, ctx: Any, kind: IngestKind, payload: bytes, recv_ns: int,
                   msg_id: str | None = None) -> IngestOutcome:  # fmt: skip
        self.taken += 1
        return self.outcome

    async def submit(self, ctx: Any, kind: IngestKind, payload: bytes, recv_ns: int,
                     msg_id: str | None = None) -> IngestOutcome:  # fmt: skip
        return self.try_submit(ctx, kind, payload, recv_ns)

    async def wait_for_capacity(self) -> None:
        return None

    async def record_refusal(self, *args: Any) -> None:
        return None


class NullLink:
    def __init__(self) -> None:
        self.written = 0

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def close(self) -> None: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...


def connect_packet(client_id: str, device: str | None = None) -> bytes:
    return encode(Connect(client_id, 4, True, 60, device or client_id, b"x"), 4)


def publishes(device: str, count: int, qos: int) -> bytes:
    topic = f"devices/{device}/telemetry"
    return b"".join(
        encode(Publish(topic, PAYLOAD, qos, packet_id=(i % 65535) + 1 if qos else None), 4)
        for i in range(count)
    )


# -- micro ---------------------------------------------------------------------------------------


async def micro(messages: int) -> None:
    for qos in (0, 1):
        data = publishes("d1", messages, qos)
        chunks = [data[i : i + 65536] for i in range(0, len(data), 65536)]
        decoder = MQTTDecoder(role="server", protocol_level=4)
        start = time.perf_counter()
        for chunk in chunks:
            decoder.feed(chunk)
        bare = (time.perf_counter() - start) / messages * 1e6

        ingest = TrivialIngest()
        gateway = Gateway(TrivialAuthenticator(), ingest, topics=device_topics())
        link = NullLink()
        session = gateway.open(link)
        session.feed(connect_packet("d1"))
        for _ in range(5):
            await asyncio.sleep(0)
        assert session.connected
        start = time.perf_counter()
        for chunk in chunks:
            session.feed(chunk)
            ingest.commit()  # a 64 KiB chunk holds ~1,000 messages: one group commit each
        full = (time.perf_counter() - start) / messages * 1e6
        assert ingest.taken == messages, ingest.taken
        print(
            f"QoS {qos}: session {full:.2f} µs/message ({1e6 / full:,.0f}/s on one core); "
            f"peer, bare decoder: {bare:.2f} µs -> gateway layer {full - bare:.2f} µs/message"
        )


# -- server child process -------------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def _serve(port: int, ready: Any) -> None:
    async def main() -> None:
        ingest = TrivialIngest()
        gateway = Gateway(TrivialAuthenticator(), ingest, topics=device_topics())
        server = MQTTServer(gateway, "127.0.0.1", port)
        await server.start()
        loop = asyncio.get_running_loop()

        def commit() -> None:
            ingest.commit()
            loop.call_later(COMMIT_INTERVAL_S, commit)

        commit()
        ready.set()
        await asyncio.Event().wait()

    uvloop.run(main())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Peer:
    """A server under test: Roost's gateway in a child process, or Mosquitto."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.port = free_port()
        self._proc: Any = None
        self._dir: Any = None

    def __enter__(self) -> Peer:
        if self.kind == "roost":
            ctx = multiprocessing.get_context("spawn")
            ready = ctx.Event()
            self._proc = ctx.Process(target=_serve, args=(self.port, ready), daemon=True)
            self._proc.start()
            ready.wait(30)
            self.pid = self._proc.pid
        else:
            self._dir = tempfile.TemporaryDirectory()
            conf = Path(self._dir.name) / "mosquitto.conf"
            conf.write_text(
                f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
                "max_inflight_messages 0\nmax_queued_messages 100000\nlog_dest none\n"
            )
            self._proc = subprocess.Popen(["/usr/sbin/mosquitto", "-c", str(conf)])
            self.pid = self._proc.pid
            time.sleep(0.5)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.kind == "roost":
            self._proc.terminate()
            self._proc.join(5)
        else:
            self._proc.terminate()
            self._proc.wait(5)
            self._dir.cleanup()


# -- idle -----------------------------------------------------------------------------------------


async def open_idle(port: int, count: int) -> list[asyncio.StreamWriter]:
    writers = []
    for i in range(count):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(connect_packet(f"idle-{i}"))
        await reader.readexactly(4)
        writers.append(writer)
    return writers


def idle(connections: int) -> None:
    for kind in ("roost", "mosquitto"):
        with Peer(kind) as peer:
            time.sleep(0.5)
            before = rss_kib(peer.pid)
            writers = uvloop.run(_idle_run(peer, connections))
            after = rss_kib(peer.pid)
            print(
                f"{kind}: {connections} idle connections, RSS {before} KiB -> {after} KiB: "
                f"{(after - before) / connections:.2f} KiB per connection"
            )
            del writers


async def _idle_run(peer: Peer, connections: int) -> int:
    writers = await open_idle(peer.port, connections)
    await asyncio.sleep(2)
    count = len(writers)
    rss = rss_kib(peer.pid)
    for writer in writers:
        writer.close()
    return count + rss * 0


# -- rate -----------------------------------------------------------------------------------------

WINDOW = 100
BURST = 1000


class LoadClient(asyncio.Protocol):
    """Keeps WINDOW QoS 1 PUBLISHes in flight; counts PUBACKs (4 bytes each)."""

    def __init__(self, burst: bytes, counter: list[int], ready: asyncio.Future[None]) -> None:
        self.burst = burst  # BURST packets with ids 1..BURST, cycled: ids in flight stay unique
        self.size = len(burst) // BURST
        self.pos = 0
        self.counter = counter
        self.ready = ready
        self.connected = False
        self.pending = b""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(connect_packet(f"load-{id(self)}", "d"))

    def _send(self, n: int) -> None:
        end = self.pos + n * self.size
        if end > len(self.burst):
            self.pos = 0
            end = n * self.size
        self.transport.write(self.burst[self.pos : end])
        self.pos = end

    def start(self) -> None:
        """Put the first WINDOW messages in flight (once every client is connected)."""
        self._send(WINDOW)

    def data_received(self, data: bytes) -> None:
        if not self.connected:
            self.connected = True
            data = data[4:]
            if not self.ready.done():
                self.ready.set_result(None)
        data = self.pending + data
        acks = len(data) // 4
        self.pending = data[acks * 4 :]
        if acks:
            self.counter[0] += acks
            self._send(acks)


def _load(port: int, connections: int, seconds: float, out: Any) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        counter = [0]
        readies = []
        burst = publishes("d", BURST, 1)
        clients = []
        for _ in range(connections):
            ready: asyncio.Future[None] = loop.create_future()
            _, client = await loop.create_connection(
                lambda r=ready: LoadClient(burst, counter, r), "127.0.0.1", port
            )
            clients.append(client)
            readies.append(ready)
        await asyncio.gather(*readies)
        for client in clients:
            client.start()
        await asyncio.sleep(1)  # warm up
        start_count, start = counter[0], time.perf_counter()
        await asyncio.sleep(seconds)
        out.put((counter[0] - start_count) / (time.perf_counter() - start))

    uvloop.run(main())


def rate(connections: int, seconds: float) -> None:
    ctx = multiprocessing.get_context("spawn")
    for kind in ("roost", "mosquitto"):
        with Peer(kind) as peer:
            queue = ctx.Queue()
            loader = ctx.Process(target=_load, args=(peer.port, connections, seconds, queue))
            loader.start()
            result = queue.get(timeout=seconds + 120)
            loader.join(10)
            print(
                f"{kind}: {connections} connections, QoS 1: {result:,.0f} acknowledged messages/s"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["micro", "idle", "rate"])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--connections", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs")
    if args.mode == "micro":
        uvloop.run(micro(args.messages))
    elif args.mode == "idle":
        idle(args.connections or 10_000)
    else:
        rate(args.connections or 1000, args.seconds)


if __name__ == "__main__":
    main()
