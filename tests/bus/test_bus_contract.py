"""The bus contract, run against every backend: ``memory://`` and NATS JetStream.

Every test has a subject family of its own (``roost.t…``, the ``family`` fixture), so tests never
see each other's messages, and on NATS its stream (with its consumers) is deleted afterwards.
Nothing sleeps: tests wait for outcomes with a deadline, and "nothing more arrives" is watched
for QUIET_S after a positive control has arrived.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import urlsplit

import pytest

from roost.bus.base import Bus, StreamMessage, Subscription, open_bus
from roost.bus.fanout import NOTIFY_QUEUE_LIMIT
from roost.bus.nats import NatsBus
from roost.errors import Conflict, Unavailable
from tests.bus.proxy import TcpProxy
from tests.support import NATS_URL, free_port

# Upper bound for anything the bus should do; generous for a loaded CI machine.
WAIT_S = 15.0
# How long a test watches for a delivery that must not happen, once a later one has arrived.
QUIET_S = 0.3

nats_only = pytest.mark.parametrize("bus_url", ["nats"], indirect=True)


class Inbox:
    """Collects notifications; a test awaits a condition on them."""

    def __init__(self) -> None:
        self.items: list[tuple[str, bytes]] = []
        self._changed = asyncio.Condition()

    async def handler(self, subject: str, data: bytes) -> None:
        async with self._changed:
            self.items.append((subject, data))
            self._changed.notify_all()

    async def wait_until(
        self, predicate: Callable[[list[tuple[str, bytes]]], bool], within: float = WAIT_S
    ) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: predicate(self.items)), within)

    async def wait_count(self, count: int, within: float = WAIT_S) -> None:
        await self.wait_until(lambda items: len(items) >= count, within)

    async def stays_at(self, count: int) -> None:
        """Nothing beyond ``count`` arrives within QUIET_S."""
        with pytest.raises(TimeoutError):
            await self.wait_count(count + 1, within=QUIET_S)
        assert len(self.items) == count


class Batches:
    """Collects stream batches; ``fail`` decides, per call, whether the handler raises."""

    def __init__(
        self, fail: Callable[[int], bool] = lambda call: False, also: Batches | None = None
    ) -> None:
        self.batches: list[list[StreamMessage]] = []
        self._fail = fail
        self._also = also  # a collector for several consumers together
        self._changed = asyncio.Condition()

    @property
    def messages(self) -> list[StreamMessage]:
        return [message for batch in self.batches for message in batch]

    async def handler(self, batch: Sequence[StreamMessage]) -> None:
        async with self._changed:
            self.batches.append(list(batch))
            self._changed.notify_all()
        if self._also is not None:
            await self._also.handler(batch)
        if self._fail(len(self.batches)):
            raise RuntimeError("the handler failed on purpose")

    async def wait_until(
        self, predicate: Callable[[list[StreamMessage]], bool], within: float = WAIT_S
    ) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: predicate(self.messages)), within)

    async def wait_count(self, count: int, within: float = WAIT_S) -> None:
        await self.wait_until(lambda messages: len(messages) >= count, within)

    async def stays_at(self, count: int) -> None:
        with pytest.raises(TimeoutError):
            await self.wait_count(count + 1, within=QUIET_S)
        assert len(self.messages) == count


async def eventually(predicate: Callable[[], bool], within: float = WAIT_S) -> None:
    """Poll a condition that no event signals (used once, for a queue's drop count)."""
    deadline = asyncio.get_running_loop().time() + within
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def datas(messages: Sequence[StreamMessage]) -> list[bytes]:
    return [m.data for m in messages]


# -- notifications -------------------------------------------------------------------------------


async def test_notification_reaches_every_subscriber(bus: Bus, peer: Bus, family: str) -> None:
    subject = f"{family}.news"
    inboxes = [Inbox() for _ in range(3)]
    await bus.subscribe(subject, inboxes[0].handler)
    await peer.subscribe(subject, inboxes[1].handler)
    await peer.subscribe(subject, inboxes[2].handler)

    await bus.publish(subject, b"hello")
    await bus.publish(subject, b"again")

    for inbox in inboxes:
        await inbox.wait_count(2)
        assert inbox.items == [(subject, b"hello"), (subject, b"again")]


async def test_wildcards_match_like_nats(bus: Bus, peer: Bus, family: str) -> None:
    f = family
    expected = {
        f"{f}.*": [f"{f}.a"],
        f"{f}.>": [f"{f}.a", f"{f}.a.b", f"{f}.a.c", f"{f}.x.b", f"{f}.x.y.z"],
        f"{f}.a.*": [f"{f}.a.b", f"{f}.a.c"],
        f"{f}.a.b": [f"{f}.a.b"],
        f"{f}.*.b": [f"{f}.a.b", f"{f}.x.b"],
        f"{f}.a.>": [f"{f}.a.b", f"{f}.a.c"],
        f"{f}.q": [],
    }
    inboxes = {pattern: Inbox() for pattern in expected}
    for pattern, inbox in inboxes.items():
        await peer.subscribe(pattern, inbox.handler)

    for subject in (f"{f}.a", f"{f}.a.b", f"{f}.a.c", f"{f}.x.b", f"{f}.x.y.z"):
        await bus.publish(subject, subject.encode())

    for pattern, subjects in expected.items():
        await inboxes[pattern].wait_count(len(subjects))
    await asyncio.gather(*(inboxes[p].stays_at(len(s)) for p, s in expected.items()))
    for pattern, subjects in expected.items():
        assert [s for s, _ in inboxes[pattern].items] == subjects, pattern


async def test_stopped_subscription_gets_nothing_more(bus: Bus, peer: Bus, family: str) -> None:
    subject = f"{family}.news"
    leaving, staying = Inbox(), Inbox()
    subscription = await peer.subscribe(subject, leaving.handler)
    await peer.subscribe(subject, staying.handler)
    await bus.publish(subject, b"1")
    await leaving.wait_count(1)

    await subscription.stop()
    await subscription.stop()  # stopping twice is harmless
    await bus.publish(subject, b"2")

    await staying.wait_count(2)
    await leaving.stays_at(1)


async def test_failing_handler_breaks_neither_publisher_nor_others(
    bus: Bus, family: str, caplog: pytest.LogCaptureFixture
) -> None:
    subject = f"{family}.news"
    failing_calls, good = Inbox(), Inbox()

    async def failing(subject: str, data: bytes) -> None:
        await failing_calls.handler(subject, data)
        raise RuntimeError("a subscriber bug")

    await bus.subscribe(subject, failing)
    await bus.subscribe(subject, good.handler)
    with caplog.at_level(logging.ERROR, logger="roost.bus.fanout"):
        for i in range(3):
            await bus.publish(subject, b"%d" % i)
        await good.wait_count(3)
        await failing_calls.wait_count(3)  # the failing subscription keeps being served
    assert [d for _, d in good.items] == [b"0", b"1", b"2"]
    assert sum("a subscriber bug" in (r.exc_text or "") for r in caplog.records) == 3


async def test_slow_subscriber_drops_its_oldest_and_blocks_no_one(bus: Bus, family: str) -> None:
    subject = f"{family}.live"
    total = NOTIFY_QUEUE_LIMIT * 3
    release = asyncio.Event()
    slow, fast = Inbox(), Inbox()

    async def stuck(subject: str, data: bytes) -> None:
        await release.wait()
        await slow.handler(subject, data)

    slow_subscription = await bus.subscribe(subject, stuck)
    await bus.subscribe(subject, fast.handler)

    async def publish_all() -> None:
        for i in range(total):
            await bus.publish(subject, b"%d" % i)

    await asyncio.wait_for(publish_all(), WAIT_S)  # never waits for the stuck handler
    await fast.wait_count(total)  # nor does the other subscriber
    # Everything published either waits in the stuck subscriber's queue or was dropped from it.
    # Nothing signals "queued", so this one condition is polled.
    await eventually(lambda: slow_subscription.dropped >= total - NOTIFY_QUEUE_LIMIT - 1)
    release.set()
    last = b"%d" % (total - 1)
    await slow.wait_until(lambda items: bool(items) and items[-1][1] == last)

    received = [int(data) for _, data in slow.items]
    assert received == sorted(received)  # order kept; the newest survives
    assert len(received) + slow_subscription.dropped == total
    assert slow_subscription.dropped == total - NOTIFY_QUEUE_LIMIT - 1  # one was being handled


# -- durable streams -----------------------------------------------------------------------------


async def test_stream_delivers_in_order_and_in_batches(bus: Bus, family: str) -> None:
    subject = f"{family}.in"
    sequences = [await bus.stream_publish(subject, b"m%d" % i) for i in range(25)]
    assert sequences == sorted(sequences) and len(set(sequences)) == 25

    got = Batches()
    await bus.stream_consume(f"{family}.>", "writer", got.handler, batch=10)
    await got.wait_count(25)

    assert datas(got.messages) == [b"m%d" % i for i in range(25)]
    assert [m.sequence for m in got.messages] == sequences
    assert {m.subject for m in got.messages} == {subject}
    assert not any(m.redelivered for m in got.messages)
    assert all(1 <= len(batch) <= 10 for batch in got.batches)
    assert len(got.batches[0]) == 10  # 25 were waiting: the first batch is full
    await got.stays_at(25)


async def test_consumer_subject_filters_its_stream(bus: Bus, family: str) -> None:
    for subject in ("a.x", "b.x", "a.y"):
        await bus.stream_publish(f"{family}.{subject}", subject.encode())
    only_a, only_b = Batches(), Batches()
    await bus.stream_consume(f"{family}.a.*", "a-writer", only_a.handler)
    await bus.stream_consume(f"{family}.b.>", "b-writer", only_b.handler)

    await only_a.wait_count(2)
    await only_b.wait_count(1)
    assert datas(only_a.messages) == [b"a.x", b"a.y"]
    assert [m.sequence for m in only_a.messages] == [1, 3]  # one stream, one sequence
    assert [m.sequence for m in only_b.messages] == [2]
    await only_a.stays_at(2)


async def test_acknowledged_messages_are_not_delivered_again(
    bus: Bus, peer: Bus, family: str
) -> None:
    subject = f"{family}.in"
    for i in range(5):
        await bus.stream_publish(subject, b"m%d" % i)
    first = Batches()
    consumer = await bus.stream_consume(subject, "writer", first.handler)
    await first.wait_count(5)
    await consumer.stop()
    await consumer.stop()

    for i in range(5, 8):
        await bus.stream_publish(subject, b"m%d" % i)
    second = Batches()  # same durable, another process: resumes where the first left off
    await peer.stream_consume(subject, "writer", second.handler)
    await second.wait_count(3)

    assert datas(first.messages) == [b"m0", b"m1", b"m2", b"m3", b"m4"]
    assert datas(second.messages) == [b"m5", b"m6", b"m7"]
    assert not any(m.redelivered for m in second.messages)
    await second.stays_at(3)


async def test_a_raising_handler_gets_the_batch_again(
    bus: Bus, family: str, caplog: pytest.LogCaptureFixture
) -> None:
    subject = f"{family}.in"
    for i in range(3):
        await bus.stream_publish(subject, b"m%d" % i)
    got = Batches(fail=lambda call: call == 1)
    with caplog.at_level(logging.WARNING, logger="roost.bus"):
        await bus.stream_consume(subject, "writer", got.handler, batch=10)
        await got.wait_until(lambda messages: sum(m.redelivered for m in messages) >= 3)

    first = got.batches[0]
    again = [m for m in got.messages[len(first) :] if m.redelivered]
    assert datas(first) == [b"m0", b"m1", b"m2"] and not any(m.redelivered for m in first)
    assert [m.sequence for m in again] == [m.sequence for m in first]
    assert datas(again) == datas(first)
    assert any("will be delivered again" in r.getMessage() for r in caplog.records)

    # The redelivered batch was acknowledged: only new messages follow.
    await bus.stream_publish(subject, b"next")
    await got.wait_until(lambda messages: messages[-1].data == b"next")
    assert sum(m.data == b"m0" for m in got.messages) == 2


async def test_one_durable_shares_work_between_consumers(bus: Bus, peer: Bus, family: str) -> None:
    subject = f"{family}.in"
    total = 60
    sequences = [await bus.stream_publish(subject, b"m%d" % i) for i in range(total)]
    everything = Batches()
    collected = {"a": Batches(also=everything), "b": Batches(also=everything)}
    holding = {"a": asyncio.Event(), "b": asyncio.Event()}

    def worker(me: str, other: str) -> Callable[[Sequence[StreamMessage]], Awaitable[None]]:
        async def handler(batch: Sequence[StreamMessage]) -> None:
            await collected[me].handler(batch)
            # Hold the first batch until the other worker has one too: while one holds its
            # batch, the other must be given different messages.
            holding[me].set()
            await asyncio.wait_for(holding[other].wait(), WAIT_S)

        return handler

    await bus.stream_consume(subject, "writers", worker("a", "b"), batch=5)
    await peer.stream_consume(subject, "writers", worker("b", "a"), batch=5)

    await everything.wait_count(total)
    a = [m.sequence for m in collected["a"].messages]
    b = [m.sequence for m in collected["b"].messages]
    assert a and b
    assert not set(a) & set(b)
    assert sorted(a + b) == sequences
    await collected["a"].stays_at(len(a))


async def test_msg_id_is_stored_once(bus: Bus, family: str) -> None:
    subject = f"{family}.in"
    first = await bus.stream_publish(subject, b"a", msg_id="dev-1:1")
    second = await bus.stream_publish(subject, b"b", msg_id="dev-1:2")
    resent = await bus.stream_publish(subject, b"a (resent)", msg_id="dev-1:1")
    racing = await asyncio.gather(
        *(bus.stream_publish(subject, b"c", msg_id="dev-1:3") for _ in range(20))
    )
    last = await bus.stream_publish(subject, b"end")

    assert resent == first != second
    assert len(set(racing)) == 1
    got = Batches()
    await bus.stream_consume(subject, "writer", got.handler)
    await got.wait_until(lambda messages: bool(messages) and messages[-1].data == b"end")
    assert datas(got.messages) == [b"a", b"b", b"c", b"end"]
    assert got.messages[-1].sequence == last


async def test_stream_consumers_conflict_like_a_work_queue(bus: Bus, family: str) -> None:
    got = Batches()
    await bus.stream_consume(f"{family}.a.>", "one", got.handler)
    with pytest.raises(Conflict):  # another durable on an overlapping subject
        await bus.stream_consume(f"{family}.>", "two", got.handler)
    with pytest.raises(Conflict):  # the same durable on another subject
        await bus.stream_consume(f"{family}.b.>", "one", got.handler)
    await bus.stream_consume(f"{family}.b.>", "three", got.handler)  # disjoint: fine


async def test_invalid_subjects_are_refused(bus: Bus, family: str) -> None:
    async def handler(subject: str, data: bytes) -> None:
        pass

    for bad in (f"{family}.*", f"{family}.>", "", "a..b", "a b"):
        with pytest.raises(ValueError):
            await bus.publish(bad, b"")
    with pytest.raises(ValueError):
        await bus.subscribe(f"{family}.>.x", handler)
    for bad in ("roost", "roost.ingest", "Roost.Ingest.x", f"{family}.*"):
        with pytest.raises(ValueError):
            await bus.stream_publish(bad, b"")
    got = Batches()
    with pytest.raises(ValueError):
        await bus.stream_consume(f"{family}.>", "bad.name", got.handler)
    with pytest.raises(ValueError):
        await bus.stream_consume(f"{family}.>", "writer", got.handler, batch=0)


async def test_payloads_beyond_the_maximum_are_refused_and_the_maximum_passes(
    bus: Bus, peer: Bus, family: str
) -> None:
    assert bus.max_payload >= 1024 * 1024  # NATS's default; the memory bus uses the same
    inbox = Inbox()
    await peer.subscribe(f"{family}.n", inbox.handler)
    largest = b"x" * bus.max_payload
    with pytest.raises(ValueError, match="maximum payload"):
        await bus.publish(f"{family}.n", largest + b"x")
    with pytest.raises(ValueError, match="maximum payload"):
        await bus.stream_publish(f"{family}.s", largest + b"x")
    await bus.publish(f"{family}.n", largest)
    await inbox.wait_count(1)
    assert inbox.items == [(f"{family}.n", largest)]
    got = Batches()
    await bus.stream_publish(f"{family}.s", largest)
    await bus.stream_consume(f"{family}.>", "writer", got.handler)
    await got.wait_count(1)
    assert [m.data for m in got.messages] == [largest]


async def test_throughput_smoke_every_message_exactly_once(
    bus: Bus, peer: Bus, family: str
) -> None:
    total = 10_000
    subject = f"{family}.load"
    sequences = await asyncio.wait_for(
        asyncio.gather(*(bus.stream_publish(subject, b"%d" % i) for i in range(total))), 60
    )
    assert len(set(sequences)) == total

    everything = Batches()
    first, second = Batches(also=everything), Batches(also=everything)
    await bus.stream_consume(subject, "writers", first.handler, batch=500)
    await peer.stream_consume(subject, "writers", second.handler, batch=500)
    await everything.wait_count(total, within=60)
    counts = Counter(m.sequence for m in everything.messages)
    assert sorted(counts) == sorted(sequences)
    assert set(counts.values()) == {1}
    assert all(len(batch) <= 500 for batch in first.batches + second.batches)


async def test_handlers_may_stop_their_own_subscription(bus: Bus, family: str) -> None:
    subject = f"{family}.in"
    for i in range(3):
        await bus.stream_publish(subject, b"m%d" % i)
    mine: dict[str, Subscription] = {}
    handled: list[bytes] = []
    done = asyncio.Event()

    async def stream_handler(batch: Sequence[StreamMessage]) -> None:
        handled.extend(datas(batch))
        await mine["consumer"].stop()  # returns at once; the batch is still acknowledged
        done.set()

    mine["consumer"] = await bus.stream_consume(subject, "writer", stream_handler, batch=1)
    await asyncio.wait_for(done.wait(), WAIT_S)
    assert handled == [b"m0"]

    rest = Batches()
    await bus.stream_consume(subject, "writer", rest.handler)
    await rest.wait_count(2)
    assert datas(rest.messages) == [b"m1", b"m2"]

    news = Inbox()

    async def notification_handler(subject: str, data: bytes) -> None:
        await news.handler(subject, data)
        await mine["subscription"].stop()

    mine["subscription"] = await bus.subscribe(f"{family}.news", notification_handler)
    for i in range(3):
        await bus.publish(f"{family}.news", b"n%d" % i)
    await news.wait_count(1)
    await news.stays_at(1)


async def test_ping_answers_until_closed(bus_url: str) -> None:
    the_bus = open_bus(bus_url)
    await the_bus.start()
    await the_bus.ping()
    await the_bus.close()
    with pytest.raises(Unavailable):
        await the_bus.ping()
    with pytest.raises(Unavailable):
        await the_bus.stream_publish("roost.ingest.x", b"")
    await the_bus.close()  # closing twice is harmless


# -- NATS only: durability across connections, outages -------------------------------------------


@nats_only
async def test_durable_position_survives_closing_the_bus(bus_url: str, family: str) -> None:
    subject = f"{family}.in"
    first_bus = open_bus(bus_url)
    await first_bus.start()
    sequences = [await first_bus.stream_publish(subject, b"m%d" % i) for i in range(20)]
    first = Batches()
    consumer = await first_bus.stream_consume(subject, "writer", first.handler, batch=4)
    await first.wait_count(4)
    await consumer.stop()
    await first_bus.close()
    taken = [m.sequence for m in first.messages]

    second_bus = open_bus(bus_url)  # as after a restart of the process
    await second_bus.start()
    try:
        second = Batches()
        await second_bus.stream_consume(subject, "writer", second.handler, batch=4)
        await second.wait_count(len(sequences) - len(taken))
        assert [m.sequence for m in second.messages] == sequences[len(taken) :]
        assert taken == sequences[: len(taken)]
        await second.stays_at(len(sequences) - len(taken))
    finally:
        await second_bus.close()


@nats_only
async def test_consumers_and_subscriptions_resume_after_a_reconnect(bus: Bus, family: str) -> None:
    target = urlsplit(NATS_URL)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 4222)
    await proxy.start()
    proxied = NatsBus(f"nats://127.0.0.1:{proxy.port}")
    try:
        await proxied.start()
        got, news = Batches(), Inbox()
        await proxied.stream_consume(f"{family}.>", "writer", got.handler)
        await proxied.subscribe(f"{family}.news", news.handler)
        await bus.stream_publish(f"{family}.in", b"before")
        await got.wait_count(1)
        await proxied.ping()  # the acknowledgement is through before the cut

        await proxy.cut()
        with pytest.raises(Unavailable):
            await proxied.ping()
        await bus.stream_publish(f"{family}.in", b"during")  # kept for the durable
        await proxy.restore()
        await bus.stream_publish(f"{family}.in", b"after")

        await got.wait_count(3, within=30)
        assert datas(got.messages) == [b"before", b"during", b"after"]
        assert proxy.accepted >= 2
        await proxied.ping()
        await bus.publish(f"{family}.news", b"still subscribed")
        await news.wait_count(1)
    finally:
        await proxied.close()
        await proxy.close()


async def test_nats_bus_on_a_closed_port_is_unavailable() -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    the_bus = open_bus(url)
    assert isinstance(the_bus, NatsBus)
    the_bus = NatsBus(url, connect_timeout_s=1.0)
    with pytest.raises(Unavailable) as failure:
        await the_bus.start()
    assert failure.value.retry_after >= 1 and url in failure.value.detail
    with pytest.raises(Unavailable):
        await the_bus.ping()
    with pytest.raises(Unavailable):
        await the_bus.stream_publish("roost.ingest.x", b"")
    with pytest.raises(Unavailable):
        await the_bus.publish("roost.news", b"")
    await the_bus.close()
