"""The console's fleet overview at ``/`` (being built)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from roost.console.web import ConsoleRoute, PageDep

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)


@router.get("/")
async def overview(page: PageDep) -> Response:
    """The fleet at a glance."""
    return page.render("console/overview.html")
