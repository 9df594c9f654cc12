"""HTTP routes: device state documents (desired/reported/delta), named states and their history.

Users read documents (viewer) and change them (operator): ``desired`` mostly, ``reported`` too
(as AWS IoT allows, e.g. to correct a device that cannot report). Devices read their own document
and report with their token, in the same form as the MQTT payload (the reported fields to merge).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Protocol

import orjson
from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import Field

from roost.core.device_identity import DeviceIdentity
from roost.core.json import loads as load_json
from roost.core.timeparse import ACCEPTED_FORMS
from roost.core.timeparse import PATTERN as TIME_PATTERN
from roost.credentials.dependencies import DeviceDep
from roost.errors import ValidationFailed
from roost.http import params as p
from roost.http import schemas as s
from roost.http.deps import ActorDep, get_roost
from roost.state.rules import DEFAULT_STATE
from roost.state.service import StateService
from roost.store.queries import Page
from roost.telemetry.queries.service import parse_bound


class Services(Protocol):
    """What the state routes use of the running Roost."""

    @property
    def state(self) -> StateService: ...


RoostDep = Annotated[Services, Depends(get_roost)]


router = APIRouter(tags=["state"])

# A device's long-poll for a new version waits at most this long (HTTP proxies commonly cut
# idle requests at 60 s).
MAX_WAIT_S = 55

READ_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": s.Problem, "description": "Unknown device (or state), or another tenant's"},
    422: {"model": s.Problem},
}
WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    **READ_ERRORS,
    403: {"model": s.Problem, "description": "The operator role is needed"},
    409: {"model": s.Problem, "description": "Stale version: read the document again"},
    413: {"model": s.Problem, "description": "The document would exceed the size limit"},
    422: {"model": s.Problem, "description": "Malformed update, or nested too deep"},
}
DEVICE_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": s.Problem, "description": "The body is not JSON"},
    401: {"model": s.Problem},
    403: {"model": s.Problem},
    413: {"model": s.Problem},
    422: {"model": s.Problem, "description": "Not an object of fields, or nested too deep"},
}


class StateOut(s.Out):
    """A state document."""

    name: str = Field(description=f"The state's name; {DEFAULT_STATE!r} for the default one")
    desired: dict[str, Any]
    reported: dict[str, Any]
    delta: dict[str, Any] = Field(
        description="Desired fields that reported lacks or holds differently"
    )
    metadata: dict[str, Any] = Field(
        description="Per-field write times (epoch ms): {desired: {...}, reported: {...}}"
    )
    version: int = Field(description="Rises on every update; send it back to update safely")
    updated_at: datetime | None = Field(description="Null for a document never written")


class StatePatch(s.Body):
    """A partial update: objects merge, ``null`` deletes a field (or a whole section)."""

    desired: dict[str, Any] | None = Field(
        None, description="Fields to merge into desired; null deletes every desired field"
    )
    reported: dict[str, Any] | None = Field(
        None, description="Fields to merge into reported (normally the device's to write)"
    )
    version: s.WholeNumber | None = Field(
        None, ge=0, description="The version you read; a different current version answers 409"
    )


class StateSummary(s.Out):
    """One of a device's states."""

    name: str
    version: int
    updated_at: datetime


class StateVersion(s.Out):
    """One version of a state, as kept in the history."""

    name: str
    version: int
    at: datetime
    actor_type: str = Field(description="user or device")
    actor: str = Field(description="The user's name or the device's id")
    action: str = Field(description="update or delete")
    update: dict[str, Any] | None = Field(description="The update as applied")
    desired: dict[str, Any]
    reported: dict[str, Any]


class ReportOut(s.Out):
    """What a device's report left."""

    name: str
    version: int
    delta: dict[str, Any] = Field(description="What the device still has to do")


class HistoryParams(p.PageParams):
    """Versions of a device's states."""

    name: str | None = Field(None, max_length=64, description="Only this state (default: all)")
    from_: str | None = Field(
        None,
        alias="from",
        description=f"Start (inclusive): {ACCEPTED_FORMS}",
        json_schema_extra={"pattern": TIME_PATTERN},
    )
    to: str | None = Field(
        None,
        description=f"End (exclusive): {ACCEPTED_FORMS}",
        json_schema_extra={"pattern": TIME_PATTERN},
    )


class DeviceStateParams(p.QueryParams):
    """A device's read of its document, optionally waiting for a newer version."""

    wait: int = Field(0, ge=0, le=MAX_WAIT_S, description="Seconds to wait for a newer version")
    after_version: int | None = Field(
        None, ge=0, description="With wait: answer once the version is above this"
    )


_REPORT_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "The reported fields to merge (null deletes a field), as on MQTT",
        "content": {
            "application/json": {
                "schema": {"type": "object"},
                "example": {"light": "on", "fw": "1.2", "old_field": None},
            }
        },
    }
}


