"""The NATS bus (``nats://host:port``): core NATS for notifications, JetStream for streams.

Notifications are plain NATS publish/subscribe (NATS's own wildcard rules, which
:mod:`roost.bus.subjects` mirrors for ``memory://``); each subscription feeds a bounded
:class:`~roost.bus.fanout.NotificationQueue`, so a slow handler behaves as on ``memory://``.

Streams are JetStream streams, one per subject family (``roost.ingest.>`` → ``ROOST_INGEST``),
made sure of on :meth:`NatsBus.start` for :data:`DEFAULT_STREAM_FAMILIES` and on first use for
any other family. Their configuration, and why:

* **work-queue retention** — a message is removed once its durable consumer acknowledges it, so
  the stream holds exactly the backlog. Interest retention was rejected: it deletes a message
  published while no consumer exists yet (a gateway that starts before the writers would lose
  acknowledged data). Limits retention keeps acknowledged messages until an age or size limit
  and would have to discard unconsumed ones when the limit is hit. Work-queue retention allows one
  durable per subject (``Conflict`` otherwise); several processes share a durable to share work.
* **file storage, discard new, no age or size limit of its own** — a message JetStream
  acknowledged is on disk and is never dropped to make room: when the server's storage is full,
  ``stream_publish`` fails with ``Unavailable`` and the gateway pushes back (principle 4).
* **de-duplication window** :data:`~roost.bus.base.DEDUPE_WINDOW_S` (``Nats-Msg-Id``).

``stream_publish`` returns after the JetStream acknowledgement, which is the durability point in
scale mode. Each call is one request/reply; concurrent calls share the connection and pipeline
(one reply subscription and one timeout sweeper for all of them, see
:class:`~roost.bus.jetstream.JetStreamPublisher`),
so a gateway publishing many messages awaits them together (``bench/bus_throughput.py``).
Consumers are durable pull consumers with explicit acknowledgement: each worker
(:class:`~roost.bus.jetstream.PullWorker`) pulls up to ``batch`` messages, acknowledges each after
the handler returns and ``nak``s them with :func:`~roost.bus.base.redelivery_delay` when it
raises. nats-py reconnects on its own (forever) and restores the subscriptions; a worker's pull
requests come back empty while the connection is down, and the first one after the reconnect
resumes from the durable position on the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import replace

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.client import JetStreamContext

from roost.bus.base import (
    DEDUPE_WINDOW_S,
    DEFAULT_MAX_PAYLOAD,
    Bus,
    NotificationHandler,
    StreamHandler,
    StreamMessage,
    Subscription,
)
from roost.bus.fanout import NotificationQueue
from roost.bus.jetstream import (
    ACK_WAIT_S,
    DRIVER_ERRORS,
    JetStreamPublisher,
    PullWorker,
    unavailable,
)
from roost.bus.subjects import (
    DEFAULT_PREFIX,
    check_consumer,
    check_pattern,
    check_prefix,
    check_subject,
    stream_family,
    stream_name,
    with_prefix,
    without_prefix,
)
from roost.errors import ConfigError, Conflict, Unavailable

logger = logging.getLogger(__name__)

# Families whose streams start() creates; others are created on first use.
DEFAULT_STREAM_FAMILIES = ("roost.ingest",)
# How long start() keeps trying to reach the server. A server that is restarting answers within a
# few seconds; past that, failing loudly is better than a process that hangs at startup.
CONNECT_TIMEOUT_S = 5.0
# Pause between reconnect attempts once connected (nats-py retries forever): short, because the
# gateways cannot acknowledge devices while the bus is away.
RECONNECT_WAIT_S = 0.5
# Bytes nats-py buffers while reconnecting before publish fails (then: Unavailable, and the
# gateway pushes back). Big enough for a few ingest batches, small enough to bound memory.
RECONNECT_BUFFER_BYTES = 8 * 1024 * 1024
# JetStream API calls (stream/consumer info and creation, account info for ping).
REQUEST_TIMEOUT_S = 5.0
# How long stream_publish waits for the JetStream acknowledgement before answering Unavailable.
# A healthy server acknowledges in well under a millisecond; seconds mean it is stuck or gone,
# and the device should be told to retry rather than held.
PUBLISH_TIMEOUT_S = 5.0
# ping() answer deadline: /readyz must answer quickly.
PING_TIMEOUT_S = 2.0
# Messages delivered and not yet acknowledged, per durable (all its workers together): room for
# several workers with batches of a few thousand, and a bound on what a crash sends back.
MAX_ACK_PENDING = 20_000
# JetStream API error codes handled on purpose.
_ERR_STREAM_NAME_IN_USE = 10058  # created concurrently by another process
_ERR_CONSUMER_NOT_UNIQUE = 10100  # filtered consumer not unique on a work-queue stream
_ERR_CONSUMER_UNFILTERED = 10099  # multiple non-filtered consumers on a work-queue stream


class _NatsSubscription(NotificationQueue):
    """A core NATS subscription feeding a bounded notification queue."""

    def __init__(self, bus: NatsBus, pattern: str, handler: NotificationHandler) -> None:
        super().__init__(pattern, handler)
        self._bus = bus
        self.nats_subscription: NatsSubscription | None = None

    async def on_message(self, msg: Msg) -> None:
        """nats-py callback: queue (never waits for the handler)."""
        if self.offer(without_prefix(msg.subject, self._bus.prefix), msg.data):
            # nats-py hands over a whole socket read without pausing: let the delivery task
            # catch up before the queue overflows.
            await asyncio.sleep(0)

    async def stop(self) -> None:
        """Unsubscribe from NATS, then stop the delivery task."""
        self._bus._subscriptions.discard(self)
        nats_subscription, self.nats_subscription = self.nats_subscription, None
        if nats_subscription is not None:
            with contextlib.suppress(*DRIVER_ERRORS):
                await nats_subscription.unsubscribe()
        await super().stop()


class NatsBus(Bus):
    """Notifications over core NATS, durable streams over JetStream (see the module docstring).

    ``url`` is ``nats://host:port`` (``tls://`` for TLS, credentials in the URL, several servers
    separated by commas). ``prefix`` stands for the leading ``roost`` of every subject on the
    wire, and so of every stream name (``acme`` → ``acme.ingest.>`` in ``ACME_INGEST``).
    """

    def __init__(
        self,
        url: str,
        *,
        stream_families: Iterable[str] = DEFAULT_STREAM_FAMILIES,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        publish_timeout_s: float = PUBLISH_TIMEOUT_S,
        prefix: str = DEFAULT_PREFIX,
    ) -> None:
        self.prefix = check_prefix(prefix)
        self._servers = [part.strip() for part in url.split(",") if part.strip()]
        self._url = url
        self._stream_families = tuple(with_prefix(f, prefix) for f in stream_families)
        self._connect_timeout_s = connect_timeout_s
        self._publish_timeout_s = publish_timeout_s
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        self._publisher: JetStreamPublisher | None = None
        self._ready_streams: dict[str, str] = {}  # family → stream name, made sure of
        self._stream_tasks: dict[str, asyncio.Task[str]] = {}
        self._subscriptions: set[_NatsSubscription] = set()
        self._consumers: set[PullWorker] = set()
        self._closing = False

    # -- connection --------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect (retrying up to ``connect_timeout_s``); make sure the default streams exist."""
        if self._nc is not None:
            return
        self._closing = False
        nc = NatsClient()
        try:
            await asyncio.wait_for(
                nc.connect(
                    servers=self._servers,
                    name="roost",
                    connect_timeout=max(1, int(self._connect_timeout_s)),
                    reconnect_time_wait=RECONNECT_WAIT_S,  # type: ignore[arg-type]
                    max_reconnect_attempts=-1,
                    pending_size=RECONNECT_BUFFER_BYTES,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                ),
                self._connect_timeout_s,
            )
        except (*DRIVER_ERRORS, asyncio.CancelledError) as exc:
            self._closing = True
            with contextlib.suppress(*DRIVER_ERRORS):
                await nc.close()
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise unavailable(f"NATS at {self._url} does not answer", exc) from exc
        self._nc = nc
        self._js = nc.jetstream(timeout=REQUEST_TIMEOUT_S)
        try:
            self._publisher = JetStreamPublisher(nc, self._publish_timeout_s)
            await self._publisher.start()
            for family in self._stream_families:
                await self._stream_for(family)
        except BaseException:
            await self.close()
            raise
        logger.info("connected to NATS at %s", nc.connected_url.netloc if nc.connected_url else "?")

    async def close(self) -> None:
        """Stop subscriptions and consumers, send what is buffered (acks too), disconnect."""
        self._closing = True
        await asyncio.gather(*(s.stop() for s in list(self._subscriptions)))
        await asyncio.gather(*(c.stop() for c in list(self._consumers)))
        for task in self._stream_tasks.values():
            task.cancel()
        self._stream_tasks.clear()
        self._ready_streams.clear()
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            await publisher.close()
        nc, self._nc, self._js = self._nc, None, None
        if nc is None:
            return
        with contextlib.suppress(*DRIVER_ERRORS):
            if nc.is_connected:
                await nc.flush(timeout=int(PING_TIMEOUT_S))
        with contextlib.suppress(*DRIVER_ERRORS):
            await nc.close()

    async def ping(self) -> None:
        """Ask JetStream for the account's info; Unavailable unless it answers in time."""
        nc, js = self._nc, self._js
        if nc is None or js is None:
            raise Unavailable(f"the bus is not connected to NATS at {self._url}")
        if not nc.is_connected:
            raise Unavailable(f"the connection to NATS at {self._url} is down (reconnecting)")
        try:
            await asyncio.wait_for(js.account_info(), PING_TIMEOUT_S)
        except DRIVER_ERRORS as exc:
            raise unavailable(f"JetStream at {self._url} does not answer", exc) from exc

    async def _on_error(self, exc: Exception) -> None:
        logger.warning("NATS: %s", exc or type(exc).__name__)

    async def _on_disconnected(self) -> None:
        if not self._closing:
            logger.warning("disconnected from NATS at %s; reconnecting", self._url)

    async def _on_reconnected(self) -> None:
        logger.info("reconnected to NATS at %s", self._url)

    def _client(self) -> tuple[NatsClient, JetStreamContext]:
        if self._nc is None or self._js is None:
            raise Unavailable(f"the bus is not connected to NATS at {self._url} (call start())")
        return self._nc, self._js

    @property
    def max_payload(self) -> int:
        """The server's ``max_payload`` (from its INFO), once connected."""
        nc = self._nc
        if nc is None or not nc.max_payload:
            return DEFAULT_MAX_PAYLOAD
        return int(nc.max_payload)

    # -- notifications -----------------------------------------------------------------------

    async def publish(self, subject: str, data: bytes) -> None:
        """Publish on core NATS (buffered by nats-py while reconnecting)."""
        check_subject(subject)
        nc, _ = self._client()
        self.check_payload(subject, data)
        try:
            await nc.publish(with_prefix(subject, self.prefix), data)
        except DRIVER_ERRORS as exc:
            raise unavailable(f"cannot publish {subject}", exc) from exc

    async def subscribe(self, subject: str, handler: NotificationHandler) -> Subscription:
        """Subscribe on core NATS; returns once the server has the subscription."""
        check_pattern(subject)
        nc, _ = self._client()
        subscription = _NatsSubscription(self, subject, handler)
        self._subscriptions.add(subscription)
        try:
            subscription.nats_subscription = await nc.subscribe(
                with_prefix(subject, self.prefix), cb=subscription.on_message
            )
            await nc.flush(timeout=int(REQUEST_TIMEOUT_S))
        except DRIVER_ERRORS as exc:
            await subscription.stop()
            raise unavailable(f"cannot subscribe to {subject}", exc) from exc
        return subscription

    # -- durable streams ---------------------------------------------------------------------

    async def _stream_for(self, family: str) -> str:
        """The family's stream name, once the stream is known to exist (created if missing)."""
        name = self._ready_streams.get(family)
        if name is not None:
            return name
        task = self._stream_tasks.get(family)
        if task is None or (task.done() and (task.cancelled() or task.exception())):
            task = asyncio.create_task(self._ensure_stream(family))
            self._stream_tasks[family] = task
        name = await asyncio.shield(task)
        self._ready_streams[family] = name
        return name

    async def _ensure_stream(self, family: str) -> str:
        _, js = self._client()
        name = stream_name(family)
        config = StreamConfig(
            name=name,
            subjects=[f"{family}.>"],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            discard=DiscardPolicy.NEW,
            duplicate_window=DEDUPE_WINDOW_S,
        )
        try:
            try:
                info = await js.stream_info(name)
            except nats.js.errors.NotFoundError:
                try:
                    await js.add_stream(config)
                except nats.js.errors.BadRequestError as exc:
                    if exc.err_code != _ERR_STREAM_NAME_IN_USE:
                        raise ConfigError(
                            f"cannot create the JetStream stream {name}: {exc.description}"
                        ) from exc
                else:
                    logger.info("created JetStream stream %s on %s.>", name, family)
                    return name
                info = await js.stream_info(name)
        except DRIVER_ERRORS as exc:
            raise unavailable(f"cannot make sure of the JetStream stream {name}", exc) from exc
        if info.config.retention != RetentionPolicy.WORK_QUEUE or info.config.subjects != [
            f"{family}.>"
        ]:
            logger.warning(
                "JetStream stream %s exists with retention %s on %s; using it as it is",
                name,
                info.config.retention,
                info.config.subjects,
            )
        return name

    async def _ensure_consumer(self, stream: str, subject: str, durable: str) -> None:
        """Create the durable pull consumer unless it exists; Conflict if it cannot be ours."""
        _, js = self._client()
        try:
            try:
                info = await js.consumer_info(stream, durable)
            except nats.js.errors.NotFoundError:
                pass
            else:
                if info.config.filter_subject != subject:
                    raise Conflict(
                        f"durable {durable!r} of stream {stream} consumes "
                        f"{info.config.filter_subject!r}, not {subject!r}"
                    )
                return
            config = ConsumerConfig(
                durable_name=durable,
                deliver_policy=DeliverPolicy.ALL,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=ACK_WAIT_S,
                max_deliver=-1,
                filter_subject=subject,
                max_ack_pending=MAX_ACK_PENDING,
            )
            try:
                await js.add_consumer(stream, config)
            except nats.js.errors.BadRequestError as exc:
                if exc.err_code in {_ERR_CONSUMER_NOT_UNIQUE, _ERR_CONSUMER_UNFILTERED}:
                    raise Conflict(
                        f"another durable of stream {stream} already consumes a subject that "
                        f"overlaps {subject!r} (a stream is a work queue)"
                    ) from exc
                raise
        except DRIVER_ERRORS as exc:
            raise unavailable(f"cannot make sure of the consumer {stream}/{durable}", exc) from exc

    def _unprefixed(self, handler: StreamHandler) -> StreamHandler:
        """``handler`` fed the subjects as the rooms name them (``roost.…``)."""
        prefix = self.prefix

        async def deliver(messages: Sequence[StreamMessage]) -> None:
            await handler([replace(m, subject=without_prefix(m.subject, prefix)) for m in messages])

        return deliver

    async def stream_publish(self, subject: str, data: bytes, *, msg_id: str | None = None) -> int:
        """Publish to JetStream and return the stream sequence once JetStream acknowledged it."""
        check_subject(subject)
        subject = with_prefix(subject, self.prefix)
        family = stream_family(subject)
        self._client()
        self.check_payload(subject, data)
        if family not in self._ready_streams:
            await self._stream_for(family)
        publisher = self._publisher
        if publisher is None:  # closed while the stream was being made sure of
            raise Unavailable(f"the bus is not connected to NATS at {self._url}")
        headers = {"Nats-Msg-Id": msg_id} if msg_id is not None else None
        try:
            return await publisher.publish(subject, data, headers)
        except DRIVER_ERRORS as exc:
            raise unavailable(f"JetStream did not take {subject}", exc) from exc

    async def stream_consume(
        self,
        subject: str,
        durable: str,
        handler: StreamHandler,
        *,
        batch: int = 100,
        max_wait_s: float = 0.005,
    ) -> Subscription:
        """Start a worker on the durable pull consumer ``durable`` (created on first use)."""
        subject = with_prefix(subject, self.prefix)
        family = check_consumer(subject, durable, batch, max_wait_s)
        self._client()
        if self.prefix != DEFAULT_PREFIX:
            handler = self._unprefixed(handler)
        stream = await self._stream_for(family)
        await self._ensure_consumer(stream, subject, durable)
        consumer = PullWorker(
            lambda: self._client()[0],
            lambda: self._ensure_consumer(stream, subject, durable),
            self._consumers.discard,
            stream=stream,
            durable=durable,
            handler=handler,
            batch=batch,
            max_wait_s=max_wait_s,
        )
        await consumer.start()
        self._consumers.add(consumer)
        return consumer
