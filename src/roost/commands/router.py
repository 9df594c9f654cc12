"""HTTP routes of commands: users send, list, wait for and cancel them; schedules fire them;
HTTP-only devices long-poll for theirs and answer (DESIGN.md §3 "Commands")."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, Protocol

from fastapi import APIRouter, Depends, Query, Response
from pydantic import Field

from roost.commands.cron import MAX_OFFSET_S
from roost.commands.lifecycle import COMMAND_TERMINAL, CommandStatus
from roost.commands.rules import MAX_NAME, MAX_TIMEOUT_S, CommandRequest
from roost.commands.schedules import SORTS as SCHEDULE_SORTS
from roost.commands.service import MAX_WAIT_S, CommandService
from roost.commands.service import SORTS as COMMAND_SORTS
from roost.credentials.dependencies import DeviceDep
from roost.errors import InvalidInput
from roost.http import params as p
from roost.http import schemas as s
from roost.http.deps import ActorDep, get_roost
from roost.store.queries import Page


class Services(Protocol):
    """What the command routes use of the running Roost."""

    @property
    def commands(self) -> CommandService: ...


RoostDep = Annotated[Services, Depends(get_roost)]


router = APIRouter(tags=["commands"])

ERRORS = s.problem_responses(403, 404, 409, 422)
DEVICE_ERRORS = s.problem_responses(401, 403, 404, 409, 422)
CommandStatusName = Literal[
    "QUEUED", "SENT", "DELIVERED", "SUCCEEDED", "FAILED", "TIMED_OUT", "EXPIRED", "CANCELED"
]

# -- bodies -----------------------------------------------------------------------------------


class CommandIn(s.Body):
    """A command for a device."""

    name: str = Field(min_length=1, max_length=MAX_NAME, examples=["reboot"])
    params: dict[str, Any] | None = Field(None, examples=[{"delay_s": 5}])
    timeout_s: int | None = Field(
        None, ge=1, le=MAX_TIMEOUT_S, description="Seconds the device has to answer once sent"
    )
    expires_at: s.Rfc3339Time | None = Field(
        None, description="Not delivered after this time (EXPIRED instead)"
    )
    schedule_at: s.Rfc3339Time | None = Field(None, description="Not sent before this time")


class CommandOut(s.Out):
    """A command and where it stands."""

    id: str
    device_id: str
    name: str
    params: dict[str, Any]
    status: CommandStatusName
    status_details: dict[str, Any] | None
    result: Any = None
    timeout_s: int
    schedule_at: datetime | None
    expires_at: datetime | None
    schedule_id: str | None
    created_by: str
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None
    delivered_at: datetime | None
    completed_at: datetime | None


class DeviceCommand(s.Out):
    """A command as the device receives it (the MQTT payload)."""

    id: str
    name: str
    params: dict[str, Any]
    schedule_id: str | None = Field(
        None, description="The schedule that fired it (absent for other commands)"
    )
    fire_at: datetime | None = Field(
        None, description="The fire it is: when the schedule was due (absent for others)"
    )


class DeviceCommands(s.Out):
    """The device's pending commands (now DELIVERED)."""

    items: list[DeviceCommand]


class DeviceCommandStatus(s.Out):
    """Where a command stands after the device's answer."""

    id: str
    status: CommandStatusName


class CommandResponseIn(s.Body):
    """A device's answer to a command."""

    status: Literal["SUCCEEDED", "FAILED", "IN_PROGRESS", "DELIVERED"] = Field(
        description="SUCCEEDED or FAILED finish it; IN_PROGRESS / DELIVERED acknowledge it"
    )
    result: Any = Field(None, description="Any JSON: what the device has to say")
    status_details: dict[str, Any] | None = None


