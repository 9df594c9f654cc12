"""The dispatcher: one scheduler pass that flushes due groups and sends due messages.

Every state is a row (see :mod:`roost.alarms.notify.tables`), so the pass is durable and may run
in several processes on one PostgreSQL: a message is claimed by a conditional UPDATE (``queued``
→ ``sending`` where its status and due time are still the ones read), which one process wins.
A claimed row's ``due_at`` is the end of its sender's lease: when a process dies mid-send, the
row falls due again and another pass sends it (at least once). After each attempt the row is
``delivered``, ``queued`` again after a backoff (1 s, 2 s, 4 s … capped) with the error kept,
or ``failed`` (no retry helps, or ``max_attempts`` were spent).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from prometheus_client import Counter

from roost.alarms.notify import model, outbox
from roost.alarms.notify.channels import Channels
from roost.alarms.notify.model import DeliveryStatus, Outcome
from roost.alarms.notify.senders import Senders
from roost.alarms.notify.tables import notification_channels, notification_groups, notifications
from roost.core.scheduler import earliest
from roost.store.database import Database
from roost.store.queries import as_dicts, fetch_one

log = logging.getLogger(__name__)

S = DeliveryStatus
#: Groups flushed and messages sent per pass at most; a full batch runs the pass again at once.
BATCH = 100
#: Sends in flight at once: one slow receiver must not hold up every other channel.
MAX_PARALLEL_SENDS = 16
#: A sender holds a claimed message this long beyond its own timeout before another process may
#: take it over (it is then presumed dead).
LEASE_MARGIN_S = 30.0
#: Delivered and failed messages are kept this long in the delivery log.
LOG_RETENTION = timedelta(days=30)
#: How often old log rows are removed.
PRUNE_EVERY = timedelta(hours=1)
#: Longest lease: the SMTP or webhook timeout is at most a minute.
SEND_LEASE_S = 60.0 + LEASE_MARGIN_S

SENT = Counter("roost_notifications_sent", "Notifications delivered", ("kind",))
FAILED = Counter(
    "roost_notifications_failed", "Notifications given up after their attempts", ("kind",)
)


class Dispatcher:
    """Flushes groups into messages and delivers messages (see the module docstring)."""

    def __init__(
        self,
        db: Database,
        channels: Channels,
        senders: Senders,
        clock: Callable[[], datetime],
    ) -> None:
        self.db = db
        self.channels = channels
        self.senders = senders
        self.clock = clock
        self._pruned_at: datetime | None = None

    async def run(self) -> float | None:
        """One pass: flush due groups, send due messages; answer when the next work is due."""
        now = self.clock()
        async with self.db.read() as conn:
            groups = await outbox.due_groups(conn, now, BATCH)
        for group_pk in groups:
            try:
                async with self.db.write() as conn:
                    await outbox.flush(conn, group_pk, now)
            except Exception:  # one bad group must not stop the others
                log.exception("flushing notification group %s failed", group_pk)
        sent = await self.send_due(self.clock())
        await self._prune(now)
        if len(groups) == BATCH or sent == BATCH:
            return now.timestamp()
        times = [
            t
            for t in (
                await earliest(self.db, notification_groups.c.next_flush_at),
                await earliest(self.db, notifications.c.due_at),
            )
            if t is not None
        ]
        return min(times) if times else None

    async def send_due(self, now: datetime) -> int:
        """Claim the due messages and send them, a few at a time; answer how many were tried."""
        async with self.db.read() as conn:
            rows = as_dicts(
                await conn.execute(
                    sa.select(notifications)
                    .where(notifications.c.due_at <= now)
                    .order_by(notifications.c.due_at)
                    .limit(BATCH)
                )
            )
        claimed = []
        if rows:
            async with self.db.write() as conn:
                for row in rows:
                    result = await conn.execute(
                        notifications.update()
                        .where(
                            notifications.c.id == row["id"],
                            notifications.c.status == row["status"],
                            notifications.c.attempts == row["attempts"],
                        )
                        .values(
                            status=S.SENDING.value,
                            attempts=row["attempts"] + 1,
                            due_at=now + timedelta(seconds=SEND_LEASE_S),
                            updated_at=now,
                        )
                    )
                    if result.rowcount == 1:
                        claimed.append({**row, "attempts": row["attempts"] + 1})
        gate = asyncio.Semaphore(MAX_PARALLEL_SENDS)

        async def one(row: dict[str, Any]) -> None:
            async with gate:
                await self._deliver(row)

        await asyncio.gather(*(one(row) for row in claimed))
        return len(rows)

    async def _deliver(self, row: dict[str, Any]) -> None:
        async with self.db.read() as conn:
            channel = await fetch_one(
                conn,
                sa.select(notification_channels).where(
                    notification_channels.c.id == row["channel_id"]
                ),
            )
        if channel is None:
            outcome = Outcome(False, "the channel was deleted", retry=False)
        else:
            try:
                secret = self.channels.open_secret(channel)
            except ValueError as exc:
                outcome = Outcome(False, str(exc), retry=False)
            else:
                outcome = await self.senders.send(channel, secret, row["payload"])
        await self.record(row, outcome)

    async def record(self, row: Mapping[str, Any], outcome: Outcome) -> None:
        """Write an attempt's outcome (only while the row is still this sender's claim)."""
        now = self.clock()
        attempt = row["attempts"]
        entry = {"attempt": attempt, "at": now.isoformat(), "error": outcome.error}
        values: dict[str, Any] = {"attempt_log": [*row["attempt_log"], entry], "updated_at": now}
        if outcome.delivered:
            values.update(status=S.DELIVERED.value, due_at=None, delivered_at=now)
        elif outcome.retry and attempt < row["max_attempts"]:
            delay = timedelta(seconds=model.backoff_s(attempt))
            values.update(status=S.QUEUED.value, due_at=now + delay, last_error=outcome.error)
        else:
            values.update(status=S.FAILED.value, due_at=None, last_error=outcome.error)
        async with self.db.write() as conn:
            result = await conn.execute(
                notifications.update()
                .where(
                    notifications.c.id == row["id"],
                    notifications.c.status == S.SENDING.value,
                    notifications.c.attempts == attempt,
                )
                .values(**values)
            )
        if result.rowcount != 1:
            log.warning("notification %s was taken over while being sent", row["id"])
            return
        if outcome.delivered:
            SENT.labels(row["kind"]).inc()
        elif values["status"] == S.FAILED.value:
            FAILED.labels(row["kind"]).inc()
            log.warning(
                "notification %s to channel %s failed after %d attempts: %s",
                row["id"], row["channel_id"], attempt, outcome.error,
            )  # fmt: skip

    async def _prune(self, now: datetime) -> None:
        if self._pruned_at is not None and now - self._pruned_at < PRUNE_EVERY:
            return
        self._pruned_at = now
        async with self.db.write() as conn:
            await conn.execute(
                notifications.delete().where(
                    notifications.c.status.in_((S.DELIVERED.value, S.FAILED.value)),
                    notifications.c.updated_at < now - LOG_RETENTION,
                )
            )
