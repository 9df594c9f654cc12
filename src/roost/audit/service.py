"""The audit log: who changed what, when, from which state to which."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from roost.audit.tables import audit_log
from roost.core.access import Actor, Role
from roost.store.database import Database
from roost.store.queries import Page, PageRequest, fetch_page, order_by

# Never copied into the log, whatever entity they belong to.
_SECRET_FIELDS = frozenset({"password", "password_hash", "secret_hash", "key", "token"})


def _clean(snapshot: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if snapshot is None:
        return None
    # A round trip through JSON turns datetimes into RFC 3339 text, as they will be read back.
    plain = {k: v for k, v in snapshot.items() if k not in _SECRET_FIELDS and k != "pk"}
    result: dict[str, Any] = orjson.loads(orjson.dumps(plain, default=str, option=orjson.OPT_UTC_Z))
    return result


async def record(
    conn: AsyncConnection,
    actor: Actor,
    action: str,
    entity_type: str,
    entity_id: str,
    *,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
    device_id: str | None = None,
    tenant_id: str | None = None,
    at: datetime | None = None,
) -> None:
    """Append one audit entry inside the caller's transaction."""
    await conn.execute(
        audit_log.insert().values(
            tenant_id=tenant_id if tenant_id is not None else actor.tenant_id,
            at=at or datetime.now(UTC),
            actor=actor.name,
            action=action,
            entity_type=entity_type,
            entity_id=entity_id,
            device_id=device_id,
            before=_clean(before),
            after=_clean(after),
        )
    )


async def record_many(
    conn: AsyncConnection, actor: Actor, entries: Sequence[Mapping[str, Any]], at: datetime
) -> None:
    """Append many audit entries with one multi-row INSERT (bulk operations).

    Each entry gives ``action``, ``entity_type``, ``entity_id`` and optionally ``before``,
    ``after`` and ``device_id``.
    """
    await record_each(conn, [(actor, entry) for entry in entries], at)


async def record_each(
    conn: AsyncConnection, entries: Sequence[tuple[Actor, Mapping[str, Any]]], at: datetime
) -> None:
    """:func:`record_many` for entries of different actors (and tenants), one INSERT."""
    if not entries:
        return
    await conn.execute(
        audit_log.insert(),
        [
            {
                "tenant_id": actor.tenant_id,
                "at": at,
                "actor": actor.name,
                "action": entry["action"],
                "entity_type": entry["entity_type"],
                "entity_id": entry["entity_id"],
                "device_id": entry.get("device_id"),
                "before": _clean(entry.get("before")),
                "after": _clean(entry.get("after")),
            }
            for actor, entry in entries
        ],
    )


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """Filters over the audit log."""

    entity_type: str | None = None
    entity_id: str | None = None
    device_id: str | None = None
    actor: str | None = None
    action: str | None = None
    since: datetime | None = None
    until: datetime | None = None


class AuditService:
    """Reading the audit log."""

    SORTS = ("at", "id")

    def __init__(self, db: Database, clock: Callable[[], datetime]) -> None:
        self.db = db
        self.clock = clock

    async def list(
        self, actor: Actor, query: AuditQuery, page: PageRequest, *, min_role: Role = Role.OPERATOR
    ) -> Page[dict[str, Any]]:
        """Audit entries of the actor's tenant, newest first unless sorted otherwise."""
        actor.require(min_role)
        t = audit_log
        stmt = sa.select(
            t.c.id,
            t.c.at,
            t.c.actor,
            t.c.action,
            t.c.entity_type,
            t.c.entity_id,
            t.c.device_id,
            t.c.before,
            t.c.after,
        ).where(t.c.tenant_id == actor.tenant_id)
        for column, value in (
            (t.c.entity_type, query.entity_type),
            (t.c.entity_id, query.entity_id),
            (t.c.device_id, query.device_id),
            (t.c.actor, query.actor),
            (t.c.action, query.action),
        ):
            if value is not None:
                stmt = stmt.where(column == value)
        if query.since is not None:
            stmt = stmt.where(t.c.at >= query.since)
        if query.until is not None:
            stmt = stmt.where(t.c.at < query.until)
        order = order_by(t, page.sort, self.SORTS, default="-id")
        async with self.db.read() as conn:
            items, total = await fetch_page(conn, stmt, order, page)
        return Page(items, total, page.limit, page.offset)