class ScheduleIn(s.Body):
    """A schedule: ``cron`` (recurring, in ``timezone``, ``offset_s`` from each event) or
    ``schedule_at`` (once)."""

    name: str = Field(min_length=1, max_length=MAX_NAME, examples=["alarm_light_on"])
    params: dict[str, Any] | None = None
    cron: str | None = Field(None, max_length=128, examples=["0 18 * * 1-5"])
    timezone: str = Field("UTC", max_length=64, examples=["Europe/Berlin"])
    offset_s: int = Field(
        0, ge=-MAX_OFFSET_S, le=MAX_OFFSET_S, description="Seconds from each event (-: before)"
    )
    schedule_at: s.Rfc3339Time | None = None
    timeout_s: int | None = Field(None, ge=1, le=MAX_TIMEOUT_S)
    expires_in_s: int | None = Field(
        None, ge=1, le=MAX_TIMEOUT_S, description="Each fired command expires this long after"
    )
    enabled: bool = True


class SchedulePatch(s.Body):
    """Changes to a schedule (changing when it fires forgets a snooze)."""

    name: str | None = Field(
        None, min_length=1, max_length=MAX_NAME, json_schema_extra=s.never_null
    )
    params: dict[str, Any] | None = None
    cron: str | None = Field(None, max_length=128)
    timezone: str | None = Field(None, max_length=64, json_schema_extra=s.never_null)
    offset_s: int | None = Field(
        None, ge=-MAX_OFFSET_S, le=MAX_OFFSET_S, json_schema_extra=s.never_null
    )
    schedule_at: s.Rfc3339Time | None = None
    timeout_s: int | None = Field(None, ge=1, le=MAX_TIMEOUT_S)
    expires_in_s: int | None = Field(None, ge=1, le=MAX_TIMEOUT_S)
    enabled: bool | None = Field(None, json_schema_extra=s.never_null)


class ScheduleOut(s.Out):
    """A command schedule."""

    id: str
    device_id: str
    name: str
    params: dict[str, Any]
    cron: str | None
    timezone: str
    offset_s: int
    schedule_at: datetime | None
    timeout_s: int | None
    expires_in_s: int | None
    enabled: bool
    next_fire_at: datetime | None
    last_fired_at: datetime | None
    fire_count: int
    last_command_id: str | None
    created_by: str
    created_at: datetime
    updated_at: datetime


class DeviceSchedule(s.Out):
    """One of the device's schedules, as its agent mirrors it to keep firing it offline."""

    id: str
    name: str
    params: dict[str, Any]
    timeout_s: int | None
    cron: str | None
    timezone: str
    offset_s: int
    schedule_at: datetime | None
    next_fire_at: datetime = Field(description="The next fire (a snooze moved it when snoozed)")
    snoozed: bool
    updated_at: datetime


class DeviceSchedules(s.Out):
    """The device's schedules that will fire, soonest first."""

    items: list[DeviceSchedule]


class SnoozeIn(s.Body):
    """Move the next fire: ``seconds`` later, or to ``until``."""

    seconds: int | None = Field(None, ge=1, le=MAX_TIMEOUT_S)
    until: s.Rfc3339Time | None = None


def _status_list_pattern() -> str:
    """Comma-separated command statuses, blanks around them and empty items ignored."""
    one = f"(?:(?:{'|'.join(CommandStatus)})\\s*)?"
    return f"^\\s*{one}(?:,\\s*{one})*$"


class CommandListParams(p.PageParams):
    """Paging, sorting and a status filter."""

    status: str | None = Field(
        None,
        max_length=200,
        description="Comma-separated statuses, e.g. QUEUED,SENT",
        json_schema_extra={"pattern": _status_list_pattern()},
    )


class ScheduleListParams(p.PageParams):
    """Paging, sorting and a device filter."""

    device_id: str | None = Field(None, max_length=128)


WaitQuery = Annotated[
    int,
    Query(
        ge=0,
        le=MAX_WAIT_S,
        description="Seconds to wait for the final status when the device is online",
    ),
]


# -- users: commands --------------------------------------------------------------------------


