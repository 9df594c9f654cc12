"""The in-process bus (``memory://``): the embedded default, no server needed.

Notifications go straight to each matching subscription's bounded queue
(:class:`~roost.bus.fanout.NotificationQueue`); ``publish`` never waits for a handler, and a
subscriber that falls :data:`~roost.bus.fanout.NOTIFY_QUEUE_LIMIT` behind loses its oldest
notifications (counted in ``Subscription.dropped``).

Streams are kept in memory with the same rules as the NATS backend's JetStream streams: one
stream per subject family, sequences from 1, ``msg_id`` de-duplication within
:data:`~roost.bus.base.DEDUPE_WINDOW_S`, work-queue retention (a message is removed once its
durable acknowledges it; one durable per subject), durable positions, batches, redelivery of a
batch whose handler raised. They are **not** durable across a restart of the process: embedded
mode commits ingest to SQLite directly and does not rely on streams for durability, so nothing
acknowledged to a device lives only here.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections import OrderedDict

from roost.bus.base import (
    DEDUPE_WINDOW_S,
    Bus,
    NotificationHandler,
    StreamHandler,
    StreamMessage,
    Subscription,
    redelivery_delay,
)
from roost.bus.fanout import STOP_GRACE_S, NotificationQueue, stop_task
from roost.bus.subjects import (
    check_consumer,
    check_pattern,
    check_subject,
    is_literal,
    patterns_overlap,
    stream_family,
    stream_name,
    subject_matches,
)
from roost.errors import Conflict, Unavailable

logger = logging.getLogger(__name__)

# Bytes one in-memory stream may hold before stream_publish pushes back with Unavailable, the
# same answer a full JetStream stream gives. Embedded mode does not route ingest through streams,
# so this only stops a runaway producer (or a consumer that stopped) from eating the machine.
MEMORY_STREAM_MAX_BYTES = 256 * 1024 * 1024


class _MemorySubscription(NotificationQueue):
    """A notification subscription registered in a MemoryBus."""

    def __init__(self, bus: MemoryBus, pattern: str, handler: NotificationHandler) -> None:
        super().__init__(pattern, handler)
        self._bus = bus

    async def stop(self) -> None:
        """Unregister, then stop the delivery task."""
        self._bus._remove_subscription(self)
        await super().stop()


class _MemoryStream:
    """One stream: the messages not yet acknowledged, by sequence, and its durables."""

    def __init__(self, name: str, max_bytes: int) -> None:
        self.name = name
        self.max_bytes = max_bytes
        self.messages: dict[int, tuple[str, bytes]] = {}
        self.last_seq = 0
        self.size = 0
        self.seen: OrderedDict[str, tuple[int, float]] = OrderedDict()  # msg_id → (seq, expiry)
        self.durables: dict[str, _Durable] = {}

    def append(self, subject: str, data: bytes, msg_id: str | None) -> int:
        now = time.monotonic()
        while self.seen and next(iter(self.seen.values()))[1] <= now:
            self.seen.popitem(last=False)
        if msg_id is not None and msg_id in self.seen:
            return self.seen[msg_id][0]
        if self.size + len(data) > self.max_bytes:
            raise Unavailable(f"stream {self.name} is full ({self.size} bytes)", retry_after=1)
        self.last_seq += 1
        self.messages[self.last_seq] = (subject, data)
        self.size += len(data)
        if msg_id is not None:
            self.seen[msg_id] = (self.last_seq, now + DEDUPE_WINDOW_S)
        for durable in self.durables.values():
            if subject_matches(durable.pattern, subject):
                durable.changed.set()
        return self.last_seq

    def remove(self, seq: int) -> None:
        entry = self.messages.pop(seq, None)
        if entry is not None:
            self.size -= len(entry[1])


class _Durable:
    """A durable consumer's position: what was never delivered, what waits to be delivered again,
    and how often each unacknowledged message was delivered."""

    def __init__(self, stream: _MemoryStream, name: str, pattern: str) -> None:
        self.stream = stream
        self.name = name
        self.pattern = pattern
        self.next_seq = 1  # first sequence never looked at
        self.ready: list[int] = []  # heap of sequences to deliver again, oldest first
        self.deliveries: dict[int, int] = {}  # unacknowledged sequence → times delivered
        self.changed = asyncio.Event()
        self.timers: set[asyncio.TimerHandle] = set()

    def take(self, limit: int) -> list[StreamMessage]:
        """Up to ``limit`` messages, redeliveries first, marked as delivered."""
        out: list[StreamMessage] = []
        messages = self.stream.messages
        while self.ready and len(out) < limit:
            seq = heapq.heappop(self.ready)
            entry = messages.get(seq)
            if entry is None:
                continue
            count = self.deliveries.get(seq, 0) + 1
            self.deliveries[seq] = count
            out.append(StreamMessage(entry[0], entry[1], seq, redelivered=count > 1))
        while len(out) < limit and self.next_seq <= self.stream.last_seq:
            seq = self.next_seq
            self.next_seq += 1
            entry = messages.get(seq)
            if entry is None or not subject_matches(self.pattern, entry[0]):
                continue
            self.deliveries[seq] = 1
            out.append(StreamMessage(entry[0], entry[1], seq))
        return out

    def ack(self, batch: list[StreamMessage]) -> None:
        for message in batch:
            self.deliveries.pop(message.sequence, None)
            self.stream.remove(message.sequence)

    def nak(self, batch: list[StreamMessage]) -> None:
        """Deliver the batch again after the redelivery delay."""
        seqs = [m.sequence for m in batch]
        delay = redelivery_delay(max(self.deliveries.get(s, 1) for s in seqs))
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle | None = None

        def fire() -> None:
            if handle is not None:
                self.timers.discard(handle)
            self.requeue(seqs)

        handle = loop.call_later(delay, fire)
        self.timers.add(handle)

    def untake(self, batch: list[StreamMessage], *, delivered: bool) -> None:
        """Put messages back at once (their consumer stopped before settling them)."""
        if not delivered:
            for message in batch:
                self.deliveries[message.sequence] = self.deliveries.get(message.sequence, 1) - 1
        self.requeue([m.sequence for m in batch])

    def requeue(self, seqs: list[int]) -> None:
        for seq in seqs:
            if seq in self.deliveries:
                heapq.heappush(self.ready, seq)
        self.changed.set()

    def cancel_timers(self) -> None:
        for handle in self.timers:
            handle.cancel()
        self.timers.clear()


class _MemoryConsumer(Subscription):
    """One worker of a durable: takes batches and hands them to the handler, one at a time."""

    def __init__(
        self,
        bus: MemoryBus,
        durable: _Durable,
        handler: StreamHandler,
        batch: int,
        max_wait_s: float,
    ) -> None:
        self._bus = bus
        self._durable = durable
        self._handler = handler
        self._batch = batch
        self._max_wait_s = max_wait_s
        self._held: list[StreamMessage] = []  # taken, not yet settled
        self._busy = False
        self._stopped = False
        self._task: asyncio.Task[None] | None = asyncio.create_task(
            self._run(), name=f"roost-bus-consume:{durable.stream.name}:{durable.name}"
        )

    async def _next_batch(self) -> None:
        durable = self._durable
        while not self._held:
            self._held = durable.take(self._batch)
            if not self._held:
                durable.changed.clear()
                await durable.changed.wait()
        if len(self._held) >= self._batch or self._max_wait_s <= 0:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._max_wait_s
        while len(self._held) < self._batch:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            durable.changed.clear()
            try:
                await asyncio.wait_for(durable.changed.wait(), remaining)
            except TimeoutError:
                self._held += durable.take(self._batch - len(self._held))
                return
            self._held += durable.take(self._batch - len(self._held))

    async def _run(self) -> None:
        try:
            while not self._stopped:
                await self._next_batch()
                batch = self._held
                self._busy = True
                try:
                    await self._handler(batch)
                except asyncio.CancelledError:
                    self._durable.untake(batch, delivered=True)
                    self._held = []
                    raise
                except Exception:
                    logger.warning(
                        "stream handler of %s/%s failed; %s messages will be delivered again",
                        self._durable.stream.name,
                        self._durable.name,
                        len(batch),
                        exc_info=True,
                    )
                    self._durable.nak(batch)
                else:
                    self._durable.ack(batch)
                finally:
                    self._busy = False
                self._held = []
        except asyncio.CancelledError:
            if self._held:
                self._durable.untake(self._held, delivered=False)
                self._held = []
            raise

    async def stop(self) -> None:
        """Stop taking batches; a running handler may finish (up to STOP_GRACE_S)."""
        if self._stopped:
            return
        self._stopped = True
        self._bus._consumers.discard(self)
        task, self._task = self._task, None
        await stop_task(task, busy=self._busy, grace_s=STOP_GRACE_S)


class MemoryBus(Bus):
    """Notifications and streams inside one process (see the module docstring)."""

    def __init__(self, *, stream_max_bytes: int = MEMORY_STREAM_MAX_BYTES) -> None:
        self._stream_max_bytes = stream_max_bytes
        self._exact: dict[str, list[_MemorySubscription]] = {}
        self._wildcard: list[_MemorySubscription] = []
        self._streams: dict[str, _MemoryStream] = {}
        self._consumers: set[_MemoryConsumer] = set()
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise Unavailable("the in-process bus is closed")

    @property
    def in_process(self) -> bool:
        """Always: every subscriber is in this process."""
        return True

    async def start(self) -> None:
        """Nothing to connect to."""
        self._check_open()

    async def close(self) -> None:
        """Stop every subscription and consumer; the streams are gone with the bus."""
        if self._closed:
            return
        self._closed = True
        subscriptions = [*self._wildcard, *(s for subs in self._exact.values() for s in subs)]
        await asyncio.gather(*(s.stop() for s in subscriptions))
        await asyncio.gather(*(c.stop() for c in list(self._consumers)))
        for stream in self._streams.values():
            for durable in stream.durables.values():
                durable.cancel_timers()

    async def ping(self) -> None:
        """Always answers while open."""
        self._check_open()

    # -- notifications -----------------------------------------------------------------------

    async def publish(self, subject: str, data: bytes) -> None:
        """Queue the notification for every matching subscription (never waits for them)."""
        self._check_open()
        check_subject(subject)
        self.check_payload(subject, data)
        backlog = False
        for subscription in self._exact.get(subject, ()):
            backlog |= subscription.offer(subject, data)
        for subscription in self._wildcard:
            if subject_matches(subscription.pattern, subject):
                backlog |= subscription.offer(subject, data)
        if backlog:
            # Give the subscribers' tasks a turn: a publisher in a tight loop would otherwise fill
            # every queue before any handler ran. This never waits for a handler; a subscriber
            # that does not keep up loses its oldest notifications.
            await asyncio.sleep(0)

    async def subscribe(self, subject: str, handler: NotificationHandler) -> Subscription:
        """Register a subscription with its own bounded queue and delivery task."""
        self._check_open()
        check_pattern(subject)
        subscription = _MemorySubscription(self, subject, handler)
        if is_literal(subject):
            self._exact.setdefault(subject, []).append(subscription)
        else:
            self._wildcard.append(subscription)
        return subscription

    def _remove_subscription(self, subscription: _MemorySubscription) -> None:
        if subscription in self._wildcard:
            self._wildcard.remove(subscription)
            return
        subs = self._exact.get(subscription.pattern, [])
        if subscription in subs:
            subs.remove(subscription)
            if not subs:
                del self._exact[subscription.pattern]

    # -- durable streams ---------------------------------------------------------------------

    def _stream(self, family: str) -> _MemoryStream:
        stream = self._streams.get(family)
        if stream is None:
            stream = _MemoryStream(stream_name(family), self._stream_max_bytes)
            self._streams[family] = stream
        return stream

    async def stream_publish(self, subject: str, data: bytes, *, msg_id: str | None = None) -> int:
        """Append to the family's in-memory stream; de-duplicate on ``msg_id``."""
        self._check_open()
        check_subject(subject)
        self.check_payload(subject, data)
        return self._stream(stream_family(subject)).append(subject, data, msg_id)

    async def stream_consume(
        self,
        subject: str,
        durable: str,
        handler: StreamHandler,
        *,
        batch: int = 100,
        max_wait_s: float = 0.005,
    ) -> Subscription:
        """Start a worker for the durable ``durable`` (created on first use)."""
        self._check_open()
        family = check_consumer(subject, durable, batch, max_wait_s)
        stream = self._stream(family)
        state = stream.durables.get(durable)
        if state is None:
            for other in stream.durables.values():
                if patterns_overlap(other.pattern, subject):
                    raise Conflict(
                        f"durable {other.name!r} already consumes {other.pattern!r} of stream "
                        f"{stream.name}, which overlaps {subject!r}"
                    )
            state = stream.durables[durable] = _Durable(stream, durable, subject)
        elif state.pattern != subject:
            raise Conflict(
                f"durable {durable!r} of stream {stream.name} consumes {state.pattern!r}, "
                f"not {subject!r}"
            )
        consumer = _MemoryConsumer(self, state, handler, batch, max_wait_s)
        self._consumers.add(consumer)
        return consumer
