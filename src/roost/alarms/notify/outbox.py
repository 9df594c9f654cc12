"""The durable outbox: alarm notices become grouped messages, as Alertmanager groups alerts.

:func:`enqueue_in` runs inside the caller's transaction (the alarm change and the decision to
notify commit together). Each notice lands, per channel it names, in the channel's group of its
``group_by`` labels: the first alert of a new group waits ``group_wait`` (so that 200 devices of
a site going offline together make one message), later changes of a group wait until
``group_interval`` after its last message, and an unchanged firing group is sent again after
``repeat_interval``. :func:`flush` runs when a group is due: it leaves silenced alerts out (a
group whose alerts are all silenced sends nothing), writes one ``notifications`` row (the
message, composed now, queued for the dispatcher) and sets the group's next flush.

Both lock the group row first (``SELECT … FOR UPDATE`` on PostgreSQL; SQLite serialises writers),
so a flush in one process and a notice in another cannot both decide on the same alerts.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from roost.alarms.notify import model
from roost.alarms.notify.model import AlarmNotice, DeliveryStatus
from roost.alarms.notify.senders import compose
from roost.alarms.notify.silences import Silences
from roost.alarms.notify.tables import (
    notification_alerts,
    notification_channels,
    notification_groups,
    notifications,
)
from roost.core.ids import generate_id
from roost.store.queries import as_dicts, fetch_one

log = logging.getLogger(__name__)

#: What an alert shows in a message (and in a webhook's JSON).
ALERT_FIELDS = (
    "alarm_id", "type", "device_id", "site_id", "group_ids", "severity", "status", "summary",
    "details", "started_at", "ended_at", "rule_id",
)  # fmt: skip


def _insert(conn: AsyncConnection, table: sa.Table) -> Any:
    return pg_insert(table) if conn.dialect.name == "postgresql" else sqlite_insert(table)


async def _channels(
    conn: AsyncConnection, wanted: set[tuple[str, str]]
) -> dict[tuple[str, str], dict[str, Any]]:
    ids = sorted({channel_id for _, channel_id in wanted})
    if not ids:
        return {}
    rows = as_dicts(
        await conn.execute(
            sa.select(notification_channels).where(notification_channels.c.id.in_(ids))
        )
    )
    return {(r["tenant_id"], r["id"]): r for r in rows if (r["tenant_id"], r["id"]) in wanted}


async def _lock_group(
    conn: AsyncConnection,
    channel: Mapping[str, Any],
    key: str,
    labels: dict[str, Any],
    now: datetime,
) -> dict[str, Any]:
    """The group's row, made when new (first flush after ``group_wait``), locked."""
    select = (
        sa.select(notification_groups)
        .where(
            notification_groups.c.channel_id == channel["id"],
            notification_groups.c.group_key == key,
        )
        .with_for_update()
    )
    for _ in range(3):  # a flush elsewhere may delete an emptied group between the two steps
        await conn.execute(
            _insert(conn, notification_groups)
            .values(
                tenant_id=channel["tenant_id"],
                channel_id=channel["id"],
                group_key=key,
                labels=labels,
                next_flush_at=now + timedelta(seconds=channel["group_wait_s"]),
                last_sent_at=None,
                created_at=now,
            )
            .on_conflict_do_nothing(index_elements=["channel_id", "group_key"])
        )
        group = await fetch_one(conn, select)
        if group is not None:
            return group
    raise RuntimeError(f"notification group {key} of channel {channel['id']} keeps vanishing")


async def enqueue_in(conn: AsyncConnection, notices: Sequence[AlarmNotice], now: datetime) -> int:
    """Put notices into their channels' groups inside the caller's transaction; answer how many
    (notice, channel) pairs were taken. Unknown or disabled channels are logged and skipped."""
    wanted = {(n.tenant_id, c) for n in notices for c in n.channel_ids}
    channels = await _channels(conn, wanted)
    buckets: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    labels_of: dict[tuple[str, str], dict[str, Any]] = {}
    for notice in notices:
        alert = asdict(notice)
        for channel_id in dict.fromkeys(notice.channel_ids):
            channel = channels.get((notice.tenant_id, channel_id))
            if channel is None:
                log.warning(
                    "alarm %s names notification channel %s, which does not exist: skipped",
                    notice.alarm_id, channel_id,
                )  # fmt: skip
                continue
            if not channel["enabled"]:
                continue
            labels = model.group_labels(alert, channel["group_by"])
            bucket = (channel_id, model.group_key(labels))
            labels_of[bucket] = labels
            buckets[bucket].append(alert)
    chosen = {channel_id: channel for (_, channel_id), channel in channels.items()}
    taken = 0
    # Always in the same order, so that two transactions lock groups without a deadlock.
    for channel_id, group_key in sorted(buckets):
        channel = chosen[channel_id]
        group = await _lock_group(conn, channel, group_key, labels_of[(channel_id, group_key)], now)
        alerts = buckets[(channel_id, group_key)]
        taken += await _upsert_alerts(conn, channel_id, group["pk"], alerts, now)
        if group["last_sent_at"] is not None:
            # A change to a group already notified goes out group_interval after the last one.
            soonest = group["last_sent_at"] + timedelta(seconds=channel["group_interval_s"])
            due = max(now, soonest)
            if group["next_flush_at"] is None or due < group["next_flush_at"]:
                await conn.execute(
                    notification_groups.update()
                    .where(notification_groups.c.pk == group["pk"])
                    .values(next_flush_at=due)
                )
    return taken


