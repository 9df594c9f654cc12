"""Delivery of notifications to one subscriber: a bounded queue drained by a task of its own.

Both backends hand every notification for a subscription to a :class:`NotificationQueue`
(``MemoryBus.publish`` directly, ``NatsBus`` from its NATS message callback). Handlers therefore
never run inside the publisher: a slow handler delays only its own subscription, and a failing
one is logged and skipped. The queue is bounded; when it is full the *oldest* waiting
notification is dropped and counted (notifications are at most once by contract, and for live
views the newest value is the one worth keeping).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque

from roost.bus.base import NotificationHandler, Subscription

logger = logging.getLogger(__name__)

# Notifications waiting for one subscriber. A live console view or a cache invalidator keeps up
# with thousands per second; a backlog of a thousand means the handler is stuck, and keeping more
# would only grow memory and the age of what it eventually sees.
NOTIFY_QUEUE_LIMIT = 1000
# Log the first drop of a subscription, then one line per this many, so a stuck subscriber is
# visible without flooding the log.
DROP_LOG_EVERY = 1000
# How long stop() lets a handler that is running finish before it is cancelled.
STOP_GRACE_S = 5.0


async def stop_task(task: asyncio.Task[None] | None, *, busy: bool, grace_s: float) -> None:
    """End a worker task: at once if it is idle, else after it finishes or ``grace_s`` passes.

    Called from inside the task itself (a handler stopping its own subscription) it returns at
    once; the worker sees its stop flag when the handler returns.
    """
    if task is None or task.done() or task is asyncio.current_task():
        return
    if busy:
        await asyncio.wait({task}, timeout=grace_s)
    if not task.done():
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


class NotificationQueue(Subscription):
    """One subscription's notifications: a bounded queue and the task that calls the handler."""

    def __init__(
        self,
        pattern: str,
        handler: NotificationHandler,
        *,
        limit: int = NOTIFY_QUEUE_LIMIT,
    ) -> None:
        self.pattern = pattern
        self._handler = handler
        self._items: deque[tuple[str, bytes]] = deque()
        self._limit = limit
        self._wake = asyncio.Event()
        self._dropped = 0
        self._busy = False
        self._stopped = False
        self._task: asyncio.Task[None] | None = asyncio.create_task(
            self._run(), name=f"roost-bus-notify:{pattern}"
        )

    @property
    def dropped(self) -> int:
        """Notifications dropped because this subscriber's queue was full."""
        return self._dropped

    @property
    def stopped(self) -> bool:
        """True once :meth:`stop` was called."""
        return self._stopped

    def offer(self, subject: str, data: bytes) -> bool:
        """Queue one notification; never blocks (drops the oldest waiting one when full).

        Returns True when the queue is more than half full: the caller should then give the
        event loop a turn (``await asyncio.sleep(0)``) so that the delivery task can catch up
        with a burst published without any pause (a tight publishing loop, or a large chunk of
        messages read from the NATS socket at once).
        """
        if self._stopped:
            return False
        if len(self._items) >= self._limit:
            self._items.popleft()
            self._dropped += 1
            if self._dropped == 1 or self._dropped % DROP_LOG_EVERY == 0:
                logger.warning(
                    "subscriber of %s is too slow: dropped %s notifications so far",
                    self.pattern,
                    self._dropped,
                )
        self._items.append((subject, data))
        self._wake.set()
        return len(self._items) > self._limit // 2

    async def _run(self) -> None:
        while not self._stopped:
            if not self._items:
                self._wake.clear()
                await self._wake.wait()
                continue
            subject, data = self._items.popleft()
            self._busy = True
            try:
                await self._handler(subject, data)
            except Exception:
                logger.exception("notification handler for %s failed on %s", self.pattern, subject)
            finally:
                self._busy = False

    async def stop(self) -> None:
        """Stop delivering; a handler that is running may finish (up to STOP_GRACE_S)."""
        if self._stopped:
            return
        self._stopped = True
        self._items.clear()
        self._wake.set()
        task, self._task = self._task, None
        await stop_task(task, busy=self._busy, grace_s=STOP_GRACE_S)
