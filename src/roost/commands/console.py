"""Console pages of commands: send one, follow its status live, and a device's schedules.

The page reads through :class:`~roost.commands.service.CommandService` as the API does; sending,
cancelling and every schedule change are the browser's calls to the API. The command table is a
fragment the page polls while a command on it is not final, so SENT → SUCCEEDED shows without a
reload, and polling stops once every shown command has finished.
"""

from __future__ import annotations

from typing import Any, Protocol

from fastapi import APIRouter
from starlette.responses import Response

from roost.commands.lifecycle import COMMAND_TERMINAL, CommandStatus
from roost.commands.service import CommandService
from roost.console.web import ConsoleRoute, Page, PageDep
from roost.inventory.devices.service import DeviceService
from roost.store.queries import PageRequest

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)

# Schedules shown on the device's page: a device has a handful; more are listed by the API.
SCHEDULES_SHOWN = 100
# The id of the polled command table: htmx names it in HX-Target when it asks for the fragment.
LIVE_TARGET = "commands-live"
# Choices of the schedule snooze menu (seconds, label).
SNOOZE_CHOICES = ((900, "15 min"), (3600, "1 hour"), (6 * 3600, "6 hours"), (86400, "1 day"))


class Services(Protocol):
    """What the command pages use of the running Roost."""

    @property
    def devices(self) -> DeviceService: ...

    @property
    def commands(self) -> CommandService: ...


def _statuses(page: Page) -> list[str]:
    """The status filter of the query string (``?status=SENT&status=QUEUED`` or commas)."""
    raw = page.request.query_params.getlist("status")
    return [s.strip() for item in raw for s in item.split(",") if s.strip()]


async def _command_table(page: Page, device_id: str) -> dict[str, Any]:
    """The context of the command table: a page of commands and whether to keep polling."""
    roost: Services = page.roost
    paging = page.paging(default_sort="-created_at")
    statuses = _statuses(page)
    commands = await roost.commands.list_commands(
        page.actor, device_id, paging.request_page, statuses
    )
    pending = any(c["status"] not in COMMAND_TERMINAL for c in commands.items)
    query = page.request.url.query
    live_url = page.request.url.path + (f"?{query}" if query else "")
    return {
        "commands": commands,
        "paging": paging,
        "statuses": statuses,
        "pending": pending,
        "live_url": live_url,
        "terminal": {str(s) for s in COMMAND_TERMINAL},
        "live_target": LIVE_TARGET,
    }


@router.get("/devices/{device_id}/commands")
async def commands_page(page: PageDep, device_id: str) -> Response:
    """A device's commands (send, history, live status) and command schedules.

    Asked by htmx for the command table alone (``HX-Target: commands-live``, the page polling
    it), it answers that fragment: the table's sort and page links stay this page's.
    """
    roost: Services = page.roost
    table = await _command_table(page, device_id)  # an unknown device is 404 here
    if page.request.headers.get("HX-Target") == LIVE_TARGET:
        return page.render("commands/_table.html", device={"id": device_id}, **table)
    device = await roost.devices.get(page.actor, device_id)
    schedules = await roost.commands.schedules.list_schedules(
        page.actor, PageRequest(limit=SCHEDULES_SHOWN, sort="created_at"), device_id=device_id
    )
    return page.render(
        "commands/page.html",
        device=device,
        tab="commands",
        all_statuses=[str(s) for s in CommandStatus],
        schedules=schedules,
        snooze_choices=SNOOZE_CHOICES,
        **table,
    )
