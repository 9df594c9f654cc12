"""Console pages of a device's telemetry and events: charts per sensor, the events table, live.

The telemetry tab renders one chart holder per sensor; ``static/chart.js`` fills each from the
API's history route (raw points for short ranges, bucketed avg/min/max for long ones) and keeps
it live from the WebSocket stream, so the page sends the browser nothing the API would not.
The events tab is a server-rendered table read through the same service as the API's events
route, newest first, paged by a cursor (the API's events have no total and no offset), with new
events prepended live from the same stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from fastapi import APIRouter
from starlette.responses import Response

from roost.console.web import ConsoleRoute, PageDep
from roost.errors import InvalidInput
from roost.inventory.devices.service import DeviceService
from roost.store.queries import MAX_LIMIT, PageRequest
from roost.telemetry.queries.service import TelemetryService, parse_bound

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)

# The "last …" ranges the picker offers (the API's relative form), in the picker's order.
RANGES = {"1h": "Last hour", "1d": "Last day", "7d": "Last week"}
DEFAULT_RANGE = "1h"
# Sensor types drawn as a line; the others (string, boolean, json) are listed as values.
NUMERIC_TYPES = frozenset({"double", "long"})
# Events a page of the table shows.
EVENTS_PAGE_SIZE = 50
# Events at the cursor's very instant the next page may have to skip (shown at the end of the
# page before): several events stamped on the same nanosecond are rare, this many rarer still.
SAME_INSTANT_ALLOWANCE = 50


class Services(Protocol):
    """What the telemetry pages use of the running Roost."""

    @property
    def devices(self) -> DeviceService: ...

    @property
    def telemetry(self) -> TelemetryService: ...


@dataclass(frozen=True, slots=True)
class TimeRange:
    """The range the picker chose: a ``last …`` key, or a custom from/to (as the user typed)."""

    key: str
    start: str = ""
    end: str = ""

    @classmethod
    def from_query(cls, query: Any) -> TimeRange:
        """``range`` (1h, 1d, 7d or custom) with ``from``/``to``; unknown keys are the default."""
        key = query.get("range") or DEFAULT_RANGE
        if key == "custom":
            return cls("custom", query.get("from") or "", query.get("to") or "")
        return cls(key if key in RANGES else DEFAULT_RANGE)

    @property
    def live(self) -> bool:
        """Whether new points belong in the window (a ``last …`` range slides with now)."""
        return self.key in RANGES


@router.get("/devices/{device_id}/telemetry")
async def telemetry_page(page: PageDep, device_id: str) -> Response:
    """One chart per numeric sensor (values listed for the others), a range picker, live."""
    roost: Services = page.roost
    device = await roost.devices.get(page.actor, device_id)
    listed = await roost.devices.list_sensors(
        page.actor, device_id, PageRequest(limit=MAX_LIMIT, sort="id")
    )
    return page.render(
        "telemetry/telemetry.html",
        device=device,
        tab="telemetry",
        # Charts first, then the sensors whose values are listed.
        sensors=sorted(listed.items, key=lambda s: s["type"] not in NUMERIC_TYPES),
        more_sensors=listed.total > len(listed.items),
        numeric=NUMERIC_TYPES,
        ranges=RANGES,
        chosen=TimeRange.from_query(page.request.query_params),
    )


@dataclass(frozen=True, slots=True)
class EventFilters:
    """The events table's filters and cursor, from the query string."""

    types: list[str]
    start: str
    end: str
    before: str  # the cursor: the last shown event's time…
    before_offset: int | None  # …and its log offset (ties on the same instant)

    @classmethod
    def from_query(cls, query: Any) -> EventFilters:
        """``type`` (repeatable, or comma-separated), ``from``, ``to``, ``before``."""
        types = [t.strip() for raw in query.getlist("type") for t in raw.split(",") if t.strip()]
        offset = query.get("before_offset") or ""
        return cls(
            types=list(dict.fromkeys(types)),
            start=query.get("from") or "",
            end=query.get("to") or "",
            before=query.get("before") or "",
            before_offset=int(offset) if offset.isdigit() else None,
        )

    @property
    def live(self) -> bool:
        """New events belong on this page: it is the newest page of an open-ended range."""
        return not self.end and not self.before


@router.get("/devices/{device_id}/events")
async def events_page(page: PageDep, device_id: str) -> Response:
    """The device's events, newest first, filtered by type and time, paged, live."""
    roost: Services = page.roost
    device = await roost.devices.get(page.actor, device_id)
    filters = EventFilters.from_query(page.request.query_params)
    problem = None
    rows: list[dict[str, Any]] = []
    older = None
    try:
        rows, older = await _events(roost, page.actor, device_id, filters)
    except InvalidInput as exc:  # a bad from/to: the filter form says why, the page stays
        problem = exc.detail
    paging = page.paging()
    return page.render(
        "telemetry/events.html",
        device=device,
        tab="events",
        filters=filters,
        events=rows,
        problem=problem,
        older_link=paging.link(before=older[0], before_offset=older[1]) if older else None,
        newest_link=paging.link(before=None, before_offset=None) if filters.before else None,
    )


async def _events(
    roost: Services, actor: Any, device_id: str, filters: EventFilters
) -> tuple[list[dict[str, Any]], tuple[str, int] | None]:
    """A page of events and the cursor of the next (older) page, None on the last page."""
    end = parse_bound(filters.end, 0, "to") if filters.end else None
    allowance = 0
    if filters.before:
        cursor = parse_bound(filters.before, 0, "before") + 1  # through the cursor's instant
        end = cursor if end is None else min(end, cursor)
        allowance = SAME_INSTANT_ALLOWANCE
    answer = await roost.telemetry.events(
        actor,
        device_id,
        types=filters.types,
        start=parse_bound(filters.start, 0, "from") if filters.start else None,
        end=end,
        limit=EVENTS_PAGE_SIZE + 1 + allowance,
        order="desc",
    )
    items = answer["items"]
    if filters.before:
        items = [e for e in items if not _shown(e, filters)]
    rows = [{**e, "body_text": orjson.dumps(e["body"]).decode()} for e in items[:EVENTS_PAGE_SIZE]]
    if len(items) > EVENTS_PAGE_SIZE:
        last = rows[-1]
        return rows, (last["ts"], last["offset"])
    return rows, None


def _shown(event: dict[str, Any], filters: EventFilters) -> bool:
    """Whether an event at the cursor's instant was on an earlier page (offsets fall with it)."""
    if event["ts"] != filters.before:
        return False
    return filters.before_offset is None or event["offset"] >= filters.before_offset
