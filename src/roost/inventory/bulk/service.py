"""Bulk import and export of devices: a factory's batch in (CSV or JSON), the fleet out.

An import is checked as a whole before anything is written: every row is validated against the
rules of a device (ids, fields, tags, sensors, components) and against the tenant's sites, models,
firmware, customers, groups and existing devices, looked up once for the whole file. The rows are
then written in ONE transaction through the same ``DeviceService.*_in`` functions that serve a
single create, so a row gets the same checks and audit entries either way. By default the import
is all-or-nothing: one bad row and nothing is written, and the answer lists every bad row with its
1-based data row number and the reason. ``atomic=False`` writes the good rows and reports the bad
ones; ``dry_run=True`` checks every row against the store and counts what would happen, writing
nothing.

The JSON form is an array of device objects shaped like the API's create body, which may also
carry ``sensors`` and ``components``; the CSV form has one column per device field, ``group_ids``
separated by ``;`` and one ``tag.<key>`` column per tag. An export writes exactly these shapes,
so it re-imports cleanly into another tenant.
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection

from roost.core.access import Actor, Role
from roost.core.ids import SLUG_RULE, is_sensor_path, is_slug, normalise_mac
from roost.errors import InvalidInput, RoostError, ValidationFailed
from roost.inventory.devices.service import (
    COMPONENT_FIELDS,
    DEVICE_FIELDS,
    DEVICE_REFERENCES,
    SENSOR_FIELDS,
    SENSOR_TYPES,
    DeviceQuery,
    DeviceService,
    check_tags,
)
from roost.inventory.service import RESOURCES
from roost.inventory.tables import components, device_tags, devices, group_members, groups, sensors
from roost.store.database import translate_integrity_error
from roost.store.queries import MAX_LIMIT, PageRequest, as_dicts

Format = Literal["csv", "json"]
OnExisting = Literal["error", "skip", "update"]
FORMATS: tuple[Format, ...] = ("csv", "json")
ON_EXISTING: tuple[OnExisting, ...] = ("error", "skip", "update")

CSV_COLUMNS = (
    "id",
    "name",
    "description",
    "model_id",
    "site_id",
    "firmware_id",
    "customer_id",
    "notes",
    "group_ids",
)
TAG_PREFIX = "tag."
GROUP_SEPARATOR = ";"
JSON_KEYS = frozenset({*DEVICE_FIELDS, "id", "tags", "group_ids", "sensors", "components"})
# The API's create bodies allow these lengths (http/schemas.py); the columns are sized to match.
TEXT_LIMITS = {"name": 200, "description": 20_000, "notes": 100_000}
SENSOR_LIMITS = {"name": 200, "unit": 32, "description": 20_000}
COMPONENT_LIMITS = {
    "name": 200,
    "kind": 64,
    "serial_number": 128,
    "manufacturer": 200,
    "notes": 20_000,
}
# The whole file is parsed and planned in memory and written in one transaction, which on SQLite
# holds the write lock throughout (about a second per 10k new devices): past this size, split it.
MAX_IMPORT_ROWS = 100_000
# New devices are written this many at a time: big enough that per-statement costs vanish, small
# enough that one batch's rows stay a few MB in memory.
CREATE_BATCH = 2000
# Past this many written rows the planner's statistics are refreshed (a few ms on PostgreSQL).
STATISTICS_AFTER_ROWS = 500
BULK_TABLES = ("devices", "device_tags", "group_members", "sensors", "components", "audit_log")
# Ids are looked up with IN (...): 500 keeps each statement well under any driver's limit on
# bound parameters (SQLite's was 999 before 3.32).
LOOKUP_CHUNK = 500
# An export reads the device list one page at a time, the largest page the list allows.
EXPORT_PAGE = MAX_LIMIT


class UnreadableFile(InvalidInput):
    """The import file cannot be decoded as the format it claims to be (HTTP 400)."""

    status = 400
    title = "Bad request"


class UnsupportedFormat(InvalidInput):
    """The import file is in a format Roost does not read (HTTP 415)."""

    status = 415
    title = "Unsupported media type"


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


# -- parsing --------------------------------------------------------------------------------------


def decode(data: bytes) -> str:
    """The file's text: UTF-8, with or without a byte-order mark (as spreadsheets write it)."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UnreadableFile(f"the file is not UTF-8 text (byte {exc.start} is invalid)") from None


