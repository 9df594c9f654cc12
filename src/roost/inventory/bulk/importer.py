"""Importing devices in bulk: planning what each row of a file does, then doing it.

An import is checked as a whole before anything is written: every row is validated against the
rules of a device (ids, fields, tags, sensors, components) and against the tenant's sites, models,
firmware, customers, groups and existing devices, looked up once for the whole file. The rows are
then written in ONE transaction through the same ``DeviceService.*_in`` functions that serve a
single create (new devices in batches through :func:`roost.inventory.devices.batch.create_many_in`
with the same rules), so a row gets the same checks and audit entries either way. By default the
import is all-or-nothing: one bad row and nothing is written, and the answer lists every bad row
with its 1-based data row number and the reason. ``atomic=False`` writes the good rows and
reports the bad ones; ``dry_run=True`` checks every row against the store and counts what would
happen, writing nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection

from roost.core.access import Actor, Role
from roost.errors import InvalidInput, RoostError, ValidationFailed
from roost.inventory.bulk.lookup import StoredDevices, known_references, stored_devices
from roost.inventory.bulk.parse import FORMATS, UnsupportedFormat, decode, parse
from roost.inventory.bulk.rows import Faults, Row, check_row, parent_first
from roost.inventory.devices.batch import create_many_in
from roost.inventory.devices.service import DEVICE_REFERENCES, DeviceService
from roost.inventory.service import RESOURCES
from roost.store.database import translate_integrity_error

OnExisting = Literal["error", "skip", "update"]
ON_EXISTING: tuple[OnExisting, ...] = ("error", "skip", "update")
# The whole file is parsed and planned in memory and written in one transaction, which on SQLite
# holds the write lock throughout (about a second per 10k new devices): past this size, split it.
MAX_IMPORT_ROWS = 100_000
# New devices are written this many at a time: big enough that per-statement costs vanish, small
# enough that one batch's rows stay a few MB in memory.
CREATE_BATCH = 2000
# Past this many written rows the planner's statistics are refreshed (a few ms on PostgreSQL).
STATISTICS_AFTER_ROWS = 500
BULK_TABLES = ("devices", "device_tags", "group_members", "sensors", "components", "audit_log")


class ImportRefused(ValidationFailed):
    """An all-or-nothing import had bad rows, so nothing was written; ``report`` says why."""

    def __init__(self, report: dict[str, Any], rows: int) -> None:
        bad = len({e["row"] for e in report["errors"]})
        prefix = "dry run: the import would be refused" if report["dry_run"] else "import refused"
        super().__init__(
            f"{prefix}: {bad} of {rows} row(s) are invalid, so nothing was imported",
            report["errors"],
        )
        self.report = report


@dataclass(slots=True)
class _Step:
    """What importing one valid row will do."""

    row: Row
    action: Literal["created", "updated", "unchanged", "skipped"]
    pk: int | None = None  # the existing device's
    changes: dict[str, Any] = field(default_factory=dict)  # fields and tags to update
    join: list[str] = field(default_factory=list)  # static groups the device is not in yet
    sensors: list[dict[str, Any]] = field(default_factory=list)  # sensors to add
    components: list[dict[str, Any]] = field(default_factory=list)  # to add, parent first


def _empty_report(dry_run: bool) -> dict[str, Any]:
    return {
        "created": 0,
        "updated": 0,
        "unchanged": 0,
        "skipped": 0,
        "errors": [],
        "dry_run": dry_run,
    }


async def import_file(
    service: DeviceService,
    actor: Actor,
    data: bytes | str,
    fmt: str,
    *,
    dry_run: bool = False,
    on_existing: str = "error",
    atomic: bool = True,
) -> dict[str, Any]:
    """Decode and parse an import file in ``fmt`` (csv or json), then :func:`import_devices`."""
    actor.require(Role.OPERATOR)
    if fmt not in FORMATS:
        raise UnsupportedFormat(f"cannot import {fmt}: the file must be CSV or JSON")

    def read() -> list[dict[str, Any]]:
        return parse(decode(data) if isinstance(data, bytes) else data, fmt)

    # Parsing a file of tens of MB takes seconds of CPU: off the event loop.
    items = await asyncio.to_thread(read)
    return await import_devices(
        service, actor, items, dry_run=dry_run, on_existing=on_existing, atomic=atomic
    )


async def import_devices(
    service: DeviceService,
    actor: Actor,
    items: Sequence[Mapping[str, Any]],
    *,
    dry_run: bool = False,
    on_existing: str = "error",
    atomic: bool = True,
) -> dict[str, Any]:
    """Import devices (with their tags, groups, sensors and components) in one transaction.

    ``on_existing`` says what a row whose device already exists does: ``error`` (a bad row),
    ``skip`` (left as it is), or ``update`` (the fields and tags the row gives are set, a null
    or empty one clears; the device joins the listed groups; sensors and components it does not
    have yet are added, existing ones are kept). Answers ``{created, updated, unchanged, skipped,
    errors, dry_run}``; an all-or-nothing import with any bad row raises :class:`ImportRefused`.
    A dry run checks every row against the store and counts what would happen, writing nothing.
    """
    actor.require(Role.OPERATOR)
    if on_existing not in ON_EXISTING:
        raise InvalidInput(f"on_existing must be one of {', '.join(ON_EXISTING)}")
    if len(items) > MAX_IMPORT_ROWS:
        raise InvalidInput(
            f"an import holds at most {MAX_IMPORT_ROWS} devices; this one has {len(items)}: "
            "split the file"
        )
    report = _empty_report(dry_run)
    if dry_run:
        async with service.db.read() as conn:
            steps = await _plan(conn, actor.tenant_id, items, on_existing, report["errors"])
        for step in steps:
            report[step.action] += 1
    else:
        try:
            async with service.db.write() as conn:
                steps = await _plan(conn, actor.tenant_id, items, on_existing, report["errors"])
                if not (atomic and report["errors"]):
                    await _execute(service, conn, actor, steps, atomic, report)
                if atomic and report["errors"]:
                    raise _RollBack
        except _RollBack:
            pass
    if not dry_run and report["created"] + report["updated"] >= STATISTICS_AFTER_ROWS:
        await service.db.refresh_statistics(BULK_TABLES)
    report["errors"].sort(key=lambda e: e["row"])
    if atomic and report["errors"]:
        report.update(created=0, updated=0, unchanged=0, skipped=0)
        raise ImportRefused(report, len(items))
    return report


class _RollBack(Exception):
    """Raised inside the import's transaction to undo everything it wrote."""