@router.post(
    "/devices/{device_id}/commands",
    response_model=CommandOut,
    status_code=201,
    operation_id="send_command",
    summary="Send a command to a device (?wait=N: answer its outcome, 200, or 202 if pending)",
    responses={**ERRORS, 200: {"model": CommandOut}, 202: {"model": CommandOut}},
)
async def send_command(
    roost: RoostDep,
    actor: ActorDep,
    device_id: str,
    body: CommandIn,
    response: Response,
    wait: WaitQuery = 0,
) -> dict[str, Any]:
    record = await roost.commands.create(
        actor,
        device_id,
        CommandRequest(
            name=body.name,
            params=body.params or {},
            timeout_s=body.timeout_s,
            expires_at=body.expires_at,
            schedule_at=body.schedule_at,
        ),
    )
    if wait:
        record = await roost.commands.wait_final(actor, device_id, record["id"], wait)
        response.status_code = 200 if record["status"] in COMMAND_TERMINAL else 202
    return record


@router.get(
    "/devices/{device_id}/commands",
    response_model=s.Page[CommandOut],
    operation_id="list_commands",
    openapi_extra=p.sortable(COMMAND_SORTS),
    summary="List a device's commands, newest first (filter by status)",
    responses=ERRORS,
)
async def list_commands(
    roost: RoostDep,
    actor: ActorDep,
    device_id: str,
    query: Annotated[CommandListParams, Query()],
) -> Page[dict[str, Any]]:
    statuses = [x.strip() for x in (query.status or "").split(",") if x.strip()]
    return await roost.commands.list_commands(actor, device_id, query.page(), statuses)


@router.get(
    "/devices/{device_id}/commands/{command_id}",
    response_model=CommandOut,
    operation_id="get_command",
    summary="Get a command (?wait=N: wait for its final status while the device is online)",
    responses=ERRORS,
)
async def get_command(
    roost: RoostDep, actor: ActorDep, device_id: str, command_id: str, wait: WaitQuery = 0
) -> dict[str, Any]:
    if wait:
        return await roost.commands.wait_final(actor, device_id, command_id, wait)
    return await roost.commands.get(actor, device_id, command_id)


@router.post(
    "/devices/{device_id}/commands/{command_id}/cancel",
    response_model=CommandOut,
    operation_id="cancel_command",
    summary="Cancel a command that has not finished",
    responses=ERRORS,
)
async def cancel_command(
    roost: RoostDep, actor: ActorDep, device_id: str, command_id: str
) -> dict[str, Any]:
    return await roost.commands.cancel(actor, device_id, command_id)


# -- users: schedules -------------------------------------------------------------------------


@router.post(
    "/devices/{device_id}/command-schedules",
    response_model=ScheduleOut,
    status_code=201,
    operation_id="create_command_schedule",
    summary="Schedule a command: once (schedule_at) or at every cron event in a time zone",
    responses=ERRORS,
)
async def create_command_schedule(
    roost: RoostDep, actor: ActorDep, device_id: str, body: ScheduleIn
) -> dict[str, Any]:
    return await roost.commands.schedules.create(actor, device_id, body.model_dump())


@router.get(
    "/devices/{device_id}/command-schedules",
    response_model=s.Page[ScheduleOut],
    operation_id="list_device_command_schedules",
    openapi_extra=p.sortable(SCHEDULE_SORTS),
    summary="List a device's command schedules",
    responses=ERRORS,
)
async def list_device_command_schedules(
    roost: RoostDep, actor: ActorDep, device_id: str, query: Annotated[p.PageParams, Query()]
) -> Page[dict[str, Any]]:
    return await roost.commands.schedules.list_schedules(actor, query.page(), device_id=device_id)