def _cell(value: str, *, keep_spaces: bool = False) -> str | None:
    text = value if keep_spaces else value.strip()
    return text if text else None


def parse_csv(text: str) -> list[dict[str, Any]]:
    """CSV rows → device objects (JSON shape); empty cells are null, ``tag.<key>`` are tags."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None or not any(cell.strip() for cell in header):
            raise UnreadableFile("the CSV file is empty: it needs a header row with an id column")
        columns = [cell.strip() for cell in header]
        _check_csv_header(columns)
        items: list[dict[str, Any]] = []
        faults: list[dict[str, Any]] = []
        for cells in reader:
            if not cells or not any(cell.strip() for cell in cells):
                continue  # blank lines are not rows
            number = len(items) + 1
            if len(cells) != len(columns):
                faults.append(
                    {
                        "row": number,
                        "message": f"row has {len(cells)} cells but the header has {len(columns)}",
                    }
                )
                items.append({})
                continue
            items.append(_csv_item(dict(zip(columns, cells, strict=True))))
    except csv.Error as exc:
        raise UnreadableFile(f"the file is not valid CSV (line {reader.line_num}): {exc}") from None
    if faults:
        raise UnreadableFile(
            f"{len(faults)} CSV row(s) do not match the header (first: row {faults[0]['row']})",
            errors=faults,
        )
    return items


def _check_csv_header(columns: list[str]) -> None:
    if "id" not in columns:
        raise UnreadableFile(
            "the CSV header has no id column; columns are "
            f"{','.join(CSV_COLUMNS)} and tag.<key> for each tag"
        )
    seen: set[str] = set()
    for column in columns:
        if column in seen:
            raise UnreadableFile(f"the CSV header names column {column!r} twice")
        seen.add(column)
        if column.startswith(TAG_PREFIX):
            if not column[len(TAG_PREFIX) :]:
                raise UnreadableFile("a tag column needs a tag name after 'tag.'")
        elif column not in CSV_COLUMNS:
            hint = (
                " (sensors and components need the JSON format)"
                if column in {"sensors", "components"}
                else ""
            )
            raise UnreadableFile(
                f"unknown CSV column {column!r}{hint}; columns are "
                f"{','.join(CSV_COLUMNS)} and tag.<key> for each tag"
            )


def _csv_item(record: Mapping[str, str]) -> dict[str, Any]:
    item: dict[str, Any] = {}
    tags: dict[str, str | None] = {}
    for column, raw in record.items():
        if column.startswith(TAG_PREFIX):
            tags[column[len(TAG_PREFIX) :]] = _cell(raw)
        elif column == "group_ids":
            item["group_ids"] = [g.strip() for g in raw.split(GROUP_SEPARATOR) if g.strip()]
        else:
            item[column] = _cell(raw, keep_spaces=column in {"description", "notes"})
    if tags:
        item["tags"] = tags
    return item


def parse_json(text: str) -> list[dict[str, Any]]:
    """A JSON array of device objects (the API's create body, plus sensors and components)."""
    try:
        document = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise UnreadableFile(f"the file is not valid JSON: {exc}") from None
    if not isinstance(document, list):
        raise UnreadableFile(
            f"the JSON file must be an array of device objects, not {_json_kind(document)}"
        )
    faults = [
        {"row": n, "message": f"expected a device object, got {_json_kind(item)}"}
        for n, item in enumerate(document, start=1)
        if not isinstance(item, dict)
    ]
    if faults:
        raise UnreadableFile(
            f"{len(faults)} item(s) of the JSON array are not objects "
            f"(first: row {faults[0]['row']})",
            errors=faults,
        )
    return document


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), "a number"
    )


