"""Reference tables: tenant-owned lookup data (a product catalog, store facts) rules join on.

A table is replaced whole by an upload (CSV or JSON, :mod:`roost.alarms.reference.parse`), in one
transaction: a file with one bad row replaces nothing. Every replace is a new version (1, 2, …);
lookups see the current one. The metadata of every version stays (who, when, how many rows);
the rows of the last :data:`KEPT_VERSIONS` versions stay too, so an operator can read what an
earlier upload held; older versions' rows are pruned by the replace that makes them old.

The rules engine calls :meth:`ReferenceService.lookup` and :meth:`ReferenceService.exists`,
answered from memory (:mod:`roost.alarms.reference.cache`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from roost.alarms.reference import parse
from roost.alarms.reference.cache import CHANGED_SUBJECT, TableCache
from roost.alarms.reference.tables import reference_rows, reference_table_versions, reference_tables
from roost.audit import service as audit
from roost.bus.base import Subscription
from roost.core.access import Actor, Role
from roost.core.ids import SLUG_RULE, is_slug
from roost.errors import InvalidInput, NotFound
from roost.store.database import Database
from roost.store.queries import Page, PageRequest, as_dicts, fetch_one, text_match

if TYPE_CHECKING:
    from roost.core.context import ServiceDeps

log = logging.getLogger(__name__)

# Rows of the current version and the 4 before it: enough to compare an upload with the last few
# (a mistaken upload is usually noticed within a day or two), at most 5 × MAX_ROWS rows a table.
KEPT_VERSIONS = 5
# Rows are inserted this many at a time: few statements, a few MB of parameters each.
INSERT_BATCH = 2000
MAX_NAME_CHARS = 64
SORTS = ("name", "updated_at", "row_count")

_SEPARATOR = "\x1f"  # between values in search_text: q never matches across two values


def check_name(name: str) -> None:
    """Refuse a table name that is not a slug of at most :data:`MAX_NAME_CHARS` characters."""
    if len(name) > MAX_NAME_CHARS or not is_slug(name):
        raise InvalidInput(
            f"table name {name[:80]!r} is not valid: {SLUG_RULE}, at most {MAX_NAME_CHARS}"
        )


def _table_out(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": row["name"],
        "key": row["key_column"],
        "columns": list(row["columns"]),
        "version": row["version"],
        "row_count": row["row_count"],
        "updated_by": row["updated_by"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def _version_out(row: dict[str, Any], current: int) -> dict[str, Any]:
    return {
        "version": row["version"],
        "current": row["version"] == current,
        "key": row["key_column"],
        "columns": list(row["columns"]),
        "row_count": row["row_count"],
        "rows_kept": row["rows_kept"],
        "created_by": row["created_by"],
        "created_at": row["created_at"],
    }


def _search_text(values: dict[str, Any]) -> str:
    return _SEPARATOR.join("" if v is None else str(v) for v in values.values()).lower()


class ReferenceService:
    """Tenant-owned reference tables: upload, read, version history, and the engine's lookups."""

    def __init__(self, deps: ServiceDeps) -> None:
        self.deps = deps
        self.db: Database = deps.db
        self.clock: Callable[[], datetime] = deps.clock
        self.cache = TableCache(self._load, self._current_version)
        self._subscription: Subscription | None = None

    async def start(self) -> None:
        """Start following replacements made by other processes."""
        self._subscription = await self.deps.bus.subscribe(CHANGED_SUBJECT, self._on_changed)

    async def close(self) -> None:
        """Stop following changes and forget the cached tables."""
        if self._subscription is not None:
            await self._subscription.stop()
            self._subscription = None
        self.cache.clear()

    # -- the rules engine's calls ----------------------------------------------------------------

    async def lookup(self, tenant_id: str, table: str, key: str) -> dict[str, Any] | None:
        """The row of ``table`` whose key is ``key`` (a copy: column → value), or None."""
        _, rows = await self.cache.rows(tenant_id, table, lookup=True)
        row = rows.get(key)
        return None if row is None else dict(row)

    async def exists(self, tenant_id: str, table: str) -> bool:
        """True when the tenant has a table of that name."""
        version, _ = await self.cache.rows(tenant_id, table)
        return version > 0

    async def _load(self, tenant_id: str, table: str) -> tuple[int, dict[str, dict[str, Any]]]:
        async with self.db.read() as conn:
            version = await self._version_in(conn, tenant_id, table)
            if version == 0:
                return 0, {}
            result = await conn.execute(
                sa.select(reference_rows.c.key, reference_rows.c["values"]).where(
                    reference_rows.c.tenant_id == tenant_id,
                    reference_rows.c.table_name == table,
                    reference_rows.c.version == version,
                )
            )
            return version, {key: values for key, values in result}

    async def _current_version(self, tenant_id: str, table: str) -> int:
        async with self.db.read() as conn:
            return await self._version_in(conn, tenant_id, table)

    @staticmethod
    async def _version_in(conn: AsyncConnection, tenant_id: str, table: str) -> int:
        version = (
            await conn.execute(
                sa.select(reference_tables.c.version).where(
                    reference_tables.c.tenant_id == tenant_id, reference_tables.c.name == table
                )
            )
        ).scalar_one_or_none()
        return int(version or 0)

    async def _on_changed(self, subject: str, data: bytes) -> None:
        try:
            notice = orjson.loads(data)
            self.cache.drop(str(notice["tenant_id"]), str(notice["table"]))
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.warning("malformed reference change notice on %s; dropping every copy", subject)
            self.cache.clear()

    async def _changed(self, tenant_id: str, table: str, version: int) -> None:
        """After a commit: drop the copy here, and tell the other processes."""
        self.cache.drop(tenant_id, table)
        notice = orjson.dumps({"tenant_id": tenant_id, "table": table, "version": version})
        try:
            await self.deps.bus.publish(CHANGED_SUBJECT, notice)
        except Exception as exc:  # the change is committed; other copies recheck in RECHECK_S
            log.warning("could not announce the change of reference table %s: %s", table, exc)

    # -- tables ----------------------------------------------------------------------------------

    async def _table(self, conn: AsyncConnection, actor: Actor, table: str) -> dict[str, Any]:
        row = await fetch_one(
            conn,
            sa.select(reference_tables).where(
                reference_tables.c.tenant_id == actor.tenant_id, reference_tables.c.name == table
            ),
        )
        if row is None:
            raise NotFound(f"no reference table {table!r}")
        return row

    async def list(self, actor: Actor, page: PageRequest) -> Page[dict[str, Any]]:
        """The tenant's tables (metadata, no rows)."""
        actor.require(Role.VIEWER)
        spec = page.sort or "name"
        name = spec.removeprefix("-")
        if name not in SORTS:
            raise InvalidInput(f"cannot sort by {name!r}; sortable fields: {', '.join(SORTS)}")
        column = reference_tables.c[name]
        order = [column.desc() if spec.startswith("-") else column.asc(), reference_tables.c.name]
        where = reference_tables.c.tenant_id == actor.tenant_id
        async with self.db.read() as conn:
            total = (
                await conn.execute(
                    sa.select(sa.func.count()).select_from(reference_tables).where(where)
                )
            ).scalar_one()
            result = await conn.execute(
                sa.select(reference_tables)
                .where(where)
                .order_by(*order)
                .limit(page.limit)
                .offset(page.offset)
            )
            items = [_table_out(row) for row in as_dicts(result)]
        return Page(items, int(total), page.limit, page.offset)

    async def get(
        self,
        actor: Actor,
        table: str,
        page: PageRequest,
        *,
        q: str | None = None,
        version: int | None = None,
    ) -> dict[str, Any]:
        """A table's metadata and one page of the rows of its current (or a kept) version."""
        actor.require(Role.VIEWER)
        async with self.db.read() as conn:
            meta = await self._table(conn, actor, table)
            shown = meta["version"] if version is None else version
            if shown != meta["version"]:
                await self._kept_version(conn, actor, table, shown)
            where = [
                reference_rows.c.tenant_id == actor.tenant_id,
                reference_rows.c.table_name == table,
                reference_rows.c.version == shown,
            ]
            if q:
                where.append(text_match([reference_rows.c.search_text], q))
            total = (
                await conn.execute(
                    sa.select(sa.func.count()).select_from(reference_rows).where(*where)
                )
            ).scalar_one()
            result = await conn.execute(
                sa.select(reference_rows.c["values"])
                .where(*where)
                .order_by(reference_rows.c.position)
                .limit(page.limit)
                .offset(page.offset)
            )
            items = list(result.scalars())
        return {
            **_table_out(meta),
            "rows_version": shown,
            "rows": {
                "items": items,
                "total": int(total),
                "limit": page.limit,
                "offset": page.offset,
            },
        }

    async def _kept_version(
        self, conn: AsyncConnection, actor: Actor, table: str, version: int
    ) -> None:
        row = await fetch_one(
            conn,
            sa.select(reference_table_versions.c.rows_kept).where(
                reference_table_versions.c.tenant_id == actor.tenant_id,
                reference_table_versions.c.table_name == table,
                reference_table_versions.c.version == version,
            ),
        )
        if row is None:
            raise NotFound(f"reference table {table!r} has no version {version}")
        if not row["rows_kept"]:
            raise NotFound(
                f"the rows of version {version} of {table!r} are no longer kept "
                f"(those of the last {KEPT_VERSIONS} versions are)"
            )

    async def get_row(self, actor: Actor, table: str, key: str) -> dict[str, Any]:
        """One row of the current version, by its key."""
        actor.require(Role.VIEWER)
        async with self.db.read() as conn:
            meta = await self._table(conn, actor, table)
            values = (
                await conn.execute(
                    sa.select(reference_rows.c["values"]).where(
                        reference_rows.c.tenant_id == actor.tenant_id,
                        reference_rows.c.table_name == table,
                        reference_rows.c.version == meta["version"],
                        reference_rows.c.key == key,
                    )
                )
            ).scalar_one_or_none()
        if values is None:
            raise NotFound(f"reference table {table!r} has no row with key {key!r}")
        return {"table": table, "version": meta["version"], "key": key, "values": values}

    async def versions(self, actor: Actor, table: str, page: PageRequest) -> Page[dict[str, Any]]:
        """A table's versions, newest first (every version's metadata; rows of the kept ones)."""
        actor.require(Role.VIEWER)
        where = [
            reference_table_versions.c.tenant_id == actor.tenant_id,
            reference_table_versions.c.table_name == table,
        ]
        async with self.db.read() as conn:
            meta = await self._table(conn, actor, table)
            total = (
                await conn.execute(
                    sa.select(sa.func.count()).select_from(reference_table_versions).where(*where)
                )
            ).scalar_one()
            result = await conn.execute(
                sa.select(reference_table_versions)
                .where(*where)
                .order_by(reference_table_versions.c.version.desc())
                .limit(page.limit)
                .offset(page.offset)
            )
            items = [_version_out(row, meta["version"]) for row in as_dicts(result)]
        return Page(items, int(total), page.limit, page.offset)

    async def replace(
        self, actor: Actor, table: str, data: bytes, fmt: str, *, key: str | None = None
    ) -> dict[str, Any]:
        """Replace a table (made when new) with an upload in ``fmt`` (``csv`` or ``json``).

        ``key`` names the CSV key column (default: the first). Answers the table's new metadata.
        """
        actor.require(Role.OPERATOR)
        check_name(table)
        # Parsing tens of thousands of rows takes a CPU moment: off the event loop.
        parsed = await asyncio.to_thread(parse.parse, data, fmt, key)
        return await self.store(actor, table, parsed)

    async def store(self, actor: Actor, table: str, parsed: parse.ParsedTable) -> dict[str, Any]:
        """Make ``parsed`` the new current version of ``table``, in one transaction."""
        actor.require(Role.OPERATOR)
        check_name(table)
        now = self.clock()
        async with self.db.write() as conn:
            before = await fetch_one(
                conn,
                sa.select(reference_tables)
                .where(
                    reference_tables.c.tenant_id == actor.tenant_id,
                    reference_tables.c.name == table,
                )
                .with_for_update(),
            )
            version = 1 if before is None else before["version"] + 1
            meta = {
                "key_column": parsed.key_column,
                "columns": list(parsed.columns),
                "version": version,
                "row_count": len(parsed.rows),
                "updated_by": actor.name,
                "updated_at": now,
            }
            if before is None:
                await conn.execute(
                    reference_tables.insert().values(
                        tenant_id=actor.tenant_id, name=table, created_at=now, **meta
                    )
                )
            else:
                await conn.execute(
                    reference_tables.update()
                    .where(
                        reference_tables.c.tenant_id == actor.tenant_id,
                        reference_tables.c.name == table,
                    )
                    .values(**meta)
                )
            await self._insert_version(conn, actor, table, version, parsed, now)
            await self._prune(conn, actor.tenant_id, table, version)
            after = {**(before or {"name": table, "created_at": now}), **meta}
            await audit.record(
                conn,
                actor,
                "replace",
                "reference_table",
                table,
                before=None if before is None else _table_out(before),
                after=_table_out(after),
            )
        await self._changed(actor.tenant_id, table, version)
        return _table_out(after)

    async def _insert_version(
        self,
        conn: AsyncConnection,
        actor: Actor,
        table: str,
        version: int,
        parsed: parse.ParsedTable,
        now: datetime,
    ) -> None:
        await conn.execute(
            reference_table_versions.insert().values(
                tenant_id=actor.tenant_id,
                table_name=table,
                version=version,
                key_column=parsed.key_column,
                columns=list(parsed.columns),
                row_count=len(parsed.rows),
                rows_kept=True,
                created_by=actor.name,
                created_at=now,
            )
        )
        batch: list[dict[str, Any]] = []
        for position, (key, values) in enumerate(parsed.rows.items(), start=1):
            batch.append(
                {
                    "tenant_id": actor.tenant_id,
                    "table_name": table,
                    "version": version,
                    "key": key,
                    "position": position,
                    "values": values,
                    "search_text": _search_text(values),
                }
            )
            if len(batch) == INSERT_BATCH:
                await conn.execute(reference_rows.insert(), batch)
                batch = []
        if batch:
            await conn.execute(reference_rows.insert(), batch)

    @staticmethod
    async def _prune(conn: AsyncConnection, tenant_id: str, table: str, version: int) -> None:
        """Drop the rows of versions older than the last :data:`KEPT_VERSIONS`."""
        oldest_kept = version - KEPT_VERSIONS + 1
        if oldest_kept <= 1:
            return
        await conn.execute(
            reference_rows.delete().where(
                reference_rows.c.tenant_id == tenant_id,
                reference_rows.c.table_name == table,
                reference_rows.c.version < oldest_kept,
            )
        )
        await conn.execute(
            reference_table_versions.update()
            .where(
                reference_table_versions.c.tenant_id == tenant_id,
                reference_table_versions.c.table_name == table,
                reference_table_versions.c.version < oldest_kept,
                reference_table_versions.c.rows_kept.is_(True),
            )
            .values(rows_kept=False)
        )

    async def delete(self, actor: Actor, table: str) -> None:
        """Remove a table with its history; lookups on it find nothing from now on."""
        actor.require(Role.OPERATOR)
        async with self.db.write() as conn:
            before = await self._table(conn, actor, table)
            # Children first: the rows and versions go even where foreign keys do not cascade.
            for child in (reference_rows, reference_table_versions):
                await conn.execute(
                    child.delete().where(
                        child.c.tenant_id == actor.tenant_id, child.c.table_name == table
                    )
                )
            await conn.execute(
                reference_tables.delete().where(
                    reference_tables.c.tenant_id == actor.tenant_id,
                    reference_tables.c.name == table,
                )
            )
            await audit.record(
                conn, actor, "delete", "reference_table", table, before=_table_out(before)
            )
        await self._changed(actor.tenant_id, table, 0)
