"""Static group membership: devices added to and taken out of groups by hand.

:class:`GroupMembership` is the part of the device registry that writes ``group_members``. Only
static groups have members written here; a dynamic group's members are the devices its filter
selects (see :func:`roost.inventory.devices.query.group_condition`), so adding to one is refused.
Every membership change is audited under the device.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from roost.audit import service as audit
from roost.core.access import Actor, Role
from roost.errors import Conflict, InvalidInput, NotFound, ValidationFailed
from roost.inventory.devices.registry import DeviceRegistry
from roost.inventory.tables import devices, group_members
from roost.store.queries import fetch_one


class GroupMembership(DeviceRegistry):
    """The static groups the registry's devices are members of."""

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
    ) -> list[str]:
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
    ) -> list[str]:
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