def parse(text: str, fmt: str) -> list[dict[str, Any]]:
    """Parse an import file in ``fmt`` (``csv`` or ``json``)."""
    if fmt == "csv":
        return parse_csv(text)
    if fmt == "json":
        return parse_json(text)
    raise UnsupportedFormat(f"cannot import {fmt!r}: use csv or json")


# -- validation -----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Row:
    """One import row, normalised; ``bad`` when it breaks a rule on its own."""

    number: int
    id: str  # "" when the row has no usable id
    fields: dict[str, str | None]  # the device fields the row gives; None means empty
    tags: dict[str, str | None]  # None: no tag (create) / remove the tag (update)
    group_ids: list[str]
    sensors: list[dict[str, Any]]
    components: list[dict[str, Any]]  # those with usable ids, parent before child once planned
    bad: bool = False
    shown_id: str | None = None  # the id as the file gives it, for error entries


@dataclass(slots=True)
class _Faults:
    """Errors found in a file, one entry per fault, with the row they belong to."""

    items: list[dict[str, Any]] = field(default_factory=list)

    def add(self, number: int, device_id: Any, message: str, field: str | None = None) -> None:
        entry: dict[str, Any] = {
            "row": number,
            "id": device_id if isinstance(device_id, str) else None,
        }
        if field is not None:
            entry["field"] = field
        entry["message"] = message
        self.items.append(entry)


