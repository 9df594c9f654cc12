"""Bus throughput: ``stream_publish`` with many acknowledgements in flight, and publish → consume.

Run with a NATS server (JetStream enabled) listening::

    .venv/bin/python -m bench.bus_throughput [--nats nats://127.0.0.1:4222] [--uvloop]

Figures printed, for 1 KB and 100 KB messages:

* ``NatsBus.stream_publish`` with ``--in-flight`` awaits outstanding (each returns after the
  JetStream acknowledgement), beside the peer: nats-py's own ``JetStream.publish`` driven the same
  way (what the Roost layer costs), and a single publisher awaiting each acknowledgement in turn
  (what pipelining buys);
* end to end: publishing concurrently while one durable consumer (batches of 500) takes and
  acknowledges every message: messages/s from the first publish to the last acknowledgement;
* consuming alone: one durable consumer working off a backlog already in the stream;
* the same on ``memory://`` for reference.

Each run uses a stream family of its own (``roost.bench…``) and deletes its stream afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence

import nats
import nats.js.errors

from roost.bus.base import Bus, StreamMessage, open_bus
from roost.bus.subjects import stream_name

KB = 1024
MB = 1024 * 1024


async def drive(count: int, in_flight: int, send: Callable[[int], Awaitable[object]]) -> float:
    """Call ``send(i)`` for i in range(count) with ``in_flight`` calls outstanding; seconds."""
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < count:
            i = next_index
            next_index += 1
            await send(i)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return time.perf_counter() - started


def line(label: str, count: int, size: int, seconds: float) -> None:
    rate = count / seconds
    figures = f"{rate:>10,.0f} msg/s {rate * size / MB:>9,.1f} MB/s"
    print(f"  {label:<46} {figures}  ({count:,} in {seconds:.2f} s)")


async def end_to_end(bus: Bus, family: str, count: int, size: int, in_flight: int) -> float:
    """Seconds from the first publish to the acknowledgement of the last message."""
    payload = secrets.token_bytes(size)
    seen = 0
    all_in = asyncio.Event()

    async def handler(batch: Sequence[StreamMessage]) -> None:
        nonlocal seen
        seen += len(batch)
        if seen >= count:
            all_in.set()

    consumer = await bus.stream_consume(f"{family}.e2e", "bench", handler, batch=500)
    started = time.perf_counter()
    await drive(count, in_flight, lambda i: bus.stream_publish(f"{family}.e2e", payload))
    await asyncio.wait_for(all_in.wait(), 120)
    seconds = time.perf_counter() - started
    await consumer.stop()
    return seconds


async def consume_backlog(bus: Bus, family: str, count: int, size: int, in_flight: int) -> float:
    """Seconds for one durable consumer to take and acknowledge ``count`` waiting messages."""
    payload = secrets.token_bytes(size)
    await drive(count, in_flight, lambda i: bus.stream_publish(f"{family}.backlog", payload))
    seen = 0
    all_in = asyncio.Event()

    async def handler(batch: Sequence[StreamMessage]) -> None:
        nonlocal seen
        seen += len(batch)
        if seen >= count:
            all_in.set()

    started = time.perf_counter()
    consumer = await bus.stream_consume(f"{family}.backlog", "bench", handler, batch=500)
    await asyncio.wait_for(all_in.wait(), 120)
    seconds = time.perf_counter() - started
    await consumer.stop()
    return seconds


async def bench_bus(url: str, sizes: dict[int, int], in_flight: int) -> None:
    family = f"roost.bench{secrets.token_hex(4)}"
    scheme = url.split(":")[0]
    bus = open_bus(url)
    await bus.start()
    try:
        await bus.stream_publish(f"{family}.warmup", b"x")  # creates the stream
        for size, count in sizes.items():
            payload = secrets.token_bytes(size)
            subject = f"{family}.p{size}"
            kb = size // KB
            seconds = await drive(
                count, in_flight, lambda i, s=subject, p=payload: bus.stream_publish(s, p)
            )
            line(
                f"Roost {scheme} stream_publish {kb} KB, {in_flight} in flight",
                count,
                size,
                seconds,
            )
            if scheme == "nats":
                await bench_peer(url, subject, payload, count, in_flight)
                serial = max(count // 10, 100)
                seconds = await drive(
                    serial, 1, lambda i, s=subject, p=payload: bus.stream_publish(s, p)
                )
                line(f"Roost nats stream_publish {kb} KB, 1 in flight", serial, size, seconds)
            seconds = await end_to_end(bus, f"{family}e{size}", count, size, in_flight)
            line(f"Roost {scheme} publish → consume {kb} KB", count, size, seconds)
            seconds = await consume_backlog(bus, f"{family}b{size}", count, size, in_flight)
            line(f"Roost {scheme} consume a backlog of {kb} KB", count, size, seconds)
    finally:
        await bus.close()
        if scheme == "nats":
            families = [f"{family}{kind}{size}" for size in sizes for kind in "eb"]
            await delete_streams(url, family, *families)


async def bench_peer(url: str, subject: str, payload: bytes, count: int, in_flight: int) -> None:
    """nats-py's JetStream publish, driven exactly like stream_publish: the Roost layer's cost."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        seconds = await drive(count, in_flight, lambda i: js.publish(subject, payload))
        line(
            f"peer: nats-py js.publish {len(payload) // KB} KB, {in_flight} in flight",
            count,
            len(payload),
            seconds,
        )
    finally:
        await nc.close()


async def delete_streams(url: str, *families: str) -> None:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        for family in families:
            try:
                await js.delete_stream(stream_name(family))
            except nats.js.errors.NotFoundError:
                pass
    finally:
        await nc.close()


async def main(args: argparse.Namespace) -> None:
    sizes = {KB: args.count_1k, 100 * KB: args.count_100k}
    print(f"bus throughput, {args.in_flight} stream_publish awaits in flight")
    print(f"NATS JetStream at {args.nats} (file storage, work-queue retention):")
    await bench_bus(args.nats, sizes, args.in_flight)
    print("memory:// (in-process, for reference):")
    await bench_bus("memory://", sizes, args.in_flight)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nats", default="nats://127.0.0.1:4222")
    parser.add_argument("--in-flight", type=int, default=100)
    parser.add_argument("--count-1k", type=int, default=20_000)
    parser.add_argument("--count-100k", type=int, default=2_000)
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop, as roost serve does")
    options = parser.parse_args()
    if options.uvloop:
        import uvloop

        uvloop.run(main(options))
    else:
        asyncio.run(main(options))
