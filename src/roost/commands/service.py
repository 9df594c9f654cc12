"""Commands to devices: queue, delivery, responses, timeouts, expiry (DESIGN.md §3 "Commands").

A command is a row first (``QUEUED``) and a message second. It goes out over MQTT
(:mod:`roost.commands.mqtt`: ``SENT`` when the gateway takes the copy, ``DELIVERED`` on the
device's PUBACK) when the device holds a connection subscribed to it, else when it connects or
subscribes; an HTTP-only device fetches its commands with a long-poll (``DELIVERED`` at once).
The device answers with ``{"status": "SUCCEEDED"|"FAILED", "result"}`` over MQTT or HTTP.

Every timer lives in the row (``due_at``, see :mod:`roost.commands.tables`): a pass of the
scheduler expires queued commands past ``expires_at`` (never delivered), times out sent ones
without an answer ``timeout_s`` after sending, and releases commands whose ``schedule_at`` came.

Each move is an ``UPDATE … WHERE status = <the status it was read in>``, so a device's answer and
a timeout racing for the same command cannot both win. Delivery is at least once: if the store
fails after the gateway took a copy, the command stays queued and goes out again, so devices
should treat a repeated command id as one command.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from roost.audit import service as audit
from roost.commands import store
from roost.commands.lifecycle import COMMAND_TERMINAL, CommandStatus
from roost.commands.mqtt import CommandsOverMQTT
from roost.commands.rules import (
    DEVICE_FINAL,
    DEVICE_INTERIM,
    CommandRequest,
    check_name,
    check_params,
    check_timeout,
    device_message,
    parse_response,
)
from roost.commands.schedules import CommandScheduleService
from roost.commands.tables import commands
from roost.core import metrics
from roost.core.access import Actor, Role
from roost.core.context import ServiceDeps
from roost.core.device_identity import DeviceIdentity
from roost.core.ids import generate_id
from roost.core.scheduler import earliest
from roost.errors import InvalidInput
from roost.inventory.devices.registry import device_pk_of
from roost.inventory.tables import devices
from roost.store.queries import Page, PageRequest, as_dicts, fetch_one, fetch_page, order_by

log = logging.getLogger(__name__)

C = CommandStatus

#: Bus subject of a notice per status change (``{"tenant_id", "device_id", "command_id",
#: "status", "at"}``): live consoles, rules, and ``?wait`` requests served by other processes.
NOTICE_SUBJECT = "roost.commands.changed"
#: The scheduler's name for the pass over due command rows.
TIMER = "commands.due"
#: Longest ``?wait`` of a POST and longest device long-poll: under common proxy idle timeouts.
MAX_WAIT_S = 60
#: A long-poll re-reads the store this often even without a wake-up, so a command queued in
#: another process whose wake-up notice was lost reaches the device within seconds anyway.
POLL_RECHECK_S = 5.0
#: A ``?wait`` re-reads its command this often, for the same reason.
WAIT_RECHECK_S = 2.0
#: A device that ended a long-poll this recently counts as online for ``?wait``: it is
#: between two polls (working on the last answer), not away.
RECENT_POLL_S = 5.0
SORTS = ("created_at", "updated_at", "status", "name", "id")


@dataclass(frozen=True, slots=True)
class Change:
    """A committed status change of one command (for notices and waiting requests)."""

    tenant_id: str
    device_id: str
    command_id: str
    status: str
    at: datetime


class _DeviceLocks:
    """One asyncio lock per device, dropped when nobody holds or waits for it.

    Sending and the device's acknowledgement race: the PUBACK can arrive before the row says
    SENT. Sending, acknowledging and answering one device's commands take its lock, so each sees
    the previous one committed.
    """

    def __init__(self) -> None:
        self._locks: dict[int, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, device_pk: int) -> AsyncIterator[None]:
        lock, users = self._locks.get(device_pk, (asyncio.Lock(), 0))
        self._locks[device_pk] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[device_pk]
            if users <= 1:
                del self._locks[device_pk]
            else:
                self._locks[device_pk] = (lock, users - 1)


class CommandService:
    """Commands to devices (see the module docstring)."""

    def __init__(self, deps: ServiceDeps) -> None:
        self.deps = deps
        self.db = deps.db
        self.link = deps.link
        self.clock = deps.clock
        self.schedules = CommandScheduleService(deps, self)
        metrics.table_gauge("roost_commands", "Commands by status", self.db, commands.c.status)
        self.mqtt = CommandsOverMQTT(self)
        self._locks = _DeviceLocks()
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._pollers: Counter[int] = Counter()
        self._last_poll: dict[int, float] = {}
        # Bumped whenever a device gets new work, so a long-poll notices work queued while it
        # was reading the store (the wake-up of that moment had nobody waiting for it).
        self._queued_gen: Counter[int] = Counter()
        self._notices: Any = None

    # -- wiring -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Handle command responses and (re)connections; start the due-row passes."""
        self.mqtt.register()
        interval = self.deps.settings.timer_check_s
        self.deps.scheduler.every(TIMER, interval, self.due_pass)
        self.schedules.register(interval)
        self._notices = await self.deps.bus.subscribe(NOTICE_SUBJECT, self._on_notice)

    async def close(self) -> None:
        """Stop listening for notices (timers stop with the scheduler)."""
        if self._notices is not None:
            await self._notices.stop()
            self._notices = None

    # -- reading ------------------------------------------------------------------------------

    async def get(self, actor: Actor, device_id: str, command_id: str) -> dict[str, Any]:
        """One command of a device."""
        actor.require(Role.VIEWER)
        async with self.db.read() as conn:
            pk = await device_pk_of(conn, actor.tenant_id, device_id)
            return store.command_out(await store.command_row(conn, pk, command_id))

    async def list_commands(
        self,
        actor: Actor,
        device_id: str,
        page: PageRequest,
        statuses: Iterable[str] = (),
    ) -> Page[dict[str, Any]]:
        """A page of a device's commands, newest first unless sorted otherwise."""
        actor.require(Role.VIEWER)
        wanted = sorted(set(statuses))
        bad = [s for s in wanted if s not in C.__members__]
        if bad:
            raise InvalidInput(
                f"unknown command status {bad[0]!r}; statuses: {', '.join(C.__members__)}"
            )
        page = PageRequest(page.limit, page.offset, page.sort or "-created_at")
        async with self.db.read() as conn:
            pk = await device_pk_of(conn, actor.tenant_id, device_id)
            stmt = store.select_commands().where(commands.c.device_pk == pk)
            if wanted:
                stmt = stmt.where(commands.c.status.in_(wanted))
            rows, total = await fetch_page(
                conn, stmt, order_by(commands, page.sort, SORTS, "-created_at"), page
            )
        return Page([store.command_out(r) for r in rows], total, page.limit, page.offset)

    # -- creating and cancelling --------------------------------------------------------------

    def _check_request(self, request: CommandRequest, now: datetime) -> CommandRequest:
        timeout = request.timeout_s
        if timeout is None:
            timeout = self.deps.settings.command_timeout_s
        for name, value in (
            ("expires_at", request.expires_at),
            ("schedule_at", request.schedule_at),
        ):
            if value is not None and value.tzinfo is None:
                raise InvalidInput(f"{name} must carry a time zone (e.g. 2026-11-22T18:00:00Z)")
        if request.expires_at is not None and request.expires_at <= now:
            raise InvalidInput("expires_at must be in the future")
        if (
            request.expires_at is not None
            and request.schedule_at is not None
            and request.expires_at <= request.schedule_at
        ):
            raise InvalidInput("expires_at must be after schedule_at")
        return CommandRequest(
            name=check_name(request.name),
            params=check_params(request.params),
            timeout_s=check_timeout(timeout),
            expires_at=request.expires_at,
            schedule_at=request.schedule_at,
        )

    async def insert_in(
        self,
        conn: AsyncConnection,
        tenant_id: str,
        device_pk: int,
        device_id: str,
        request: CommandRequest,
        now: datetime,
        *,
        created_by: str,
        schedule_id: str | None = None,
    ) -> dict[str, Any]:
        """Queue a command inside the caller's transaction; answer its record.

        Call :meth:`queued` with the record once the transaction committed.
        """
        checked = self._check_request(request, now)
        later = checked.schedule_at is not None and checked.schedule_at > now
        values = {
            "id": generate_id("cmd"),
            "tenant_id": tenant_id,
            "device_pk": device_pk,
            "name": checked.name,
            "params": checked.params,
            "status": C.QUEUED.value,
            "status_details": None,
            "result": None,
            "timeout_s": checked.timeout_s,
            "schedule_at": checked.schedule_at,
            "expires_at": checked.expires_at,
            # The first thing to look at: the scheduled time, else the expiry.
            "due_at": checked.schedule_at if later else checked.expires_at,
            "schedule_id": schedule_id,
            "created_by": created_by,
            "created_at": now,
            "updated_at": now,
            "sent_at": None,
            "delivered_at": None,
            "completed_at": None,
        }
        await conn.execute(commands.insert().values(**values))
        return store.command_out({**values, "device_id": device_id})

    async def create(self, actor: Actor, device_id: str, request: CommandRequest) -> dict[str, Any]:
        """Queue a command for a device and send it at once when the device can take it."""
        actor.require(Role.OPERATOR)
        now = self.clock()
        async with self.db.write() as conn:
            pk = await device_pk_of(conn, actor.tenant_id, device_id)
            record = await self.insert_in(
                conn, actor.tenant_id, pk, device_id, request, now, created_by=actor.name
            )
            await audit.record(
                conn, actor, "create", "command", record["id"], after=record,
                device_id=device_id, at=now,
            )  # fmt: skip
        await self.queued(actor.tenant_id, pk, [record])
        async with self.db.read() as conn:
            return store.command_out(await store.command_row(conn, pk, record["id"]))

    async def queued(self, tenant_id: str, device_pk: int, records: list[dict[str, Any]]) -> None:
        """After the commit of new commands: announce them and hand them to the device."""
        if not records:
            return
        now = self.clock()
        await self._announce(
            [Change(tenant_id, r["device_id"], r["id"], C.QUEUED.value, now) for r in records]
        )
        if any(r["schedule_at"] is not None or r["expires_at"] is not None for r in records):
            self.deps.scheduler.wake(TIMER)
        if any(r["schedule_at"] is None or r["schedule_at"] <= now for r in records):
            await self._offer(device_pk, records[0]["device_id"])

    async def _offer(self, device_pk: int, device_id: str) -> None:
        """The device has work it may take now: send over MQTT, and wake its long-polls."""
        self._queued_gen[device_pk] += 1
        await self.mqtt.offer(device_pk, device_id)
        self.link.notify(device_pk)

    async def cancel(self, actor: Actor, device_id: str, command_id: str) -> dict[str, Any]:
        """Cancel a command that is not finished (409 once it is)."""
        actor.require(Role.OPERATOR)
        now = self.clock()
        async with self.db.write() as conn:
            pk = await device_pk_of(conn, actor.tenant_id, device_id)
            row = await store.command_row(conn, pk, command_id)
            after = await store.move(
                conn, row, C.CANCELED, now, completed_at=now, due_at=None,
                status_details={"reason": f"canceled by {actor.name}"},
            )  # fmt: skip
            assert after is not None
            await audit.record(
                conn, actor, "cancel", "command", command_id,
                before=store.command_out(row), after=store.command_out(after), device_id=device_id,
                at=now,
            )  # fmt: skip
        await self._announce([Change(actor.tenant_id, device_id, command_id, C.CANCELED, now)])
        return store.command_out(after)

    # -- notices ----------------------------------------------------------------------------------

    async def _announce(self, changes: list[Change]) -> None:
        """Wake waiting requests here and publish a notice per change (best effort)."""
        for change in changes:
            self._wake(change.command_id)
        for change in changes:
            data = orjson.dumps(
                {
                    "tenant_id": change.tenant_id,
                    "device_id": change.device_id,
                    "command_id": change.command_id,
                    "status": change.status,
                    "at": change.at,
                },
                option=orjson.OPT_UTC_Z,
            )
            try:
                await self.deps.bus.publish(NOTICE_SUBJECT, data)
            except Exception as exc:  # the change is committed; a notice is only a hint
                log.warning("could not publish a command notice: %s", exc)

    def _wake(self, command_id: str) -> None:
        for event in self._waiters.get(command_id, ()):
            event.set()

    async def _on_notice(self, subject: str, data: bytes) -> None:
        try:
            notice = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        if isinstance(notice, dict) and isinstance(notice.get("command_id"), str):
            self._wake(notice["command_id"])

    # -- delivery -----------------------------------------------------------------------------

    async def send_queued(
        self, device_pk: int, device_id: str, send: Callable[[dict[str, Any]], bool]
    ) -> int:
        """Offer the device's sendable queued commands to ``send``; those it took become SENT.

        ``send`` is a door's delivery (True when the copy was taken); offering stops at the first
        one it declines, so the rest keep their order for the next try.
        """
        sent: list[Change] = []
        async with self._locks.hold(device_pk):
            now = self.clock()
            async with self.db.read() as conn:
                rows = as_dicts(await conn.execute(store.sendable(device_pk, now)))
            taken = []
            for row in rows:
                if not send(row):
                    break  # not subscribed (yet): the door sends them when the device subscribes
                taken.append(row)
            if taken:
                async with self.db.write() as conn:
                    for row in taken:
                        after = await store.move(
                            conn, row, C.SENT, now, strict=False, sent_at=now,
                            due_at=now + timedelta(seconds=row["timeout_s"]),
                        )  # fmt: skip
                        if after is not None:
                            sent.append(Change(row["tenant_id"], device_id, row["id"], C.SENT, now))
        if sent:
            self.deps.scheduler.wake(TIMER)
            await self._announce(sent)
        return len(sent)

    async def delivered(self, device_pk: int, command_id: str) -> None:
        """The device acknowledged the command: SENT → DELIVERED (anything else stays)."""
        async with self._locks.hold(device_pk):
            now = self.clock()
            async with self.db.write() as conn:
                wanted = store.select_commands().where(commands.c.id == command_id)
                row = await fetch_one(conn, wanted)
                if row is None or row["status"] != C.SENT.value:
                    return
                after = await store.move(
                    conn, row, C.DELIVERED, now, strict=False, delivered_at=now
                )
        if after is not None:
            await self._announce(
                [Change(row["tenant_id"], row["device_id"], command_id, C.DELIVERED, now)]
            )

    # -- device answers -----------------------------------------------------------------------

    async def respond(self, identity: DeviceIdentity, command_id: str, body: Any) -> dict[str, Any]:
        """A device's answer to one of its commands (any door); answers the updated record."""
        status, result, details = parse_response(body)
        pk = identity.device_pk
        async with self._locks.hold(pk):
            now = self.clock()
            async with self.db.write() as conn:
                row = await store.command_row(conn, pk, command_id)
                current = C(row["status"])
                extra: dict[str, Any] = {}
                if details is not None:
                    extra["status_details"] = details
                if status in DEVICE_INTERIM:
                    if current is C.DELIVERED:
                        return store.command_out(row)
                    after = await store.move(conn, row, C.DELIVERED, now, delivered_at=now, **extra)
                else:
                    target = DEVICE_FINAL[status]
                    if row["delivered_at"] is None:
                        extra["delivered_at"] = now  # answering proves it arrived
                    after = await store.move(
                        conn, row, target, now, result=result, completed_at=now, due_at=None,
                        **extra,
                    )  # fmt: skip
                assert after is not None
        await self._announce(
            [Change(identity.tenant_id, identity.device_id, command_id, after["status"], now)]
        )
        return store.command_out(after)

    # -- HTTP-only devices --------------------------------------------------------------------

    async def take(self, identity: DeviceIdentity) -> list[dict[str, Any]]:
        """Hand the device its sendable queued commands (they become DELIVERED)."""
        pk = identity.device_pk
        taken: list[dict[str, Any]] = []
        async with self._locks.hold(pk):
            now = self.clock()
            # Read first: most polls find nothing, and need not queue for the write lock.
            async with self.db.read() as conn:
                rows = as_dicts(await conn.execute(store.sendable(pk, now)))
            if not rows:
                return []
            async with self.db.write() as conn:
                for row in rows:
                    # Handing it over is sending and delivering at once.
                    after = await store.move(
                        conn, row, C.DELIVERED, now, via=(C.SENT,), strict=False, sent_at=now,
                        delivered_at=now, due_at=now + timedelta(seconds=row["timeout_s"]),
                    )  # fmt: skip
                    if after is not None:
                        taken.append(after)
        if taken:
            self.deps.scheduler.wake(TIMER)
            await self._announce(
                [Change(identity.tenant_id, identity.device_id, r["id"], C.DELIVERED, now)
                 for r in taken]
            )  # fmt: skip
        return [device_message(r) for r in taken]

    async def poll(self, identity: DeviceIdentity, wait_s: float) -> list[dict[str, Any]]:
        """The device's pending commands, waiting up to ``wait_s`` for one when there are none."""
        if not 0 <= wait_s <= MAX_WAIT_S:
            raise InvalidInput(f"wait must be between 0 and {MAX_WAIT_S} seconds")
        pk = identity.device_pk
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        self._pollers[pk] += 1
        try:
            while True:
                generation = self._queued_gen[pk]
                items = await self.take(identity)
                remaining = deadline - loop.time()
                if items or remaining <= 0:
                    return items
                if self._queued_gen[pk] != generation:
                    continue  # work arrived while we read: look again at once
                await self.link.wait(pk, min(remaining, POLL_RECHECK_S))
        finally:
            self._pollers[pk] -= 1
            if self._pollers[pk] <= 0:
                del self._pollers[pk]
            self._last_poll[pk] = time.monotonic()
            if self._queued_gen[pk] == 0:
                del self._queued_gen[pk]

    def device_reachable(self, device_pk: int) -> bool:
        """Whether the device can answer soon: connected here, or long-polling (or just did)."""
        if self.link.is_connected(device_pk) or self._pollers.get(device_pk, 0) > 0:
            return True
        last = self._last_poll.get(device_pk)
        return last is not None and time.monotonic() - last < RECENT_POLL_S

    async def _reachable_anywhere(self, conn: AsyncConnection, device_pk: int) -> bool:
        """:meth:`device_reachable`, or (scale mode) connected to another process: the device
        row counts the connections of every process (the presence room keeps it)."""
        if self.device_reachable(device_pk):
            return True
        if self.deps.bus.in_process:
            return False
        count = await conn.scalar(sa.select(devices.c.connections).where(devices.c.pk == device_pk))
        return bool(count)

    # -- waiting for an outcome ---------------------------------------------------------------

    async def wait_final(
        self, actor: Actor, device_id: str, command_id: str, wait_s: float
    ) -> dict[str, Any]:
        """The command once final, or as it is after ``wait_s`` (at once if the device is away)."""
        actor.require(Role.VIEWER)
        if not 0 <= wait_s <= MAX_WAIT_S:
            raise InvalidInput(f"wait must be between 0 and {MAX_WAIT_S} seconds")
        async with self.db.read() as conn:
            pk = await device_pk_of(conn, actor.tenant_id, device_id)
            if wait_s and not await self._reachable_anywhere(conn, pk):
                wait_s = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        event = asyncio.Event()
        events = self._waiters.setdefault(command_id, set())
        events.add(event)
        try:
            while True:
                event.clear()
                async with self.db.read() as conn:
                    record = store.command_out(await store.command_row(conn, pk, command_id))
                remaining = deadline - loop.time()
                if record["status"] in COMMAND_TERMINAL or remaining <= 0:
                    return record
                try:
                    await asyncio.wait_for(event.wait(), min(remaining, WAIT_RECHECK_S))
                except TimeoutError:
                    pass
        finally:
            events.discard(event)
            if not events:
                self._waiters.pop(command_id, None)

    # -- timers -------------------------------------------------------------------------------

    async def due_pass(self) -> float | None:
        """Expire, time out and release what is due; answer when the next row is due."""
        now = self.clock()
        due = (
            store.select_commands()
            .where(commands.c.due_at.is_not(None), commands.c.due_at <= now)
            .order_by(commands.c.due_at)
            .limit(store.BATCH)
        )
        # Read first: most passes find nothing, and need not queue for the write lock.
        async with self.db.read() as conn:
            rows = as_dicts(await conn.execute(due))
        changes: list[Change] = []
        release: dict[int, str] = {}
        if rows:
            # Every move is conditional on the status read, so reading outside the transaction
            # cannot undo a device's answer that landed in between.
            async with self.db.write() as conn:
                for row in rows:
                    change = await self._due(conn, row, now, release)
                    if change is not None:
                        changes.append(change)
        await self._announce(changes)
        for pk, device_id in release.items():
            await self._offer(pk, device_id)
        if len(rows) == store.BATCH:
            return now.timestamp()
        return await earliest(self.db, commands.c.due_at)

    async def _due(
        self, conn: AsyncConnection, row: dict[str, Any], now: datetime, release: dict[int, str]
    ) -> Change | None:
        status = C(row["status"])
        tenant, device_id = row["tenant_id"], row["device_id"]
        if status is C.QUEUED:
            if row["expires_at"] is not None and row["expires_at"] <= now:
                after = await store.move(
                    conn, row, C.EXPIRED, now, strict=False, completed_at=now, due_at=None,
                    status_details={"reason": "expired before it was delivered"},
                )  # fmt: skip
                return (
                    None if after is None else Change(tenant, device_id, row["id"], C.EXPIRED, now)
                )
            # Its scheduled time came: it may go out now, and next expires (if ever).
            await conn.execute(
                commands.update()
                .where(commands.c.id == row["id"], commands.c.status == C.QUEUED.value)
                .values(due_at=row["expires_at"], updated_at=now)
            )
            release[row["device_pk"]] = device_id
            return None
        if status in (C.SENT, C.DELIVERED):
            after = await store.move(
                conn, row, C.TIMED_OUT, now, strict=False, completed_at=now, due_at=None,
                status_details={"reason": f"no response within {row['timeout_s']} s"},
            )  # fmt: skip
            return None if after is None else Change(tenant, device_id, row["id"], C.TIMED_OUT, now)
        await conn.execute(commands.update().where(commands.c.id == row["id"]).values(due_at=None))
        return None
