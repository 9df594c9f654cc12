"""Console pieces of presence: a device's presence card with its 24-hour timeline.

The card is part of the device page (``devices/overview.html`` includes it) and refreshes itself
through :func:`presence_card`. The timeline is computed here from the same presence history the
API answers (``GET /api/v1/devices/{id}/presence/history``); the browser only draws the segments.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter
from starlette.responses import HTMLResponse

from roost.console.web import ConsoleRoute, Page, PageDep
from roost.store.queries import MAX_LIMIT, PageRequest

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)

# The span the device page's timeline covers: a shift and the night before it at a glance.
TIMELINE_SPAN = timedelta(hours=24)
# Tick marks under the timeline, in hours before now.
TIMELINE_TICKS_H = (24, 18, 12, 6, 0)


@dataclass(frozen=True, slots=True)
class Segment:
    """A stretch of the timeline in one status; ``left`` and ``width`` in percent of the span."""

    status: str
    start: datetime
    end: datetime
    left: float
    width: float

    @property
    def label(self) -> str:
        """The status in prose (``unregistered`` before the device existed)."""
        return self.status.replace("_", " ")


def timeline(
    changes: Sequence[Mapping[str, Any]],
    *,
    start: datetime,
    end: datetime,
    before: str,
    created_at: datetime | None = None,
) -> list[Segment]:
    """Segments of ``start``..``end`` from presence changes (any order; ``at`` and ``status``).

    ``before`` is the status at ``start`` (the last change before the window, or never_seen);
    time before ``created_at`` is ``unregistered``.
    """
    span = (end - start).total_seconds()
    if span <= 0:
        return []
    points: list[tuple[datetime, str]] = []
    if created_at is not None and created_at > start:
        points.append((start, "unregistered"))
        points.append((min(created_at, end), before))
    else:
        points.append((start, before))
    for change in sorted(changes, key=lambda c: _aware(c["at"])):
        at = _aware(change["at"])
        if start <= at < end:
            points.append((at, str(change["status"])))
    segments: list[Segment] = []
    for index, (at, status) in enumerate(points):
        until = points[index + 1][0] if index + 1 < len(points) else end
        if until <= at:
            continue
        if segments and segments[-1].status == status:
            last = segments.pop()
            at = last.start
        left = (at - start).total_seconds() / span * 100
        width = (until - at).total_seconds() / span * 100
        segments.append(Segment(status, at, until, round(left, 3), round(width, 3)))
    return segments


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


async def presence_view(page: Page, device: Mapping[str, Any]) -> dict[str, Any]:
    """The device's presence and its 24-hour timeline, read through the presence service."""
    presence = page.roost.presence
    now = datetime.now(UTC)
    start = now - TIMELINE_SPAN
    state = await presence.get(page.actor, device["id"])
    window = await presence.history(
        page.actor, device["id"], PageRequest(limit=MAX_LIMIT), start, None
    )
    earlier = await presence.history(page.actor, device["id"], PageRequest(limit=1), None, start)
    before = str(earlier.items[0]["status"]) if earlier.items else "never_seen"
    created = device.get("created_at")
    created_at = _aware(created) if isinstance(created, datetime) else None
    partial = window.total > len(window.items) and bool(window.items)
    if partial:
        # A flapping device changed more often than one page holds: the oldest changes of the
        # window are not read, so the timeline starts at the oldest one that is.
        start = min(_aware(item["at"]) for item in window.items)
    return {
        "presence": state,
        "segments": timeline(
            window.items, start=start, end=now, before=before, created_at=created_at
        ),
        "changes": window.items[:10],
        "changes_total": window.total,
        "partial": partial,
        "drawn": len(window.items),
        "span_h": int(TIMELINE_SPAN.total_seconds() // 3600),
        "ticks": TIMELINE_TICKS_H,
    }


@router.get("/devices/{device_id}/presence-card")
async def presence_card(page: PageDep, device_id: str) -> HTMLResponse:
    """The presence card alone (the device page polls it to stay current)."""
    device = await page.roost.devices.get(page.actor, device_id)
    view = await presence_view(page, device)
    return page.render("presence/_card.html", device=device, **view)
