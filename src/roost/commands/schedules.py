"""Command schedules: a command fired once at a time, or at every event of a cron expression.

"Switch the alarm light on three hours before each event": ``cron: "0 18 * * 1-5"``,
``timezone: "Europe/Berlin"``, ``offset_s: -10800``. Each fire queues a command linked to the
schedule (``schedule_id``) and stores the next fire time in the row (``next_fire_at``), which a
scheduler pass reads, so schedules survive restarts; a fire missed while the server was down
happens once when it is back (its command carries the time it was due). The maths is
:mod:`roost.commands.cron`.

Devices mirror their own schedules (``GET /api/v1/device/command-schedules``,
:meth:`CommandScheduleService.for_device`) so that an agent keeps firing them while it is
offline. A fired command's ``schedule_at`` is the fire's due time, which the device receives as
``fire_at`` beside ``schedule_id``: the agent matches the command with the run it made offline
and answers with that run's result instead of running the fire twice.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from roost.audit import service as audit
from roost.commands.cron import (
    check_cron,
    check_offset,
    next_fire,
    parse_timezone,
    snoozed,
)
from roost.commands.rules import CommandRequest, check_name, check_params, check_timeout
from roost.commands.tables import command_schedules as schedules
from roost.core.access import Actor, Role
from roost.core.context import ServiceDeps
from roost.core.device_identity import DeviceIdentity
from roost.core.ids import generate_id
from roost.core.scheduler import earliest
from roost.errors import InvalidInput, NotFound
from roost.inventory.devices.registry import device_pk_of
from roost.inventory.tables import devices
from roost.store.queries import Page, PageRequest, as_dicts, fetch_one, fetch_page, order_by

if TYPE_CHECKING:
    from roost.commands.service import CommandService

log = logging.getLogger(__name__)

#: The scheduler's name for the pass over due schedules.
TIMER = "commands.schedules"
#: Schedules fired per pass transaction; a full batch runs the pass again at once.
BATCH = 100
#: Schedules a device mirrors at most (soonest first): far more than one device needs.
MAX_MIRRORED = 500
SORTS = ("created_at", "updated_at", "next_fire_at", "name", "id")
#: What a schedule's fields may be changed to with PATCH.
FIELDS = (
    "name", "params", "timeout_s", "expires_in_s", "cron", "timezone", "offset_s", "schedule_at",
    "enabled",
)  # fmt: skip
#: Changing one of these recomputes the next fire (which forgets a snooze).
TIMING = frozenset({"cron", "timezone", "offset_s", "schedule_at", "enabled"})


def schedule_out(row: Mapping[str, Any]) -> dict[str, Any]:
    """The API's view of a schedule row (joined with its device's id)."""
    return {
        "id": row["id"],
        "device_id": row["device_id"],
        "name": row["name"],
        "params": row["params"],
        "timeout_s": row["timeout_s"],
        "expires_in_s": row["expires_in_s"],
        "cron": row["cron"],
        "timezone": row["timezone"],
        "offset_s": row["offset_s"],
        "schedule_at": row["schedule_at"],
        "enabled": row["enabled"],
        "next_fire_at": row["next_fire_at"],
        "last_fired_at": row["last_fired_at"],
        "fire_count": row["fire_count"],
        "last_command_id": row["last_command_id"],
        "created_by": row["created_by"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def device_schedule_out(row: Mapping[str, Any]) -> dict[str, Any]:
    """What a device's agent mirrors of one of its schedules (enough to fire it offline)."""
    return {
        "id": row["id"],
        "name": row["name"],
        "params": row["params"],
        "timeout_s": row["timeout_s"],
        "cron": row["cron"],
        "timezone": row["timezone"],
        "offset_s": row["offset_s"],
        "schedule_at": row["schedule_at"],
        "next_fire_at": row["next_fire_at"],
        "snoozed": is_snoozed(row),
        "updated_at": row["updated_at"],
    }


