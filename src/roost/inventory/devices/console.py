"""Console pages of devices: the fleet's device list, a device's overview, its change history.

Reads go through the services the device routes call (``roost.devices``, ``roost.telemetry``,
``roost.audit``; the presence room serves the presence card); every change these pages offer is
a form that ``console.js`` sends to ``/api/v1/devices…`` or ``/api/v1/groups/{id}/devices``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from fastapi import APIRouter
from pydantic import ValidationError
from starlette.responses import HTMLResponse

from roost.audit.service import AuditQuery
from roost.console.web import ConsoleRoute, Page, PageDep
from roost.core.access import Role
from roost.errors import RoostError
from roost.inventory.devices.schemas import DeviceFilters
from roost.inventory.devices.service import DEVICE_SORTS
from roost.store.queries import MAX_LIMIT, PageRequest

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)

# The list's query-string names (short, for links such as /devices?site=berlin) and the API
# filter each one stands for.
LIST_FILTERS = {
    "site": "site_id",
    "model": "model_id",
    "firmware": "firmware_id",
    "customer": "customer_id",
    "group": "group",
    "status": "status",
    "q": "q",
}
# The columns of the list a header can sort by (a subset of the API's DEVICE_SORTS).
LIST_SORTS = ("id", "name", "site_id", "model_id", "firmware_id", "last_seen_at", "created_at")
# Audit fields that every write sets and that say nothing about what changed (the entry has
# its own time).
NOISY_FIELDS = frozenset({"created_at", "updated_at"})
# Longest value a history row shows before cutting it (the entry's JSON holds all of it).
MAX_SHOWN_VALUE = 200

assert set(LIST_SORTS) <= set(DEVICE_SORTS)


def device_filters(query: Mapping[str, str], tags: Iterable[str]) -> DeviceFilters:
    """The API's device filters from the list's query string (empty fields are no filter)."""
    values: dict[str, Any] = {
        api: query[name].strip()
        for name, api in LIST_FILTERS.items()
        if query.get(name, "").strip()
    }
    wanted = [t.strip() for raw in tags for t in raw.split(",") if t.strip()]
    if wanted:
        values["tag"] = wanted
    return DeviceFilters.model_validate(values)


def _problem_text(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()))
        parts.append(f"{where}: {error.get('msg', 'invalid')}" if where else error["msg"])
    return "; ".join(parts) or "invalid filter"


async def _records(page: Page, kind: str) -> list[dict[str, Any]]:
    """One inventory kind's records (ids and names) for a filter's or a form's suggestions."""
    listed = await page.roost.inventory.list(page.actor, kind, PageRequest(limit=MAX_LIMIT))
    return list(listed.items)


@router.get("/devices")
async def device_list(page: PageDep) -> HTMLResponse:
    """The fleet's devices: search, filters, sort, pages; select many to group or target them."""
    params = page.request.query_params
    paging = page.paging(default_sort="id")
    error: str | None = None
    rows: list[dict[str, Any]] = []
    total = 0
    # A bad filter (a mistyped tag, an unknown group) is told above an empty table, with the
    # filter form still there to fix it.
    try:
        filters = device_filters(params, params.getlist("tag"))
        if paging.sort and paging.sort.lstrip("-") not in LIST_SORTS:
            error = f"cannot sort by {paging.sort!r}: sort by one of {', '.join(LIST_SORTS)}"
        else:
            listed = await page.roost.devices.list(
                page.actor, filters.device_query(), paging.request_page
            )
            rows, total = listed.items, listed.total
    except ValidationError as exc:
        error = _problem_text(exc)
    except RoostError as exc:
        error = exc.detail
    sites = await _records(page, "site")
    models = await _records(page, "device_model")
    firmware = await _records(page, "firmware")
    groups = await _records(page, "group")
    customers = await _records(page, "customer") if page.can_operate else []
    return page.render(
        "devices/list.html",
        rows=rows,
        total=total,
        paging=paging,
        error=error,
        filtered=any(params.get(name) for name in LIST_FILTERS) or bool(params.getlist("tag")),
        tag_filter=", ".join(params.getlist("tag")),
        sites=sites,
        site_names={s["id"]: s["name"] for s in sites},
        models=models,
        model_names={m["id"]: m["commercial_name"] for m in models},
        firmware=firmware,
        firmware_versions={f["id"]: f["version"] for f in firmware},
        groups=groups,
        static_groups=[g for g in groups if g.get("filter") is None],
        customers=customers,
    )


