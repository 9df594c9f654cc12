"""A device's sensors: the typed series it reports, created, listed, changed and deleted.

:class:`DeviceSensors` is the part of the device registry that handles sensors, including their
automatic creation at a device's first contact (:meth:`DeviceSensors.auto_create_sensors_in`).
Every committed change is told to the registry's hooks, so the ingest caches follow it and a
deleted sensor's stored points go too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from roost.audit import service as audit
from roost.core.access import Actor, Role
from roost.core.ids import is_sensor_path
from roost.errors import Conflict, InvalidInput, NotFound, ValidationFailed
from roost.inventory.devices.registry import DeviceRegistry, RegistryChange
from roost.inventory.service import check_id, check_lengths
from roost.inventory.tables import sensors
from roost.store.queries import Page, PageRequest, fetch_one, fetch_page, order_by, text_match

SENSOR_TYPES = ("double", "long", "boolean", "string", "json")
SENSOR_FIELDS = ("path", "name", "type", "unit", "description")


def sensor_values(data: Mapping[str, Any], *, creating: bool) -> dict[str, Any]:
    """The checked sensor fields of a create (``creating``) or update body."""
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
            raise InvalidInput(f"sensor path {values['path']!r} must look like wheels/front/left")
    if len(values.get("unit", "")) > 32:
        raise InvalidInput("unit has at most 32 characters")
    check_lengths(sensors, values)
    return values


def _sensor_out(row: Mapping[str, Any], device_id: str) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if k not in {"pk", "device_pk"}}
    out["device_id"] = device_id
    return out


SENSOR_SORTS = ("id", "path", "name", "type", "created_at")


class DeviceSensors(DeviceRegistry):
    """The sensors of the registry's devices."""

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
        values = sensor_values(data, creating=True)
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
        out = _sensor_out(await self._sensor_row(conn, device["pk"], sensor_id), device_id)
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
                order_by(sensors, page.sort, SENSOR_SORTS, "id"),
                page,
            )
        return Page([_sensor_out(r, device_id) for r in rows], total, page.limit, page.offset)

    async def get_sensor(self, actor: Actor, device_id: str, sensor_id: str) -> dict[str, Any]:
        """One sensor of a device."""
        actor.require(Role.VIEWER)
        async with self.db.read() as conn:
            device = await self._device_row(conn, actor.tenant_id, device_id)
            return _sensor_out(await self._sensor_row(conn, device["pk"], sensor_id), device_id)

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
        values = sensor_values(changes, creating=False)
        async with self.db.write() as conn:
            device = await self._device_row(conn, actor.tenant_id, device_id)
            before = _sensor_out(await self._sensor_row(conn, device["pk"], sensor_id), device_id)
            await conn.execute(
                sensors.update()
                .where(sensors.c.device_pk == device["pk"], sensors.c.id == sensor_id)
                .values(**values, updated_at=self.clock())
            )
            after = _sensor_out(await self._sensor_row(conn, device["pk"], sensor_id), device_id)
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
            before = _sensor_out(row, device_id)
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