async def _plan(
    conn: AsyncConnection,
    tenant_id: str,
    items: Sequence[Mapping[str, Any]],
    on_existing: str,
    errors: list[dict[str, Any]],
) -> list[_Step]:
    """Check every row (on its own, then against the store) and decide what each one does.

    Faults go to ``errors``; the answer holds a step for each good row. Nothing is written.
    """
    faults = Faults(errors)
    rows: list[Row] = []
    first_row: dict[str, int] = {}
    for number, raw in enumerate(items, start=1):
        row = check_row(raw, number, faults)
        rows.append(row)
        if not row.id:
            continue
        if row.id in first_row:
            message = f"device {row.id!r} is also on row {first_row[row.id]}"
            faults.add(number, row.id, message, "id")
            row.bad, row.id = True, ""  # a second description of a device: not looked up
            continue
        first_row[row.id] = number

    current = await stored_devices(
        conn, tenant_id, list(first_row), details=on_existing == "update"
    )
    known = await known_references(conn, tenant_id, rows)
    steps: list[_Step] = []
    for row in rows:
        before = len(faults.items)
        _check_references(row, known, faults)
        existing = current.rows.get(row.id) if row.id else None
        if existing is None:
            step = _Step(row, "created", join=row.group_ids, sensors=row.sensors)
            had: set[str] = set()
        elif on_existing == "error":
            message = (
                f"device {row.id!r} already exists "
                "(import with on_existing=skip or update to keep or change it)"
            )
            faults.add(row.number, row.shown_id, message, "id")
            continue
        elif on_existing == "skip":
            if len(faults.items) == before and not row.bad:
                steps.append(_Step(row, "skipped"))
            continue
        else:
            step = _plan_update(row, existing, current)
            had = current.components.get(existing["pk"], set())
        new_components = [c for c in row.components if c["id"] not in had]
        step.components, problems = parent_first(new_components, had)
        for index, message in problems:
            where = f"components[{_index_of(row, new_components[index]['id'], items)}].parent_id"
            faults.add(row.number, row.shown_id, message, where)
        if step.action == "unchanged" and (step.sensors or step.components):
            step.action = "updated"
        if len(faults.items) == before and not row.bad:
            steps.append(step)
    return steps


