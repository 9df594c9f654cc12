"""Notifications: the facade the rest of Roost calls (channels, silences, the outbox, the log).

The rules engine calls :meth:`NotificationService.enqueue_in` inside its write transaction, then
:meth:`NotificationService.wake` once it committed; the dispatcher (a scheduler pass, see
:mod:`roost.alarms.notify.dispatcher`) does the rest.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from roost.alarms.notify import outbox
from roost.alarms.notify.channels import Channels
from roost.alarms.notify.dispatcher import Dispatcher
from roost.alarms.notify.model import AlarmNotice, DeliveryStatus
from roost.alarms.notify.senders import Senders, compose
from roost.alarms.notify.silences import Silences
from roost.alarms.notify.tables import notifications
from roost.core import metrics
from roost.core.access import Actor, Role
from roost.core.context import ServiceDeps
from roost.core.ids import generate_id
from roost.credentials.keys.service import SecretBox
from roost.errors import InvalidInput, NotFound
from roost.store.queries import Page, PageRequest, fetch_one, fetch_page, order_by

#: The scheduler's name for the dispatcher pass.
TIMER = "notifications.dispatch"
LOG_SORTS = ("created_at", "updated_at", "status", "id")
#: Fields of the delivery log (the stored payload stays inside).
_LOG_COLUMNS = [c for c in notifications.c if c.name not in ("payload", "tenant_id", "due_at")]


def _log_out(row: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(row)
    waiting = row["status"] in (DeliveryStatus.QUEUED.value, DeliveryStatus.SENDING.value)
    out["next_attempt_at"] = row["due_at"] if waiting else None
    out.pop("due_at", None)
    return out


class NotificationService:
    """Channels, silences, the outbox and its dispatcher."""

    def __init__(self, deps: ServiceDeps) -> None:
        self.deps = deps
        self.db = deps.db
        self.clock = deps.clock
        self.channels = Channels(deps.db, SecretBox(deps.secret_key))
        self.silences = Silences(deps.db)
        self.senders = Senders(deps.settings)
        self.dispatcher = Dispatcher(deps.db, self.channels, self.senders, deps.clock)
        metrics.table_gauge(
            "roost_notifications",
            "Notifications in the delivery log by status (queued: the queue depth)",
            self.db,
            notifications.c.status,
            values=[s.value for s in DeliveryStatus],
        )

    async def start(self) -> None:
        """Start the dispatcher pass."""
        self.deps.scheduler.every(TIMER, self.deps.settings.timer_check_s, self.dispatcher.run)

    async def close(self) -> None:
        """Release the senders' connections (the pass stops with the scheduler)."""
        await self.senders.close()

    # -- what the rules engine calls ----------------------------------------------------------

    async def enqueue_in(self, conn: AsyncConnection, notices: Sequence[AlarmNotice]) -> None:
        """Queue notices for their channels inside the caller's write transaction."""
        if notices:
            await outbox.enqueue_in(conn, notices, self.clock())

    def wake(self) -> None:
        """Let the dispatcher look now (call after the enqueueing transaction committed)."""
        self.deps.scheduler.wake(TIMER)

    async def channel_exists(self, tenant_id: str, channel_id: str) -> bool:
        """Whether the tenant has this channel (checked when a rule names it)."""
        return await self.channels.exists(tenant_id, channel_id)

    # -- channels -----------------------------------------------------------------------------

    async def create_channel(self, actor: Actor, values: Mapping[str, Any]) -> dict[str, Any]:
        """Add a channel."""
        return await self.channels.create(actor, values, self.clock())

    async def get_channel(self, actor: Actor, channel_id: str) -> dict[str, Any]:
        """One channel."""
        return await self.channels.get(actor, channel_id)

    async def list_channels(
        self, actor: Actor, page: PageRequest, kind: str | None = None
    ) -> Page[dict[str, Any]]:
        """A page of channels."""
        return await self.channels.page(actor, page, kind)

    async def update_channel(
        self, actor: Actor, channel_id: str, changes: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Change a channel."""
        return await self.channels.update(actor, channel_id, changes, self.clock())

    async def delete_channel(self, actor: Actor, channel_id: str) -> None:
        """Delete a channel."""
        await self.channels.delete(actor, channel_id, self.clock())

    async def test_channel(self, actor: Actor, channel_id: str) -> dict[str, Any]:
        """Send a test message to a channel now; answer whether it was delivered (the attempt
        is kept in the delivery log too, so its error stays visible there)."""
        actor.require(Role.OPERATOR)
        now = self.clock()
        async with self.db.read() as conn:
            channel = await self.channels.row(conn, actor.tenant_id, channel_id)
        alert = {
            "alarm_id": 0, "type": "test", "device_id": "test-device", "site_id": None,
            "group_ids": [], "severity": "info", "status": "firing",
            "summary": f"Test message from Roost, sent by {actor.name}", "details": {},
            "started_at": now, "ended_at": None, "rule_id": None,
        }  # fmt: skip
        notification_id = generate_id("ntf")
        subject, payload = compose(channel, {"type": "test"}, [alert], notification_id)
        started = time.monotonic()
        outcome = await self.senders.send(channel, self.channels.open_secret(channel), payload)
        duration_ms = round((time.monotonic() - started) * 1000, 1)
        done = self.clock()
        status = DeliveryStatus.DELIVERED if outcome.delivered else DeliveryStatus.FAILED
        async with self.db.write() as conn:
            await conn.execute(
                notifications.insert().values(
                    id=notification_id, tenant_id=actor.tenant_id, channel_id=channel_id,
                    channel_name=channel["name"], kind=channel["kind"], status=status.value,
                    group_labels={"type": "test"}, alarm_ids=[], firing=1, resolved=0,
                    subject=f"[test] {subject}", payload=payload, attempts=1, max_attempts=1,
                    last_error=outcome.error,
                    attempt_log=[{"attempt": 1, "at": done.isoformat(), "error": outcome.error}],
                    due_at=None, delivered_at=done if outcome.delivered else None,
                    created_at=now, updated_at=done,
                )
            )  # fmt: skip
        return {
            "channel_id": channel_id,
            "notification_id": notification_id,
            "kind": channel["kind"],
            "delivered": outcome.delivered,
            "error": outcome.error,
            "duration_ms": duration_ms,
        }

    # -- silences -----------------------------------------------------------------------------

    async def create_silence(self, actor: Actor, values: Mapping[str, Any]) -> dict[str, Any]:
        """Add a silence."""
        return await self.silences.create(actor, values, self.clock())

    async def get_silence(self, actor: Actor, silence_id: str) -> dict[str, Any]:
        """One silence."""
        return await self.silences.get(actor, silence_id, self.clock())

    async def list_silences(
        self, actor: Actor, page: PageRequest, state: str | None = None
    ) -> Page[dict[str, Any]]:
        """A page of silences (by state)."""
        return await self.silences.page(actor, page, self.clock(), state)

    async def update_silence(
        self, actor: Actor, silence_id: str, changes: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Change a silence."""
        return await self.silences.update(actor, silence_id, changes, self.clock())

    async def delete_silence(self, actor: Actor, silence_id: str) -> None:
        """Delete a silence."""
        await self.silences.delete(actor, silence_id, self.clock())

    # -- the delivery log ---------------------------------------------------------------------

    async def list_notifications(
        self,
        actor: Actor,
        page: PageRequest,
        *,
        channel_id: str | None = None,
        status: str | None = None,
    ) -> Page[dict[str, Any]]:
        """A page of the delivery log, newest first (filter by channel and status)."""
        actor.require(Role.VIEWER)
        stmt = sa.select(*_LOG_COLUMNS, notifications.c.due_at).where(
            notifications.c.tenant_id == actor.tenant_id
        )
        if channel_id is not None:
            stmt = stmt.where(notifications.c.channel_id == channel_id)
        if status is not None:
            if status not in {s.value for s in DeliveryStatus}:
                raise InvalidInput(
                    f"unknown status {status!r}; statuses: {', '.join(DeliveryStatus)}"
                )
            stmt = stmt.where(notifications.c.status == status)
        page = PageRequest(page.limit, page.offset, page.sort or "-created_at")
        async with self.db.read() as conn:
            rows, total = await fetch_page(
                conn, stmt, order_by(notifications, page.sort, LOG_SORTS, "-created_at"), page
            )
        return Page([_log_out(r) for r in rows], total, page.limit, page.offset)

    async def get_notification(self, actor: Actor, notification_id: str) -> dict[str, Any]:
        """One entry of the delivery log."""
        actor.require(Role.VIEWER)
        async with self.db.read() as conn:
            row = await fetch_one(
                conn,
                sa.select(*_LOG_COLUMNS, notifications.c.due_at).where(
                    notifications.c.tenant_id == actor.tenant_id,
                    notifications.c.id == notification_id,
                ),
            )
        if row is None:
            raise NotFound(f"no notification {notification_id!r}")
        return _log_out(row)
