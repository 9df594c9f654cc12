"""Silences: alerts matching them are left out of messages while they run.

A silence matches on labels (``device_id``, ``group_id``, ``site_id``, ``type``, ``severity``;
every matcher given must hold) between ``starts_at`` and ``ends_at``. It is checked when a group
is flushed (send time), so a silence made while a group waits keeps its alerts out of the message.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from roost.alarms.notify import model
from roost.alarms.notify.tables import silences
from roost.audit import service as audit
from roost.core.access import Actor, Role
from roost.core.ids import generate_id
from roost.errors import InvalidInput, NotFound
from roost.store.database import Database
from roost.store.queries import Page, PageRequest, as_dicts, fetch_one, fetch_page, order_by

SORTS = ("starts_at", "ends_at", "created_at", "id")
STATES = ("active", "pending", "expired")
MAX_MATCHER_CHARS = 128


def silence_out(row: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """A silence as the API answers it, with its state now."""
    out = {k: v for k, v in row.items() if k != "tenant_id"}
    out["state"] = model.silence_state(row["starts_at"], row["ends_at"], now)
    return out


def check_silence(values: Mapping[str, Any]) -> None:
    """Refuse a silence without matchers, with unknown labels, or ending before it starts."""
    matchers = values["matchers"]
    if not matchers:
        raise InvalidInput(
            f"a silence needs at least one matcher among {', '.join(model.MATCHER_LABELS)}"
        )
    for name, value in matchers.items():
        if name not in model.MATCHER_LABELS:
            raise InvalidInput(
                f"unknown matcher {name!r}; matchers: {', '.join(model.MATCHER_LABELS)}"
            )
        if not isinstance(value, str) or not 1 <= len(value) <= MAX_MATCHER_CHARS:
            raise InvalidInput(f"matcher {name} takes a text of 1 to {MAX_MATCHER_CHARS} chars")
    if values["ends_at"] <= values["starts_at"]:
        raise InvalidInput("ends_at must be after starts_at")


class Silences:
    """Silences of a tenant: kept, listed, and asked at send time."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def _row(self, conn: AsyncConnection, tenant_id: str, silence_id: str) -> dict[str, Any]:
        found = await fetch_one(
            conn,
            sa.select(silences).where(
                silences.c.tenant_id == tenant_id, silences.c.id == silence_id
            ),
        )
        if found is None:
            raise NotFound(f"no silence {silence_id!r}")
        return found

    async def create(
        self, actor: Actor, values: Mapping[str, Any], now: datetime
    ) -> dict[str, Any]:
        """Add a silence (``starts_at`` defaults to now)."""
        actor.require(Role.OPERATOR)
        row = {
            "id": generate_id("sil"),
            "tenant_id": actor.tenant_id,
            "matchers": dict(values["matchers"]),
            "starts_at": values.get("starts_at") or now,
            "ends_at": values["ends_at"],
            "comment": values.get("comment") or "",
            "created_by": actor.name,
            "created_at": now,
            "updated_at": now,
        }
        check_silence(row)
        async with self.db.write() as conn:
            await conn.execute(silences.insert().values(**row))
            out = silence_out(row, now)
            await audit.record(conn, actor, "create", "silence", row["id"], after=out, at=now)
        return out

    async def get(self, actor: Actor, silence_id: str, now: datetime) -> dict[str, Any]:
        """One silence."""
        actor.require(Role.VIEWER)
        async with self.db.read() as conn:
            return silence_out(await self._row(conn, actor.tenant_id, silence_id), now)

    async def page(
        self, actor: Actor, page: PageRequest, now: datetime, state: str | None = None
    ) -> Page[dict[str, Any]]:
        """A page of silences, optionally only those ``active``, ``pending`` or ``expired``."""
        actor.require(Role.VIEWER)
        stmt = sa.select(silences).where(silences.c.tenant_id == actor.tenant_id)
        if state == "active":
            stmt = stmt.where(silences.c.starts_at <= now, silences.c.ends_at > now)
        elif state == "pending":
            stmt = stmt.where(silences.c.starts_at > now)
        elif state == "expired":
            stmt = stmt.where(silences.c.ends_at <= now)
        elif state is not None:
            raise InvalidInput(f"unknown state {state!r}; states: {', '.join(STATES)}")
        async with self.db.read() as conn:
            rows, total = await fetch_page(
                conn, stmt, order_by(silences, page.sort, SORTS, "-starts_at"), page
            )
        return Page([silence_out(r, now) for r in rows], total, page.limit, page.offset)

    async def update(
        self, actor: Actor, silence_id: str, changes: Mapping[str, Any], now: datetime
    ) -> dict[str, Any]:
        """Change a silence (end it early with ``ends_at``: now)."""
        actor.require(Role.OPERATOR)
        async with self.db.write() as conn:
            before = await self._row(conn, actor.tenant_id, silence_id)
            after = {**before, **changes, "updated_at": now}
            check_silence(after)
            await conn.execute(
                silences.update()
                .where(silences.c.id == silence_id)
                .values(**{**changes, "updated_at": now})
            )
            out = silence_out(after, now)
            await audit.record(conn, actor, "update", "silence", silence_id,
                               before=silence_out(before, now), after=out, at=now)  # fmt: skip
        return out

    async def delete(self, actor: Actor, silence_id: str, now: datetime) -> None:
        """Delete a silence."""
        actor.require(Role.OPERATOR)
        async with self.db.write() as conn:
            before = await self._row(conn, actor.tenant_id, silence_id)
            await conn.execute(silences.delete().where(silences.c.id == silence_id))
            await audit.record(conn, actor, "delete", "silence", silence_id,
                               before=silence_out(before, now), at=now)  # fmt: skip

    @staticmethod
    async def active_in(
        conn: AsyncConnection, tenant_id: str, now: datetime
    ) -> list[dict[str, str]]:
        """The matchers of the tenant's silences running now."""
        rows = as_dicts(
            await conn.execute(
                sa.select(silences.c.matchers).where(
                    silences.c.tenant_id == tenant_id,
                    silences.c.starts_at <= now,
                    silences.c.ends_at > now,
                )
            )
        )
        return [row["matchers"] for row in rows]