def component_tree(components: Iterable[Mapping[str, Any]]) -> list[tuple[int, Mapping[str, Any]]]:
    """Components in tree order, each with its depth (children under their parent)."""
    items = list(components)
    known = {c["id"] for c in items}
    children: dict[str | None, list[Mapping[str, Any]]] = {}
    for c in items:
        parent = c.get("parent_id") if c.get("parent_id") in known else None
        children.setdefault(parent, []).append(c)
    ordered: list[tuple[int, Mapping[str, Any]]] = []
    seen: set[str] = set()

    def walk(parent: str | None, depth: int) -> None:
        for child in children.get(parent, []):
            if child["id"] in seen:
                continue
            seen.add(child["id"])
            ordered.append((depth, child))
            walk(child["id"], depth + 1)

    walk(None, 0)
    # A cycle would hide its members from the walk: show them at the top level all the same.
    ordered += [(0, c) for c in items if c["id"] not in seen]
    return ordered


@router.get("/devices/{device_id}")
async def device_overview(page: PageDep, device_id: str) -> HTMLResponse:
    """A device's inventory, components, notes, tags, groups, presence and latest values."""
    device = await page.roost.devices.get(page.actor, device_id)
    components = await page.roost.devices.list_components(
        page.actor, device_id, PageRequest(limit=MAX_LIMIT, sort="name")
    )
    latest = await page.roost.telemetry.latest(page.actor, device_id)
    groups = await _records(page, "group")
    forms: dict[str, Any] = {}
    if page.can_operate:
        forms = {
            "sites": await _records(page, "site"),
            "models": await _records(page, "device_model"),
            "firmware": await _records(page, "firmware"),
            "customers": await _records(page, "customer"),
        }
    member_of = set(device["groups"])
    return page.render(
        "devices/overview.html",
        device=device,
        tab="overview",
        components=component_tree(components.items),
        components_total=components.total,
        latest=latest["items"],
        groups={g["id"]: g for g in groups},
        joinable=[g for g in groups if g.get("filter") is None and g["id"] not in member_of],
        **forms,
    )


def changed_fields(entry: Mapping[str, Any]) -> list[tuple[str, str | None, str | None]]:
    """(field, before, after) of an audit entry as short text, for the fields that differ.

    A created record lists its non-empty fields with no ``before`` (None); a deleted one the
    fields it had, with no ``after``.
    """
    before, after = entry.get("before"), entry.get("after")
    out: list[tuple[str, str | None, str | None]] = []
    if before is None or after is None:
        record = after if before is None else before
        for key, value in sorted((record or {}).items()):
            if key not in NOISY_FIELDS and value not in (None, "", [], {}):
                shown = _shown(value)
                out.append((key, None, shown) if before is None else (key, shown, None))
        return out
    for key in sorted({*before, *after} - NOISY_FIELDS):
        old, new = before.get(key), after.get(key)
        if old != new:
            out.append((key, _shown(old), _shown(new)))
    return out


def _shown(value: Any) -> str:
    if value is None:
        return "—"
    if value == "":
        return "(empty)"
    text = (
        value
        if isinstance(value, str)
        else orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    )
    return text if len(text) <= MAX_SHOWN_VALUE else text[: MAX_SHOWN_VALUE - 1] + "…"


@router.get("/devices/{device_id}/history")
async def device_history(page: PageDep, device_id: str) -> HTMLResponse:
    """Every recorded change of the device and what hangs under it, newest first."""
    device = await page.roost.devices.get(page.actor, device_id)
    paging = page.paging(default_sort="-id")
    entries = await page.roost.audit.list(
        page.actor, AuditQuery(device_id=device_id), paging.request_page, min_role=Role.VIEWER
    )
    return page.render(
        "devices/history.html",
        device=device,
        tab="history",
        entries=[{**e, "changes": changed_fields(e)} for e in entries.items],
        total=entries.total,
        paging=paging,
    )
