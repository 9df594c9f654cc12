"""Console page of diagnostics: a device's Diagnostics tab (its archives, with download links).

The page reads through :class:`~roost.diagnostics.service.DiagnosticsService` as the API does;
a download is the API's content route (the session cookie authenticates it), a delete the
browser's DELETE to the API (``static/console.js``). Archives are asked for with the device's
``diagnostics`` command (the Commands tab, or the button here for operators).
"""

from __future__ import annotations

from typing import Final

from fastapi import APIRouter
from starlette.responses import Response

from roost.console.web import ConsoleRoute, PageDep

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)

#: Archives a page shows (a device keeps 20: one page holds them all).
DIAGNOSTICS_PAGE: Final = 25


@router.get("/devices/{device_id}/diagnostics")
async def device_diagnostics(page: PageDep, device_id: str) -> Response:
    """A device's diagnostics archives, newest first, each with its download link."""
    device = await page.roost.devices.get(page.actor, device_id)
    paging = page.paging(default_sort="-created_at", size=DIAGNOSTICS_PAGE)
    archives = await page.roost.diagnostics.list(page.actor, device_id, paging.request_page)
    return page.render(
        "diagnostics/list.html", device=device, tab="diagnostics", archives=archives, paging=paging
    )