def _check_references(row: Row, known: Mapping[str, set[str]], faults: Faults) -> None:
    for name, kind in DEVICE_REFERENCES.items():
        ref = row.fields.get(name)
        if ref is not None and ref not in known[name]:
            faults.add(row.number, row.shown_id, f"no {RESOURCES[kind].label} {ref!r}", name)
    for group_id in row.group_ids:
        if group_id not in known["group_ids"]:
            faults.add(row.number, row.shown_id, f"no group {group_id!r}", "group_ids")
        elif group_id not in known["static_groups"]:
            message = f"group {group_id!r} is dynamic: its members are chosen by its filter"
            faults.add(row.number, row.shown_id, message, "group_ids")


def _plan_update(row: Row, existing: Mapping[str, Any], current: StoredDevices) -> _Step:
    """What must change for an existing device to match its row."""
    pk = existing["pk"]
    changes: dict[str, Any] = {}
    for name, value in row.fields.items():
        # A cleared text field is stored empty, a cleared reference as null.
        wanted = "" if value is None and name not in DEVICE_REFERENCES else value
        if existing[name] != wanted:
            changes[name] = value
    tags = current.tags.get(pk, {})
    tag_changes = {k: v for k, v in row.tags.items() if tags.get(k) != v}
    if tag_changes:
        changes["tags"] = tag_changes
    join = [g for g in row.group_ids if g not in current.groups.get(pk, set())]
    had = current.sensors.get(pk, set())
    new_sensors = [s for s in row.sensors if s["id"] not in had]
    action: Literal["updated", "unchanged"] = "updated" if changes or join else "unchanged"
    return _Step(row, action, pk=pk, changes=changes, join=join, sensors=new_sensors)


async def _execute(
    service: DeviceService,
    conn: AsyncConnection,
    actor: Actor,
    steps: Sequence[_Step],
    atomic: bool,
    report: dict[str, Any],
) -> None:
    """Carry out the planned steps; a row the services still refuse becomes a report entry.

    New devices are created in batches (one INSERT per table per batch); updates go row by row.
    """
    created = [step for step in steps if step.action == "created"]
    for start in range(0, len(created), CREATE_BATCH):
        chunk = created[start : start + CREATE_BATCH]
        try:
            if atomic:
                await create_many_in(
                    conn, actor, [_creation(s) for s in chunk], now=service.clock()
                )
            else:
                async with conn.begin_nested():
                    await create_many_in(
                        conn, actor, [_creation(s) for s in chunk], now=service.clock()
                    )
        except RoostError as exc:
            if atomic:
                report["errors"].extend(_batch_errors(chunk, exc))
                return
            # Something changed since the plan: find the refused rows one at a time.
            await _execute_rows(service, conn, actor, chunk, atomic, report)
        else:
            report["created"] += len(chunk)
    await _execute_rows(
        service, conn, actor, [s for s in steps if s.action != "created"], atomic, report
    )