def _has_nul(value: Any) -> bool:
    """True when a string, or any key or value inside lists and objects, holds a NUL character."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def _check_text(
    faults: _Faults, number: int, device_id: Any, where: str, value: Any, limit: int | None
) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        faults.add(number, device_id, "must be a string", where)
        return None
    if limit is not None and len(value) > limit:
        faults.add(number, device_id, f"has at most {limit} characters", where)
    return value


def _check_row(raw: Mapping[str, Any], number: int, faults: _Faults) -> _Row:
    """Validate what one row says on its own, recording every fault.

    The row is answered even when bad, so that its references can still be checked and every
    fault of the file reported at once.
    """
    before = len(faults.items)
    device_id = raw.get("id")
    if _has_nul(raw):
        # PostgreSQL text cannot hold NUL: refuse it on every backend alike, before any lookup.
        shown = device_id.replace("\x00", "\\u0000") if isinstance(device_id, str) else None
        faults.add(number, shown, "text must not contain NUL (\\u0000) characters")
        return _Row(number, "", {}, {}, [], [], [], bad=True, shown_id=shown)
    if device_id is None or device_id == "":
        faults.add(number, None, "id is required", "id")
    elif not isinstance(device_id, str) or not is_slug(device_id):
        faults.add(number, device_id, f"device id {device_id!r} is not valid: {SLUG_RULE}", "id")
    unknown = sorted(set(raw) - JSON_KEYS)
    if unknown:
        faults.add(number, device_id, f"unknown field(s) {', '.join(unknown)}")
    fields: dict[str, str | None] = {}
    for name in DEVICE_FIELDS:
        if name in raw:
            value = _check_text(faults, number, device_id, name, raw[name], TEXT_LIMITS.get(name))
            # An empty reference means "none", as an empty CSV cell does.
            fields[name] = None if name in DEVICE_REFERENCES and value == "" else value
    tags: dict[str, str | None] = {}
    if raw.get("tags") is not None:
        try:
            tags = check_tags(raw["tags"], allow_null=True)
        except InvalidInput as exc:
            faults.add(number, device_id, exc.detail, "tags")
    group_ids: list[str] = []
    raw_groups = raw.get("group_ids")
    if raw_groups is not None:
        if not isinstance(raw_groups, list) or not all(isinstance(g, str) for g in raw_groups):
            faults.add(number, device_id, "must be a list of group ids", "group_ids")
        else:
            group_ids = list(dict.fromkeys(raw_groups))
    sensor_list = _check_sensors(raw.get("sensors"), number, device_id, faults)
    component_list = _check_components(raw.get("components"), number, device_id, faults)
    usable_id = device_id if isinstance(device_id, str) and is_slug(device_id) else ""
    row = _Row(number, usable_id, fields, tags, group_ids, sensor_list, component_list)
    row.bad = len(faults.items) > before
    row.shown_id = device_id if isinstance(device_id, str) else None
    return row


def _object_list(
    value: Any, what: str, number: int, device_id: Any, faults: _Faults
) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        faults.add(number, device_id, "must be a list of objects", what)
        return []
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            faults.add(number, device_id, "must be an object", f"{what}[{index}]")
    return value if all(isinstance(item, dict) for item in value) else []


def _check_sensors(
    value: Any, number: int, device_id: Any, faults: _Faults
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for index, item in enumerate(_object_list(value, "sensors", number, device_id, faults)):
        where = f"sensors[{index}]"
        unknown = sorted(set(item) - {"id", *SENSOR_FIELDS})
        if unknown:
            faults.add(number, device_id, f"unknown field(s) {', '.join(unknown)}", where)
        sensor_id = item.get("id")
        if not isinstance(sensor_id, str) or not is_slug(sensor_id):
            faults.add(
                number,
                device_id,
                f"sensor id {sensor_id!r} is not valid: {SLUG_RULE}",
                f"{where}.id",
            )
        elif sensor_id in seen:
            faults.add(number, device_id, f"sensor {sensor_id!r} is listed twice", f"{where}.id")
        else:
            seen.add(sensor_id)
            out.append({k: item[k] for k in ("id", *SENSOR_FIELDS) if k in item})
        if item.get("type") not in SENSOR_TYPES:
            faults.add(
                number,
                device_id,
                f"sensor type {item.get('type')!r} is not one of {', '.join(SENSOR_TYPES)}",
                f"{where}.type",
            )
        path = _check_text(faults, number, device_id, f"{where}.path", item.get("path"), None)
        if path is not None and not is_sensor_path(path.strip("/")):
            faults.add(
                number,
                device_id,
                f"sensor path {path!r} must look like wheels/front/left",
                f"{where}.path",
            )
        for name, limit in SENSOR_LIMITS.items():
            _check_text(faults, number, device_id, f"{where}.{name}", item.get(name), limit)
    return out


def _check_components(
    value: Any, number: int, device_id: Any, faults: _Faults
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for index, item in enumerate(_object_list(value, "components", number, device_id, faults)):
        where = f"components[{index}]"
        unknown = sorted(set(item) - {"id", *COMPONENT_FIELDS})
        if unknown:
            faults.add(number, device_id, f"unknown field(s) {', '.join(unknown)}", where)
        component_id = item.get("id")
        # Components of an import need ids: children name their parent by it.
        if not isinstance(component_id, str) or not is_slug(component_id):
            faults.add(
                number,
                device_id,
                f"component id {component_id!r} is not valid: {SLUG_RULE}",
                f"{where}.id",
            )
        elif component_id in seen:
            faults.add(
                number, device_id, f"component {component_id!r} is listed twice", f"{where}.id"
            )
        else:
            seen.add(component_id)
            kept = {k: item[k] for k in ("id", *COMPONENT_FIELDS) if k in item}
            out.append(kept)
        if not item.get("name"):
            faults.add(number, device_id, "name is required", f"{where}.name")
        for name, limit in COMPONENT_LIMITS.items():
            _check_text(faults, number, device_id, f"{where}.{name}", item.get(name), limit)
        mac = item.get("mac_address")
        if mac is not None and (not isinstance(mac, str) or normalise_mac(mac) is None):
            faults.add(
                number,
                device_id,
                f"mac_address {mac!r} is not a MAC address like 00:1a:2b:3c:4d:5e",
                f"{where}.mac_address",
            )
        parent = item.get("parent_id")
        if parent is not None and not isinstance(parent, str):
            faults.add(number, device_id, "must be a component id", f"{where}.parent_id")
    return [c for c in out if c.get("parent_id") is None or isinstance(c["parent_id"], str)]


def parent_first(
    items: Sequence[Mapping[str, Any]], existing: Iterable[str] = ()
) -> tuple[list[dict[str, Any]], list[tuple[int, str]]]:
    """Order components so every parent comes before its children.

    A parent may be another of ``items`` or one of the ``existing`` component ids. Answers the
    ordered components that can be created and, for each one that cannot (its parent is missing,
    or it sits in a cycle or below a component that cannot be created), its index and why.
    """
    known = set(existing)
    index = {c["id"]: i for i, c in enumerate(items)}
    faults: dict[int, str] = {}
    children: dict[str, list[int]] = {}
    queue: deque[int] = deque()
    for i, item in enumerate(items):
        parent = item.get("parent_id")
        if parent is None or parent in known:
            queue.append(i)
        elif parent == item["id"]:
            faults[i] = f"component {parent!r} cannot be its own parent"
        elif parent not in index:
            faults[i] = f"no parent component {parent!r} on this device"
        else:
            children.setdefault(parent, []).append(i)
    ordered: list[dict[str, Any]] = []
    while queue:
        i = queue.popleft()
        ordered.append(dict(items[i]))
        queue.extend(children.get(items[i]["id"], ()))
    placed = {c["id"] for c in ordered}
    broken = set(faults)
    for i, item in enumerate(items):
        if item["id"] in placed or i in broken:
            continue
        # Walk up: either an ancestor cannot be created, or the parents go round in a cycle.
        seen, parent = {item["id"]}, item["parent_id"]
        while parent not in seen and index[parent] not in broken:
            seen.add(parent)
            parent = items[index[parent]]["parent_id"]
        if index[parent] in broken:
            faults[i] = f"parent component {item['parent_id']!r} cannot be created"
        else:
            faults[i] = f"component {item['id']!r} is in a cycle of parents"
    return ordered, sorted(faults.items())


# -- lookups --------------------------------------------------------------------------------------


def _chunks(values: Sequence[Any], size: int = LOOKUP_CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


async def _ids_of(
    conn: AsyncConnection, table: sa.Table, tenant_id: str, wanted: set[str]
) -> set[str]:
    found: set[str] = set()
    for chunk in _chunks(sorted(wanted)):
        result = await conn.execute(
            sa.select(table.c.id).where(table.c.tenant_id == tenant_id, table.c.id.in_(chunk))
        )
        found.update(result.scalars())
    return found


@dataclass(slots=True)
class _Current:
    """What the store already holds about devices named in the file."""

    rows: dict[str, dict[str, Any]] = field(default_factory=dict)  # device id → devices row
    tags: dict[int, dict[str, str]] = field(default_factory=dict)  # device pk → tags
    groups: dict[int, set[str]] = field(default_factory=dict)  # pk → static group ids
    sensors: dict[int, set[str]] = field(default_factory=dict)  # pk → sensor ids
    components: dict[int, set[str]] = field(default_factory=dict)  # pk → component ids


async def _current(
    conn: AsyncConnection, tenant_id: str, ids: Sequence[str], *, details: bool
) -> _Current:
    """Existing devices among ``ids``; with ``details`` also their tags, groups, sensors, parts."""
    current = _Current()
    for chunk in _chunks(ids):
        result = await conn.execute(
            sa.select(devices).where(devices.c.tenant_id == tenant_id, devices.c.id.in_(chunk))
        )
        current.rows.update((row["id"], row) for row in as_dicts(result))
    if not details or not current.rows:
        return current
    pks = [row["pk"] for row in current.rows.values()]
    for chunk in _chunks(pks):
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


# -- import ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Step:
    """What importing one valid row will do."""

    row: _Row
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
    faults = _Faults(errors)
    rows: list[_Row] = []
    first_row: dict[str, int] = {}
    for number, raw in enumerate(items, start=1):
        row = _check_row(raw, number, faults)
        rows.append(row)
        if not row.id:
            continue
        if row.id in first_row:
            message = f"device {row.id!r} is also on row {first_row[row.id]}"
            faults.add(number, row.id, message, "id")
            row.bad, row.id = True, ""  # a second description of a device: not looked up
            continue
        first_row[row.id] = number

    current = await _current(conn, tenant_id, list(first_row), details=on_existing == "update")
    known = await _known_references(conn, tenant_id, rows)
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


def _check_references(row: _Row, known: Mapping[str, set[str]], faults: _Faults) -> None:
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


def _plan_update(row: _Row, existing: Mapping[str, Any], current: _Current) -> _Step:
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
                await service.create_many_in(conn, actor, [_creation(s) for s in chunk])
            else:
                async with conn.begin_nested():
                    await service.create_many_in(conn, actor, [_creation(s) for s in chunk])
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


def _index_of(row: _Row, component_id: str, items: Sequence[Mapping[str, Any]]) -> int:
    """The component's position in the row as the file gave it (for error messages)."""
    given = items[row.number - 1].get("components") or []
    for index, item in enumerate(given):
        if item.get("id") == component_id:
            return index
    return 0


