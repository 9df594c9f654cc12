"""JetStream mechanics under :class:`~roost.bus.nats.NatsBus`: pipelined publishing and the
pull-consumer worker.

Both talk the JetStream wire protocol through nats-py's core client instead of its JetStream
helpers, where those cost throughput or bounded memory (see each class); stream and consumer
management stays with nats-py's JetStream API in :mod:`roost.bus.nats`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from collections.abc import Awaitable, Callable

import nats.errors
import nats.js.errors
import orjson
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription
from nats.js.api import Header

from roost.bus.base import StreamHandler, StreamMessage, Subscription, redelivery_delay
from roost.bus.fanout import STOP_GRACE_S, stop_task
from roost.errors import Conflict, Unavailable

logger = logging.getLogger(__name__)

# How often the publisher fails the publishes whose acknowledgement is overdue: a publish times
# out between its timeout and its timeout + PUBLISH_SWEEP_S; finer would only cost wake-ups.
PUBLISH_SWEEP_S = 0.25
# A message not acknowledged within ACK_WAIT_S is delivered again (its worker died). While a
# handler runs longer than a third of it, the worker tells the server it is still working.
ACK_WAIT_S = 30.0
# When a durable has nothing, a worker waits this long in one pull request before asking again.
# It bounds how quickly a worker notices a reconnect, at one small request per second when idle.
IDLE_FETCH_S = 1.0
# A worker whose fetch fails (server away, consumer deleted) retries after this, doubled per
# consecutive failure up to FETCH_RETRY_MAX_S.
FETCH_RETRY_S = 0.1
FETCH_RETRY_MAX_S = 5.0
# Bytes one pull request may bring (raised to the server's max_payload if that is larger): far
# below the server's per-client pending limit (64 MiB by default; past it the server cuts the
# connection as a slow consumer), and still hundreds of typical ingest messages.
MAX_FETCH_BYTES = 8 * 1024 * 1024
# How long past a pull request's expiry (or, for a no-wait request, after sending it) the worker
# waits for the server's closing status before it takes the request as ended: the server does not
# always send it, and the connection may have dropped. What arrives later is not lost: it is
# delivered with the next request's batch.
PULL_LATE_S = 0.05

# The status header of the server's answer when no stream takes the subject.
_NO_RESPONDERS = "503"

# What the driver raises when the server is away or refuses; translated to Unavailable.
DRIVER_ERRORS = (nats.errors.Error, OSError, TimeoutError)


def unavailable(what: str, exc: BaseException) -> Unavailable:
    """The Unavailable to raise, from a driver error."""
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, nats.js.errors.APIError) and exc.description:
        detail = f"{exc.description} (code {exc.err_code})"
    return Unavailable(f"{what}: {detail}", retry_after=1)


def _description(msg: Msg) -> str:
    """The Description header of a JetStream status message."""
    return str(msg.headers.get(Header.DESCRIPTION, "")) if msg.headers else ""


class JetStreamPublisher:
    """Pipelined JetStream publishes: one reply subscription, a future per message, one timer.

    nats-py's ``JetStream.publish`` is a request per message with its own ``wait_for`` timer,
    which costs more CPU than the round trip when many are in flight. Here every publish carries
    a reply subject under one wildcard inbox, its future waits in a dict, and a single sweeper
    task fails those past their deadline: about twice the acknowledged messages per second.
    """

    def __init__(self, nc: NatsClient, timeout_s: float) -> None:
        self._nc = nc
        self._timeout_s = timeout_s
        self._prefix = ""
        self._tokens = itertools.count()
        # token → (future, deadline); insertion order is deadline order (one timeout for all).
        self._waiting: dict[str, tuple[asyncio.Future[int], float]] = {}
        self._subscription: NatsSubscription | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._prefix = self._nc.new_inbox() + "."
        self._subscription = await self._nc.subscribe(self._prefix + "*", cb=self._on_reply)
        self._sweeper = asyncio.create_task(self._sweep(), name="roost-bus-publish-sweeper")

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            with contextlib.suppress(*DRIVER_ERRORS):
                await subscription.unsubscribe()
        for future, _ in self._waiting.values():
            if not future.done():
                future.set_exception(nats.errors.ConnectionClosedError())
        self._waiting.clear()

    async def publish(self, subject: str, data: bytes, headers: dict[str, str] | None) -> int:
        """Publish and wait for JetStream's acknowledgement; return the stream sequence."""
        loop = asyncio.get_running_loop()
        token = str(next(self._tokens))
        future: asyncio.Future[int] = loop.create_future()
        self._waiting[token] = (future, loop.time() + self._timeout_s)
        try:
            await self._nc.publish(subject, data, reply=self._prefix + token, headers=headers)
            return await future
        finally:
            self._waiting.pop(token, None)

    async def _on_reply(self, msg: Msg) -> None:
        entry = self._waiting.pop(msg.subject[len(self._prefix) :], None)
        if entry is None or entry[0].done():
            return  # timed out already, or the publisher was cancelled
        future = entry[0]
        if msg.headers and msg.headers.get("Status") == _NO_RESPONDERS:
            future.set_exception(nats.js.errors.NoStreamResponseError())
            return
        try:
            reply = orjson.loads(msg.data)
            if "error" in reply:
                future.set_exception(nats.js.errors.APIError.from_error(reply["error"]))
            else:
                future.set_result(int(reply["seq"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            future.set_exception(nats.errors.Error(f"unreadable JetStream acknowledgement: {exc}"))

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(PUBLISH_SWEEP_S)  # a timer, not a wait for an event
            now = loop.time()
            expired = []
            for token, (_, deadline) in self._waiting.items():
                if deadline > now:
                    break
                expired.append(token)
            for token in expired:
                future, _ = self._waiting.pop(token)
                if not future.done():
                    future.set_exception(nats.errors.TimeoutError())


class PullWorker(Subscription):
    """One worker of a durable pull consumer: pull a batch, run the handler, ack or nak.

    Pull requests are made here rather than with nats-py's ``fetch``, for two reasons: each
    request carries ``max_bytes`` (a batch of large messages must stay well under the server's
    per-client pending limit, or the server cuts the connection as a slow consumer), and the
    batch size is exact (nats-py's ``fetch`` also returns whatever earlier requests delivered
    late). Messages delivered to the worker are never dropped: late ones join the next batch, and
    those still unhandled when the worker stops are handed back (``nak``) at once.
    """

    def __init__(
        self,
        client: Callable[[], NatsClient],
        ensure_consumer: Callable[[], Awaitable[None]],
        on_stop: Callable[[PullWorker], None],
        *,
        stream: str,
        durable: str,
        handler: StreamHandler,
        batch: int,
        max_wait_s: float,
    ) -> None:
        self._client = client  # the connected client, or Unavailable
        self._ensure_consumer = ensure_consumer
        self._on_stop = on_stop
        self._stream = stream
        self._durable = durable
        self._handler = handler
        self._batch = batch
        self._max_wait_s = max_wait_s
        self._next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._inbox = ""
        self._inbox_subscription: NatsSubscription | None = None
        self._arrivals: deque[Msg] = deque()
        self._arrived = asyncio.Event()
        self._request_ids = itertools.count()
        self._idle = False  # waiting in the long pull request (safe to cancel)
        self._stopped = False
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Open the delivery inbox and start the worker task."""
        await self._open_inbox()
        self._task = asyncio.create_task(
            self._run(), name=f"roost-bus-consume:{self._stream}:{self._durable}"
        )

    async def _open_inbox(self) -> None:
        nc = self._client()
        inbox = nc.new_inbox()
        try:
            self._inbox_subscription = await nc.subscribe(f"{inbox}.*", cb=self._on_delivery)
        except DRIVER_ERRORS as exc:
            raise unavailable(f"cannot subscribe for {self._stream}/{self._durable}", exc) from exc
        self._inbox = inbox
        self._arrivals.clear()

    async def _close_inbox(self) -> None:
        subscription, self._inbox_subscription = self._inbox_subscription, None
        self._inbox = ""
        leftovers = [m for m in self._arrivals if not (m.headers and m.headers.get("Status"))]
        self._arrivals.clear()
        if subscription is not None:
            with contextlib.suppress(*DRIVER_ERRORS):
                await subscription.unsubscribe()
        await self._settle(leftovers, ok=False, immediately=True)

    async def _on_delivery(self, msg: Msg) -> None:
        self._arrivals.append(msg)
        self._arrived.set()

    async def _pull(
        self, batch: int, max_bytes: int, *, no_wait: bool = False, expires_s: float = 0.0
    ) -> tuple[list[Msg], bool]:
        """One pull request: (messages, whether max_bytes ended it).

        The request ends with the batch count or the server's status for it (404 nothing
        there, 408 expired, 409 max_bytes reached), or PULL_LATE_S after its expiry: the server
        does not always send the 408. Each request has a reply subject of its own, so a status
        is only taken for the request it answers; messages that arrive after their request
        ended are kept for the next one (they were delivered to this consumer all the same).
        """
        messages: list[Msg] = []
        while self._arrivals and len(messages) < batch:  # late arrivals from an earlier request
            msg = self._arrivals.popleft()
            if not (msg.headers and msg.headers.get("Status")):
                messages.append(msg)
        if len(messages) >= batch:
            return messages, False
        nc = self._client()
        request: dict[str, object] = {"batch": batch - len(messages), "max_bytes": max_bytes}
        if no_wait:
            request["no_wait"] = True
        if expires_s > 0:
            request["expires"] = int(expires_s * 1e9)
        reply = f"{self._inbox}.{next(self._request_ids)}"
        await nc.publish(self._next_subject, orjson.dumps(request), reply=reply)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + expires_s + PULL_LATE_S
        while True:
            while self._arrivals:
                msg = self._arrivals.popleft()
                status = msg.headers.get("Status") if msg.headers else None
                if status is None:
                    messages.append(msg)
                    if len(messages) >= batch:
                        return messages, False
                elif msg.subject != reply or status == "100":
                    continue  # a status for an earlier request, or a heartbeat
                elif status in {"404", "408"}:  # nothing (more) there / expired
                    return messages, False
                elif status == "409" and "MaxBytes" in _description(msg):
                    return messages, True
                else:  # consumer deleted, too many waiting requests, …
                    raise nats.js.errors.APIError(code=int(status), description=_description(msg))
            remaining = deadline - loop.time()
            if remaining <= 0:
                return messages, False
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)

    async def _fetch(self) -> list[Msg]:
        """Up to ``batch`` messages: what is there, topped up with what arrives within
        ``max_wait_s``; when nothing is there, wait for the first message (IDLE_FETCH_S at a
        time)."""
        nc = self._client()
        max_bytes = max(MAX_FETCH_BYTES, nc.max_payload)
        messages, full = await self._pull(self._batch, max_bytes, no_wait=True)
        if not messages:
            if self._stopped:
                return []
            self._idle = True
            try:
                messages, full = await self._pull(1, max_bytes, expires_s=IDLE_FETCH_S)
            finally:
                self._idle = False
        if not messages or full or len(messages) >= self._batch or self._max_wait_s <= 0:
            return messages
        room = max_bytes - sum(len(m.data) + len(m.subject) for m in messages)
        if room > 0 and not self._stopped:
            more, _ = await self._pull(
                self._batch - len(messages), room, expires_s=self._max_wait_s
            )
            messages += more
        return messages

    async def _run(self) -> None:
        failures = 0
        while not self._stopped:
            try:
                if self._inbox_subscription is None:
                    await self._ensure_consumer()
                    await self._open_inbox()
                messages = await self._fetch()
            except asyncio.CancelledError:
                raise
            except (*DRIVER_ERRORS, Unavailable, Conflict) as exc:
                if self._stopped:
                    break
                failures += 1
                delay = min(FETCH_RETRY_S * 2 ** (failures - 1), FETCH_RETRY_MAX_S)
                logger.warning(
                    "fetching from %s/%s failed (%s); retrying in %.1fs",
                    self._stream,
                    self._durable,
                    exc,
                    delay,
                )
                await self._close_inbox()
                self._idle = True
                try:
                    await asyncio.sleep(delay)  # a back-off between retries: no event to await
                finally:
                    self._idle = False
                continue
            failures = 0
            if not messages:
                continue
            if self._stopped:  # fetched while stopping: hand them back at once
                await self._settle(messages, ok=False, immediately=True)
                break
            await self._deliver(messages)

    async def _deliver(self, messages: list[Msg]) -> None:
        batch = []
        for msg in messages:
            meta = msg.metadata
            batch.append(
                StreamMessage(
                    msg.subject, msg.data, meta.sequence.stream, redelivered=meta.num_delivered > 1
                )
            )
        keep_alive = asyncio.create_task(self._keep_alive(messages))
        try:
            await self._handler(batch)
        except asyncio.CancelledError:
            await self._settle(messages, ok=False, immediately=True)
            raise
        except Exception:
            logger.warning(
                "stream handler of %s/%s failed; %s messages will be delivered again",
                self._stream,
                self._durable,
                len(messages),
                exc_info=True,
            )
            await self._settle(messages, ok=False)
        else:
            await self._settle(messages, ok=True)
        finally:
            keep_alive.cancel()

    async def _settle(self, messages: list[Msg], *, ok: bool, immediately: bool = False) -> None:
        """Ack (or nak) each message. A lost ack only means the message comes again."""
        try:
            for msg in messages:
                if ok:
                    await msg.ack()
                elif immediately:
                    await msg.nak()
                else:
                    await msg.nak(delay=redelivery_delay(msg.metadata.num_delivered))
        except DRIVER_ERRORS as exc:
            logger.warning(
                "could not settle messages of %s/%s (%s); they will be delivered again",
                self._stream,
                self._durable,
                exc,
            )

    async def _keep_alive(self, messages: list[Msg]) -> None:
        """While the handler runs, tell the server the batch is in progress."""
        while True:
            await asyncio.sleep(ACK_WAIT_S / 3)
            with contextlib.suppress(*DRIVER_ERRORS):
                for msg in messages:
                    await msg.in_progress()

    async def stop(self) -> None:
        """Stop fetching. A running handler may finish and settle (up to STOP_GRACE_S); a short
        pull under way completes and hands its messages straight back; a long idle pull request
        is cancelled (a message the server was sending at that instant comes back after
        ACK_WAIT_S)."""
        if self._stopped:
            return
        self._stopped = True
        self._on_stop(self)
        task, self._task = self._task, None
        await stop_task(task, busy=not self._idle, grace_s=STOP_GRACE_S)
        await self._close_inbox()
