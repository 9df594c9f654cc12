"""Console page of the audit log: who changed what and when, before → after.

It reads through the audit service with the signed-in actor and the filters of ``GET
/api/v1/audit`` (actor, action, entity type and id, device, time range), newest first.
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter
from starlette.responses import Response

from roost.audit.router import Services
from roost.audit.service import AuditQuery
from roost.console.web import ConsoleRoute, PageDep
from roost.errors import InvalidInput, PermissionDenied
from roost.store.queries import Page

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)

# The text filters of the log, each passed to the service as it is (an exact match).
TEXT_FILTERS = ("actor", "action", "entity_type", "entity_id", "device_id")


def _moment(name: str, raw: str) -> datetime | None:
    """A time filter from the form: RFC 3339, or a ``datetime-local`` value read as UTC."""
    if not raw:
        return None
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidInput(f"{name}: {raw!r} is not a time (use 2026-01-31T08:00)") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@router.get("/admin/audit")
async def audit_page(page: PageDep) -> Response:
    """The tenant's audit log with filters, newest first; each entry's change expands."""
    roost: Services = page.roost
    paging = page.paging(default_sort="-at")
    params = page.request.query_params
    filters = {name: params.get(name, "").strip()[:200] for name in TEXT_FILTERS}
    since_raw, until_raw = params.get("since", "").strip(), params.get("until", "").strip()
    query = AuditQuery(
        entity_type=filters["entity_type"] or None,
        entity_id=filters["entity_id"] or None,
        device_id=filters["device_id"] or None,
        actor=filters["actor"] or None,
        action=filters["action"] or None,
        since=_moment("since", since_raw),
        until=_moment("until", until_raw),
    )
    refused = None
    try:
        entries = await roost.audit.list(page.actor, query, paging.request_page)
    except PermissionDenied as exc:
        refused, entries = exc.detail, Page([], 0, 0, 0)
    return page.render(
        "audit/list.html",
        entries=entries,
        paging=paging,
        filters=filters,
        since=since_raw,
        until=until_raw,
        filtered=any(filters.values()) or bool(since_raw or until_raw),
        refused=refused,
    )