def is_snoozed(row: Mapping[str, Any]) -> bool:
    """Whether the next fire was moved off the schedule's own rhythm (by a snooze)."""
    at: datetime | None = row["next_fire_at"]
    if at is None:
        return False
    if row["cron"] is None:
        return bool(at != row["schedule_at"])
    tz = parse_timezone(row["timezone"])
    return next_fire(row["cron"], tz, row["offset_s"], at - timedelta(seconds=1)) != at


def _select() -> sa.Select[Any]:
    return sa.select(schedules, devices.c.id.label("device_id")).join(
        devices, devices.c.pk == schedules.c.device_pk
    )


def check_schedule(values: Mapping[str, Any]) -> dict[str, Any]:
    """A whole schedule's fields, validated (cron or schedule_at; zone; offset; command)."""
    clean = dict(values)
    clean["name"] = check_name(values.get("name"))
    clean["params"] = check_params(values.get("params"))
    for field in ("timeout_s", "expires_in_s"):
        if values.get(field) is not None:
            clean[field] = check_timeout(values[field], field)
    clean["timezone"] = values.get("timezone") or "UTC"
    parse_timezone(clean["timezone"])
    offset = values.get("offset_s") or 0
    if isinstance(offset, bool) or not isinstance(offset, int):
        raise InvalidInput("offset_s must be a whole number of seconds")
    clean["offset_s"] = check_offset(offset)
    cron, at = values.get("cron"), values.get("schedule_at")
    if (cron is None) == (at is None):
        raise InvalidInput(
            'give either "cron" (recurring, e.g. "0 18 * * 1-5") or "schedule_at" (once)'
        )
    if cron is not None:
        if not isinstance(cron, str):
            raise InvalidInput("cron must be a string such as '0 18 * * 1-5'")
        clean["cron"] = check_cron(cron)
    if at is not None and (not isinstance(at, datetime) or at.tzinfo is None):
        raise InvalidInput("schedule_at must be a timestamp with a time zone")
    return clean


def first_fire(values: Mapping[str, Any], now: datetime, *, fired: bool) -> datetime | None:
    """The next fire of a schedule as configured (None: disabled, or a one-off that fired)."""
    if not values.get("enabled", True):
        return None
    if values.get("cron") is not None:
        tz = parse_timezone(values["timezone"])
        return next_fire(values["cron"], tz, values["offset_s"], now)
    at: datetime | None = values.get("schedule_at")
    return None if fired else at


