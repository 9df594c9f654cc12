"""Exporting devices: the fleet, or the part a query selects, as a file that imports back.

An export writes exactly the shapes an import reads (:mod:`roost.inventory.bulk.parse`), so it
re-imports cleanly into another tenant: JSON carries each device with its tags, static groups,
sensors and components; CSV holds the devices with one ``tag.<key>`` column per tag.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import orjson
import sqlalchemy as sa

from roost.core.access import Actor, Role
from roost.inventory.bulk.lookup import chunks
from roost.inventory.bulk.parse import (
    CSV_COLUMNS,
    FORMATS,
    GROUP_SEPARATOR,
    TAG_PREFIX,
    UnsupportedFormat,
)
from roost.inventory.bulk.rows import parent_first
from roost.inventory.devices.components import COMPONENT_FIELDS
from roost.inventory.devices.query import DeviceQuery
from roost.inventory.devices.sensors import SENSOR_FIELDS
from roost.inventory.devices.service import DEVICE_FIELDS, DeviceService
from roost.inventory.tables import components, devices, groups, sensors
from roost.store.queries import MAX_LIMIT, PageRequest, as_dicts

# An export reads the device list one page at a time, the largest page the list allows.
EXPORT_PAGE = MAX_LIMIT


def _device_record(device: Mapping[str, Any], static_groups: set[str]) -> dict[str, Any]:
    """A device as an import row: its fields, tags and static groups."""
    record: dict[str, Any] = {"id": device["id"]}
    record.update((name, device[name]) for name in DEVICE_FIELDS)
    record["tags"] = dict(sorted(device["tags"].items()))
    record["group_ids"] = [g for g in device["groups"] if g in static_groups]
    return record


async def _static_groups(service: DeviceService, tenant_id: str) -> set[str]:
    async with service.db.read() as conn:
        result = await conn.execute(
            sa.select(groups.c.id).where(groups.c.tenant_id == tenant_id, groups.c.filter.is_(None))
        )
        return set(result.scalars())


async def iter_devices(
    service: DeviceService, actor: Actor, query: DeviceQuery, *, parts: bool
) -> AsyncIterator[list[dict[str, Any]]]:
    """Pages of devices matching ``query`` as import records (with sensors and components)."""
    static = await _static_groups(service, actor.tenant_id)
    offset = 0
    while True:
        page = await service.list(actor, query, PageRequest(EXPORT_PAGE, offset, "id"))
        records = [_device_record(d, static) for d in page.items]
        if parts and records:
            await _attach_parts(service, actor.tenant_id, records)
        if records:
            yield records
        offset += len(page.items)
        if len(page.items) < EXPORT_PAGE or offset >= page.total:
            return


async def _attach_parts(
    service: DeviceService, tenant_id: str, records: list[dict[str, Any]]
) -> None:
    by_id = {r["id"]: r for r in records}
    for record in records:
        record["sensors"], record["components"] = [], []
    sensor_columns = [sensors.c[name] for name in ("id", *SENSOR_FIELDS)]
    component_columns = [components.c[name] for name in ("id", *COMPONENT_FIELDS)]
    async with service.db.read() as conn:
        for chunk in chunks(list(by_id)):
            owner = sa.and_(devices.c.tenant_id == tenant_id, devices.c.id.in_(chunk))
            result = await conn.execute(
                sa.select(devices.c.id.label("device_id"), *sensor_columns)
                .join(devices, devices.c.pk == sensors.c.device_pk)
                .where(owner)
                .order_by(devices.c.id, sensors.c.id)
            )
            for item in as_dicts(result):
                by_id[item.pop("device_id")]["sensors"].append(item)
            result = await conn.execute(
                sa.select(devices.c.id.label("device_id"), *component_columns)
                .join(devices, devices.c.pk == components.c.device_pk)
                .where(owner)
                .order_by(devices.c.id, components.c.id)
            )
            for item in as_dicts(result):
                by_id[item.pop("device_id")]["components"].append(item)
    for record in records:
        record["components"], _ = parent_first(record["components"])


async def export_devices(service: DeviceService, actor: Actor, query: DeviceQuery, fmt: str) -> str:
    """The devices matching ``query`` as a CSV or JSON file that an import reads back.

    JSON is exact and carries sensors and components. CSV holds the devices only, and as the
    import trims cells, tag values that are empty or start or end with spaces do not survive it.
    """
    actor.require(Role.VIEWER)
    if fmt not in FORMATS:
        raise UnsupportedFormat(f"cannot export {fmt!r}: use csv or json")
    if fmt == "json":
        objects = [
            orjson.dumps(record).decode()
            async for page in iter_devices(service, actor, query, parts=True)
            for record in page
        ]
        return "[\n" + ",\n".join(objects) + "\n]\n" if objects else "[]\n"
    records = [
        record async for page in iter_devices(service, actor, query, parts=False) for record in page
    ]
    return to_csv(records)


def to_csv(records: Sequence[Mapping[str, Any]]) -> str:
    """Import records as CSV: the device columns, then one ``tag.<key>`` column per tag key."""
    tag_keys = sorted({key for record in records for key in record.get("tags") or {}})
    out = io.StringIO(newline="")
    writer = csv.writer(out)
    writer.writerow([*CSV_COLUMNS, *(TAG_PREFIX + key for key in tag_keys)])
    for record in records:
        tags = record.get("tags") or {}
        cells = []
        for column in CSV_COLUMNS:
            value = record.get(column)
            if column == "group_ids":
                value = GROUP_SEPARATOR.join(value or [])
            cells.append("" if value is None else value)
        cells.extend(tags.get(key, "") for key in tag_keys)
        writer.writerow(cells)
    return out.getvalue()
