"""What every part of the device registry shares: the store, the clock, change hooks and lookups.

:class:`DeviceRegistry` is the ground the registry's concept classes stand on (devices in
``service.py``, sensors, components, group membership): each one inherits it and
:class:`~roost.inventory.devices.service.DeviceService` brings them together as one object.
It holds the database and the clock, tells the hooks about committed changes
(:class:`RegistryChange`, for what caches a device's sensors and for stored series) and
finds one device or group of a tenant by id.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from roost.errors import NotFound
from roost.inventory.tables import devices, groups
from roost.store.database import Database
from roost.store.queries import fetch_one

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


class DeviceRegistry:
    """The store, clock and change hooks that the registry's parts share."""

    def __init__(self, db: Database, clock: Callable[[], datetime]) -> None:
        self.db = db
        self.clock = clock
        self.deletion_listeners: list[DeletionListener] = []
        # Called after a committed change that what caches a device's sensors must hear about.
        self.on_change: list[ChangeHook] = []

    async def changed(self, change: RegistryChange) -> None:
        """Tell the hooks about a committed change (ingest caches, stored series)."""
        for hook in self.on_change:
            await hook(change)

    async def _group(self, conn: AsyncConnection, tenant_id: str, group_id: str) -> dict[str, Any]:
        row = await fetch_one(
            conn, sa.select(groups).where(groups.c.tenant_id == tenant_id, groups.c.id == group_id)
        )
        if row is None:
            raise NotFound(f"no group {group_id!r}")
        return row

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
