"""Console pages of alarms: the list (filters, acknowledge, clear, live) and one alarm.

Pages read through :class:`~roost.alarms.service.AlarmService` as ``GET /api/v1/alarms`` does;
acknowledging and clearing are sent by the browser to ``/api/v1/alarms/{id}/ack`` and
``…/clear`` (``static/console.js``). The list listens to ``/api/v1/ws/alarms`` (the session
cookie authenticates it) and, at each change, asks its own URL again with htmx for the table
part only, so a new alarm appears with the page's filters, sort and paging applied.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

from fastapi import APIRouter, Path
from starlette.responses import Response

from roost.alarms.router import Services
from roost.alarms.rules.model import SEVERITIES
from roost.alarms.service import STATUSES
from roost.console.web import ConsoleRoute, Page, PageDep

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)

#: The status the list shows when none is chosen: what needs attention.
DEFAULT_STATUS: Final = "active"
#: The status filter's choice that shows every alarm.
ANY_STATUS: Final = "all"
#: Text filters of the list, as the API names them.
TEXT_FILTERS: Final = ("device_id", "type", "rule_id", "q")
#: The header htmx sets on its requests: the list then answers only its table.
HTMX_HEADER: Final = "HX-Request"


def _filters(page: Page) -> dict[str, Any]:
    """The list's filters from the query string (unknown values fall back to none)."""
    params = page.request.query_params
    status = params.get("status") or DEFAULT_STATUS
    if status not in (*STATUSES, ANY_STATUS):
        status = DEFAULT_STATUS
    severity = params.get("severity") or None
    acknowledged = {"yes": True, "no": False}.get(params.get("acknowledged") or "")
    chosen: dict[str, Any] = {
        "status": status,
        "severity": severity if severity in SEVERITIES else None,
        "acknowledged": acknowledged,
    }
    for name in TEXT_FILTERS:
        chosen[name] = (params.get(name) or "").strip()[:200] or None
    return chosen


@router.get("/alarms")
async def alarm_list(page: PageDep) -> Response:
    """Alarms (active ones by default), filtered and sorted; operators acknowledge and clear."""
    roost: Services = page.roost
    paging = page.paging(default_sort="-started_at")
    chosen = _filters(page)
    alarms = await roost.alarms.list(
        page.actor,
        paging.request_page,
        status=() if chosen["status"] == ANY_STATUS else (chosen["status"],),
        severity=(chosen["severity"],) if chosen["severity"] else (),
        acknowledged=chosen["acknowledged"],
        **{name: chosen[name] for name in TEXT_FILTERS},
    )
    counts = await roost.alarms.counts(page.actor)
    context: dict[str, Any] = {
        "alarms": alarms,
        "paging": paging,
        "chosen": chosen,
        "counts": counts,
        "severities": SEVERITIES,
        "filtered": any(chosen[k] is not None for k in ("severity", "acknowledged", *TEXT_FILTERS))
        or chosen["status"] != DEFAULT_STATUS,
    }
    if page.request.headers.get(HTMX_HEADER):
        return page.render("alarms/_table.html", **context)
    return page.render("alarms/list.html", **context)


@router.get("/alarms/{alarm_id}")
async def alarm_detail(page: PageDep, alarm_id: Annotated[int, Path(ge=1, le=2**62)]) -> Response:
    """One alarm: what raised it, its details, who acknowledged or cleared it."""
    roost: Services = page.roost
    alarm = await roost.alarms.get(page.actor, alarm_id)
    return page.render("alarms/detail.html", alarm=alarm)
