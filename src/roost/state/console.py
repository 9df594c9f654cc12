"""Console pages of device state: the document (desired, reported, delta), its editor and history.

The page reads through :class:`~roost.state.service.StateService` as the API does; saving desired
state is the browser's ``PATCH`` to the API with the version the page was read at, so a writer
who came first makes the API answer 409 and the page shows that answer. The live part of the
document is a fragment the page polls, so the delta is seen to clear when the device reports.
"""

from __future__ import annotations

from typing import Any, Protocol

from fastapi import APIRouter
from starlette.responses import Response

from roost.console.web import ConsoleRoute, Page, PageDep
from roost.errors import NotFound
from roost.inventory.devices.service import DeviceService
from roost.state.rules import DEFAULT_STATE, check_name
from roost.state.service import MAX_NAMED_STATES, StateService
from roost.store.queries import PageRequest

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)

# Versions of the history per page: each row holds two documents, so fewer than a plain table.
HISTORY_PAGE_SIZE = 20


class Services(Protocol):
    """What the state pages use of the running Roost."""

    @property
    def devices(self) -> DeviceService: ...

    @property
    def state(self) -> StateService: ...


def _state_name(page: Page) -> str:
    """The state the page shows (``?name=``), the default one when none is asked for."""
    return check_name(page.request.query_params.get("name") or DEFAULT_STATE)


async def _document(roost: Services, page: Page, device_id: str, name: str) -> dict[str, Any]:
    """The document; a named state not written yet is an empty one its first save creates."""
    try:
        return await roost.state.get(page.actor, device_id, name)
    except NotFound:
        if name == DEFAULT_STATE:
            raise
        await roost.devices.get(page.actor, device_id)  # an unknown device is still 404
        return {
            "name": name,
            "desired": {},
            "reported": {},
            "delta": {},
            "metadata": {"desired": {}, "reported": {}},
            "version": None,
            "updated_at": None,
        }


@router.get("/devices/{device_id}/state")
async def state_page(page: PageDep, device_id: str) -> Response:
    """A device's state document side by side, the desired editor, and the history."""
    roost: Services = page.roost
    name = _state_name(page)
    device = await roost.devices.get(page.actor, device_id)
    states = await roost.state.list(page.actor, device_id, PageRequest(limit=MAX_NAMED_STATES + 1))
    doc = await _document(roost, page, device_id, name)
    paging = page.paging(size=HISTORY_PAGE_SIZE)
    history = await roost.state.history(page.actor, device_id, paging.request_page, name=name)
    names = [DEFAULT_STATE, *(row["name"] for row in states.items if row["name"] != DEFAULT_STATE)]
    if name not in names:
        names.append(name)
    return page.render(
        "state/page.html",
        device=device,
        tab="state",
        name=name,
        names=names,
        doc=doc,
        base_version=doc["version"],
        history=history,
        paging=paging,
    )


@router.get("/devices/{device_id}/state/live")
async def state_live(page: PageDep, device_id: str) -> Response:
    """The live part of the state page (polled): versions, desired, reported and delta."""
    roost: Services = page.roost
    name = _state_name(page)
    doc = await _document(roost, page, device_id, name)
    raw_base = page.request.query_params.get("base", "")
    base_version = int(raw_base) if raw_base.isdigit() else None
    return page.render(
        "state/_live.html",
        device={"id": device_id},
        name=name,
        doc=doc,
        base_version=base_version,
    )