def _creation(step: _Step) -> dict[str, Any]:
    """The device to create for a planned step, in DeviceService's terms."""
    row = step.row
    return {
        "id": row.id,
        **row.fields,
        "group_ids": step.join,
        "tags": {k: v for k, v in row.tags.items() if v is not None},
        "sensors": step.sensors,
        "components": step.components,
    }


def _batch_errors(chunk: Sequence[_Step], exc: RoostError) -> list[dict[str, Any]]:
    """A batch refusal as report entries, each placed on its row by the device id."""
    rows = {step.row.id: step.row for step in chunk}
    entries = exc.errors if isinstance(exc, ValidationFailed) and exc.errors else [{}]
    out = []
    for entry in entries:
        row = rows.get(entry.get("id", ""))
        out.append(
            {
                "row": row.number if row else chunk[0].row.number,
                "id": row.id if row else None,
                **({"field": entry["field"]} if entry.get("field") else {}),
                "message": entry.get("message", exc.detail),
            }
        )
    return out


async def _execute_rows(
    service: DeviceService,
    conn: AsyncConnection,
    actor: Actor,
    steps: Sequence[_Step],
    atomic: bool,
    report: dict[str, Any],
) -> None:
    """Carry out steps one row at a time (updates, and the retry of a refused batch)."""
    for step in steps:
        if step.action in {"skipped", "unchanged"}:
            report[step.action] += 1
            continue
        try:
            if atomic:
                # Any error undoes the whole import, so a row needs no savepoint of its own.
                await _write(service, conn, actor, step)
            else:
                # A savepoint per row: a refused row leaves no trace and the others go on.
                async with conn.begin_nested():
                    await _write(service, conn, actor, step)
        except RoostError as exc:
            report["errors"].extend(_row_errors(step.row, exc))
        except (sa_exc.IntegrityError, sa_exc.DataError) as exc:
            detail = (
                str(translate_integrity_error(exc))
                if isinstance(exc, sa_exc.IntegrityError)
                else f"a value does not fit its column: {exc.orig}"
            )
            report["errors"].append({"row": step.row.number, "id": step.row.id, "message": detail})
            if atomic:
                # PostgreSQL refuses every later statement of a transaction that failed one.
                return
        else:
            report[step.action] += 1


async def _write(service: DeviceService, conn: AsyncConnection, actor: Actor, step: _Step) -> None:
    """Create or update one device and add what hangs under it."""
    row = step.row
    if step.action == "created":
        data: dict[str, Any] = {"id": row.id, **row.fields, "group_ids": step.join}
        data["tags"] = {k: v for k, v in row.tags.items() if v is not None}
        await service.create_in(conn, actor, data)
    else:
        if step.changes:
            await service.update_in(conn, actor, row.id, step.changes)
        if step.join and step.pk is not None:
            await service.join_groups_in(conn, actor, row.id, step.pk, step.join)
    for sensor in step.sensors:
        await service.create_sensor_in(conn, actor, row.id, sensor)
    for component in step.components:
        await service.create_component_in(conn, actor, row.id, component)


def _index_of(row: Row, component_id: str, items: Sequence[Mapping[str, Any]]) -> int:
    """The component's position in the row as the file gave it (for error messages)."""
    given = items[row.number - 1].get("components") or []
    for index, item in enumerate(given):
        if item.get("id") == component_id:
            return index
    return 0


def _row_errors(row: Row, exc: RoostError) -> list[dict[str, Any]]:
    """A service's refusal of one row, as report entries."""
    base = {"row": row.number, "id": row.id}
    if isinstance(exc, ValidationFailed) and exc.errors:
        return [
            {**base, **{k: v for k, v in e.items() if k in {"field", "message"}}}
            for e in exc.errors
        ]
    return [{**base, "message": exc.detail}]