def _time(raw: str | None, name: str) -> datetime | None:
    if not raw:  # absent, or empty: not given
        return None
    ns = parse_bound(raw, 0, name)
    seconds, rest = divmod(ns, 1_000_000_000)
    return datetime.fromtimestamp(seconds, UTC) + timedelta(microseconds=rest // 1000)


def _update(body: StatePatch) -> dict[str, Any]:
    return body.model_dump(exclude_unset=True)


# -- users ------------------------------------------------------------------------------------


@router.get(
    "/devices/{device_id}/state",
    response_model=StateOut,
    operation_id="get_device_state",
    summary="A device's state document: desired, reported, delta, metadata, version",
    responses=READ_ERRORS,
)
async def get_state(roost: RoostDep, actor: ActorDep, device_id: str) -> dict[str, Any]:
    return await roost.state.get(actor, device_id)


@router.patch(
    "/devices/{device_id}/state",
    response_model=StateOut,
    operation_id="update_device_state",
    summary="Change desired (or reported) state; the device gets the delta",
    responses=WRITE_ERRORS,
)
async def update_state(
    roost: RoostDep, actor: ActorDep, device_id: str, body: StatePatch
) -> dict[str, Any]:
    return await roost.state.update(actor, device_id, _update(body))


@router.get(
    "/devices/{device_id}/state/history",
    response_model=s.Page[StateVersion],
    operation_id="device_state_history",
    summary="Versions of a device's states, newest first",
    responses=READ_ERRORS,
)
async def state_history(
    roost: RoostDep, actor: ActorDep, device_id: str, query: Annotated[HistoryParams, Query()]
) -> Page[dict[str, Any]]:
    return await roost.state.history(
        actor,
        device_id,
        query.page(),
        name=query.name,
        start=_time(query.from_, "from"),
        end=_time(query.to, "to"),
    )


@router.get(
    "/devices/{device_id}/states",
    response_model=s.Page[StateSummary],
    operation_id="list_device_states",
    summary="A device's states (the default one and named ones) with their versions",
    responses=READ_ERRORS,
)
async def list_states(
    roost: RoostDep, actor: ActorDep, device_id: str, query: Annotated[p.PageParams, Query()]
) -> Page[dict[str, Any]]:
    return await roost.state.list(actor, device_id, query.page())


@router.get(
    "/devices/{device_id}/states/{name}",
    response_model=StateOut,
    operation_id="get_named_device_state",
    summary="A named state document (default is the device's default state)",
    responses=READ_ERRORS,
)
async def get_named_state(
    roost: RoostDep, actor: ActorDep, device_id: str, name: str
) -> dict[str, Any]:
    return await roost.state.get(actor, device_id, name)


@router.patch(
    "/devices/{device_id}/states/{name}",
    response_model=StateOut,
    operation_id="update_named_device_state",
    summary="Change a named state (created by its first update)",
    responses=WRITE_ERRORS,
)
async def update_named_state(
    roost: RoostDep, actor: ActorDep, device_id: str, name: str, body: StatePatch
) -> dict[str, Any]:
    return await roost.state.update(actor, device_id, _update(body), name)


@router.delete(
    "/devices/{device_id}/states/{name}",
    status_code=204,
    operation_id="delete_named_device_state",
    summary="Delete a state (its version keeps rising if it is written again)",
    responses=WRITE_ERRORS,
)
async def delete_named_state(
    roost: RoostDep,
    actor: ActorDep,
    device_id: str,
    name: str,
    version: Annotated[int | None, Query(ge=0, description="Delete only at this version")] = None,
) -> Response:
    await roost.state.delete(actor, device_id, name, version)
    return Response(status_code=204)


# -- devices ----------------------------------------------------------------------------------


@router.get(
    "/device/state",
    response_model=StateOut,
    operation_id="device_get_own_state",
    summary="(device) The caller's state document; can wait for a newer version",
    responses=DEVICE_ERRORS,
    tags=["state (devices)"],
)
async def device_get_state(
    roost: RoostDep, identity: DeviceDep, query: Annotated[DeviceStateParams, Query()]
) -> dict[str, Any]:
    return await _device_get(roost, identity, DEFAULT_STATE, query)


@router.get(
    "/device/states/{name}",
    response_model=StateOut,
    operation_id="device_get_own_named_state",
    summary="(device) One of the caller's named states",
    responses=DEVICE_ERRORS,
    tags=["state (devices)"],
)
async def device_get_named_state(
    roost: RoostDep, identity: DeviceDep, name: str, query: Annotated[DeviceStateParams, Query()]
) -> dict[str, Any]:
    return await _device_get(roost, identity, name, query)


async def _device_get(
    roost: Services, identity: DeviceIdentity, name: str, query: DeviceStateParams
) -> dict[str, Any]:
    if query.wait and query.after_version is not None:
        return await roost.state.wait_for_version(
            identity, name, query.after_version, float(query.wait)
        )
    return await roost.state.device_get(identity, name)


@router.post(
    "/device/state/reported",
    response_model=ReportOut,
    operation_id="device_report_state",
    summary="(device) Report fields to merge into reported; answers the version and delta",
    responses=DEVICE_ERRORS,
    openapi_extra=_REPORT_DOC,
    tags=["state (devices)"],
)
async def device_report(roost: RoostDep, identity: DeviceDep, request: Request) -> dict[str, Any]:
    return await roost.state.report(identity, await _json_body(request))


@router.post(
    "/device/states/{name}/reported",
    response_model=ReportOut,
    operation_id="device_report_named_state",
    summary="(device) Report fields of a named state",
    responses=DEVICE_ERRORS,
    openapi_extra=_REPORT_DOC,
    tags=["state (devices)"],
)
async def device_report_named(
    roost: RoostDep, identity: DeviceDep, name: str, request: Request
) -> dict[str, Any]:
    return await roost.state.report(identity, await _json_body(request), name)


async def _json_body(request: Request) -> Any:
    """The raw body as JSON; an integer beyond 64 bits is refused naming its field (422)."""
    try:
        return load_json(await request.body())
    except orjson.JSONDecodeError as exc:
        raise ValidationFailed(
            "the request body is not valid JSON",
            [{"field": "body", "message": f"malformed JSON: {exc}"}],
            status=400,
        ) from None
