"""Device presence: online/offline from sessions and heartbeats, clock skew, fleet summary.

Rules (pure, in :mod:`roost.presence.rules`): a device is **online** while it holds an MQTT or
WebSocket connection, or while it was heard from on any door within ``missed`` heartbeat
intervals (``ROOST_PRESENCE_MISSED_HEARTBEATS``, 3 by default; the interval is the device's
``heartbeat_interval_s``, else its model's, else 60 s). It turns **offline** when its last
connection closes, or when that silence has passed; **never_seen** until first heard from.

How it runs, cheaply at tens of thousands of messages per second:

* every message only notes ``device → receive time`` in memory (:meth:`PresenceService.activity`;
  the ingest service, the device HTTP routes and the MQTT route handlers call it);
* every ``ROOST_PRESENCE_CHECK_S`` (1 s) one pass saves, in bulk, the times that need saving
  (``last_seen_at``, and ``offline_due_at`` = last seen + the device's grace): a device's row is
  written when it was not saved yet, when its stored offline time comes within a refresh margin,
  or at least every 30 s — so a fleet talking all the time costs a few row writes a second. The
  pass turns silent-then-heard devices online and devices whose ``offline_due_at`` passed offline
  (conditional ``UPDATE``\\ s, so with several processes each change happens, and is announced,
  exactly once; a process that heard the device meanwhile saves it instead);

* connections are counted on the device row as they open and close.

Every change is kept in ``presence_history`` and announced on the bus (subject
``roost.presence.changed``: ``{tenant_id, device_id, status, previous, at, reason}``) for alarms
and the console. Clock skew is the median of sampled ``device time − receive time`` (one sample
per device per :data:`SKEW_SAMPLE_S`), saved with the last-seen time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from roost.core import metrics
from roost.core.access import Actor, Role
from roost.core.context import ServiceDeps
from roost.core.device_identity import DeviceIdentity
from roost.errors import NotFound
from roost.inventory.devices.query import DeviceQuery
from roost.inventory.devices.service import DeviceService
from roost.inventory.tables import device_models, devices
from roost.presence.rules import SkewEstimator, effective_policy
from roost.presence.tables import presence_history
from roost.store.metadata import UTCDateTime
from roost.store.queries import Page, PageRequest
from roost.telemetry.rules import ItemError, item_timestamp

log = logging.getLogger(__name__)

PRESENCE_SUBJECT: Final = "roost.presence.changed"
TIMER: Final = "presence"
#: One clock-skew sample per device per this many seconds (parsing a timestamp costs).
SKEW_SAMPLE_S: Final = 10.0
_SKEW_SAMPLE_NS: Final = int(SKEW_SAMPLE_S * 1e9)
#: Devices whose times are saved per statement.
_CHUNK: Final = 500
STATUSES: Final = ("online", "offline", "never_seen")
MAX_SKEW_MS: Final = 2**31 - 1
#: A device's stored last-seen time is refreshed at least this often while it is heard.
LAST_SEEN_STALENESS_S: Final = 30.0


@dataclass(frozen=True, slots=True)
class Change:
    """One presence change, as kept in history and announced."""

    device_pk: int
    tenant_id: str
    device_id: str
    status: str
    previous: str
    at: datetime
    reason: str


class PresenceService:
    """Presence of every device (see the module docstring)."""

    def __init__(self, deps: ServiceDeps, devices: DeviceService) -> None:
        self.deps = deps
        self.devices = devices
        self.db = deps.db
        self.missed = deps.settings.presence_missed_heartbeats
        self._seen: dict[int, int] = {}  # device pk → last receive time (ns), not yet saved
        self._sampled: dict[int, int] = {}  # device pk → when skew was last sampled (ns)
        self._skews: dict[int, SkewEstimator] = {}
        self._skew_dirty: set[int] = set()
        # Connections opened (+) and closed (-) since the last sweep, per device, with who it
        # is and when the last change happened.
        self._connections: dict[int, tuple[int, str, str, datetime]] = {}
        # What this process last saved per device: (last seen, offline due), epoch seconds.
        self._saved: dict[int, tuple[float, float]] = {}
        # A heard device's row is saved again once its stored offline time is this close: more
        # than a sweep away, so that no other process's sweep finds it due meanwhile.
        self.refresh_margin_s = max(2.0, 2 * deps.settings.presence_check_s)
        self._started = False

    # -- feeding ------------------------------------------------------------------------------

    def activity(self, device_pk: int, recv_ns: int, items: Sequence[Any] = ()) -> None:
        """The device was heard from at ``recv_ns``; ``items`` (telemetry) may carry its clock."""
        self._seen[device_pk] = recv_ns
        if items and recv_ns - self._sampled.get(device_pk, 0) >= _SKEW_SAMPLE_NS:
            self._sampled[device_pk] = recv_ns
            # The newest item of a batch sent in time order: a batch that carries hours of
            # stored points would otherwise read its oldest point as the device's clock.
            item = items[-1]
            if isinstance(item, dict):
                try:
                    device_ns = item_timestamp(item, -1)
                except (ItemError, TypeError, ValueError):
                    return
                if device_ns > 0:
                    estimator = self._skews.get(device_pk)
                    if estimator is None:
                        estimator = self._skews[device_pk] = SkewEstimator()
                    estimator.add(device_ns / 1e9, recv_ns / 1e9)
                    self._skew_dirty.add(device_pk)

    def seen(self, identity: DeviceIdentity) -> None:
        """The device called a door (HTTP request, MQTT state/command/job message) just now."""
        self.activity(identity.device_pk, self._now_ns())

    async def connection(self, identity: DeviceIdentity, up: bool) -> None:
        """A device's first connection in this process opened (``up``), or its last one closed.

        Only noted here; the next sweep (woken at once) saves every change noted meanwhile in
        one transaction, so a reconnect storm of thousands of devices costs a few commits.
        """
        pk = identity.device_pk
        now = self._now()
        delta, _, _, _ = self._connections.get(pk, (0, "", "", now))
        self._connections[pk] = (
            delta + (1 if up else -1),
            identity.tenant_id,
            identity.device_id,
            now,
        )
        self._saved.pop(pk, None)  # the sweep saves its row afresh
        if not up:
            # What it sent before leaving must not make it online again after the disconnect.
            self._seen.pop(pk, None)
        if self._started:
            self.deps.scheduler.wake(TIMER)

    async def _save_connections(self) -> list[Change]:
        pending, self._connections = self._connections, {}
        if not pending:
            return []
        changes: list[Change] = []
        try:
            async with self.db.write() as conn:
                pks = list(pending)
                rows: dict[int, Any] = {}
                for start in range(0, len(pks), _CHUNK):
                    chunk = pks[start : start + _CHUNK]
                    for found in await conn.execute(
                        sa.select(devices.c.pk, devices.c.presence, devices.c.connections).where(
                            devices.c.pk.in_(chunk)
                        )
                    ):
                        rows[found.pk] = found
                updates = []
                for pk, (delta, tenant_id, device_id, at) in pending.items():
                    row = rows.get(pk)
                    if row is None:
                        continue  # deleted meanwhile
                    count = max(0, row.connections + delta)
                    status = "online" if count > 0 else ("offline" if delta < 0 else row.presence)
                    since = at if status != row.presence else None
                    updates.append(
                        {"b_pk": pk, "b_count": count, "b_at": at, "b_status": status,
                         "b_since": since}
                    )  # fmt: skip
                    if status != row.presence:
                        reason = "connected" if count > 0 else "disconnected"
                        changes.append(
                            Change(pk, tenant_id, device_id, status, row.presence, at, reason)
                        )
                if updates:
                    await conn.execute(
                        sa.update(devices)
                        .where(devices.c.pk == sa.bindparam("b_pk"))
                        .values(
                            connections=sa.bindparam("b_count"),
                            last_seen_at=sa.bindparam("b_at"),
                            offline_due_at=None,
                            presence=sa.bindparam("b_status"),
                            presence_since=sa.func.coalesce(
                                sa.bindparam("b_since", type_=UTCDateTime()),
                                devices.c.presence_since,
                            ),
                        ),
                        updates,
                    )
                if changes:
                    await self._record(conn, changes)
        except Exception:
            for pk, entry in pending.items():  # keep them for the next pass
                newer = self._connections.get(pk)
                self._connections[pk] = (
                    entry if newer is None else (entry[0] + newer[0], *newer[1:])
                )
            raise
        return changes

    # -- running ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Follow connections, start the sweeper; embedded mode first forgets old connections."""
        metrics.table_gauge("roost_devices", "Devices by presence", self.db, devices.c.presence)
        self.deps.link.on_connection(self.connection)
        self.deps.link.on_activity(self.seen)
        if not self.deps.settings.resolved_database_url.startswith("postgres") or (
            self.deps.settings.bus_url.startswith("memory")
        ):
            await self._forget_connections()
        self.deps.scheduler.every(TIMER, self.deps.settings.presence_check_s, self.sweep)
        self._started = True

    async def close(self) -> None:
        """Save what is pending."""
        if self._started:
            try:
                await self._save_connections()
                await self._flush()
            except Exception as exc:
                log.warning("could not save last-seen times at shutdown: %s", exc)

    async def _forget_connections(self) -> None:
        """After a restart no connection is live: devices counted connected get their grace."""
        now = self._now()
        async with self.db.write() as conn:
            rows = (
                await conn.execute(sa.select(devices.c.pk).where(devices.c.connections > 0))
            ).all()
            if not rows:
                return
            graces = await self._graces(conn, [r.pk for r in rows])
            await conn.execute(
                sa.update(devices)
                .where(devices.c.pk == sa.bindparam("b_pk"))
                .values(connections=0, offline_due_at=sa.bindparam("b_due")),
                [{"b_pk": pk, "b_due": now + timedelta(seconds=g)} for pk, g in graces.items()],
            )

    async def sweep(self) -> float | None:
        """One pass: save connections and last-seen times, turn heard devices online and silent
        ones offline."""
        changes = await self._save_connections()
        changes += await self._flush()
        changes += await self._expire()
        if changes:
            await self._announce(changes)
        return None

    async def _flush(self) -> list[Change]:
        heard, self._seen = self._seen, {}
        dirty, self._skew_dirty = self._skew_dirty, set()
        if not heard and not dirty:
            return []
        # Only rows that need it are written: a device not saved yet, one whose stored offline
        # time comes within the refresh margin, or whose stored last-seen time is getting old.
        # The others stay noted (and protect the device from _expire in this process), so a
        # fleet talking all the time costs a few row writes a second, not one per device.
        now_s = self._now().timestamp()
        seen: dict[int, int] = {}
        for pk, ns in heard.items():
            saved = self._saved.get(pk)
            if (
                saved is None
                or now_s >= saved[1] - self.refresh_margin_s
                or ns / 1e9 - saved[0] >= LAST_SEEN_STALENESS_S
            ):
                seen[pk] = ns
            else:
                self._seen.setdefault(pk, ns)
        if not seen and not dirty:
            return []
        changes: list[Change] = []
        pks = sorted(seen)
        try:
            async with self.db.write() as conn:
                for start in range(0, len(pks), _CHUNK):
                    chunk = pks[start : start + _CHUNK]
                    changes += await self._save_seen(conn, {pk: seen[pk] for pk in chunk})
                if dirty:
                    await self._save_skews(conn, dirty)
        except Exception:
            # Keep the times for the next pass (newer ones win).
            for pk, ns in seen.items():
                self._saved.pop(pk, None)
                if self._seen.get(pk, 0) < ns:
                    self._seen[pk] = ns
            self._skew_dirty |= dirty
            raise
        return changes

    async def _save_seen(self, conn: AsyncConnection, seen: dict[int, int]) -> list[Change]:
        graces = await self._graces(conn, list(seen))
        rows = []
        by_pk: dict[int, datetime] = {}
        for pk, grace in graces.items():
            at = by_pk[pk] = datetime.fromtimestamp(seen[pk] / 1e9, UTC)
            rows.append({"b_pk": pk, "b_at": at, "b_due": at + timedelta(seconds=grace)})
            self._saved[pk] = (at.timestamp(), at.timestamp() + grace)
        if not rows:
            return []
        # Silent-then-heard devices (offline or never seen, no connection) come online.
        back = (
            await conn.execute(
                sa.select(devices.c.pk, devices.c.tenant_id, devices.c.id, devices.c.presence)
                .where(devices.c.pk.in_(list(graces)))
                .where(devices.c.presence != "online")
            )
        ).all()
        await conn.execute(
            sa.update(devices)
            .where(devices.c.pk == sa.bindparam("b_pk"))
            .where(
                sa.or_(
                    devices.c.last_seen_at.is_(None), devices.c.last_seen_at <= sa.bindparam("b_at")
                )
            )
            .values(last_seen_at=sa.bindparam("b_at"), offline_due_at=sa.bindparam("b_due")),
            rows,
        )
        if not back:
            return []
        changes = [
            Change(r.pk, r.tenant_id, r.id, "online", r.presence, by_pk[r.pk], "message")
            for r in back
        ]
        await conn.execute(
            sa.update(devices)
            .where(devices.c.pk == sa.bindparam("b_pk"))
            .where(devices.c.presence != "online")
            .values(presence="online", presence_since=sa.bindparam("b_at")),
            [{"b_pk": c.device_pk, "b_at": c.at} for c in changes],
        )
        await self._record(conn, changes)
        return changes

    async def _save_skews(self, conn: AsyncConnection, pks: Iterable[int]) -> None:
        rows = []
        for pk in pks:
            estimator = self._skews.get(pk)
            skew = estimator.skew_s if estimator is not None else None
            if skew is not None:
                # Beyond the column's range (±24.8 days) the clock is not "skewed" but unknown (a
                # reset clock, or a device replaying old data): shown as null, not a clamped value.
                skew_ms: int | None = round(skew * 1000)
                if skew_ms is not None and abs(skew_ms) > MAX_SKEW_MS:
                    skew_ms = None
                rows.append({"b_pk": pk, "b_skew": skew_ms})
        if rows:
            await conn.execute(
                sa.update(devices)
                .where(devices.c.pk == sa.bindparam("b_pk"))
                .values(clock_skew_ms=sa.bindparam("b_skew")),
                rows,
            )

    async def _expire(self) -> list[Change]:
        """Devices silent past their grace, with no connection, turn offline."""
        now = self._now()
        due = (
            devices.c.offline_due_at.is_not(None)
            & (devices.c.offline_due_at <= now)
            & (devices.c.presence == "online")
            & (devices.c.connections == 0)
        )
        select = sa.select(
            devices.c.pk, devices.c.tenant_id, devices.c.id, devices.c.offline_due_at
        ).where(due)
        # Read first: most passes find nothing, and need not queue for the write lock.
        async with self.db.read() as conn:
            if (await conn.execute(select.limit(1))).first() is None:
                return []
        async with self.db.write() as conn:
            # A device heard here since its row was saved is not silent: its next flush
            # saves it (this process knows better than the row).
            rows = [r for r in (await conn.execute(select)).all() if r.pk not in self._seen]
            if not rows:
                return []
            for row in rows:
                self._saved.pop(row.pk, None)
            await conn.execute(
                sa.update(devices)
                .where(devices.c.pk.in_([r.pk for r in rows]))
                .where(due)
                .values(presence="offline", presence_since=devices.c.offline_due_at)
            )
            changes = [
                Change(r.pk, r.tenant_id, r.id, "offline", "online", r.offline_due_at,
                       "missed heartbeats")
                for r in rows
            ]  # fmt: skip
            await self._record(conn, changes)
        return changes

    async def _graces(self, conn: AsyncConnection, pks: Sequence[int]) -> dict[int, float]:
        """Seconds of silence after which each device is offline (per device or model)."""
        model_interval = device_models.c.heartbeat_interval_s
        stmt = (
            sa.select(devices.c.pk, devices.c.heartbeat_interval_s, model_interval)
            .select_from(
                devices.outerjoin(
                    device_models,
                    (device_models.c.tenant_id == devices.c.tenant_id)
                    & (device_models.c.id == devices.c.model_id),
                )
            )
            .where(devices.c.pk.in_(list(pks)))
        )
        rows = (await conn.execute(stmt)).all()
        return {row[0]: effective_policy(row[2], row[1], self.missed).grace_s for row in rows}

    async def _record(self, conn: AsyncConnection, changes: Sequence[Change]) -> None:
        await conn.execute(
            sa.insert(presence_history),
            [
                {"device_pk": c.device_pk, "at": c.at, "status": c.status, "reason": c.reason}
                for c in changes
            ],
        )

    async def _announce(self, changes: Sequence[Change]) -> None:
        for change in changes:
            # One line per device going on- or offline: a fleet's churn, not an operator's news.
            log.debug(
                "device %s/%s is %s (%s)",
                change.tenant_id,
                change.device_id,
                change.status,
                change.reason,
            )
            data = orjson.dumps(
                {
                    "tenant_id": change.tenant_id,
                    "device_id": change.device_id,
                    "status": change.status,
                    "previous": change.previous,
                    "at": change.at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
                    "reason": change.reason,
                }
            )
            try:
                await self.deps.bus.publish(PRESENCE_SUBJECT, data)
            except Exception as exc:  # kept in history; only live listeners miss it
                log.warning("could not announce a presence change: %s", exc)

    # -- reading ------------------------------------------------------------------------------

    async def _device(self, conn: AsyncConnection, actor: Actor, device_id: str) -> Any:
        row = (
            await conn.execute(
                sa.select(devices).where(
                    (devices.c.tenant_id == actor.tenant_id) & (devices.c.id == device_id)
                )
            )
        ).first()
        if row is None:
            raise NotFound(f"device {device_id!r} not found")
        return row

    async def get(self, actor: Actor, device_id: str) -> dict[str, Any]:
        """A device's presence: status, since, last seen, heartbeat policy, clock skew."""
        actor.require(Role.VIEWER)
        async with self.db.read() as conn:
            row = await self._device(conn, actor, device_id)
            model_interval = None
            if row.model_id is not None:
                model_interval = (
                    await conn.execute(
                        sa.select(device_models.c.heartbeat_interval_s).where(
                            (device_models.c.tenant_id == actor.tenant_id)
                            & (device_models.c.id == row.model_id)
                        )
                    )
                ).scalar()
        policy = effective_policy(model_interval, row.heartbeat_interval_s, self.missed)
        pending = self._seen.get(row.pk)
        last_seen = row.last_seen_at
        status, since = row.presence, row.presence_since
        if pending is not None:
            pending_at = datetime.fromtimestamp(pending / 1e9, UTC)
            if last_seen is None or pending_at > last_seen:
                last_seen = pending_at
            if status != "online" and (since is None or pending_at > since):
                # Heard after the stored status was set: online, though the next sweep (within a
                # second) is what records it; never "never seen" with a last-seen time.
                status, since = "online", pending_at
        return {
            "device_id": row.id,
            "status": status,
            "since": since,
            "last_seen_at": last_seen,
            "connected": row.connections > 0,
            "heartbeat_interval_s": policy.interval_s,
            "missed_heartbeats": policy.missed,
            "offline_after_s": policy.grace_s,
            "clock_skew_ms": row.clock_skew_ms,
        }

    async def history(
        self,
        actor: Actor,
        device_id: str,
        page: PageRequest,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Page[dict[str, Any]]:
        """The device's presence changes, newest first."""
        actor.require(Role.VIEWER)
        async with self.db.read() as conn:
            row = await self._device(conn, actor, device_id)
            where = presence_history.c.device_pk == row.pk
            if since is not None:
                where &= presence_history.c.at >= since
            if until is not None:
                where &= presence_history.c.at < until
            total = (
                await conn.execute(
                    sa.select(sa.func.count()).select_from(presence_history).where(where)
                )
            ).scalar_one()
            rows = (
                await conn.execute(
                    sa.select(
                        presence_history.c.at, presence_history.c.status, presence_history.c.reason
                    )
                    .where(where)
                    .order_by(presence_history.c.at.desc(), presence_history.c.id.desc())
                    .limit(page.limit)
                    .offset(page.offset)
                )
            ).all()
        items = [{"at": r.at, "status": r.status, "reason": r.reason} for r in rows]
        return Page(items, total, page.limit, page.offset)

    async def summary(self, actor: Actor, query: DeviceQuery = DeviceQuery()) -> dict[str, Any]:
        """Device counts by status, and by status within each site, model and firmware."""
        actor.require(Role.VIEWER)
        async with self.db.read() as conn:
            where = await self.devices.condition(conn, actor.tenant_id, query)
            out: dict[str, Any] = {"total": 0, "by_status": dict.fromkeys(STATUSES, 0)}
            for column, key in (
                (devices.c.site_id, "by_site"),
                (devices.c.model_id, "by_model"),
                (devices.c.firmware_id, "by_firmware"),
            ):
                rows = (
                    await conn.execute(
                        sa.select(column, devices.c.presence, sa.func.count())
                        .where(where)
                        .group_by(column, devices.c.presence)
                    )
                ).all()
                buckets: dict[Any, dict[str, Any]] = {}
                for value, status, count in rows:
                    bucket = buckets.get(value)
                    if bucket is None:
                        bucket = buckets[value] = {
                            column.name: value,
                            "total": 0,
                            **dict.fromkeys(STATUSES, 0),
                        }
                    bucket["total"] += count
                    bucket[status] = bucket.get(status, 0) + count
                    if key == "by_site":
                        out["total"] += count
                        out["by_status"][status] = out["by_status"].get(status, 0) + count
                out[key] = sorted(
                    buckets.values(), key=lambda b: (b[column.name] is None, b[column.name] or "")
                )
        return out

    async def recently_offline(
        self, actor: Actor, since: datetime, page: PageRequest
    ) -> Page[dict[str, Any]]:
        """Devices offline now that went offline at or after ``since``, the latest first."""
        actor.require(Role.VIEWER)
        where = (
            (devices.c.tenant_id == actor.tenant_id)
            & (devices.c.presence == "offline")
            & (devices.c.presence_since >= since)
        )
        async with self.db.read() as conn:
            total = (
                await conn.execute(sa.select(sa.func.count()).select_from(devices).where(where))
            ).scalar_one()
            rows = (
                await conn.execute(
                    sa.select(
                        devices.c.id,
                        devices.c.name,
                        devices.c.site_id,
                        devices.c.model_id,
                        devices.c.presence_since,
                        devices.c.last_seen_at,
                    )  # fmt: skip
                    .where(where)
                    .order_by(devices.c.presence_since.desc(), devices.c.id)
                    .limit(page.limit)
                    .offset(page.offset)
                )
            ).all()
        items = [
            {"device_id": r.id, "name": r.name, "site_id": r.site_id, "model_id": r.model_id,
             "offline_since": r.presence_since, "last_seen_at": r.last_seen_at}
            for r in rows
        ]  # fmt: skip
        return Page(items, total, page.limit, page.offset)

    # -- helpers ------------------------------------------------------------------------------

    def _now(self) -> datetime:
        return self.deps.clock()

    def _now_ns(self) -> int:
        return int(self.deps.clock().timestamp() * 1e9)
