"""Creating many new devices at once, with what hangs under them, for a bulk import.

:func:`create_many_in` applies the rules of a single create
(:meth:`DeviceService.create_in <roost.inventory.devices.service.DeviceService.create_in>`,
:meth:`~roost.inventory.devices.sensors.DeviceSensors.create_sensor_in`,
:meth:`~roost.inventory.devices.components.DeviceComponents.create_component_in`) to a whole
batch: each device is checked on its own, then every reference of the batch is looked up with
one query per kind, then each table gets one multi-row INSERT. 10,000 devices take about a
second instead of minutes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from roost.audit import service as audit
from roost.core.access import Actor
from roost.core.ids import generate_id
from roost.errors import Conflict, InvalidInput, ValidationFailed
from roost.inventory.devices.components import COMPONENT_FIELDS, component_values
from roost.inventory.devices.query import check_tags
from roost.inventory.devices.sensors import SENSOR_FIELDS, sensor_values
from roost.inventory.devices.service import DEVICE_FIELDS, DEVICE_REFERENCES, device_values
from roost.inventory.rules import matches
from roost.inventory.service import RESOURCES, check_id
from roost.inventory.tables import components, device_tags, devices, group_members, groups, sensors

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


async def create_many_in(
    conn: AsyncConnection, actor: Actor, items: Sequence[Mapping[str, Any]], *, now: datetime
) -> list[str]:
    """Create many new devices, with tags, static groups, sensors and components, in bulk.

    The rules of a single create, checked for the whole batch with one lookup per kind of
    reference, then one multi-row INSERT per table, inside the caller's transaction; ``now`` is
    the devices' creation time. An item's components must name a parent before its children. A
    fault raises before anything is written; its ``errors`` entries carry the device ``id``.
    Answers the ids of the created devices.
    """
    batch = [_prepare_new_device(data) for data in items]
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
                **{k: item.values.get(k, "" if k in _TEXT_FIELDS else None) for k in DEVICE_FIELDS},
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


@dataclass(slots=True)
class _NewDevice:
    """A device of a bulk creation, checked on its own."""

    id: str
    values: dict[str, Any]
    tags: dict[str, str]
    group_ids: list[str]
    sensors: list[tuple[str, dict[str, Any]]]
    components: list[tuple[str, dict[str, Any]]]


def _prepare_new_device(data: Mapping[str, Any]) -> _NewDevice:
    device_id = check_id(data.get("id") or generate_id("dev"), "device")

    def fault(field: str, message: str) -> ValidationFailed:
        return ValidationFailed(message, [{"id": device_id, "field": field, "message": message}])

    try:
        values = {k: v for k, v in device_values(data).items() if v is not None}
        tags = {
            k: v
            for k, v in check_tags(data.get("tags") or {}, allow_null=False).items()
            if v is not None
        }
        sensor_list = [
            (check_id(raw.get("id"), "sensor"), sensor_values(raw, creating=True))
            for raw in data.get("sensors") or []
        ]
        component_list: list[tuple[str, dict[str, Any]]] = []
        for raw in data.get("components") or []:
            cid = check_id(raw.get("id") or generate_id("cmp"), "component")
            cvalues = component_values(raw, creating=True)
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
