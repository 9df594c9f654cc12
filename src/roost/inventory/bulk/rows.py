"""Checking import rows on their own: a device's fields, tags, groups, sensors and components.

Each row of a parsed file is held against the rules of a device without looking at the store:
ids, field types and lengths, tags, group lists, and the sensors and components it may carry.
A bad row is still answered (:class:`Row` with ``bad`` set) and every fault is recorded with its
1-based row number (:class:`Faults`), so that one pass reports every fault of the file.
:func:`parent_first` orders a device's components so that parents come before their children.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from roost.core.ids import SLUG_RULE, is_sensor_path, is_slug, normalise_mac
from roost.errors import InvalidInput
from roost.inventory.devices.components import COMPONENT_FIELDS
from roost.inventory.devices.query import check_tags
from roost.inventory.devices.sensors import SENSOR_FIELDS, SENSOR_TYPES
from roost.inventory.devices.service import DEVICE_FIELDS, DEVICE_REFERENCES

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


@dataclass(slots=True)
class Row:
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
class Faults:
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
    faults: Faults, number: int, device_id: Any, where: str, value: Any, limit: int | None
) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        faults.add(number, device_id, "must be a string", where)
        return None
    if limit is not None and len(value) > limit:
        faults.add(number, device_id, f"has at most {limit} characters", where)
    return value


def check_row(raw: Mapping[str, Any], number: int, faults: Faults) -> Row:
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
        return Row(number, "", {}, {}, [], [], [], bad=True, shown_id=shown)
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
    row = Row(number, usable_id, fields, tags, group_ids, sensor_list, component_list)
    row.bad = len(faults.items) > before
    row.shown_id = device_id if isinstance(device_id, str) else None
    return row


def _object_list(
    value: Any, what: str, number: int, device_id: Any, faults: Faults
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


def _check_sensors(value: Any, number: int, device_id: Any, faults: Faults) -> list[dict[str, Any]]:
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
    value: Any, number: int, device_id: Any, faults: Faults
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
