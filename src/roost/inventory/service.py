"""Inventory records of a fleet: customers, sites, manufacturers, device models, firmware, groups.

Each kind is described once by a :class:`Resource` (table, writable fields, references, filters,
sort fields, what refers to it); one set of functions creates, lists, reads, changes and deletes
any of them, checks references inside the same transaction, and writes the audit entry.
Devices, which carry tags, sensors and components, live in ``inventory/devices/``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import False_, True_

from roost.audit import service as audit
from roost.core.access import Actor, Role
from roost.core.ids import SLUG_RULE, generate_id, is_slug
from roost.errors import Conflict, InvalidInput, NotFound, ValidationFailed
from roost.inventory.rules import validate_filter
from roost.inventory.tables import (
    customers,
    device_models,
    devices,
    firmware,
    group_members,
    groups,
    manufacturers,
    sites,
)
from roost.store.database import Database
from roost.store.queries import Page, PageRequest, fetch_one, fetch_page, order_by, text_match

Check = Callable[[dict[str, Any]], None]

# The column is a 32-bit integer on PostgreSQL; a larger interval (68 years) means nothing anyway.
MAX_HEARTBEAT_INTERVAL_S = 2**31 - 1


@dataclass(frozen=True, slots=True)
class Resource:
    """How one inventory kind is stored, validated, filtered and sorted."""

    kind: str
    table: sa.Table
    id_prefix: str
    writable: tuple[str, ...]
    required: tuple[str, ...] = ()
    references: Mapping[str, str] = field(default_factory=dict)
    filters: tuple[str, ...] = ()
    text_fields: tuple[str, ...] = ("id", "name")
    sorts: tuple[str, ...] = ("id", "name", "created_at", "updated_at")
    # (table, column, plural noun) of records that point at this kind and block its deletion.
    referenced_by: tuple[tuple[sa.Table, str, str], ...] = ()
    check: Check | None = None
    # Filters compared after normalising the query value like stored values are normalised.
    filter_casts: Mapping[str, Callable[[str], str]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """The kind in prose: ``device model`` for ``device_model``."""
        return self.kind.replace("_", " ")


def _check_site(values: dict[str, Any]) -> None:
    tz = values.get("timezone")
    if tz is not None:
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise InvalidInput(
                f"unknown time zone {tz!r}: use an IANA name like Europe/Paris"
            ) from None
    lat, lon = values.get("latitude"), values.get("longitude")
    if lat is not None and not -90 <= lat <= 90:
        raise InvalidInput("latitude must be between -90 and 90")
    if lon is not None and not -180 <= lon <= 180:
        raise InvalidInput("longitude must be between -180 and 180")
    country = values.get("country")
    if country is not None:
        if len(country) != 2 or not (country.isascii() and country.isalpha()):
            raise InvalidInput("country must be a two-letter ISO 3166 code such as FR")
        values["country"] = country.upper()


def _check_model(values: dict[str, Any]) -> None:
    interval = values.get("heartbeat_interval_s")
    if interval is not None and not 0 < interval <= MAX_HEARTBEAT_INTERVAL_S:
        raise InvalidInput(
            f"heartbeat_interval_s must be between 1 and {MAX_HEARTBEAT_INTERVAL_S} seconds"
        )


def _check_customer(values: dict[str, Any]) -> None:
    email = values.get("contact_email")
    if email and ("@" not in email or email.startswith("@") or email.endswith("@")):
        raise InvalidInput(f"contact_email {email!r} is not an e-mail address")


def _check_group(values: dict[str, Any]) -> None:
    if values.get("filter") is not None:
        values["filter"] = validate_filter(values["filter"])


RESOURCES: dict[str, Resource] = {
    r.kind: r
    for r in (
        Resource(
            kind="customer",
            table=customers,
            id_prefix="cust",
            writable=("name", "contact_email", "notes"),
            required=("name",),
            text_fields=("id", "name", "notes"),
            referenced_by=((sites, "customer_id", "sites"), (devices, "customer_id", "devices")),
            check=_check_customer,
        ),
        Resource(
            kind="site",
            table=sites,
            id_prefix="site",
            writable=(
                "name",
                "customer_id",
                "address",
                "city",
                "postal_code",
                "country",
                "timezone",
                "latitude",
                "longitude",
                "notes",
            ),
            required=("name",),
            references={"customer_id": "customer"},
            filters=("customer_id", "city", "country", "timezone"),
            text_fields=("id", "name", "address", "city", "notes"),
            sorts=("id", "name", "city", "country", "created_at", "updated_at"),
            referenced_by=((devices, "site_id", "devices"),),
            check=_check_site,
            filter_casts={"country": str.upper},
        ),
        Resource(
            kind="manufacturer",
            table=manufacturers,
            id_prefix="mfr",
            writable=("name", "website", "notes"),
            required=("name",),
            referenced_by=((device_models, "manufacturer_id", "device models"),),
        ),
        Resource(
            kind="device_model",
            table=device_models,
            id_prefix="model",
            writable=(
                "reference",
                "commercial_name",
                "manufacturer_id",
                "family",
                "description",
                "heartbeat_interval_s",
                "auto_create_sensors",
            ),
            required=("reference", "commercial_name"),
            references={"manufacturer_id": "manufacturer"},
            filters=("manufacturer_id", "family", "reference"),
            text_fields=("id", "reference", "commercial_name", "family", "description"),
            sorts=("id", "reference", "commercial_name", "family", "created_at", "updated_at"),
            referenced_by=(
                (devices, "model_id", "devices"),
                (firmware, "model_id", "firmware versions"),
            ),
            check=_check_model,
        ),
        Resource(
            kind="firmware",
            table=firmware,
            id_prefix="fw",
            writable=("version", "model_id", "release_notes", "released_at"),
            required=("version",),
            references={"model_id": "device_model"},
            filters=("model_id", "version"),
            text_fields=("id", "version", "release_notes"),
            sorts=("id", "version", "released_at", "created_at", "updated_at"),
            referenced_by=((devices, "firmware_id", "devices"),),
        ),
        Resource(
            kind="group",
            table=groups,
            id_prefix="grp",
            writable=("name", "description", "filter"),
            required=("name",),
            text_fields=("id", "name", "description"),
            check=_check_group,
        ),
    )
}


def _public(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in {"tenant_id", "pk"}}


async def check_references(
    conn: AsyncConnection, tenant_id: str, references: Mapping[str, str], values: Mapping[str, Any]
) -> None:
    """Raise ValidationFailed naming every reference field that points at nothing."""
    errors = []
    for column, kind in references.items():
        ref = values.get(column)
        if ref is None:
            continue
        table = RESOURCES[kind].table
        found = await fetch_one(
            conn, sa.select(table.c.id).where(table.c.tenant_id == tenant_id, table.c.id == ref)
        )
        if found is None:
            errors.append({"field": column, "message": f"no {RESOURCES[kind].label} {ref!r}"})
    if errors:
        raise ValidationFailed(
            "unknown reference: " + "; ".join(e["message"] for e in errors), errors
        )


# Text columns have no declared length; this bounds them all the same (a 100 kB note is a lot).
MAX_TEXT_LENGTH = 100_000


def check_lengths(table: sa.Table, values: Mapping[str, Any]) -> None:
    """Refuse strings longer than their column holds, on every backend and through every door.

    SQLite does not enforce VARCHAR lengths and PostgreSQL refuses with an error, so the rule
    is checked here, from the column types, once for both.
    """
    errors = []
    for name, value in values.items():
        if not isinstance(value, str) or name not in table.c:
            continue
        limit = getattr(table.c[name].type, "length", None) or MAX_TEXT_LENGTH
        if len(value) > limit:
            errors.append({"field": name, "message": f"at most {limit} characters"})
    if errors:
        fields = ", ".join(e["field"] for e in errors)
        raise ValidationFailed(f"too long: {fields}", errors)


def check_id(value: Any, label: str) -> str:
    """A user-chosen id, checked against the id rule."""
    if not isinstance(value, str) or not is_slug(value):
        raise InvalidInput(f"{label} id {value!r} is not valid: {SLUG_RULE}")
    return value


class InventoryService:
    """Create, list, read, change and delete inventory records of any :data:`RESOURCES` kind."""

    def __init__(self, db: Database, clock: Callable[[], datetime]) -> None:
        self.db = db
        self.clock = clock
        # Called with (kind, id) after a committed update, for caches that depend on records
        # (ingest caches each device model's auto_create_sensors).
        self.on_update: list[Callable[[str, str], Awaitable[None]]] = []

    async def create(self, actor: Actor, kind: str, data: Mapping[str, Any]) -> dict[str, Any]:
        """Create a record; 409 when the id exists, 422 when a reference points at nothing."""
        actor.require(Role.OPERATOR)
        spec = RESOURCES[kind]
        record_id = data.get("id") or generate_id(spec.id_prefix)
        check_id(record_id, spec.label)
        values = {k: data[k] for k in spec.writable if data.get(k) is not None}
        missing = [k for k in spec.required if k not in values]
        if missing:
            raise ValidationFailed(
                f"missing required fields: {', '.join(missing)}",
                [{"field": k, "message": "required"} for k in missing],
            )
        if spec.check:
            spec.check(values)
        check_lengths(spec.table, values)
        now = self.clock()
        t = spec.table
        async with self.db.write() as conn:
            if await fetch_one(
                conn, sa.select(t.c.id).where(t.c.tenant_id == actor.tenant_id, t.c.id == record_id)
            ):
                raise Conflict(f"{spec.label} {record_id!r} already exists")
            await check_references(conn, actor.tenant_id, spec.references, values)
            await conn.execute(
                t.insert().values(
                    tenant_id=actor.tenant_id,
                    id=record_id,
                    created_at=now,
                    updated_at=now,
                    **values,
                )
            )
            row = _public(await self._row(conn, spec, actor.tenant_id, record_id))
            await audit.record(conn, actor, "create", kind, record_id, after=row)
        return row

    async def _row(
        self, conn: AsyncConnection, spec: Resource, tenant_id: str, record_id: str
    ) -> dict[str, Any]:
        t = spec.table
        row = await fetch_one(
            conn, sa.select(t).where(t.c.tenant_id == tenant_id, t.c.id == record_id)
        )
        if row is None:
            raise NotFound(f"no {spec.label} {record_id!r}")
        return row

    async def get(self, actor: Actor, kind: str, record_id: str) -> dict[str, Any]:
        """One record of the actor's tenant."""
        actor.require(Role.VIEWER)
        async with self.db.read() as conn:
            return _public(await self._row(conn, RESOURCES[kind], actor.tenant_id, record_id))

    async def list(
        self,
        actor: Actor,
        kind: str,
        page: PageRequest,
        filters: Mapping[str, Any] | None = None,
        q: str | None = None,
    ) -> Page[dict[str, Any]]:
        """A page of records, filtered by equality on the kind's filter fields and by text."""
        actor.require(Role.VIEWER)
        spec = RESOURCES[kind]
        t = spec.table
        query = sa.select(t).where(t.c.tenant_id == actor.tenant_id)
        for name, value in (filters or {}).items():
            if value is None:
                continue
            if name not in spec.filters:
                raise InvalidInput(f"cannot filter {spec.label}s by {name!r}")
            cast = spec.filter_casts.get(name)
            query = query.where(t.c[name] == (cast(value) if cast else value))
        if q:
            query = query.where(text_match([t.c[f] for f in spec.text_fields], q))
        async with self.db.read() as conn:
            rows, total = await fetch_page(
                conn, query, order_by(t, page.sort, spec.sorts, "id"), page
            )
        return Page([_public(r) for r in rows], total, page.limit, page.offset)

    async def update(
        self, actor: Actor, kind: str, record_id: str, changes: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Change some fields; a field given as null is cleared (or reset to its default)."""
        actor.require(Role.OPERATOR)
        spec = RESOURCES[kind]
        unknown = set(changes) - set(spec.writable)
        if unknown:
            raise InvalidInput(f"{spec.label} has no writable field(s) {sorted(unknown)}")
        cleared_required = [k for k in spec.required if k in changes and changes[k] is None]
        if cleared_required:
            raise InvalidInput(f"required field(s) cannot be null: {', '.join(cleared_required)}")
        values = dict(changes)
        if spec.check:
            spec.check(values)
        check_lengths(spec.table, values)
        t = spec.table
        async with self.db.write() as conn:
            before = _public(await self._row(conn, spec, actor.tenant_id, record_id))
            await check_references(conn, actor.tenant_id, spec.references, values)
            if kind == "group" and values.get("filter") is not None:
                await _refuse_filter_on_static_members(conn, actor.tenant_id, record_id)
            defaults = {k: _column_default(t, k) for k, v in values.items() if v is None}
            values.update(defaults)
            await conn.execute(
                t.update()
                .where(t.c.tenant_id == actor.tenant_id, t.c.id == record_id)
                .values(**values, updated_at=self.clock())
            )
            after = _public(await self._row(conn, spec, actor.tenant_id, record_id))
            await audit.record(conn, actor, "update", kind, record_id, before=before, after=after)
        for hook in self.on_update:
            await hook(kind, record_id)
        return after

    async def delete(self, actor: Actor, kind: str, record_id: str) -> None:
        """Delete a record; 409 while other records still refer to it."""
        actor.require(Role.OPERATOR)
        spec = RESOURCES[kind]
        t = spec.table
        async with self.db.write() as conn:
            before = _public(await self._row(conn, spec, actor.tenant_id, record_id))
            blockers = []
            for table, column, noun in spec.referenced_by:
                count = (
                    await conn.execute(
                        sa.select(sa.func.count())
                        .select_from(table)
                        .where(table.c.tenant_id == actor.tenant_id, table.c[column] == record_id)
                    )
                ).scalar_one()
                if count:
                    blockers.append(f"{count} {noun}")
            if blockers:
                raise Conflict(
                    f"{spec.label} {record_id!r} is still used by {' and '.join(blockers)}; "
                    "reassign or delete them first"
                )
            await conn.execute(
                t.delete().where(t.c.tenant_id == actor.tenant_id, t.c.id == record_id)
            )
            await audit.record(conn, actor, "delete", kind, record_id, before=before)


async def _refuse_filter_on_static_members(
    conn: AsyncConnection, tenant_id: str, group_id: str
) -> None:
    """A group is static (listed members) or dynamic (a filter), never both at once."""
    count = (
        await conn.execute(
            sa.select(sa.func.count())
            .select_from(group_members)
            .where(group_members.c.tenant_id == tenant_id, group_members.c.group_id == group_id)
        )
    ).scalar_one()
    if count:
        raise Conflict(
            f"group {group_id!r} has {count} static members; remove them before giving it a filter"
        )


def _column_default(table: sa.Table, name: str) -> Any:
    """The value a cleared field takes: its server default for NOT NULL text or flags, else None."""
    column = table.c[name]
    if column.nullable:
        return None
    default = column.server_default
    if isinstance(default, sa.DefaultClause) and isinstance(default.arg, str):
        return default.arg
    if isinstance(default, sa.DefaultClause) and isinstance(default.arg, True_ | False_):
        return isinstance(default.arg, True_)
    raise InvalidInput(f"{name} cannot be null")
