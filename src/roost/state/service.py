"""Device state documents (desired/reported/delta), named states and their history.

Every change of a document, from a user (HTTP PATCH/DELETE) or from the device (MQTT
``devices/{id}/state/reported``, HTTP ``POST /device/state/reported``), goes through
:meth:`StateService.apply`: one transaction that reads the current row, applies
:func:`roost.state.rules.apply_update`, writes with a version check and appends the version to
the history. Two concurrent writers therefore never lose each other's change: the second one's
``UPDATE … WHERE version = :old`` finds no row and it starts again from the new document (on
PostgreSQL the row is also locked with ``FOR UPDATE``, so retries are rare; SQLite serialises
write transactions anyway).

After the commit (best effort, never failing the write):

* a bus notice ``roost.state.changed`` ``{tenant_id, device_id, name, version}``;
* when ``desired`` changed: the desired section and the delta to the device over MQTT
  (:mod:`roost.state.mqtt`), and a wake-up of the device's HTTP long-polls.

Timestamps inside documents and device messages are epoch milliseconds (as the per-leaf
metadata); HTTP answers give ``updated_at`` in RFC 3339.
"""

from __future__ import annotations

import builtins
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection

from roost.audit import service as audit
from roost.core.access import Actor, Role
from roost.core.batching import BatchLoader
from roost.core.context import ServiceDeps
from roost.core.device_identity import DeviceIdentity
from roost.errors import Conflict, InvalidInput, NotFound, Unavailable
from roost.inventory.devices.registry import device_pk_of
from roost.state.mqtt import StateOverMQTT
from roost.state.rules import DEFAULT_STATE, StateDocument, StateLimits, apply_update, check_name
from roost.state.tables import device_state_history, device_states
from roost.store.queries import Page, PageRequest, as_dicts, fetch_one

log = logging.getLogger(__name__)

STATE_CHANGED_SUBJECT = "roost.state.changed"
HISTORY_TIMER = "state.history"
# A named state is created by its first update; a cap keeps a device (or a script gone wrong)
# from growing rows without bound. AWS allows 10 named shadows per thing by default.
MAX_NAMED_STATES = 32
# Each retry means another writer committed to the same document in between; this many in a row
# only happens under a pathological storm of writers, which gets 503 and retries later.
MAX_ATTEMPTS = 10
# History is pruned in steps of this many rows, so that one pass never holds SQLite's write lock
# for long, and at most this often (the timer itself runs every timer_check_s).
HISTORY_PRUNE_BATCH = 5000
HISTORY_PRUNE_EVERY_S = 600.0


@dataclass(frozen=True, slots=True)
class Writer:
    """Who changes a document: a user (by name) or the device itself (by id)."""

    kind: str  # "user" or "device"
    name: str
    actor: Actor | None = None


@dataclass(frozen=True, slots=True)
class StateChange:
    """A committed change of one document."""

    tenant_id: str
    device_id: str
    device_pk: int
    name: str
    document: StateDocument
    updated_at: datetime
    desired_changed: bool


class _Raced(Exception):
    """Another writer changed the document between our read and our write: start again."""


def _document(row: dict[str, Any] | None) -> StateDocument:
    if row is None:
        return StateDocument()
    return StateDocument(
        desired=row["desired"],
        reported=row["reported"],
        metadata=row["meta"],
        version=row["version"],
    )


def _answer(name: str, doc: StateDocument, updated_at: datetime | None) -> dict[str, Any]:
    return {"name": name, **doc.as_dict(), "updated_at": updated_at}


