"""Console page of consumers: apps that read granted telemetry with a consumer key.

The list reads through the consumer service with the signed-in actor, as ``GET
/api/v1/consumers`` does; creating, changing, rotating and deleting are sent by the browser to
``/api/v1/consumers``, whose answer carries a new key that the page shows once.
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from roost.console.web import ConsoleRoute, PageDep
from roost.telemetry.consumers.router import GRANTS_DOC, Services

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)

# What the grants field holds before anything is typed: one grant of each kind.
GRANTS_EXAMPLE = """[
  {"devices": ["kiosk-001"]},
  {"groups": ["berlin-stores"]},
  {"sensors": [{"device_id": "kiosk-002", "sensor_ids": ["temperature"]}]}
]"""


@router.get("/admin/consumers")
async def consumers_page(page: PageDep) -> Response:
    """The tenant's consumers and their grants; operators create, rotate and delete them."""
    roost: Services = page.roost
    paging = page.paging(default_sort="id")
    consumers = await roost.consumers.list(page.actor, paging.request_page)
    return page.render(
        "consumers/list.html",
        consumers=consumers,
        paging=paging,
        grants_example=GRANTS_EXAMPLE,
        grants_doc=GRANTS_DOC,
    )