class CommandScheduleService:
    """Schedules of commands (see the module docstring)."""

    def __init__(self, deps: ServiceDeps, commands: CommandService) -> None:
        self.deps = deps
        self.db = deps.db
        self.clock = deps.clock
        self.commands = commands

    def register(self, interval_s: float) -> None:
        """Start firing due schedules (server only)."""
        self.deps.scheduler.every(TIMER, interval_s, self.fire_due)

    # -- reading ------------------------------------------------------------------------------

    async def _row(self, conn: AsyncConnection, tenant_id: str, schedule_id: str) -> dict[str, Any]:
        row = await fetch_one(
            conn,
            _select().where(schedules.c.id == schedule_id, schedules.c.tenant_id == tenant_id),
        )
        if row is None:
            raise NotFound(f"no command schedule {schedule_id!r}")
        return row

    async def get(self, actor: Actor, schedule_id: str) -> dict[str, Any]:
        """One schedule of the actor's tenant."""
        actor.require(Role.VIEWER)
        async with self.db.read() as conn:
            return schedule_out(await self._row(conn, actor.tenant_id, schedule_id))

    async def list_schedules(
        self, actor: Actor, page: PageRequest, *, device_id: str | None = None
    ) -> Page[dict[str, Any]]:
        """A page of the tenant's schedules, or of one device's."""
        actor.require(Role.VIEWER)
        stmt = _select().where(schedules.c.tenant_id == actor.tenant_id)
        async with self.db.read() as conn:
            if device_id is not None:
                pk = await device_pk_of(conn, actor.tenant_id, device_id)
                stmt = stmt.where(schedules.c.device_pk == pk)
            rows, total = await fetch_page(
                conn, stmt, order_by(schedules, page.sort, SORTS, "created_at"), page
            )
        return Page([schedule_out(r) for r in rows], total, page.limit, page.offset)

    async def for_device(self, identity: DeviceIdentity) -> list[dict[str, Any]]:
        """The calling device's schedules that will fire (enabled, with a next fire), soonest
        first: what its agent mirrors to keep firing them offline."""
        stmt = (
            _select()
            .where(
                schedules.c.device_pk == identity.device_pk,
                schedules.c.enabled.is_(True),
                schedules.c.next_fire_at.is_not(None),
            )
            .order_by(schedules.c.next_fire_at, schedules.c.id)
            .limit(MAX_MIRRORED)
        )
        async with self.db.read() as conn:
            rows = as_dicts(await conn.execute(stmt))
        return [device_schedule_out(r) for r in rows]

    # -- writing ------------------------------------------------------------------------------

    async def create(self, actor: Actor, device_id: str, data: Mapping[str, Any]) -> dict[str, Any]:
        """Schedule a command for a device."""
        actor.require(Role.OPERATOR)
        now = self.clock()
        clean = check_schedule({"enabled": True, **data})
        values = {
            "id": generate_id("sch"),
            "tenant_id": actor.tenant_id,
            "name": clean["name"],
            "params": clean["params"],
            "timeout_s": clean.get("timeout_s"),
            "expires_in_s": clean.get("expires_in_s"),
            "cron": clean.get("cron"),
            "timezone": clean["timezone"],
            "offset_s": clean["offset_s"],
            "schedule_at": clean.get("schedule_at"),
            "enabled": bool(clean["enabled"]),
            "next_fire_at": first_fire(clean, now, fired=False),
            "last_fired_at": None,
            "fire_count": 0,
            "last_command_id": None,
            "created_by": actor.name,
            "created_at": now,
            "updated_at": now,
        }
        async with self.db.write() as conn:
            values["device_pk"] = await device_pk_of(conn, actor.tenant_id, device_id)
            await conn.execute(schedules.insert().values(**values))
            record = schedule_out({**values, "device_id": device_id})
            await audit.record(
                conn, actor, "create", "command_schedule", values["id"], after=record,
                device_id=device_id, at=now,
            )  # fmt: skip
        self.deps.scheduler.wake(TIMER)
        return record

    async def update(
        self, actor: Actor, schedule_id: str, changes: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Change a schedule; changing when it fires recomputes (and un-snoozes) the next fire."""
        actor.require(Role.OPERATOR)
        unknown = set(changes) - set(FIELDS)
        if unknown:
            raise InvalidInput(f"cannot change {', '.join(sorted(unknown))}")
        now = self.clock()
        async with self.db.write() as conn:
            row = await self._row(conn, actor.tenant_id, schedule_id)
            current = dict(row)
            # Setting one way of timing drops the other: a one-off becomes recurring, or back.
            if changes.get("cron") is not None and "schedule_at" not in changes:
                current["schedule_at"] = None
            if changes.get("schedule_at") is not None and "cron" not in changes:
                current["cron"] = None
            merged = check_schedule({**current, **changes})
            values = {f: merged.get(f) for f in FIELDS}
            values["enabled"] = bool(values["enabled"])
            if TIMING & set(changes):
                fired = row["fire_count"] > 0 and "schedule_at" not in changes
                values["next_fire_at"] = first_fire(merged, now, fired=fired)
            values["updated_at"] = now
            await conn.execute(
                schedules.update().where(schedules.c.id == schedule_id).values(**values)
            )
            after = schedule_out({**current, **values})
            await audit.record(
                conn, actor, "update", "command_schedule", schedule_id,
                before=schedule_out(row), after=after, device_id=row["device_id"], at=now,
            )  # fmt: skip
        self.deps.scheduler.wake(TIMER)
        return after

    async def snooze(
        self,
        actor: Actor,
        schedule_id: str,
        *,
        seconds: int | None = None,
        until: datetime | None = None,
    ) -> dict[str, Any]:
        """Move only the next fire: ``seconds`` later, or to ``until``."""
        actor.require(Role.OPERATOR)
        now = self.clock()
        async with self.db.write() as conn:
            row = await self._row(conn, actor.tenant_id, schedule_id)
            moved = snoozed(row["next_fire_at"], now, seconds=seconds, until=until)
            await conn.execute(
                schedules.update()
                .where(schedules.c.id == schedule_id)
                .values(next_fire_at=moved, updated_at=now)
            )
            after = schedule_out({**row, "next_fire_at": moved, "updated_at": now})
            await audit.record(
                conn, actor, "snooze", "command_schedule", schedule_id,
                before=schedule_out(row), after=after, device_id=row["device_id"], at=now,
            )  # fmt: skip
        self.deps.scheduler.wake(TIMER)
        return after

    async def delete(self, actor: Actor, schedule_id: str) -> None:
        """Remove a schedule (commands it already queued stay, and can be cancelled)."""
        actor.require(Role.OPERATOR)
        now = self.clock()
        async with self.db.write() as conn:
            row = await self._row(conn, actor.tenant_id, schedule_id)
            await conn.execute(schedules.delete().where(schedules.c.id == schedule_id))
            await audit.record(
                conn, actor, "delete", "command_schedule", schedule_id,
                before=schedule_out(row), device_id=row["device_id"], at=now,
            )  # fmt: skip

    # -- firing -------------------------------------------------------------------------------

    async def fire_due(self) -> float | None:
        """Queue a command for every schedule due now; answer when the next one is due."""
        now = self.clock()
        due = (
            _select()
            .where(schedules.c.next_fire_at.is_not(None), schedules.c.next_fire_at <= now)
            .order_by(schedules.c.next_fire_at)
            .limit(BATCH)
        )
        async with self.db.read() as conn:
            rows = as_dicts(await conn.execute(due))
        queued: list[tuple[str, int, dict[str, Any]]] = []
        if rows:
            async with self.db.write() as conn:
                for row in rows:
                    record = await self._fire(conn, row, now)
                    if record is not None:
                        queued.append((row["tenant_id"], row["device_pk"], record))
        for tenant_id, pk, record in queued:
            await self.commands.queued(tenant_id, pk, [record])
        if len(rows) == BATCH:
            return now.timestamp()
        return await earliest(self.db, schedules.c.next_fire_at)

    async def _fire(
        self, conn: AsyncConnection, row: Mapping[str, Any], now: datetime
    ) -> dict[str, Any] | None:
        """Queue one schedule's command and move it to its next fire (None: someone else did)."""
        due: datetime = row["next_fire_at"]
        following = None
        if row["cron"] is not None:
            # After now, not after the fire that was due: a schedule missed while the server was
            # down (or snoozed past several events) fires once, then keeps to its rhythm.
            following = next_fire(
                row["cron"], parse_timezone(row["timezone"]), row["offset_s"], max(now, due)
            )
        moved = await conn.execute(
            schedules.update()
            .where(schedules.c.id == row["id"], schedules.c.next_fire_at == due)
            .values(
                next_fire_at=following,
                last_fired_at=now,
                fire_count=schedules.c.fire_count + 1,
                updated_at=now,
            )
        )
        if moved.rowcount != 1:
            return None  # changed (snoozed, edited, deleted) since it was read
        timeout = row["timeout_s"]
        expires = row["expires_in_s"]
        try:
            record = await self.commands.insert_in(
                conn,
                row["tenant_id"],
                row["device_pk"],
                row["device_id"],
                CommandRequest(
                    name=row["name"],
                    params=row["params"],
                    timeout_s=timeout,
                    expires_at=None if expires is None else now + timedelta(seconds=expires),
                    # The fire this command is (due now, so it goes out at once): the device
                    # gets it as ``fire_at`` and an agent that ran this fire offline, while
                    # the server or its link was down, answers with that run.
                    schedule_at=due,
                ),
                now,
                created_by=f"schedule {row['id']}",
                schedule_id=row["id"],
            )
        except InvalidInput as exc:  # stored values were valid when saved; log, keep firing
            log.warning("schedule %s could not queue its command: %s", row["id"], exc.detail)
            return None
        await conn.execute(
            schedules.update()
            .where(schedules.c.id == row["id"])
            .values(last_command_id=record["id"])
        )
        return record
