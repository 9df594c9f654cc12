"""The console's fleet overview at ``/``: presence counts (by site, model and firmware), devices
lost recently, the tenant's ingest rate, active alarms by severity and the jobs in progress.

Every figure is one aggregate query of a room's service (a GROUP BY, a counted page, a bounded
read of the ingest log), so the page costs the same with ten devices or ten thousand.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter
from starlette.responses import Response

from roost.console.web import ConsoleRoute, PageDep
from roost.store.queries import PageRequest

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)

# "Lost recently": devices that went offline within this long.
LOST_WINDOW = timedelta(hours=24)
# Rows of each table on the overview; the device list has the rest.
LOST_SHOWN = 10
BREAKDOWN_SHOWN = 12
JOBS_SHOWN = 8
# Terminal execution statuses (the jobs room's lifecycle; the console imports no capability room).
ENDED = ("SUCCEEDED", "FAILED", "TIMED_OUT", "REJECTED", "REMOVED", "CANCELED")
# Alarm severities, gravest first (the alarms room's; its counts name each of them).
SEVERITIES = ("critical", "major", "minor", "warning", "info")


@router.get("/")
async def overview(page: PageDep) -> Response:
    """The fleet at a glance."""
    roost = page.roost
    summary = await roost.presence.summary(page.actor)
    since = roost.clock() - LOST_WINDOW
    lost = await roost.presence.recently_offline(
        page.actor, since, PageRequest(limit=LOST_SHOWN, offset=0)
    )
    rate = await roost.telemetry.ingest_rate(page.actor)
    alarms = await roost.alarms.counts(page.actor)
    jobs = await roost.jobs.list(
        page.actor, ["IN_PROGRESS"], PageRequest(limit=JOBS_SHOWN, sort="-created_at")
    )
    breakdowns = [
        (title, field, param, _largest(summary[key], field), len(summary[key]))
        for title, key, field, param in (
            ("By site", "by_site", "site_id", "site"),
            ("By model", "by_model", "model_id", "model"),
            ("By firmware", "by_firmware", "firmware_id", "firmware"),
        )
    ]
    progress = {
        job["id"]: (sum(job["counts"].get(s, 0) for s in ENDED), sum(job["counts"].values()))
        for job in jobs.items
    }
    return page.render(
        "console/overview.html",
        summary=summary,
        breakdowns=breakdowns,
        lost=lost,
        rate=rate,
        jobs=jobs,
        progress=progress,
        alarms=alarms,
        severities=SEVERITIES,
    )


def _largest(buckets: list[dict[str, Any]], field: str) -> list[dict[str, Any]]:
    """The buckets with the most devices (ties by name), as many as the overview shows."""
    ranked = sorted(buckets, key=lambda b: (-b["total"], b[field] is None, b[field] or ""))
    return ranked[:BREAKDOWN_SHOWN]
