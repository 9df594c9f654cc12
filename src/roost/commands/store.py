"""The SQL of commands: a row's API view, the reads of it, and the guarded status move.

Shared by the command service's requests, deliveries, answers and due-row passes. Every function
works inside the caller's connection or transaction; none commits. A move is an
``UPDATE … WHERE status = <the status it was read in>``, so a device's answer and a timeout
racing for the same command cannot both win.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from roost.commands.lifecycle import CommandStatus, command_move
from roost.commands.tables import commands
from roost.errors import Conflict, NotFound
from roost.inventory.tables import devices
from roost.store.queries import fetch_one

C = CommandStatus

#: Rows a pass or a flush handles in one transaction; a full batch runs the pass again at once.
BATCH = 200


def command_out(row: Mapping[str, Any]) -> dict[str, Any]:
    """The API's view of a command row (joined with its device's id)."""
    return {
        "id": row["id"],
        "device_id": row["device_id"],
        "name": row["name"],
        "params": row["params"],
        "status": row["status"],
        "status_details": row["status_details"],
        "result": row["result"],
        "timeout_s": row["timeout_s"],
        "schedule_at": row["schedule_at"],
        "expires_at": row["expires_at"],
        "schedule_id": row["schedule_id"],
        "created_by": row["created_by"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "sent_at": row["sent_at"],
        "delivered_at": row["delivered_at"],
        "completed_at": row["completed_at"],
    }


def select_commands() -> sa.Select[Any]:
    """Command rows joined with their device's id (what :func:`command_out` reads)."""
    return sa.select(commands, devices.c.id.label("device_id")).join(
        devices, devices.c.pk == commands.c.device_pk
    )


def sendable(device_pk: int, now: datetime) -> sa.Select[Any]:
    """A device's queued commands that may go out now (scheduled time come, not expired)."""
    return (
        select_commands()
        .where(
            commands.c.device_pk == device_pk,
            commands.c.status == C.QUEUED.value,
            sa.or_(commands.c.schedule_at.is_(None), commands.c.schedule_at <= now),
            sa.or_(commands.c.expires_at.is_(None), commands.c.expires_at > now),
        )
        .order_by(commands.c.created_at, commands.c.id)
        .limit(BATCH)
    )


async def command_row(conn: AsyncConnection, device_pk: int, command_id: str) -> dict[str, Any]:
    """One command of a device, NotFound when the device has none of that id."""
    row = await fetch_one(
        conn,
        select_commands().where(commands.c.id == command_id, commands.c.device_pk == device_pk),
    )
    if row is None:
        raise NotFound(f"no command {command_id!r} for this device")
    return row


async def move(
    conn: AsyncConnection,
    row: Mapping[str, Any],
    target: CommandStatus,
    now: datetime,
    *,
    via: tuple[CommandStatus, ...] = (),
    strict: bool = True,
    **values: Any,
) -> dict[str, Any] | None:
    """Move ``row`` to ``target`` (through ``via``) if it is still in the status it was read in.

    An illegal move is a Conflict. A row that changed meanwhile (a response racing a timeout)
    is a Conflict too when ``strict``, else None.
    """
    current = C(row["status"])
    step = current
    for next_status in (*via, target):
        step = command_move(step, next_status)
    changes = {"status": target.value, "updated_at": now, **values}
    result = await conn.execute(
        commands.update()
        .where(commands.c.id == row["id"], commands.c.status == current.value)
        .values(**changes)
    )
    if result.rowcount != 1:
        if strict:
            raise Conflict("the command changed meanwhile; read it again")
        return None
    return {**row, **changes}
