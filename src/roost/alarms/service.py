"""Alarms: one open alarm per (device, type), raised and cleared by rules, acknowledged and
cleared by people.

The rules engine raises and clears inside its own transaction (:meth:`AlarmService.raise_in`,
:meth:`AlarmService.clear_in`), so an alarm change commits together with the rule state that
caused it. People list, acknowledge and clear through the API (audited). Every change is announced
on the bus (``roost.alarms.changed``) for the live alarm stream; cleared alarms are kept for
``ROOST_ALARM_RETENTION_DAYS``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from roost.alarms.rules.model import SEVERITIES
from roost.alarms.tables import alarms
from roost.alarms.writes import AlarmOp, apply_ops
from roost.audit import service as audit
from roost.core import metrics
from roost.core.access import Actor, Role
from roost.core.context import ServiceDeps
from roost.errors import Conflict, InvalidInput, NotFound
from roost.store.queries import Page, PageRequest, as_dicts, fetch_one, order_by, text_match

log = logging.getLogger(__name__)

ALARMS_SUBJECT: Final = "roost.alarms.changed"
TIMER: Final = "alarm-retention"
#: Cleared alarms deleted per statement by the retention pass (keeps each transaction short).
_PRUNE_CHUNK: Final = 5000
SORTS: Final = ("started_at", "last_at", "ended_at", "severity", "device_id", "type", "count", "id")
STATUSES: Final = ("active", "cleared")
_RANK: Final = {name: i for i, name in enumerate(SEVERITIES)}  # critical = 0

_ALARMS_CHANGED = metrics.tally(
    "roost_alarm_changes", "Alarm changes, by what happened", ("change",)
)


@dataclass(frozen=True, slots=True)
class AlarmChange:
    """One alarm change, announced after its commit."""

    tenant_id: str
    alarm: dict[str, Any]
    change: str  # raised | repeated | acknowledged | cleared


def alarm_out(row: dict[str, Any]) -> dict[str, Any]:
    """An alarm as the API answers it."""
    return {
        "id": row["id"],
        "type": row["type"],
        "device_id": row["device_id"],
        "rule_id": row["rule_id"],
        "severity": row["severity"],
        "status": row["status"],
        "acknowledged": row["acknowledged"],
        "acked_by": row["acked_by"],
        "acked_at": row["acked_at"],
        "cleared_by": row["cleared_by"],
        "summary": row["summary"],
        "details": row["details"] or {},
        "count": row["count"],
        "started_at": row["started_at"],
        "last_at": row["last_at"],
        "ended_at": row["ended_at"],
    }


class AlarmService:
    """Alarms of every tenant (see the module docstring)."""

    def __init__(self, deps: ServiceDeps) -> None:
        self.deps = deps
        self.db = deps.db
        self.retention = timedelta(days=deps.settings.alarm_retention_days)
        metrics.gauge_source(
            "roost_alarms_active",
            "Active alarms by severity (as of the last change this process saw)",
            ("severity",),
            self,
            lambda service: {(s,): n for s, n in service._active.items()},
        )
        self._active: dict[str, int] = dict.fromkeys(SEVERITIES, 0)

    async def start(self) -> None:
        """Count active alarms for the gauge; prune old ones periodically."""
        await self._recount()
        self.deps.scheduler.every(TIMER, 3600.0, self._prune_pass)

    async def close(self) -> None:
        """Nothing to stop (the scheduler stops the pass)."""

    # -- the engine's side (inside its transaction) -------------------------------------------

    async def apply_in(
        self, conn: AsyncConnection, ops: Sequence[AlarmOp]
    ) -> list[AlarmChange | None]:
        """Raise and clear alarms in order inside the caller's transaction (a few statements
        for any number, :mod:`roost.alarms.writes`); one change per op (None: nothing to clear)."""
        return [
            None if r.change is None or r.alarm is None
            else AlarmChange(r.alarm["tenant_id"], r.alarm, r.change)
            for r in await apply_ops(conn, ops)
        ]  # fmt: skip

    async def raise_in(
        self,
        conn: AsyncConnection,
        *,
        tenant_id: str,
        device_pk: int,
        device_id: str,
        type: str,
        severity: str,
        rule_id: str | None,
        summary: str,
        details: dict[str, Any],
        now: datetime,
    ) -> AlarmChange:
        """Open an alarm, or count a repeat of the open one of this device and type."""
        op = AlarmOp(
            "raise", tenant_id, device_pk, device_id, type, now, severity=severity,
            rule_id=rule_id, summary=summary, details=details,
        )  # fmt: skip
        (change,) = await self.apply_in(conn, [op])
        assert change is not None
        return change

    async def clear_in(
        self,
        conn: AsyncConnection,
        *,
        tenant_id: str,
        device_pk: int,
        type: str,
        now: datetime,
        by: str | None = None,
    ) -> AlarmChange | None:
        """Clear the open alarm of this device and type (None when there is none)."""
        op = AlarmOp("clear", tenant_id, device_pk, "", type, now, by=by)
        return (await self.apply_in(conn, [op]))[0]

    async def _clear_row(
        self, conn: AsyncConnection, row: dict[str, Any], now: datetime, by: str | None
    ) -> AlarmChange:
        values = {"status": "cleared", "open_key": None, "ended_at": now, "cleared_by": by}
        await conn.execute(alarms.update().where(alarms.c.id == row["id"]).values(**values))
        return AlarmChange(row["tenant_id"], {**row, **values}, "cleared")

    async def announce(self, changes: Sequence[AlarmChange]) -> None:
        """After the commit: count, update the gauge and tell live readers."""
        for change in changes:
            _ALARMS_CHANGED.inc((change.change,))
            severity = change.alarm["severity"]
            if change.change == "raised":
                self._active[severity] = self._active.get(severity, 0) + 1
            elif change.change == "cleared":
                self._active[severity] = max(0, self._active.get(severity, 0) - 1)
            data = orjson.dumps(
                {
                    "tenant_id": change.tenant_id,
                    "change": change.change,
                    "alarm": alarm_out(change.alarm),
                }
            )
            try:
                await self.deps.bus.publish(ALARMS_SUBJECT, data)
            except Exception as exc:  # the alarm is stored; only live readers miss the news
                log.warning("could not announce an alarm change: %s", exc)

    # -- people's side ------------------------------------------------------------------------

    async def list(
        self,
        actor: Actor,
        page: PageRequest,
        *,
        status: Sequence[str] = (),
        severity: Sequence[str] = (),
        device_id: str | None = None,
        type: str | None = None,
        rule_id: str | None = None,
        acknowledged: bool | None = None,
        q: str | None = None,
    ) -> Page[dict[str, Any]]:
        """Alarms of the actor's tenant, filtered and sorted (newest first by default)."""
        actor.require(Role.VIEWER)
        for name, given, allowed in (
            ("status", status, STATUSES),
            ("severity", severity, SEVERITIES),
        ):
            bad = [v for v in given if v not in allowed]
            if bad:
                raise InvalidInput(f"{name} must be one of {', '.join(allowed)}, not {bad[0]!r}")
        where: list[sa.ColumnElement[bool]] = [alarms.c.tenant_id == actor.tenant_id]
        if status:
            where.append(alarms.c.status.in_(list(status)))
        if severity:
            where.append(alarms.c.severity.in_(list(severity)))
        for column, value in (
            (alarms.c.device_id, device_id),
            (alarms.c.type, type),
            (alarms.c.rule_id, rule_id),
        ):
            if value is not None:
                where.append(column == value)
        if acknowledged is not None:
            where.append(alarms.c.acknowledged == acknowledged)
        if q:
            where.append(text_match([alarms.c.device_id, alarms.c.type, alarms.c.summary], q))
        condition = sa.and_(*where)
        sort = page.sort or "-started_at"
        if sort.lstrip("-") == "severity":
            # By gravity, not by name: critical first for "severity".
            rank = sa.case(
                *((alarms.c.severity == s, i) for s, i in _RANK.items()), else_=len(_RANK)
            )
            orders: list[Any] = [rank.desc() if sort.startswith("-") else rank, alarms.c.id.desc()]
        else:
            orders = list(order_by(alarms, sort, SORTS, default="-started_at"))
        async with self.db.read() as conn:
            total = (
                await conn.execute(sa.select(sa.func.count()).select_from(alarms).where(condition))
            ).scalar_one()
            rows = as_dicts(
                await conn.execute(
                    sa.select(alarms)
                    .where(condition)
                    .order_by(*orders)
                    .limit(page.limit)
                    .offset(page.offset)
                )
            )
        return Page([alarm_out(r) for r in rows], total, page.limit, page.offset)

    async def _row(self, conn: AsyncConnection, actor: Actor, alarm_id: int) -> dict[str, Any]:
        row = await fetch_one(
            conn,
            sa.select(alarms).where(alarms.c.tenant_id == actor.tenant_id, alarms.c.id == alarm_id),
        )
        if row is None:
            raise NotFound(f"no alarm {alarm_id}")
        return row

    async def get(self, actor: Actor, alarm_id: int) -> dict[str, Any]:
        """One alarm."""
        actor.require(Role.VIEWER)
        async with self.db.read() as conn:
            return alarm_out(await self._row(conn, actor, alarm_id))

    async def acknowledge(self, actor: Actor, alarm_id: int) -> dict[str, Any]:
        """Acknowledge an alarm (someone is on it); 409 when it already is."""
        actor.require(Role.OPERATOR)
        now = self.deps.clock()
        async with self.db.write() as conn:
            row = await self._row(conn, actor, alarm_id)
            if row["acknowledged"]:
                raise Conflict(f"alarm {alarm_id} was acknowledged by {row['acked_by']}")
            values = {"acknowledged": True, "acked_by": actor.name, "acked_at": now}
            await conn.execute(alarms.update().where(alarms.c.id == alarm_id).values(**values))
            await audit.record(
                conn, actor, "acknowledge", "alarm", str(alarm_id), before=alarm_out(row),
                after=values, device_id=row["device_id"], at=now,
            )  # fmt: skip
        change = AlarmChange(actor.tenant_id, {**row, **values}, "acknowledged")
        await self.announce([change])
        return alarm_out(change.alarm)

    async def clear(self, actor: Actor, alarm_id: int) -> dict[str, Any]:
        """Clear an active alarm by hand; 409 when it is cleared already."""
        actor.require(Role.OPERATOR)
        now = self.deps.clock()
        async with self.db.write() as conn:
            row = await self._row(conn, actor, alarm_id)
            if row["status"] != "active":
                raise Conflict(f"alarm {alarm_id} is cleared already")
            change = await self._clear_row(conn, row, now, actor.name)
            await audit.record(
                conn, actor, "clear", "alarm", str(alarm_id), before=alarm_out(row),
                after={"status": "cleared", "cleared_by": actor.name}, device_id=row["device_id"],
                at=now,
            )  # fmt: skip
        await self.announce([change])
        return alarm_out(change.alarm)

    async def counts(self, actor: Actor) -> dict[str, Any]:
        """Active alarms by severity, and how many of them nobody acknowledged."""
        actor.require(Role.VIEWER)
        async with self.db.read() as conn:
            rows = (
                await conn.execute(
                    sa.select(alarms.c.severity, alarms.c.acknowledged, sa.func.count())
                    .where(alarms.c.tenant_id == actor.tenant_id, alarms.c.status == "active")
                    .group_by(alarms.c.severity, alarms.c.acknowledged)
                )
            ).all()
        by_severity = dict.fromkeys(SEVERITIES, 0)
        unacknowledged = 0
        for severity, acknowledged, count in rows:
            by_severity[severity] = by_severity.get(severity, 0) + count
            if not acknowledged:
                unacknowledged += count
        return {
            "active": sum(by_severity.values()),
            "unacknowledged": unacknowledged,
            "by_severity": by_severity,
        }

    # -- upkeep -------------------------------------------------------------------------------

    async def _recount(self) -> None:
        async with self.db.read() as conn:
            rows = (
                await conn.execute(
                    sa.select(alarms.c.severity, sa.func.count())
                    .where(alarms.c.status == "active")
                    .group_by(alarms.c.severity)
                )
            ).all()
        self._active = dict.fromkeys(SEVERITIES, 0) | {s: n for s, n in rows}

    async def prune(self) -> int:
        """Delete alarms cleared longer ago than the retention; answer how many."""
        cutoff = self.deps.clock() - self.retention
        removed = 0
        while True:
            async with self.db.write() as conn:
                ids = [
                    r[0]
                    for r in await conn.execute(
                        sa.select(alarms.c.id)
                        .where(alarms.c.status == "cleared", alarms.c.ended_at < cutoff)
                        .limit(_PRUNE_CHUNK)
                    )
                ]
                if ids:
                    await conn.execute(alarms.delete().where(alarms.c.id.in_(ids)))
            removed += len(ids)
            if len(ids) < _PRUNE_CHUNK:
                return removed

    async def _prune_pass(self) -> float | None:
        await self.prune()
        await self._recount()
        return None
