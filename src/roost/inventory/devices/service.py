"""Devices and what hangs under them: tags, group membership, sensors and components."""

from __future__ import annotations

import builtins
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from roost.audit import service as audit
from roost.core.access import Actor, Role
from roost.core.ids import generate_id, is_sensor_path, normalise_mac
from roost.errors import Conflict, InvalidInput, NotFound, ValidationFailed
from roost.inventory.rules import FILTER_FIELDS, matches
from roost.inventory.service import RESOURCES, check_id, check_lengths, check_references
from roost.inventory.tables import components, device_tags, devices, group_members, groups, sensors
from roost.store.database import Database
from roost.store.queries import Page, PageRequest, fetch_one, fetch_page, order_by, text_match

DEVICE_FIELDS = (
    "name",
    "description",
    "model_id",
    "site_id",
    "firmware_id",
    "customer_id",
    "notes",
)
DEVICE_REFERENCES = {
    "model_id": "device_model",
    "site_id": "site",
    "firmware_id": "firmware",
    "customer_id": "customer",
}
DEVICE_SORTS = (
    "id",
    "name",
    "model_id",
    "site_id",
    "firmware_id",
    "created_at",
    "updated_at",
    "last_seen_at",
    "heartbeat_interval_s",
)
MAX_HEARTBEAT_INTERVAL_S = 2**31 - 1
DEVICE_STATUSES = ("online", "offline", "never_seen")
SENSOR_TYPES = ("double", "long", "boolean", "string", "json")
SENSOR_FIELDS = ("path", "name", "type", "unit", "description")
COMPONENT_FIELDS = (
    "parent_id",
    "name",
    "kind",
    "serial_number",
    "mac_address",
    "manufacturer",
    "notes",
)
MAX_TAGS = 64
MAX_TAG_KEY = 128
MAX_TAG_VALUE = 256
# Told (tenant id, device id) once a device's deletion has committed: the device credentials
# refuse its tokens and close its sessions at once (roost.credentials.tokens.service).
DeletionListener = Callable[[str, str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class RegistryChange:
    """A committed change of devices or sensors that caches and stored series must follow."""

    device_pks: tuple[int, ...] = ()
    deleted_series: tuple[int, ...] = ()  # sensors deleted: their stored points go too
    deleted_device: bool = False
    all_devices: bool = False  # a device model changed: every device may be affected


ChangeHook = Callable[[RegistryChange], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class DeviceQuery:
    """Filters over devices; ``tags`` are (key, value) pairs, value None meaning "has the tag"."""

    site_id: str | None = None
    model_id: str | None = None
    firmware_id: str | None = None
    customer_id: str | None = None
    group: str | None = None
    tags: tuple[tuple[str, str | None], ...] = ()
    q: str | None = None
    status: str | None = None  # presence: online, offline, never_seen


def parse_tag_filter(raw: str) -> tuple[str, str | None]:
    """``key:value`` → (key, value); a bare ``key`` → (key, None)."""
    key, sep, value = raw.partition(":")
    if not key:
        raise InvalidInput(f"tag filter {raw!r} must look like key:value or key")
    return key, (value if sep else None)


def check_tags(tags: Any, *, allow_null: bool) -> dict[str, str | None]:
    """Validate a tags object; with ``allow_null`` a null value means "remove this tag"."""
    if not isinstance(tags, Mapping):
        raise InvalidInput("tags must be an object mapping tag names to string values")
    if len(tags) > MAX_TAGS:
        raise InvalidInput(f"a device has at most {MAX_TAGS} tags")
    clean: dict[str, str | None] = {}
    for key, value in tags.items():
        if not isinstance(key, str) or not key or len(key) > MAX_TAG_KEY or ":" in key:
            raise InvalidInput(f"tag name {key!r} must be 1-{MAX_TAG_KEY} characters without ':'")
        if value is None and allow_null:
            clean[key] = None
        elif isinstance(value, str) and len(value) <= MAX_TAG_VALUE:
            clean[key] = value
        elif isinstance(value, bool | int | float):
            clean[key] = str(value).lower() if isinstance(value, bool) else str(value)
        else:
            raise InvalidInput(
                f"tag {key!r} must have a string value of at most {MAX_TAG_VALUE} characters"
            )
    return clean


def _tag_condition(key: str, value: str | None) -> sa.ColumnElement[bool]:
    cond = sa.and_(device_tags.c.device_pk == devices.c.pk, device_tags.c.key == key)
    if value is not None:
        cond = sa.and_(cond, device_tags.c.value == value)
    return sa.exists(sa.select(1).select_from(device_tags).where(cond))


def group_condition(
    tenant_id: str,
    group: Mapping[str, Any],
    device_pk: sa.ColumnElement[int] = devices.c.pk,
) -> sa.ColumnElement[bool]:
    """SQL that selects the members of a group, static or dynamic.

    A static group's condition is on ``device_pk`` alone (a query of sensors may pass
    ``sensors.c.device_pk`` and skip the devices join); a dynamic one reads ``devices`` columns.
    """
    rule = group.get("filter")
    if rule is None:
        return device_pk.in_(
            sa.select(group_members.c.device_pk).where(
                group_members.c.tenant_id == tenant_id, group_members.c.group_id == group["id"]
            )
        )
    parts = [devices.c[f] == rule[f] for f in FILTER_FIELDS if f in rule]
    parts += [_tag_condition(k, v) for k, v in (rule.get("tags") or {}).items()]
    return sa.and_(*parts)


async def device_pk_of(conn: AsyncConnection, tenant_id: str, device_id: str) -> int:
    """The surrogate key of the tenant's device ``device_id``; NotFound when there is none."""
    pk = (
        await conn.execute(
            sa.select(devices.c.pk).where(
                devices.c.tenant_id == tenant_id, devices.c.id == device_id
            )
        )
    ).scalar()
    if pk is None:
        raise NotFound(f"no device {device_id!r}")
    return int(pk)


def _device_out(
    row: Mapping[str, Any], tags: Mapping[str, str], group_ids: list[str]
) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if k not in _INTERNAL_COLUMNS}
    out["tags"] = dict(tags)
    out["groups"] = group_ids
    # Presence, kept up to date by roost.presence.service.
    out["status"] = row["presence"]
    out["status_since"] = row["presence_since"]
    return out


# Device columns that are not part of a device's representation (keys, presence bookkeeping).
_INTERNAL_COLUMNS = frozenset(
    {"pk", "tenant_id", "presence", "presence_since", "connections", "offline_due_at"}
)


class DeviceService:
    """The device registry."""

    def __init__(self, db: Database, clock: Callable[[], datetime]) -> None:
        self.db = db
        self.clock = clock
        self.deletion_listeners: builtins.list[DeletionListener] = []
        # Called after a committed change that what caches a device's sensors must hear about.
        self.on_change: builtins.list[ChangeHook] = []

    async def changed(self, change: RegistryChange) -> None:
        """Tell the hooks about a committed change (ingest caches, stored series)."""
        for hook in self.on_change:
            await hook(change)

    # -- reading -----------------------------------------------------------------------------

    async def _group(self, conn: AsyncConnection, tenant_id: str, group_id: str) -> dict[str, Any]:
        row = await fetch_one(
            conn, sa.select(groups).where(groups.c.tenant_id == tenant_id, groups.c.id == group_id)
        )
        if row is None:
            raise NotFound(f"no group {group_id!r}")
        return row

    async def _decorate(
        self, conn: AsyncConnection, tenant_id: str, rows: Sequence[Mapping[str, Any]]
    ) -> list[dict[str, Any]]:
        """Attach tags and group ids to device rows with two queries for the whole page."""
        if not rows:
            return []
        pks = [r["pk"] for r in rows]
        tags: dict[int, dict[str, str]] = defaultdict(dict)
        for pk, key, value in await conn.execute(
            sa.select(device_tags.c.device_pk, device_tags.c.key, device_tags.c.value).where(
                device_tags.c.device_pk.in_(pks)
            )
        ):
            tags[pk][key] = value
        static: dict[int, list[str]] = defaultdict(list)
        for pk, group_id in await conn.execute(
            sa.select(group_members.c.device_pk, group_members.c.group_id).where(
                group_members.c.device_pk.in_(pks)
            )
        ):
            static[pk].append(group_id)
        dynamic = (
            await conn.execute(
                sa.select(groups.c.id, groups.c.filter).where(
                    groups.c.tenant_id == tenant_id, groups.c.filter.is_not(None)
                )
            )
        ).all()
        out = []
        for row in rows:
            row_tags = tags.get(row["pk"], {})
            view = {**row, "tags": row_tags}
            ids = static.get(row["pk"], []) + [
                g for g, rule in dynamic if rule and matches(rule, view)
            ]
            out.append(_device_out(row, row_tags, sorted(ids)))
        return out

    async def _device_row(
        self, conn: AsyncConnection, tenant_id: str, device_id: str
    ) -> dict[str, Any]:
        row = await fetch_one(
            conn,
            sa.select(devices).where(devices.c.tenant_id == tenant_id, devices.c.id == device_id),
        )
        if row is None:
            raise NotFound(f"no device {device_id!r}")
        return row

    async def get(self, actor: Actor, device_id: str) -> dict[str, Any]:
        """One device with its tags and groups."""
        actor.require(Role.VIEWER)
        async with self.db.read() as conn:
            row = await self._device_row(conn, actor.tenant_id, device_id)
            return (await self._decorate(conn, actor.tenant_id, [row]))[0]

    async def condition(
        self, conn: AsyncConnection, tenant_id: str, query: DeviceQuery
    ) -> sa.ColumnElement[bool]:
        """SQL selecting the tenant's devices that match every filter of ``query``."""
        parts = [devices.c.tenant_id == tenant_id]
        for name in ("site_id", "model_id", "firmware_id", "customer_id"):
            value = getattr(query, name)
            if value is not None:
                parts.append(devices.c[name] == value)
        parts += [_tag_condition(key, value) for key, value in query.tags]
        if query.q:
            parts.append(
                text_match(
                    [devices.c.id, devices.c.name, devices.c.description, devices.c.notes], query.q
                )
            )
        if query.status is not None:
            if query.status not in DEVICE_STATUSES:
                raise InvalidInput(
                    f"status must be one of {', '.join(DEVICE_STATUSES)}, not {query.status!r}"
                )
            parts.append(devices.c.presence == query.status)
        if query.group is not None:
            group = await self._group(conn, tenant_id, query.group)
            parts.append(group_condition(tenant_id, group))
        return sa.and_(*parts)

    async def list(
        self, actor: Actor, query: DeviceQuery, page: PageRequest
    ) -> Page[dict[str, Any]]:
        """A page of devices matching every given filter."""
        actor.require(Role.VIEWER)
        async with self.db.read() as conn:
            stmt = sa.select(devices).where(await self.condition(conn, actor.tenant_id, query))
            rows, total = await fetch_page(
                conn, stmt, order_by(devices, page.sort, DEVICE_SORTS, "id"), page
            )
            items = await self._decorate(conn, actor.tenant_id, rows)
        return Page(items, total, page.limit, page.offset)

    # -- writing -----------------------------------------------------------------------------

    def _values(self, data: Mapping[str, Any]) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name in DEVICE_FIELDS:
            if name in data:
                value = data[name]
                if value is not None and not isinstance(value, str):
                    raise InvalidInput(f"{name} must be a string")
                values[name] = value
        if "heartbeat_interval_s" in data:
            interval = data["heartbeat_interval_s"]
            if interval is not None and (
                isinstance(interval, bool)
                or not isinstance(interval, int)
                or not 0 < interval <= MAX_HEARTBEAT_INTERVAL_S
            ):
                raise InvalidInput(
                    "heartbeat_interval_s must be a whole number of seconds between 1 and "
                    f"{MAX_HEARTBEAT_INTERVAL_S} (or null: the model's interval)"
                )
            values["heartbeat_interval_s"] = interval
        check_lengths(devices, values)
        return values

    async def create_in(
        self, conn: AsyncConnection, actor: Actor, data: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Create a device inside the caller's transaction (used by create and bulk import)."""
        device_id = check_id(data.get("id") or generate_id("dev"), "device")
        values = {k: v for k, v in self._values(data).items() if v is not None}
        tags = check_tags(data.get("tags") or {}, allow_null=False)
        group_ids = list(data.get("group_ids") or [])
        now = self.clock()
        if await fetch_one(
            conn,
            sa.select(devices.c.pk).where(
                devices.c.tenant_id == actor.tenant_id, devices.c.id == device_id
            ),
        ):
            raise Conflict(f"device {device_id!r} already exists")
        await check_references(conn, actor.tenant_id, DEVICE_REFERENCES, values)
        # An unknown group is a bad reference in the body (422), not a missing resource (404).
        known_groups = set(
            (
                await conn.execute(
                    sa.select(groups.c.id).where(
                        groups.c.tenant_id == actor.tenant_id, groups.c.id.in_(group_ids)
                    )
                )
            ).scalars()
        )
        if unknown_groups := [g for g in group_ids if g not in known_groups]:
            raise ValidationFailed(
                "unknown reference: " + "; ".join(f"no group {g!r}" for g in unknown_groups),
                [
                    {"field": "group_ids", "value": g, "message": f"no group {g!r}"}
                    for g in unknown_groups
                ],
            )
        result = await conn.execute(
            devices.insert().values(
                tenant_id=actor.tenant_id, id=device_id, created_at=now, updated_at=now, **values
            )
        )
        pk = result.inserted_primary_key[0]  # type: ignore[index]
        if tags:
            await conn.execute(
                device_tags.insert(),
                [{"device_pk": pk, "key": k, "value": v} for k, v in tags.items()],
            )
        for group_id in group_ids:
            await self._add_member(conn, actor.tenant_id, group_id, pk, now)
        row = await self._device_row(conn, actor.tenant_id, device_id)
        out = (await self._decorate(conn, actor.tenant_id, [row]))[0]
        await audit.record(
            conn, actor, "create", "device", device_id, after=out, device_id=device_id
        )
        return out

    async def create_many_in(
        self, conn: AsyncConnection, actor: Actor, items: Sequence[Mapping[str, Any]]
    ) -> builtins.list[str]:
        """Create many new devices, with tags, static groups, sensors and components, in bulk.

        The rules of :meth:`create_in`, checked for the whole batch with one lookup per kind of
        reference, then one multi-row INSERT per table: 10,000 devices take about a second
        instead of minutes. An item's components must name a parent before its children. A
        fault raises before anything is written; its ``errors`` entries carry the device ``id``.
        """
        now = self.clock()
        batch = [_prepare_new_device(self, data) for data in items]
        ids = [item.id for item in batch]
        if len(set(ids)) != len(ids):
            twice = sorted({i for i in ids if ids.count(i) > 1})
            raise Conflict(f"devices listed twice: {', '.join(twice)}")
        existing = await _existing_ids(conn, actor.tenant_id, ids)
        if existing:
            raise ValidationFailed(
                f"devices already exist: {', '.join(sorted(existing)[:20])}",
                [
                    {"id": i, "field": "id", "message": f"device {i!r} already exists"}
                    for i in sorted(existing)
                ],
                status=409,
            )
        await _check_batch_references(conn, actor.tenant_id, batch)

        result = await conn.execute(
            devices.insert().returning(devices.c.id, devices.c.pk, sort_by_parameter_order=True),
            [
                {
                    "tenant_id": actor.tenant_id,
                    "id": item.id,
                    "created_at": now,
                    "updated_at": now,
                    "last_seen_at": None,
                    **{
                        k: item.values.get(k, "" if k in _TEXT_FIELDS else None)
                        for k in DEVICE_FIELDS
                    },
                }
                for item in batch
            ],
        )
        pks: dict[str, int] = {device_id: pk for device_id, pk in result.tuples()}
        dynamic = (
            await conn.execute(
                sa.select(groups.c.id, groups.c.filter).where(
                    groups.c.tenant_id == actor.tenant_id, groups.c.filter.is_not(None)
                )
            )
        ).all()
        tag_rows, member_rows, sensor_rows, component_rows, entries = [], [], [], [], []
        for item in batch:
            pk = pks[item.id]
            tag_rows += [{"device_pk": pk, "key": k, "value": v} for k, v in item.tags.items()]
            member_rows += [
                {"tenant_id": actor.tenant_id, "group_id": g, "device_pk": pk, "added_at": now}
                for g in item.group_ids
            ]
            sensor_rows += [
                {
                    "device_pk": pk,
                    "id": sid,
                    "created_at": now,
                    "updated_at": now,
                    **{k: values.get(k, _SENSOR_DEFAULTS.get(k)) for k in SENSOR_FIELDS},
                }
                for sid, values in item.sensors
            ]
            component_rows += [
                {
                    "device_pk": pk,
                    "id": cid,
                    "created_at": now,
                    "updated_at": now,
                    **{k: values.get(k, _COMPONENT_DEFAULTS.get(k)) for k in COMPONENT_FIELDS},
                }
                for cid, values in item.components
            ]
            view = {**item.values, "tags": item.tags}
            dyn = [g for g, rule in dynamic if rule and matches(rule, view)]
            snapshot = {
                "id": item.id,
                **{k: item.values.get(k, "" if k in _TEXT_FIELDS else None) for k in DEVICE_FIELDS},
                "last_seen_at": None,
                "created_at": now,
                "updated_at": now,
                "tags": item.tags,
                "groups": sorted([*item.group_ids, *dyn]),
                "status": "never_seen",
            }
            entries.append(
                {
                    "action": "create",
                    "entity_type": "device",
                    "entity_id": item.id,
                    "after": snapshot,
                    "device_id": item.id,
                }
            )
            entries += [
                {
                    "action": "create",
                    "entity_type": "sensor",
                    "entity_id": f"{item.id}/{sid}",
                    "after": {"id": sid, **values},
                    "device_id": item.id,
                }
                for sid, values in item.sensors
            ]
            entries += [
                {
                    "action": "create",
                    "entity_type": "component",
                    "entity_id": f"{item.id}/{cid}",
                    "after": {"id": cid, **values},
                    "device_id": item.id,
                }
                for cid, values in item.components
            ]
        for table, rows in (
            (device_tags, tag_rows),
            (group_members, member_rows),
            (sensors, sensor_rows),
            (components, component_rows),
        ):
            if rows:
                await conn.execute(table.insert(), rows)
        await audit.record_many(conn, actor, entries, now)
        return ids

    async def create(self, actor: Actor, data: Mapping[str, Any]) -> dict[str, Any]:
        """Register a device (id chosen by the caller or generated)."""
        actor.require(Role.OPERATOR)
        async with self.db.write() as conn:
            return await self.create_in(conn, actor, data)

    async def update_in(
        self, conn: AsyncConnection, actor: Actor, device_id: str, changes: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Change a device inside the caller's transaction; tags merge (null removes a tag)."""
        unknown = set(changes) - {*DEVICE_FIELDS, "heartbeat_interval_s", "tags"}
        if unknown:
            raise InvalidInput(f"device has no writable field(s) {sorted(unknown)}")
        values = self._values(changes)
        for text_field in ("name", "description", "notes"):
            if text_field in values and values[text_field] is None:
                values[text_field] = ""
        row = await self._device_row(conn, actor.tenant_id, device_id)
        before = (await self._decorate(conn, actor.tenant_id, [row]))[0]
        if "tags" in changes and changes["tags"] is None:
            # "tags": null clears every tag (a merge patch of null removes the whole member).
            tag_changes: dict[str, str | None] = dict.fromkeys(before["tags"])
        else:
            tag_changes = check_tags(changes.get("tags") or {}, allow_null=True)
        await check_references(conn, actor.tenant_id, DEVICE_REFERENCES, values)
        await conn.execute(
            devices.update()
            .where(devices.c.pk == row["pk"])
            .values(**values, updated_at=self.clock())
        )
        for key, value in tag_changes.items():
            await conn.execute(
                device_tags.delete().where(
                    device_tags.c.device_pk == row["pk"], device_tags.c.key == key
                )
            )
            if value is not None:
                await conn.execute(
                    device_tags.insert().values(device_pk=row["pk"], key=key, value=value)
                )
        merged = {k: v for k, v in {**before["tags"], **tag_changes}.items() if v is not None}
        if len(merged) > MAX_TAGS:
            raise InvalidInput(f"a device has at most {MAX_TAGS} tags")
        row = await self._device_row(conn, actor.tenant_id, device_id)
        after = (await self._decorate(conn, actor.tenant_id, [row]))[0]
        await audit.record(
            conn,
            actor,
            "update",
            "device",
            device_id,
            before=before,
            after=after,
            device_id=device_id,
        )
        return after

    async def update(
        self, actor: Actor, device_id: str, changes: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Change a device's fields and tags."""
        actor.require(Role.OPERATOR)
        async with self.db.write() as conn:
            after = await self.update_in(conn, actor, device_id, changes)
            pk = (await self._device_row(conn, actor.tenant_id, device_id))["pk"]
        if "model_id" in changes:
            await self.changed(RegistryChange(device_pks=(pk,)))
        return after

    async def delete(self, actor: Actor, device_id: str) -> None:
        """Remove a device with its tags, sensors, components and memberships."""
        actor.require(Role.OPERATOR)
        async with self.db.write() as conn:
            row = await self._device_row(conn, actor.tenant_id, device_id)
            before = (await self._decorate(conn, actor.tenant_id, [row]))[0]
            series = (
                (
                    await conn.execute(
                        sa.select(sensors.c.pk).where(sensors.c.device_pk == row["pk"])
                    )
                )
                .scalars()
                .all()
            )
            await conn.execute(devices.delete().where(devices.c.pk == row["pk"]))
            await audit.record(
                conn, actor, "delete", "device", device_id, before=before, device_id=device_id
            )
        await self.changed(
            RegistryChange(
                device_pks=(row["pk"],), deleted_series=tuple(series), deleted_device=True
            )
        )
        for listener in self.deletion_listeners:
            await listener(actor.tenant_id, device_id)

    # -- group membership --------------------------------------------------------------------

    async def _add_member(
        self, conn: AsyncConnection, tenant_id: str, group_id: str, device_pk: int, now: datetime
    ) -> bool:
        group = await self._group(conn, tenant_id, group_id)
        if group["filter"] is not None:
            raise Conflict(f"group {group_id!r} is dynamic: its members are chosen by its filter")
        exists = await fetch_one(
            conn,
            sa.select(group_members.c.device_pk).where(
                group_members.c.tenant_id == tenant_id,
                group_members.c.group_id == group_id,
                group_members.c.device_pk == device_pk,
            ),
        )
        if exists:
            return False
        await conn.execute(
            group_members.insert().values(
                tenant_id=tenant_id, group_id=group_id, device_pk=device_pk, added_at=now
            )
        )
        return True

    async def add_to_group(
        self, actor: Actor, group_id: str, device_ids: Iterable[str]
    ) -> builtins.list[str]:
        """Add devices to a static group; answer the ids that were not members before."""
        actor.require(Role.OPERATOR)
        wanted = list(dict.fromkeys(device_ids))
        if not wanted:
            raise InvalidInput("device_ids must name at least one device")
        added = []
        async with self.db.write() as conn:
            await self._group(conn, actor.tenant_id, group_id)
            found = dict(
                (
                    await conn.execute(
                        sa.select(devices.c.id, devices.c.pk).where(
                            devices.c.tenant_id == actor.tenant_id, devices.c.id.in_(wanted)
                        )
                    )
                ).all()
            )
            missing = [d for d in wanted if d not in found]
            if missing:
                raise ValidationFailed(
                    f"unknown devices: {', '.join(missing)}",
                    [
                        {"field": "device_ids", "value": d, "message": f"no device {d!r}"}
                        for d in missing
                    ],
                )
            for device_id in wanted:
                joined = await self.join_groups_in(
                    conn, actor, device_id, found[device_id], [group_id]
                )
                added += [device_id] if joined else []
        return added

    async def join_groups_in(
        self,
        conn: AsyncConnection,
        actor: Actor,
        device_id: str,
        device_pk: int,
        group_ids: Iterable[str],
    ) -> builtins.list[str]:
        """Add a device to static groups inside the caller's transaction, with audit entries.

        Answers the groups it was not a member of before.
        """
        joined = []
        now = self.clock()
        for group_id in group_ids:
            if await self._add_member(conn, actor.tenant_id, group_id, device_pk, now):
                joined.append(group_id)
                await audit.record(
                    conn,
                    actor,
                    "add",
                    "group_member",
                    f"{group_id}/{device_id}",
                    after={"group_id": group_id},
                    device_id=device_id,
                )
        return joined

    async def remove_from_group(self, actor: Actor, group_id: str, device_id: str) -> None:
        """Take a device out of a static group (404 if it was not a member)."""
        actor.require(Role.OPERATOR)
        async with self.db.write() as conn:
            await self._group(conn, actor.tenant_id, group_id)
            row = await self._device_row(conn, actor.tenant_id, device_id)
            result = await conn.execute(
                group_members.delete().where(
                    group_members.c.tenant_id == actor.tenant_id,
                    group_members.c.group_id == group_id,
                    group_members.c.device_pk == row["pk"],
                )
            )
            if result.rowcount == 0:
                raise NotFound(f"device {device_id!r} is not a static member of group {group_id!r}")
            await audit.record(
                conn,
                actor,
                "remove",
                "group_member",
                f"{group_id}/{device_id}",
                before={"group_id": group_id},
                device_id=device_id,
            )

    # -- sensors -----------------------------------------------------------------------------

    def _sensor_values(self, data: Mapping[str, Any], *, creating: bool) -> dict[str, Any]:
        values = {k: data[k] for k in SENSOR_FIELDS if k in data}
        if creating and not values.get("type"):
            raise ValidationFailed(
                "missing required fields: type", [{"field": "type", "message": "required"}]
            )
        if "type" in values and values["type"] not in SENSOR_TYPES:
            raise InvalidInput(f"sensor type must be one of {', '.join(SENSOR_TYPES)}")
        for name in ("path", "name", "unit", "description"):
            if name in values:
                if values[name] is None:
                    values[name] = ""
                elif not isinstance(values[name], str):
                    raise InvalidInput(f"{name} must be a string")
        if "path" in values:
            values["path"] = values["path"].strip("/")
            if not is_sensor_path(values["path"]):
                raise InvalidInput(
                    f"sensor path {values['path']!r} must look like wheels/front/left"
                )
        if len(values.get("unit", "")) > 32:
            raise InvalidInput("unit has at most 32 characters")
        check_lengths(sensors, values)
        return values

    @staticmethod
    def _sensor_out(row: Mapping[str, Any], device_id: str) -> dict[str, Any]:
        out = {k: v for k, v in row.items() if k not in {"pk", "device_pk"}}
        out["device_id"] = device_id
        return out

    async def _sensor_row(
        self, conn: AsyncConnection, device_pk: int, sensor_id: str
    ) -> dict[str, Any]:
        row = await fetch_one(
            conn,
            sa.select(sensors).where(sensors.c.device_pk == device_pk, sensors.c.id == sensor_id),
        )
        if row is None:
            raise NotFound(f"no sensor {sensor_id!r} on this device")
        return row

    async def create_sensor_in(
        self, conn: AsyncConnection, actor: Actor, device_id: str, data: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Add a sensor under a device inside the caller's transaction."""
        sensor_id = check_id(data.get("id"), "sensor")
        values = self._sensor_values(data, creating=True)
        device = await self._device_row(conn, actor.tenant_id, device_id)
        if await fetch_one(
            conn,
            sa.select(sensors.c.pk).where(
                sensors.c.device_pk == device["pk"], sensors.c.id == sensor_id
            ),
        ):
            raise Conflict(f"sensor {sensor_id!r} already exists on device {device_id!r}")
        now = self.clock()
        await conn.execute(
            sensors.insert().values(
                device_pk=device["pk"], id=sensor_id, created_at=now, updated_at=now, **values
            )
        )
        out = self._sensor_out(await self._sensor_row(conn, device["pk"], sensor_id), device_id)
        await audit.record(
            conn,
            actor,
            "create",
            "sensor",
            f"{device_id}/{sensor_id}",
            after=out,
            device_id=device_id,
        )
        return out

    async def auto_create_sensors_in(
        self, conn: AsyncConnection, wanted: Sequence[tuple[Actor, int, str, str, str]]
    ) -> None:
        """Create many devices' sensors at once inside the caller's transaction (first contact).

        ``wanted`` holds (the device as actor, device pk, device id, sensor id, type); ids and
        types were checked by the caller. A sensor that exists already is left alone (another
        connection or process made it). Raises like the database does (a device deleted
        meanwhile): the caller then falls back to one device at a time.
        """
        if not wanted:
            return
        now = self.clock()
        insert = (
            pg_insert(sensors) if self.db.dialect == "postgresql" else sqlite_insert(sensors)
        ).on_conflict_do_nothing(index_elements=["device_pk", "id"])
        existing: set[tuple[int, str]] = set()
        device_pks = sorted({pk for _, pk, _, _, _ in wanted})
        for start in range(0, len(device_pks), 500):
            rows = await conn.execute(
                sa.select(sensors.c.device_pk, sensors.c.id).where(
                    sensors.c.device_pk.in_(device_pks[start : start + 500])
                )
            )
            existing.update((pk, sensor_id) for pk, sensor_id in rows)
        fresh = [w for w in wanted if (w[1], w[3]) not in existing]
        if not fresh:
            return
        await conn.execute(
            insert,
            [
                {"device_pk": pk, "id": sensor_id, "type": kind, "created_at": now,
                 "updated_at": now}
                for _, pk, _, sensor_id, kind in fresh
            ],
        )  # fmt: skip
        await audit.record_each(
            conn,
            [
                (
                    actor,
                    {
                        "action": "create",
                        "entity_type": "sensor",
                        "entity_id": f"{device_id}/{sensor_id}",
                        "device_id": device_id,
                        "after": {"device_id": device_id, "id": sensor_id, "type": kind,
                                  "path": "", "name": "", "unit": "", "description": "",
                                  "created_at": now, "updated_at": now},
                    },
                )
                for actor, _, device_id, sensor_id, kind in fresh
            ],
            now,
        )  # fmt: skip

    async def create_sensor(
        self, actor: Actor, device_id: str, data: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Add a sensor (id unique within the device, a type, an optional path and unit)."""
        actor.require(Role.OPERATOR)
        async with self.db.write() as conn:
            created = await self.create_sensor_in(conn, actor, device_id, data)
            pk = (await self._device_row(conn, actor.tenant_id, device_id))["pk"]
        await self.changed(RegistryChange(device_pks=(pk,)))
        return created

    async def list_sensors(
        self,
        actor: Actor,
        device_id: str,
        page: PageRequest,
        *,
        type: str | None = None,
        path: str | None = None,
        q: str | None = None,
    ) -> Page[dict[str, Any]]:
        """A device's sensors; ``path`` selects a subtree (``wheels`` matches ``wheels/front``)."""
        actor.require(Role.VIEWER)
        async with self.db.read() as conn:
            device = await self._device_row(conn, actor.tenant_id, device_id)
            stmt = sa.select(sensors).where(sensors.c.device_pk == device["pk"])
            if type is not None:
                stmt = stmt.where(sensors.c.type == type)
            if path:
                prefix = path.strip("/")
                stmt = stmt.where(
                    sa.or_(
                        sensors.c.path == prefix,
                        sensors.c.path.startswith(prefix + "/", autoescape=True),
                    )
                )
            if q:
                stmt = stmt.where(text_match([sensors.c.id, sensors.c.name, sensors.c.path], q))
            rows, total = await fetch_page(
                conn,
                stmt,
                order_by(sensors, page.sort, ("id", "path", "name", "type", "created_at"), "id"),
                page,
            )
        return Page([self._sensor_out(r, device_id) for r in rows], total, page.limit, page.offset)

    async def get_sensor(self, actor: Actor, device_id: str, sensor_id: str) -> dict[str, Any]:
        """One sensor of a device."""
        actor.require(Role.VIEWER)
        async with self.db.read() as conn:
            device = await self._device_row(conn, actor.tenant_id, device_id)
            return self._sensor_out(
                await self._sensor_row(conn, device["pk"], sensor_id), device_id
            )

    async def update_sensor(
        self, actor: Actor, device_id: str, sensor_id: str, changes: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Change a sensor's path, name, type, unit or description."""
        actor.require(Role.OPERATOR)
        unknown = set(changes) - set(SENSOR_FIELDS)
        if unknown:
            raise InvalidInput(f"sensor has no writable field(s) {sorted(unknown)}")
        if "type" in changes and changes["type"] is None:
            raise InvalidInput("type cannot be null")
        values = self._sensor_values(changes, creating=False)
        async with self.db.write() as conn:
            device = await self._device_row(conn, actor.tenant_id, device_id)
            before = self._sensor_out(
                await self._sensor_row(conn, device["pk"], sensor_id), device_id
            )
            await conn.execute(
                sensors.update()
                .where(sensors.c.device_pk == device["pk"], sensors.c.id == sensor_id)
                .values(**values, updated_at=self.clock())
            )
            after = self._sensor_out(
                await self._sensor_row(conn, device["pk"], sensor_id), device_id
            )
            await audit.record(
                conn,
                actor,
                "update",
                "sensor",
                f"{device_id}/{sensor_id}",
                before=before,
                after=after,
                device_id=device_id,
            )
        await self.changed(RegistryChange(device_pks=(device["pk"],)))
        return after

    async def delete_sensor(self, actor: Actor, device_id: str, sensor_id: str) -> None:
        """Remove a sensor from a device."""
        actor.require(Role.OPERATOR)
        async with self.db.write() as conn:
            device = await self._device_row(conn, actor.tenant_id, device_id)
            row = await self._sensor_row(conn, device["pk"], sensor_id)
            before = self._sensor_out(row, device_id)
            await conn.execute(
                sensors.delete().where(
                    sensors.c.device_pk == device["pk"], sensors.c.id == sensor_id
                )
            )
            await audit.record(
                conn,
                actor,
                "delete",
                "sensor",
                f"{device_id}/{sensor_id}",
                before=before,
                device_id=device_id,
            )
        await self.changed(RegistryChange(device_pks=(device["pk"],), deleted_series=(row["pk"],)))

    # -- components --------------------------------------------------------------------------

    def _component_values(self, data: Mapping[str, Any], *, creating: bool) -> dict[str, Any]:
        values = {k: data[k] for k in COMPONENT_FIELDS if k in data}
        if creating and not values.get("name"):
            raise ValidationFailed(
                "missing required fields: name", [{"field": "name", "message": "required"}]
            )
        for name in ("name", "kind", "manufacturer", "notes"):
            if name in values and values[name] is None:
                if name == "name":
                    raise InvalidInput("name cannot be null")
                values[name] = ""
        mac = values.get("mac_address")
        if mac is not None:
            normal = normalise_mac(mac) if isinstance(mac, str) else None
            if normal is None:
                raise InvalidInput(
                    f"mac_address {mac!r} is not a MAC address like 00:1a:2b:3c:4d:5e"
                )
            values["mac_address"] = normal
        if values.get("parent_id") is not None:
            check_id(values["parent_id"], "parent component")
        check_lengths(components, values)
        return values

    @staticmethod
    def _component_out(row: Mapping[str, Any], device_id: str) -> dict[str, Any]:
        out = {k: v for k, v in row.items() if k != "device_pk"}
        out["device_id"] = device_id
        return out

    async def _component_row(
        self, conn: AsyncConnection, device_pk: int, component_id: str
    ) -> dict[str, Any]:
        row = await fetch_one(
            conn,
            sa.select(components).where(
                components.c.device_pk == device_pk, components.c.id == component_id
            ),
        )
        if row is None:
            raise NotFound(f"no component {component_id!r} on this device")
        return row

    async def _check_parent(
        self, conn: AsyncConnection, device_pk: int, component_id: str, parent_id: str | None
    ) -> None:
        """The parent must exist on the same device and must not be the component or below it."""
        seen = {component_id}
        current = parent_id
        while current is not None:
            if current in seen:
                raise InvalidInput("parent_id would make a component its own ancestor")
            seen.add(current)
            parent = await fetch_one(
                conn,
                sa.select(components.c.parent_id).where(
                    components.c.device_pk == device_pk, components.c.id == current
                ),
            )
            if parent is None:
                raise ValidationFailed(
                    f"no parent component {current!r} on this device",
                    [{"field": "parent_id", "message": f"no component {current!r}"}],
                )
            current = parent["parent_id"]

    async def create_component_in(
        self, conn: AsyncConnection, actor: Actor, device_id: str, data: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Add a component (or sub-component) inside the caller's transaction."""
        component_id = check_id(data.get("id") or generate_id("cmp"), "component")
        values = self._component_values(data, creating=True)
        device = await self._device_row(conn, actor.tenant_id, device_id)
        if await fetch_one(
            conn,
            sa.select(components.c.id).where(
                components.c.device_pk == device["pk"], components.c.id == component_id
            ),
        ):
            raise Conflict(f"component {component_id!r} already exists on device {device_id!r}")
        await self._check_parent(conn, device["pk"], component_id, values.get("parent_id"))
        now = self.clock()
        await conn.execute(
            components.insert().values(
                device_pk=device["pk"], id=component_id, created_at=now, updated_at=now, **values
            )
        )
        out = self._component_out(
            await self._component_row(conn, device["pk"], component_id), device_id
        )
        await audit.record(
            conn,
            actor,
            "create",
            "component",
            f"{device_id}/{component_id}",
            after=out,
            device_id=device_id,
        )
        return out

    async def create_component(
        self, actor: Actor, device_id: str, data: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Add a component with serial number and MAC address, optionally under a parent."""
        actor.require(Role.OPERATOR)
        async with self.db.write() as conn:
            return await self.create_component_in(conn, actor, device_id, data)

    async def list_components(
        self,
        actor: Actor,
        device_id: str,
        page: PageRequest,
        *,
        parent_id: str | None = None,
        kind: str | None = None,
        q: str | None = None,
    ) -> Page[dict[str, Any]]:
        """A device's components; ``parent_id=`` (empty) lists the top level."""
        actor.require(Role.VIEWER)
        async with self.db.read() as conn:
            device = await self._device_row(conn, actor.tenant_id, device_id)
            stmt = sa.select(components).where(components.c.device_pk == device["pk"])
            if parent_id is not None:
                stmt = stmt.where(
                    components.c.parent_id.is_(None)
                    if parent_id == ""
                    else components.c.parent_id == parent_id
                )
            if kind is not None:
                stmt = stmt.where(components.c.kind == kind)
            if q:
                stmt = stmt.where(
                    text_match(
                        [
                            components.c.id,
                            components.c.name,
                            components.c.serial_number,
                            components.c.mac_address,
                        ],
                        q,
                    )
                )
            rows, total = await fetch_page(
                conn,
                stmt,
                order_by(components, page.sort, ("id", "name", "kind", "created_at"), "id"),
                page,
            )
        return Page(
            [self._component_out(r, device_id) for r in rows], total, page.limit, page.offset
        )

    async def get_component(
        self, actor: Actor, device_id: str, component_id: str
    ) -> dict[str, Any]:
        """One component of a device."""
        actor.require(Role.VIEWER)
        async with self.db.read() as conn:
            device = await self._device_row(conn, actor.tenant_id, device_id)
            return self._component_out(
                await self._component_row(conn, device["pk"], component_id), device_id
            )

    async def update_component(
        self, actor: Actor, device_id: str, component_id: str, changes: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Change a component, including moving it under another parent."""
        actor.require(Role.OPERATOR)
        unknown = set(changes) - set(COMPONENT_FIELDS)
        if unknown:
            raise InvalidInput(f"component has no writable field(s) {sorted(unknown)}")
        values = self._component_values(changes, creating=False)
        async with self.db.write() as conn:
            device = await self._device_row(conn, actor.tenant_id, device_id)
            before = self._component_out(
                await self._component_row(conn, device["pk"], component_id), device_id
            )
            if "parent_id" in values:
                await self._check_parent(conn, device["pk"], component_id, values["parent_id"])
            await conn.execute(
                components.update()
                .where(components.c.device_pk == device["pk"], components.c.id == component_id)
                .values(**values, updated_at=self.clock())
            )
            after = self._component_out(
                await self._component_row(conn, device["pk"], component_id), device_id
            )
            await audit.record(
                conn,
                actor,
                "update",
                "component",
                f"{device_id}/{component_id}",
                before=before,
                after=after,
                device_id=device_id,
            )
        return after

    async def delete_component(self, actor: Actor, device_id: str, component_id: str) -> None:
        """Remove a component and its sub-components."""
        actor.require(Role.OPERATOR)
        async with self.db.write() as conn:
            device = await self._device_row(conn, actor.tenant_id, device_id)
            before = self._component_out(
                await self._component_row(conn, device["pk"], component_id), device_id
            )
            await conn.execute(
                components.delete().where(
                    components.c.device_pk == device["pk"], components.c.id == component_id
                )
            )
            await audit.record(
                conn,
                actor,
                "delete",
                "component",
                f"{device_id}/{component_id}",
                before=before,
                device_id=device_id,
            )


_TEXT_FIELDS = frozenset({"name", "description", "notes"})
_SENSOR_DEFAULTS: dict[str, Any] = {"path": "", "name": "", "unit": "", "description": ""}
_COMPONENT_DEFAULTS: dict[str, Any] = {
    "parent_id": None,
    "kind": "",
    "serial_number": None,
    "mac_address": None,
    "manufacturer": "",
    "notes": "",
}
# Ids are looked up with IN (...): 500 per statement stays under every driver's parameter limit.
_LOOKUP_CHUNK = 500


@dataclass(slots=True)
class _NewDevice:
    """A device of a bulk creation, checked on its own."""

    id: str
    values: dict[str, Any]
    tags: dict[str, str]
    group_ids: list[str]
    sensors: list[tuple[str, dict[str, Any]]]
    components: list[tuple[str, dict[str, Any]]]


def _prepare_new_device(service: DeviceService, data: Mapping[str, Any]) -> _NewDevice:
    device_id = check_id(data.get("id") or generate_id("dev"), "device")

    def fault(field: str, message: str) -> ValidationFailed:
        return ValidationFailed(message, [{"id": device_id, "field": field, "message": message}])

    try:
        values = {k: v for k, v in service._values(data).items() if v is not None}
        tags = {
            k: v
            for k, v in check_tags(data.get("tags") or {}, allow_null=False).items()
            if v is not None
        }
        sensor_list = [
            (check_id(raw.get("id"), "sensor"), service._sensor_values(raw, creating=True))
            for raw in data.get("sensors") or []
        ]
        component_list: list[tuple[str, dict[str, Any]]] = []
        for raw in data.get("components") or []:
            cid = check_id(raw.get("id") or generate_id("cmp"), "component")
            cvalues = service._component_values(raw, creating=True)
            component_list.append((cid, cvalues))
    except ValidationFailed as exc:
        raise ValidationFailed(exc.detail, [{"id": device_id, **e} for e in exc.errors]) from exc
    except InvalidInput as exc:
        raise fault("", exc.detail) from exc
    sensor_ids = [sid for sid, _ in sensor_list]
    if len(set(sensor_ids)) != len(sensor_ids):
        raise fault("sensors", f"device {device_id!r} lists a sensor id twice")
    placed: set[str] = set()
    for cid, cvalues in component_list:
        if cid in placed:
            raise fault("components", f"component {cid!r} is listed twice")
        parent = cvalues.get("parent_id")
        if parent is not None and parent not in placed:
            raise fault(
                "components",
                f"component {cid!r} names parent {parent!r}, which is not listed before it",
            )
        placed.add(cid)
    return _NewDevice(
        device_id,
        values,
        tags,
        list(dict.fromkeys(data.get("group_ids") or [])),
        sensor_list,
        component_list,
    )


def _chunks(values: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), _LOOKUP_CHUNK):
        yield values[start : start + _LOOKUP_CHUNK]


async def _existing_ids(conn: AsyncConnection, tenant_id: str, ids: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for chunk in _chunks(ids):
        found.update(
            (
                await conn.execute(
                    sa.select(devices.c.id).where(
                        devices.c.tenant_id == tenant_id, devices.c.id.in_(chunk)
                    )
                )
            ).scalars()
        )
    return found


async def _check_batch_references(
    conn: AsyncConnection, tenant_id: str, batch: Sequence[_NewDevice]
) -> None:
    """Every reference and group of the batch exists; one query per kind for the whole batch."""
    errors: list[dict[str, Any]] = []
    for column, kind in DEVICE_REFERENCES.items():
        wanted = sorted({item.values[column] for item in batch if item.values.get(column)})
        table = RESOURCES[kind].table
        known: set[str] = set()
        for chunk in _chunks(wanted):
            known.update(
                (
                    await conn.execute(
                        sa.select(table.c.id).where(
                            table.c.tenant_id == tenant_id, table.c.id.in_(chunk)
                        )
                    )
                ).scalars()
            )
        errors += [
            {
                "id": item.id,
                "field": column,
                "message": f"no {RESOURCES[kind].label} {item.values[column]!r}",
            }
            for item in batch
            if item.values.get(column) and item.values[column] not in known
        ]
    wanted_groups = sorted({g for item in batch for g in item.group_ids})
    static: set[str] = set()
    dynamic: set[str] = set()
    for chunk in _chunks(wanted_groups):
        for gid, rule in await conn.execute(
            sa.select(groups.c.id, groups.c.filter).where(
                groups.c.tenant_id == tenant_id, groups.c.id.in_(chunk)
            )
        ):
            (dynamic if rule is not None else static).add(gid)
    for item in batch:
        for g in item.group_ids:
            if g in dynamic:
                errors.append(
                    {
                        "id": item.id,
                        "field": "group_ids",
                        "message": f"group {g!r} is dynamic: its members are chosen by its filter",
                    }
                )
            elif g not in static:
                errors.append({"id": item.id, "field": "group_ids", "message": f"no group {g!r}"})
    if errors:
        raise ValidationFailed(
            "unknown reference: " + "; ".join(e["message"] for e in errors[:5]), errors
        )
