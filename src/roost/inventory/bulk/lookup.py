"""What the store already holds for an import or export, looked up a chunk of ids at a time.

An import is planned against the store as a whole: the devices its rows name that exist already
(:func:`stored_devices`, with their tags, groups, sensors and components when they may be
updated) and which of the sites, models, firmware, customers and groups the rows name exist
(:func:`known_references`). Each is one query per chunk of ids for the whole file, never one
per row.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from roost.inventory.bulk.rows import Row
from roost.inventory.devices.service import DEVICE_REFERENCES
from roost.inventory.service import RESOURCES
from roost.inventory.tables import components, device_tags, devices, group_members, groups, sensors
from roost.store.queries import as_dicts

# Ids are looked up with IN (...): 500 keeps each statement well under any driver's limit on
# bound parameters (SQLite's was 999 before 3.32).
LOOKUP_CHUNK = 500


def chunks(values: Sequence[Any], size: int = LOOKUP_CHUNK) -> Iterable[Sequence[Any]]:
    """``values`` in slices small enough for one ``IN (...)`` lookup each."""
    for start in range(0, len(values), size):
        yield values[start : start + size]


async def _ids_of(
    conn: AsyncConnection, table: sa.Table, tenant_id: str, wanted: set[str]
) -> set[str]:
    found: set[str] = set()
    for chunk in chunks(sorted(wanted)):
        result = await conn.execute(
            sa.select(table.c.id).where(table.c.tenant_id == tenant_id, table.c.id.in_(chunk))
        )
        found.update(result.scalars())
    return found


@dataclass(slots=True)
class StoredDevices:
    """What the store already holds about devices named in the file."""

    rows: dict[str, dict[str, Any]] = field(default_factory=dict)  # device id → devices row
    tags: dict[int, dict[str, str]] = field(default_factory=dict)  # device pk → tags
    groups: dict[int, set[str]] = field(default_factory=dict)  # pk → static group ids
    sensors: dict[int, set[str]] = field(default_factory=dict)  # pk → sensor ids
    components: dict[int, set[str]] = field(default_factory=dict)  # pk → component ids


async def stored_devices(
    conn: AsyncConnection, tenant_id: str, ids: Sequence[str], *, details: bool
) -> StoredDevices:
    """Existing devices among ``ids``; with ``details`` also their tags, groups, sensors, parts."""
    current = StoredDevices()
    for chunk in chunks(ids):
        result = await conn.execute(
            sa.select(devices).where(devices.c.tenant_id == tenant_id, devices.c.id.in_(chunk))
        )
        current.rows.update((row["id"], row) for row in as_dicts(result))
    if not details or not current.rows:
        return current
    pks = [row["pk"] for row in current.rows.values()]
    for chunk in chunks(pks):
        for pk, key, value in await conn.execute(
            sa.select(device_tags.c.device_pk, device_tags.c.key, device_tags.c.value).where(
                device_tags.c.device_pk.in_(chunk)
            )
        ):
            current.tags.setdefault(pk, {})[key] = value
        for target, column, table in (
            (current.groups, group_members.c.group_id, group_members),
            (current.sensors, sensors.c.id, sensors),
            (current.components, components.c.id, components),
        ):
            for pk, value in await conn.execute(
                sa.select(table.c.device_pk, column).where(table.c.device_pk.in_(chunk))
            ):
                target.setdefault(pk, set()).add(value)
    return current


async def known_references(
    conn: AsyncConnection, tenant_id: str, rows: Sequence[Row]
) -> dict[str, set[str]]:
    """Which of the sites, models, firmware, customers and groups the rows name exist."""
    known: dict[str, set[str]] = {}
    for name, kind in DEVICE_REFERENCES.items():
        wanted = {ref for r in rows if (ref := r.fields.get(name))}
        known[name] = await _ids_of(conn, RESOURCES[kind].table, tenant_id, wanted)
    wanted_groups = sorted({g for r in rows for g in r.group_ids})
    known["group_ids"], known["static_groups"] = set(), set()
    for chunk in chunks(wanted_groups):
        for group_id, rule in await conn.execute(
            sa.select(groups.c.id, groups.c.filter).where(
                groups.c.tenant_id == tenant_id, groups.c.id.in_(chunk)
            )
        ):
            known["group_ids"].add(group_id)
            if rule is None:
                known["static_groups"].add(group_id)
    return known