@router.get(
    "/command-schedules",
    response_model=s.Page[ScheduleOut],
    operation_id="list_command_schedules",
    openapi_extra=p.sortable(SCHEDULE_SORTS),
    summary="List the tenant's command schedules (filter by device)",
    responses=ERRORS,
)
async def list_command_schedules(
    roost: RoostDep, actor: ActorDep, query: Annotated[ScheduleListParams, Query()]
) -> Page[dict[str, Any]]:
    return await roost.commands.schedules.list_schedules(
        actor, query.page(), device_id=query.device_id
    )


@router.get(
    "/command-schedules/{schedule_id}",
    response_model=ScheduleOut,
    operation_id="get_command_schedule",
    summary="Get a command schedule",
    responses=ERRORS,
)
async def get_command_schedule(
    roost: RoostDep, actor: ActorDep, schedule_id: str
) -> dict[str, Any]:
    return await roost.commands.schedules.get(actor, schedule_id)


@router.patch(
    "/command-schedules/{schedule_id}",
    response_model=ScheduleOut,
    operation_id="update_command_schedule",
    summary="Change a command schedule (pause it with enabled: false)",
    responses=ERRORS,
)
async def update_command_schedule(
    roost: RoostDep, actor: ActorDep, schedule_id: str, body: SchedulePatch
) -> dict[str, Any]:
    changes = body.model_dump(exclude_unset=True)
    for field in ("name", "timezone", "offset_s", "enabled"):
        if field in changes and changes[field] is None:
            raise InvalidInput(f"{field} cannot be null")
    return await roost.commands.schedules.update(actor, schedule_id, changes)


@router.delete(
    "/command-schedules/{schedule_id}",
    status_code=204,
    operation_id="delete_command_schedule",
    summary="Delete a command schedule (commands it queued stay)",
    responses=ERRORS,
)
async def delete_command_schedule(roost: RoostDep, actor: ActorDep, schedule_id: str) -> Response:
    await roost.commands.schedules.delete(actor, schedule_id)
    return Response(status_code=204)


@router.post(
    "/command-schedules/{schedule_id}/snooze",
    response_model=ScheduleOut,
    operation_id="snooze_command_schedule",
    summary="Move only the next fire of a schedule (by seconds, or until a time)",
    responses=ERRORS,
)
async def snooze_command_schedule(
    roost: RoostDep, actor: ActorDep, schedule_id: str, body: SnoozeIn
) -> dict[str, Any]:
    return await roost.commands.schedules.snooze(
        actor, schedule_id, seconds=body.seconds, until=body.until
    )


# -- devices ----------------------------------------------------------------------------------


@router.get(
    "/device/commands",
    response_model=DeviceCommands,
    # schedule_id and fire_at only on a schedule's commands, as on MQTT.
    response_model_exclude_unset=True,
    operation_id="device_poll_commands",
    summary="Device: take pending commands (?wait=N long-polls up to N s when there are none)",
    responses=DEVICE_ERRORS,
)
async def device_poll_commands(
    roost: RoostDep, device: DeviceDep, wait: WaitQuery = 0
) -> dict[str, Any]:
    return {"items": await roost.commands.poll(device, wait)}


@router.get(
    "/device/command-schedules",
    response_model=DeviceSchedules,
    operation_id="device_list_command_schedules",
    summary="Device: its enabled command schedules, to mirror and fire while offline",
    responses=DEVICE_ERRORS,
)
async def device_list_command_schedules(roost: RoostDep, device: DeviceDep) -> dict[str, Any]:
    return {"items": await roost.commands.schedules.for_device(device)}


@router.post(
    "/device/commands/{command_id}/response",
    response_model=DeviceCommandStatus,
    operation_id="device_respond_command",
    summary="Device: answer a command (SUCCEEDED/FAILED with a result, or an interim ack)",
    responses=DEVICE_ERRORS,
)
async def device_respond_command(
    roost: RoostDep, device: DeviceDep, command_id: str, body: CommandResponseIn
) -> dict[str, Any]:
    record = await roost.commands.respond(device, command_id, body.model_dump(exclude_unset=True))
    return {"id": record["id"], "status": record["status"]}
