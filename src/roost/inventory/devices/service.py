"""The device registry's devices: get, list, create, update and delete them (DeviceService).

:class:`DeviceService` is the one object callers hold for the whole registry. This module has
the devices themselves (their fields, tags and the groups they show in); it inherits the other
parts of the registry from their modules: ``sensors.py`` (:class:`DeviceSensors`),
``components.py`` (:class:`DeviceComponents`) and ``membership.py`` (:class:`GroupMembership`),
each standing on ``registry.py`` (:class:`DeviceRegistry`: store, clock, change hooks). Device
filters are in ``query.py``; creating many devices at once for an import is ``batch.py``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from roost.audit import service as audit
from roost.core.access import Actor, Role
from roost.core.device_identity import DeviceIdentity
from roost.core.ids import generate_id
from roost.errors import Conflict, InvalidInput, ValidationFailed
from roost.inventory.devices.components import DeviceComponents
from roost.inventory.devices.membership import GroupMembership
from roost.inventory.devices.query import (
    DEVICE_STATUSES,
    MAX_TAGS,
    DeviceQuery,
    check_tags,
    group_condition,
    tag_condition,
)
from roost.inventory.devices.registry import RegistryChange
from roost.inventory.devices.sensors import DeviceSensors
from roost.inventory.rules import matches
from roost.inventory.service import check_id, check_lengths, check_references
from roost.inventory.tables import device_tags, devices, group_members, groups, sensors
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


def device_values(data: Mapping[str, Any]) -> dict[str, Any]:
    """The checked device fields of a create or update body (tags and groups aside)."""
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


class DeviceService(DeviceSensors, DeviceComponents, GroupMembership):
    """The device registry: devices, with their sensors, components and static groups."""

    # -- reading -----------------------------------------------------------------------------

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

    async def get(self, actor: Actor, device_id: str) -> dict[str, Any]:
        """One device with its tags and groups."""
        actor.require(Role.VIEWER)
        async with self.db.read() as conn:
            row = await self._device_row(conn, actor.tenant_id, device_id)
            return (await self._decorate(conn, actor.tenant_id, [row]))[0]

    async def own(self, identity: DeviceIdentity) -> dict[str, Any]:
        """The calling device's own record (its identity for the agent's metadata service)."""
        async with self.db.read() as conn:
            row = await self._device_row(conn, identity.tenant_id, identity.device_id)
            out = (await self._decorate(conn, identity.tenant_id, [row]))[0]
        return {**out, "tenant_id": identity.tenant_id, "group_ids": out["groups"]}

    async def condition(
        self, conn: AsyncConnection, tenant_id: str, query: DeviceQuery
    ) -> sa.ColumnElement[bool]:
        """SQL selecting the tenant's devices that match every filter of ``query``."""
        parts = [devices.c.tenant_id == tenant_id]
        for name in ("site_id", "model_id", "firmware_id", "customer_id"):
            value = getattr(query, name)
            if value is not None:
                parts.append(devices.c[name] == value)
        parts += [tag_condition(key, value) for key, value in query.tags]
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

    async def create_in(
        self, conn: AsyncConnection, actor: Actor, data: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Create a device inside the caller's transaction (used by create and bulk import)."""
        device_id = check_id(data.get("id") or generate_id("dev"), "device")
        values = {k: v for k, v in device_values(data).items() if v is not None}
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
        values = device_values(changes)
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
