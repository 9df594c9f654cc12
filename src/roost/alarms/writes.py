"""Raising and clearing many alarms in one transaction, with a few statements.

The rules engine decides alarm changes by the thousand in an alarm storm (a store losing its
network, a fleet crossing a threshold). :func:`apply_ops` plays a chunk's raises and clears in
order against the open alarms it reads in one query, then writes the outcome with one
``UPDATE`` per changed existing alarm batch and one multi-row ``INSERT`` for new ones — instead of
a read and a write per change. A device's alarm raised and cleared within the chunk is inserted
already cleared; the answer has one change per op, in order, each a snapshot of the alarm as that
op left it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from roost.alarms.rules.model import SEVERITIES
from roost.alarms.tables import alarms

#: Open keys looked up per statement.
_CHUNK: Final = 500
_RANK: Final = {name: i for i, name in enumerate(SEVERITIES)}  # critical = 0
_UPDATED: Final = ("severity", "status", "open_key", "count", "last_at", "ended_at", "details",
                   "cleared_by")  # fmt: skip


@dataclass(frozen=True, slots=True)
class AlarmOp:
    """Raise (open or repeat) or clear the alarm of a device and type."""

    kind: str  # raise | clear
    tenant_id: str
    device_pk: int
    device_id: str
    type: str
    at: datetime
    severity: str = "major"
    rule_id: str | None = None
    summary: str = ""
    details: dict[str, Any] | None = None
    by: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        """(tenant, open key)."""
        return (self.tenant_id, f"{self.device_pk}:{self.type}")


@dataclass(slots=True)
class OpResult:
    """What one op did: ``raised``, ``repeated`` or ``cleared`` (None: nothing to clear)."""

    change: str | None
    alarm: dict[str, Any] | None
    row: dict[str, Any] | None  # the live row (its id is filled in once inserted)


def graver(a: str, b: str) -> str:
    """The graver of two severities (a warning does not calm a critical)."""
    return min(a, b, key=lambda s: _RANK.get(s, len(_RANK)))


async def _open_rows(
    conn: AsyncConnection, keys: set[tuple[str, str]]
) -> dict[tuple[str, str], dict[str, Any]]:
    found: dict[tuple[str, str], dict[str, Any]] = {}
    ordered = sorted(keys)
    for start in range(0, len(ordered), _CHUNK):
        part = ordered[start : start + _CHUNK]
        result = await conn.execute(
            sa.select(alarms).where(sa.tuple_(alarms.c.tenant_id, alarms.c.open_key).in_(part))
        )
        for row in result.mappings():
            found[(row["tenant_id"], row["open_key"])] = dict(row)
    return found


async def apply_ops(conn: AsyncConnection, ops: Sequence[AlarmOp]) -> list[OpResult]:
    """Play ``ops`` in order inside the caller's transaction; one result per op."""
    if not ops:
        return []
    open_rows = await _open_rows(conn, {op.key for op in ops})
    inserts: list[dict[str, Any]] = []
    updated: dict[int, dict[str, Any]] = {}  # id → existing row changed
    results: list[OpResult] = []
    for op in ops:
        row = open_rows.get(op.key)
        if op.kind == "clear":
            if row is None:
                results.append(OpResult(None, None, None))
                continue
            del open_rows[op.key]
            row.update(status="cleared", open_key=None, ended_at=op.at, cleared_by=op.by)
            change = "cleared"
        elif row is not None:
            row.update(
                count=row["count"] + 1,
                last_at=op.at,
                severity=graver(row["severity"], op.severity),
                details=op.details or row["details"],
            )
            change = "repeated"
        else:
            row = {
                "id": None,
                "tenant_id": op.tenant_id,
                "device_pk": op.device_pk,
                "device_id": op.device_id,
                "type": op.type,
                "rule_id": op.rule_id,
                "severity": op.severity,
                "status": "active",
                "open_key": op.key[1],
                "acknowledged": False,
                "acked_by": None,
                "acked_at": None,
                "cleared_by": None,
                "summary": op.summary,
                "details": op.details or {},
                "count": 1,
                "started_at": op.at,
                "last_at": op.at,
                "ended_at": None,
            }
            open_rows[op.key] = row
            inserts.append(row)
            change = "raised"
        if row["id"] is not None:
            updated[row["id"]] = row
        results.append(OpResult(change, dict(row), row))
    if updated:
        # Existing rows first: one cleared here frees its open key for a new row inserted below.
        await conn.execute(
            alarms.update()
            .where(alarms.c.id == sa.bindparam("_id"))
            .values({name: sa.bindparam(f"_{name}") for name in _UPDATED}),
            [
                {"_id": row_id, **{f"_{name}": row[name] for name in _UPDATED}}
                for row_id, row in updated.items()
            ],
        )
    if inserts:
        values = [{k: v for k, v in row.items() if k != "id"} for row in inserts]
        result = await conn.execute(
            alarms.insert().returning(alarms.c.id, sort_by_parameter_order=True), values
        )
        for row, (new_id,) in zip(inserts, result.all(), strict=True):
            row["id"] = new_id
    for result_ in results:
        if result_.alarm is not None and result_.row is not None:
            result_.alarm["id"] = result_.row["id"]
    return results
