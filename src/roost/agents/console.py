"""Console page of agents: the devices whose roost-agent reports, with version and backlog.

The page reads through :class:`~roost.agents.service.AgentService` as ``GET /api/v1/agents``
does, and pages like the other console tables (``page``, ``size``); filters are the query
string's ``version`` and ``backlog``.
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from roost.console.web import ConsoleRoute, PageDep

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)


@router.get("/agents")
async def agents_page(page: PageDep) -> Response:
    """Agents by device id: presence, version, queued and dropped points, last report."""
    paging = page.paging()
    versions = await page.roost.agents.versions(page.actor)
    chosen = page.request.query_params.get("version") or None
    backlog = page.request.query_params.get("backlog") in ("1", "true", "on")
    agents = await page.roost.agents.list(
        page.actor,
        version=chosen,
        backlog=backlog,
        limit=paging.size,
        offset=(paging.number - 1) * paging.size,
    )
    return page.render(
        "agents/list.html",
        agents=agents,
        paging=paging,
        versions=versions,
        chosen=chosen,
        backlog=backlog,
    )