def _row_errors(row: _Row, exc: RoostError) -> list[dict[str, Any]]:
    """A service's refusal of one row, as report entries."""
    base = {"row": row.number, "id": row.id}
    if isinstance(exc, ValidationFailed) and exc.errors:
        return [
            {**base, **{k: v for k, v in e.items() if k in {"field", "message"}}}
            for e in exc.errors
        ]
    return [{**base, "message": exc.detail}]


async def _known_references(
    conn: AsyncConnection, tenant_id: str, rows: Sequence[_Row]
) -> dict[str, set[str]]:
    """Which of the sites, models, firmware, customers and groups the rows name exist."""
    known: dict[str, set[str]] = {}
    for name, kind in DEVICE_REFERENCES.items():
        wanted = {ref for r in rows if (ref := r.fields.get(name))}
        known[name] = await _ids_of(conn, RESOURCES[kind].table, tenant_id, wanted)
    wanted_groups = sorted({g for r in rows for g in r.group_ids})
    known["group_ids"], known["static_groups"] = set(), set()
    for chunk in _chunks(wanted_groups):
        for group_id, rule in await conn.execute(
            sa.select(groups.c.id, groups.c.filter).where(
                groups.c.tenant_id == tenant_id, groups.c.id.in_(chunk)
            )
        ):
            known["group_ids"].add(group_id)
            if rule is None:
                known["static_groups"].add(group_id)
    return known


# -- export ---------------------------------------------------------------------------------------


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
        for chunk in _chunks(list(by_id)):
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
    """The devices matching ``query`` as a CSV or JSON file that :func:`import_file` reads back.

    JSON is exact and carries sensors and components. CSV holds the devices only, and as the
    import trims cells, tag values that are empty or start or end with spaces do not survive it.
    """
    actor.require(Role.VIEWER)
    if fmt not in FORMATS:
        raise UnsupportedFormat(f"cannot export {fmt!r}: use csv or json")
    if fmt == "json":
        chunks = [
            orjson.dumps(record).decode()
            async for page in iter_devices(service, actor, query, parts=True)
            for record in page
        ]
        return "[\n" + ",\n".join(chunks) + "\n]\n" if chunks else "[]\n"
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


__all__ = [
    "FORMATS",
    "ON_EXISTING",
    "ImportRefused",
    "UnreadableFile",
    "UnsupportedFormat",
    "decode",
    "export_devices",
    "import_devices",
    "import_file",
    "iter_devices",
    "parent_first",
    "parse",
    "parse_csv",
    "parse_json",
    "to_csv",
]