class StateService:
    """Reading and changing device state documents, on every door (see the module docstring)."""

    def __init__(self, deps: ServiceDeps, limits: StateLimits | None = None) -> None:
        self.deps = deps
        self.limits = limits or StateLimits()
        self._next_prune = 0.0
        # Every (re)connect reads the device's states to resend deltas: a connection storm's
        # reads are gathered into a few bulk queries.
        self._states_of: BatchLoader[int, list[dict[str, Any]]] = BatchLoader(self._bulk_states)
        self.mqtt = StateOverMQTT(self)

    async def start(self) -> None:
        """Register MQTT routes, hooks and the history pruning timer (server only)."""
        self.mqtt.register()
        self.deps.scheduler.every(HISTORY_TIMER, self.deps.settings.timer_check_s, self._prune_pass)

    async def close(self) -> None:
        """Stop background work (the link and scheduler own the tasks)."""

    # -- the one write path -------------------------------------------------------------------

    async def apply(
        self, tenant_id: str, device_id: str, name: str, update: Any, writer: Writer
    ) -> StateChange:
        """Apply a partial update ``{"desired"?, "reported"?, "version"?}`` to a document.

        NotFound for an unknown device, InvalidInput/PayloadTooLarge/Conflict from the document
        rules (malformed, too large or deep, stale version).
        """
        for _ in range(MAX_ATTEMPTS):
            try:
                async with self.deps.db.write() as conn:
                    change = await self._apply_in(conn, tenant_id, device_id, name, update, writer)
            except _Raced:
                continue
            await self._changed(change)
            return change
        raise Unavailable(
            "the state document kept changing under this update; retry", retry_after=1
        )

    async def _apply_in(
        self,
        conn: AsyncConnection,
        tenant_id: str,
        device_id: str,
        name: str,
        update: Any,
        writer: Writer,
    ) -> StateChange:
        pk = await device_pk_of(conn, tenant_id, device_id)
        row = await fetch_one(
            conn,
            sa.select(device_states)
            .where(device_states.c.device_pk == pk, device_states.c.name == name)
            .with_for_update(),
        )
        now = self.deps.clock()
        doc = apply_update(
            _document(row), update, now_ms=int(now.timestamp() * 1000), limits=self.limits
        )
        values = {
            "desired": doc.desired,
            "reported": doc.reported,
            "meta": doc.metadata,
            "version": doc.version,
            "updated_at": now,
            "deleted_at": None,
        }
        if row is None or row["deleted_at"] is not None:
            await self._check_room(conn, pk, name)
        if row is None:
            try:
                await conn.execute(
                    device_states.insert().values(device_pk=pk, name=name, created_at=now, **values)
                )
            except sa_exc.IntegrityError:  # created meanwhile (or the device deleted): again
                raise _Raced() from None
        else:
            result = await conn.execute(
                device_states.update()
                .where(
                    device_states.c.device_pk == pk,
                    device_states.c.name == name,
                    device_states.c.version == row["version"],
                )
                .values(**values)
            )
            if result.rowcount != 1:
                raise _Raced()
        patch = {k: update[k] for k in ("desired", "reported") if k in update}
        await self._record(conn, pk, name, doc, now, writer, "update", patch)
        if writer.actor is not None:
            await audit.record(
                conn,
                writer.actor,
                "update",
                "device_state",
                f"{device_id}/{name}",
                after={"version": doc.version, **patch},
                device_id=device_id,
                at=now,
            )
        return StateChange(tenant_id, device_id, pk, name, doc, now, "desired" in update)

    async def _check_room(self, conn: AsyncConnection, pk: int, name: str) -> None:
        if name == DEFAULT_STATE:
            return
        count = (
            await conn.execute(
                sa.select(sa.func.count()).where(
                    device_states.c.device_pk == pk,
                    device_states.c.name != DEFAULT_STATE,
                    device_states.c.deleted_at.is_(None),
                )
            )
        ).scalar_one()
        if count >= MAX_NAMED_STATES:
            raise InvalidInput(f"a device holds at most {MAX_NAMED_STATES} named states")

    async def _record(
        self,
        conn: AsyncConnection,
        pk: int,
        name: str,
        doc: StateDocument,
        now: datetime,
        writer: Writer,
        action: str,
        patch: dict[str, Any] | None,
    ) -> None:
        await conn.execute(
            device_state_history.insert().values(
                device_pk=pk,
                name=name,
                version=doc.version,
                at=now,
                actor_type=writer.kind,
                actor=writer.name,
                action=action,
                patch=patch,
                desired=doc.desired,
                reported=doc.reported,
            )
        )

    async def _changed(self, change: StateChange) -> None:
        """Tell the bus and, when desired changed, the device (after the commit)."""
        notice = {
            "tenant_id": change.tenant_id,
            "device_id": change.device_id,
            "name": change.name,
            "version": change.document.version,
        }
        try:
            await self.deps.bus.publish(STATE_CHANGED_SUBJECT, orjson.dumps(notice))
        except Exception as exc:  # the change is committed; live consumers catch up on reads
            log.warning("could not publish a state change notice: %s", exc)
        if not change.desired_changed:
            return
        self.mqtt.publish_desired(change)
        self.deps.link.notify(change.device_pk)

    # -- users ---------------------------------------------------------------------------------

    async def get(self, actor: Actor, device_id: str, name: str = DEFAULT_STATE) -> dict[str, Any]:
        """A document as the API answers it; the default state always exists (version 0)."""
        actor.require(Role.VIEWER)
        return await self._get(actor.tenant_id, device_id, check_name(name))

    async def _get(self, tenant_id: str, device_id: str, name: str) -> dict[str, Any]:
        async with self.deps.db.read() as conn:
            pk = await device_pk_of(conn, tenant_id, device_id)
            row = await fetch_one(
                conn,
                sa.select(device_states).where(
                    device_states.c.device_pk == pk, device_states.c.name == name
                ),
            )
        if row is None or row["deleted_at"] is not None:
            if name != DEFAULT_STATE:
                raise NotFound(f"device {device_id!r} has no state {name!r}")
            version = 0 if row is None else row["version"]
            return _answer(name, StateDocument(version=version), None)
        return _answer(name, _document(row), row["updated_at"])

    async def update(
        self, actor: Actor, device_id: str, update: Any, name: str = DEFAULT_STATE
    ) -> dict[str, Any]:
        """A user's change (operator role): desired and/or reported, with an optional version."""
        actor.require(Role.OPERATOR)
        change = await self.apply(
            actor.tenant_id, device_id, check_name(name), update, Writer("user", actor.name, actor)
        )
        return _answer(change.name, change.document, change.updated_at)

    async def delete(
        self, actor: Actor, device_id: str, name: str, version: int | None = None
    ) -> None:
        """Delete a (named) state: it empties, its version still rises (operator role)."""
        actor.require(Role.OPERATOR)
        name = check_name(name)
        writer = Writer("user", actor.name, actor)
        for _ in range(MAX_ATTEMPTS):
            try:
                async with self.deps.db.write() as conn:
                    change = await self._delete_in(conn, actor, device_id, name, version, writer)
            except _Raced:
                continue
            await self._changed(change)
            return
        raise Unavailable(
            "the state document kept changing under this delete; retry", retry_after=1
        )

    async def _delete_in(
        self,
        conn: AsyncConnection,
        actor: Actor,
        device_id: str,
        name: str,
        version: int | None,
        writer: Writer,
    ) -> StateChange:
        pk = await device_pk_of(conn, actor.tenant_id, device_id)
        row = await fetch_one(
            conn,
            sa.select(device_states)
            .where(device_states.c.device_pk == pk, device_states.c.name == name)
            .with_for_update(),
        )
        if row is None or row["deleted_at"] is not None:
            raise NotFound(f"device {device_id!r} has no state {name!r}")
        if version is not None and version != row["version"]:
            raise Conflict(
                f"version {version} is stale: the document is at version {row['version']}"
            )
        now = self.deps.clock()
        doc = StateDocument(version=row["version"] + 1)
        result = await conn.execute(
            device_states.update()
            .where(
                device_states.c.device_pk == pk,
                device_states.c.name == name,
                device_states.c.version == row["version"],
            )
            .values(
                desired={},
                reported={},
                meta=doc.metadata,
                version=doc.version,
                updated_at=now,
                deleted_at=now,
            )
        )
        if result.rowcount != 1:
            raise _Raced()
        await self._record(conn, pk, name, doc, now, writer, "delete", None)
        await audit.record(
            conn,
            actor,
            "delete",
            "device_state",
            f"{device_id}/{name}",
            before={"version": row["version"], "desired": row["desired"]},
            device_id=device_id,
            at=now,
        )
        return StateChange(actor.tenant_id, device_id, pk, name, doc, now, True)

    async def list(self, actor: Actor, device_id: str, page: PageRequest) -> Page[dict[str, Any]]:
        """The device's states (name, version, updated_at), by name."""
        actor.require(Role.VIEWER)
        async with self.deps.db.read() as conn:
            pk = await device_pk_of(conn, actor.tenant_id, device_id)
            where = (device_states.c.device_pk == pk) & device_states.c.deleted_at.is_(None)
            total = (
                await conn.execute(
                    sa.select(sa.func.count()).select_from(device_states).where(where)
                )
            ).scalar_one()
            rows = as_dicts(
                await conn.execute(
                    sa.select(
                        device_states.c.name, device_states.c.version, device_states.c.updated_at
                    )
                    .where(where)
                    .order_by(device_states.c.name)
                    .limit(page.limit)
                    .offset(page.offset)
                )
            )
        return Page(rows, int(total), page.limit, page.offset)

    async def history(
        self,
        actor: Actor,
        device_id: str,
        page: PageRequest,
        *,
        name: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> Page[dict[str, Any]]:
        """Versions of the device's states (newest first), optionally of one name and a range."""
        actor.require(Role.VIEWER)
        h = device_state_history
        async with self.deps.db.read() as conn:
            pk = await device_pk_of(conn, actor.tenant_id, device_id)
            where = [h.c.device_pk == pk]
            if name is not None:
                where.append(h.c.name == check_name(name))
            if start is not None:
                where.append(h.c.at >= start)
            if end is not None:
                where.append(h.c.at < end)
            total = (
                await conn.execute(sa.select(sa.func.count()).select_from(h).where(*where))
            ).scalar_one()
            rows = as_dicts(
                await conn.execute(
                    sa.select(
                        h.c.name,
                        h.c.version,
                        h.c.at,
                        h.c.actor_type,
                        h.c.actor,
                        h.c.action,
                        h.c.patch.label("update"),
                        h.c.desired,
                        h.c.reported,
                    )
                    .where(*where)
                    .order_by(h.c.at.desc(), h.c.id.desc())
                    .limit(page.limit)
                    .offset(page.offset)
                )
            )
        return Page(rows, int(total), page.limit, page.offset)

    # -- devices -------------------------------------------------------------------------------

    async def device_get(
        self, identity: DeviceIdentity, name: str = DEFAULT_STATE
    ) -> dict[str, Any]:
        """The calling device's own document."""
        return await self._get(identity.tenant_id, identity.device_id, check_name(name))

    async def report(
        self, identity: DeviceIdentity, fields: Any, name: str = DEFAULT_STATE
    ) -> dict[str, Any]:
        """The device reports fields to merge (``null`` deletes); answers version and delta."""
        if not isinstance(fields, dict):
            raise InvalidInput("a state report is a JSON object of the reported fields")
        change = await self.apply(
            identity.tenant_id,
            identity.device_id,
            check_name(name),
            {"reported": fields},
            Writer("device", identity.device_id),
        )
        return {
            "name": change.name,
            "version": change.document.version,
            "delta": change.document.delta,
        }

    async def wait_for_version(
        self, identity: DeviceIdentity, name: str, after_version: int, wait_s: float
    ) -> dict[str, Any]:
        """The device's document once its version is above ``after_version`` (or at ``wait_s``)."""
        deadline = time.monotonic() + wait_s
        doc = await self.device_get(identity, name)
        while doc["version"] <= after_version:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            await self.deps.link.wait(identity.device_pk, remaining)
            doc = await self.device_get(identity, name)
        return doc

    async def live_states(self, device_pk: int) -> builtins.list[dict[str, Any]]:
        """The device's live states (name, desired, reported, version): read on (re)connect."""
        return await self._states_of.load(device_pk) or []

    async def _bulk_states(self, pks: Sequence[int]) -> dict[int, builtins.list[dict[str, Any]]]:
        """The live states of many devices in one query (devices connecting at once)."""
        async with self.deps.db.read() as conn:
            rows = as_dicts(
                await conn.execute(
                    sa.select(
                        device_states.c.device_pk,
                        device_states.c.name,
                        device_states.c.desired,
                        device_states.c.reported,
                        device_states.c.version,
                    ).where(
                        device_states.c.device_pk.in_(pks),
                        device_states.c.deleted_at.is_(None),
                    )
                )
            )
        found: dict[int, builtins.list[dict[str, Any]]] = {}
        for row in rows:
            found.setdefault(row["device_pk"], []).append(row)
        return found

    # -- history retention -----------------------------------------------------------------------

    async def prune_history(self) -> int:
        """Delete history older than ``state_history_days`` (0 or less keeps it forever)."""
        days = self.deps.settings.state_history_days
        if days <= 0:
            return 0
        cutoff = self.deps.clock() - timedelta(days=days)
        h = device_state_history
        deleted = 0
        while True:
            doomed = sa.select(h.c.id).where(h.c.at < cutoff).limit(HISTORY_PRUNE_BATCH)
            async with self.deps.db.write() as conn:
                result = await conn.execute(h.delete().where(h.c.id.in_(doomed.scalar_subquery())))
            deleted += result.rowcount
            if result.rowcount < HISTORY_PRUNE_BATCH:
                return deleted

    async def _prune_pass(self) -> float | None:
        now = self.deps.clock().timestamp()
        if now >= self._next_prune:
            deleted = await self.prune_history()
            if deleted:
                log.info("deleted %d state history versions past retention", deleted)
            self._next_prune = now + HISTORY_PRUNE_EVERY_S
        return self._next_prune
