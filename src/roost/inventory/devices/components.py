"""A device's components: the parts it is built of, as a tree, with serial numbers and MACs.

:class:`DeviceComponents` is the part of the device registry that handles components. A
component may sit under a parent component of the same device; the tree never loops (a
component cannot become its own ancestor), and deleting a component deletes what is under it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from roost.audit import service as audit
from roost.core.access import Actor, Role
from roost.core.ids import generate_id, normalise_mac
from roost.errors import Conflict, InvalidInput, NotFound, ValidationFailed
from roost.inventory.devices.registry import DeviceRegistry
from roost.inventory.service import check_id, check_lengths
from roost.inventory.tables import components
from roost.store.queries import Page, PageRequest, fetch_one, fetch_page, order_by, text_match

COMPONENT_FIELDS = (
    "parent_id",
    "name",
    "kind",
    "serial_number",
    "mac_address",
    "manufacturer",
    "notes",
)


def component_values(data: Mapping[str, Any], *, creating: bool) -> dict[str, Any]:
    """The checked component fields of a create (``creating``) or update body."""
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
            raise InvalidInput(f"mac_address {mac!r} is not a MAC address like 00:1a:2b:3c:4d:5e")
        values["mac_address"] = normal
    if values.get("parent_id") is not None:
        check_id(values["parent_id"], "parent component")
    check_lengths(components, values)
    return values


def _component_out(row: Mapping[str, Any], device_id: str) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if k != "device_pk"}
    out["device_id"] = device_id
    return out


COMPONENT_SORTS = ("id", "name", "kind", "created_at")


class DeviceComponents(DeviceRegistry):
    """The components of the registry's devices."""

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
        values = component_values(data, creating=True)
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
        out = _component_out(await self._component_row(conn, device["pk"], component_id), device_id)
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
                order_by(components, page.sort, COMPONENT_SORTS, "id"),
                page,
            )
        return Page([_component_out(r, device_id) for r in rows], total, page.limit, page.offset)

    async def get_component(
        self, actor: Actor, device_id: str, component_id: str
    ) -> dict[str, Any]:
        """One component of a device."""
        actor.require(Role.VIEWER)
        async with self.db.read() as conn:
            device = await self._device_row(conn, actor.tenant_id, device_id)
            return _component_out(
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
        values = component_values(changes, creating=False)
        async with self.db.write() as conn:
            device = await self._device_row(conn, actor.tenant_id, device_id)
            before = _component_out(
                await self._component_row(conn, device["pk"], component_id), device_id
            )
            if "parent_id" in values:
                await self._check_parent(conn, device["pk"], component_id, values["parent_id"])
            await conn.execute(
                components.update()
                .where(components.c.device_pk == device["pk"], components.c.id == component_id)
                .values(**values, updated_at=self.clock())
            )
            after = _component_out(
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
            before = _component_out(
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
