"""Consumer groups: programs that pull the ingest log by offset, each group at its own pace.

A group is a name and a committed offset in one tenant. Pulling answers the tenant's items after
an offset (the committed one unless told otherwise) together with the offset to continue from;
committing moves the group forward. Several groups read the same log independently. A new group
starts at the beginning of what the log still holds, or at its end (only new items).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from roost.audit import service as audit
from roost.core.access import Actor, Role
from roost.core.ids import SLUG_RULE, is_slug
from roost.errors import Conflict, InvalidInput, NotFound
from roost.store.database import Database
from roost.store.queries import fetch_one
from roost.telemetry.consumers.service import scope_of
from roost.telemetry.engine.base import TimeSeriesStore
from roost.telemetry.queries.service import SeriesDirectory, batch_items
from roost.telemetry.streams.tables import consumer_groups

# Items one pull may answer; batches are read until this many items of the tenant are found.
MAX_PULL = 10_000
# Log rows scanned per pull at most, so a tenant with little traffic in a busy log still gets an
# answer quickly (with an offset to continue from, possibly with no items).
MAX_SCAN_ROWS = 200
STARTS = ("earliest", "latest")


class StreamService:
    """Consumer groups over the ingest log."""

    def __init__(
        self,
        db: Database,
        store: TimeSeriesStore,
        directory: SeriesDirectory,
        clock: Callable[[], datetime],
    ) -> None:
        self.db = db
        self.store = store
        self.directory = directory
        self.clock = clock

    async def _group(self, actor: Actor, group_id: str) -> dict[str, Any] | None:
        async with self.db.read() as conn:
            return await fetch_one(
                conn,
                sa.select(consumer_groups).where(
                    consumer_groups.c.tenant_id == actor.tenant_id, consumer_groups.c.id == group_id
                ),
            )

    async def status(self, actor: Actor, group_id: str) -> dict[str, Any]:
        """A group's committed offset and how far the log extends."""
        actor.require(Role.VIEWER)
        group = await self._group(actor, group_id)
        if group is None:
            raise NotFound(f"no consumer group {group_id!r}")
        first, next_offset = await self.store.log_bounds()
        return {
            "id": group_id,
            "committed_offset": group["committed_offset"],
            "log_first_offset": first,
            "log_next_offset": next_offset,
            "created_at": group["created_at"],
            "updated_at": group["updated_at"],
        }

    async def create(self, actor: Actor, group_id: str, start: str = "earliest") -> dict[str, Any]:
        """Create a group reading from the start of the log or from its end."""
        actor.require(Role.OPERATOR)
        if not is_slug(group_id):
            raise InvalidInput(f"group id {group_id!r} is not valid: {SLUG_RULE}")
        if start not in STARTS:
            raise InvalidInput("start must be earliest or latest")
        first, next_offset = await self.store.log_bounds()
        offset = first - 1 if start == "earliest" else next_offset - 1
        now = self.clock()
        row = {
            "tenant_id": actor.tenant_id,
            "id": group_id,
            "committed_offset": offset,
            "created_at": now,
            "updated_at": now,
        }
        async with self.db.write() as conn:
            if await fetch_one(
                conn,
                sa.select(consumer_groups.c.id).where(
                    consumer_groups.c.tenant_id == actor.tenant_id, consumer_groups.c.id == group_id
                ),
            ):
                raise Conflict(f"consumer group {group_id!r} already exists")
            await conn.execute(consumer_groups.insert().values(**row))
            await audit.record(conn, actor, "create", "consumer_group", group_id, after=row)
        return await self.status(actor, group_id)

    async def pull(
        self,
        actor: Actor,
        group_id: str,
        *,
        after_offset: int | None,
        limit: int,
    ) -> dict[str, Any]:
        """The tenant's items after ``after_offset`` (default: the committed offset).

        An unknown group is 404: a read never creates one (a mistyped name would silently start
        a new group); groups are made with :meth:`create` (``POST /streams``).
        """
        actor.require(Role.VIEWER)
        if not 1 <= limit <= MAX_PULL:
            raise InvalidInput(f"limit must be between 1 and {MAX_PULL}")
        group = await self._group(actor, group_id)
        if group is None:
            raise NotFound(f"no consumer group {group_id!r}: create it with POST /api/v1/streams")
        # A consumer key reads only its grants (resolved once per pull: group grants follow
        # membership at the time of the pull).
        scope = await scope_of(self.db, actor)
        keep = None if scope is None else scope.allows
        cursor = group["committed_offset"] if after_offset is None else after_offset
        first, next_offset = await self.store.log_bounds()
        truncated = cursor < first - 1
        items: list[dict[str, Any]] = []
        scanned = 0
        position = max(cursor, first - 1)
        full = False
        while not full and scanned < MAX_SCAN_ROWS and position < next_offset - 1:
            entries = await self.store.read_log(position, min(50, MAX_SCAN_ROWS - scanned))
            if not entries:
                break
            for entry in entries:
                scanned += 1
                batch = entry.batch
                await self.directory.resolve(
                    batch.series.tolist(), [e.device_pk for e in batch.events]
                )
                found = batch_items(
                    batch,
                    entry.first_offset,
                    self.directory,
                    tenant_id=actor.tenant_id,
                    after_offset=position,
                    keep=keep,
                )
                room = limit - len(items)
                if len(found) >= room:
                    # The page is full: continue after the last item taken (other tenants'
                    # items before it are behind the cursor too).
                    items += found[:room]
                    position = items[-1]["offset"]
                    full = True
                    break
                items += found
                position = max(position, entry.first_offset + len(batch) - 1)
        return {
            "group": group_id,
            "items": items,
            "next_offset": position,
            "committed_offset": group["committed_offset"],
            "truncated": truncated,
            "log_next_offset": next_offset,
        }

    async def commit(self, actor: Actor, group_id: str, offset: int) -> dict[str, Any]:
        """Move a group's committed offset (forward or back, within what was written)."""
        actor.require(Role.VIEWER)
        _first, next_offset = await self.store.log_bounds()
        if not -1 <= offset < next_offset:
            raise InvalidInput(
                f"offset must be between -1 and {next_offset - 1} (the last one written): "
                "commit the next_offset a pull answered"
            )
        async with self.db.write() as conn:
            result = await conn.execute(
                consumer_groups.update()
                .where(
                    consumer_groups.c.tenant_id == actor.tenant_id, consumer_groups.c.id == group_id
                )
                .values(committed_offset=offset, updated_at=self.clock())
            )
            if result.rowcount == 0:
                raise NotFound(f"no consumer group {group_id!r}")
        return await self.status(actor, group_id)

    async def delete(self, actor: Actor, group_id: str) -> None:
        """Forget a group."""
        actor.require(Role.OPERATOR)
        async with self.db.write() as conn:
            before = await fetch_one(
                conn,
                sa.select(consumer_groups).where(
                    consumer_groups.c.tenant_id == actor.tenant_id, consumer_groups.c.id == group_id
                ),
            )
            if before is None:
                raise NotFound(f"no consumer group {group_id!r}")
            await conn.execute(
                consumer_groups.delete().where(
                    consumer_groups.c.tenant_id == actor.tenant_id, consumer_groups.c.id == group_id
                )
            )
            await audit.record(conn, actor, "delete", "consumer_group", group_id, before=before)