async def _upsert_alerts(
    conn: AsyncConnection,
    channel_id: str,
    group_pk: int,
    alerts: list[dict[str, Any]],
    now: datetime,
) -> int:
    """Store the latest state of each alarm; a resolution of an alarm never notified is dropped."""
    latest = {a["alarm_id"]: a for a in alerts}  # the last notice of an alarm wins
    known = set(
        (
            await conn.execute(
                sa.select(notification_alerts.c.alarm_id).where(
                    notification_alerts.c.channel_id == channel_id,
                    notification_alerts.c.alarm_id.in_(sorted(latest)),
                )
            )
        ).scalars()
    )
    rows = []
    for alarm_id, alert in sorted(latest.items()):
        if alert["status"] != "firing" and alarm_id not in known:
            continue
        rows.append(
            {
                **{name: alert[name] for name in ALERT_FIELDS},
                "group_ids": list(alert["group_ids"]),
                "group_pk": group_pk,
                "channel_id": channel_id,
                "sent_status": None,
                "updated_at": now,
            }
        )
    if not rows:
        return 0
    stmt = _insert(conn, notification_alerts)
    kept = {"pk", "channel_id", "alarm_id", "sent_status"}
    changed = {c.name: stmt.excluded[c.name] for c in notification_alerts.c if c.name not in kept}
    await conn.execute(
        stmt.on_conflict_do_update(index_elements=["channel_id", "alarm_id"], set_=changed), rows
    )
    return len(rows)


def _view(alert: Mapping[str, Any]) -> dict[str, Any]:
    return {name: alert[name] for name in ALERT_FIELDS}


async def due_groups(conn: AsyncConnection, now: datetime, limit: int) -> list[int]:
    """Groups whose flush is due, earliest first."""
    result = await conn.execute(
        sa.select(notification_groups.c.pk)
        .where(notification_groups.c.next_flush_at <= now)
        .order_by(notification_groups.c.next_flush_at)
        .limit(limit)
    )
    return list(result.scalars())


async def flush(conn: AsyncConnection, group_pk: int, now: datetime) -> str | None:
    """Decide a due group's message (see the module docstring); answer its id, if any."""
    group = await fetch_one(
        conn,
        sa.select(notification_groups)
        .where(notification_groups.c.pk == group_pk)
        .with_for_update(),
    )
    if group is None or group["next_flush_at"] is None or group["next_flush_at"] > now:
        return None  # flushed by another process meanwhile
    channel = await fetch_one(
        conn,
        sa.select(notification_channels).where(notification_channels.c.id == group["channel_id"]),
    )
    alerts = as_dicts(
        await conn.execute(
            sa.select(notification_alerts)
            .where(notification_alerts.c.group_pk == group_pk)
            .order_by(notification_alerts.c.device_id, notification_alerts.c.alarm_id)
        )
    )
    where_group = notification_groups.c.pk == group_pk
    if channel is None or not channel["enabled"] or not alerts:
        await conn.execute(notification_groups.delete().where(where_group))
        return None
    active = await Silences.active_in(conn, group["tenant_id"], now)

    def silenced(alert: Mapping[str, Any]) -> bool:
        return any(model.silence_matches(matchers, alert) for matchers in active)

    firing = [a for a in alerts if a["status"] == "firing" and not silenced(a)]
    resolved = [
        a for a in alerts
        if a["status"] != "firing" and a["sent_status"] == "firing" and channel["send_resolved"]
        and not silenced(a)
    ]  # fmt: skip
    changed = any(a["sent_status"] != "firing" for a in firing) or bool(resolved)
    repeat_s = timedelta(seconds=channel["repeat_interval_s"])
    last_sent = group["last_sent_at"]
    repeat = bool(firing) and (last_sent is None or last_sent + repeat_s <= now)
    notification_id = None
    if changed or repeat:
        notification_id = generate_id("ntf")
        message = [_view(a) for a in firing + resolved]
        subject, payload = compose(channel, group["labels"], message, notification_id)
        await conn.execute(
            notifications.insert().values(
                id=notification_id,
                tenant_id=group["tenant_id"],
                channel_id=channel["id"],
                channel_name=channel["name"],
                kind=channel["kind"],
                status=DeliveryStatus.QUEUED.value,
                group_labels=group["labels"],
                alarm_ids=[a["alarm_id"] for a in message],
                firing=len(firing),
                resolved=len(resolved),
                subject=subject,
                payload=payload,
                attempts=0,
                max_attempts=channel["max_attempts"],
                last_error=None,
                attempt_log=[],
                due_at=now,
                delivered_at=None,
                created_at=now,
                updated_at=now,
            )
        )
        if firing:
            await conn.execute(
                notification_alerts.update()
                .where(notification_alerts.c.pk.in_([a["pk"] for a in firing]))
                .values(sent_status="firing")
            )
        last_sent = now
    # A resolution is told once (or never, when silenced or never notified as firing).
    await conn.execute(
        notification_alerts.delete().where(
            notification_alerts.c.group_pk == group_pk, notification_alerts.c.status != "firing"
        )
    )
    still_firing = [a for a in alerts if a["status"] == "firing"]
    if not still_firing:
        await conn.execute(notification_groups.delete().where(where_group))
        return notification_id
    interval = timedelta(seconds=channel["group_interval_s"])
    next_at = (last_sent + repeat_s) if last_sent is not None else now + interval
    if len(firing) < len(still_firing):
        next_at = min(next_at, now + interval)  # silenced alerts: look again when it may end
    await conn.execute(
        notification_groups.update()
        .where(where_group)
        .values(next_flush_at=next_at, last_sent_at=last_sent)
    )
    return notification_id
