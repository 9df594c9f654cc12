"""HTTP routes: alarms (list, counts, acknowledge, clear) and the live alarm stream.

Viewers read; operators acknowledge and clear (audited). ``GET /api/v1/ws/alarms`` streams every
alarm change of the tenant as it commits: ``{"change": "raised"|"repeated"|"acknowledged"|
"cleared", "alarm": {...}}``.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime
from typing import Annotated, Any, Literal, Protocol

import orjson
from fastapi import APIRouter, Depends, Query, WebSocket
from pydantic import Field

from roost.alarms.service import ALARMS_SUBJECT, SORTS, AlarmService
from roost.bus.base import Bus
from roost.core.access import Actor
from roost.errors import AuthenticationFailed, RoostError
from roost.http import schemas as s
from roost.http import session
from roost.http.deps import ActorDep, PageDep, get_roost, websocket_token
from roost.http.params import sortable
from roost.http.problems import deny
from roost.store.queries import Page


class Services(Protocol):
    """What the alarm routes use of the running Roost."""

    @property
    def alarms(self) -> AlarmService: ...

    @property
    def bus(self) -> Bus: ...

    @property
    def identity(self) -> Any: ...


RoostDep = Annotated[Services, Depends(get_roost)]
router = APIRouter(tags=["alarms"])
ERRORS = s.problem_responses(403, 404, 409, 422)
#: Alarm changes a live reader may lag behind before the oldest are dropped (and counted).
MAX_QUEUED_CHANGES = 1000

Severity = Literal["critical", "major", "minor", "warning", "info"]


class AlarmOut(s.Out):
    """An alarm: one per device and type while active; repeats raise ``count``."""

    id: int
    type: str = Field(examples=["overheat"])
    device_id: str
    rule_id: str | None
    severity: Severity
    status: Literal["active", "cleared"]
    acknowledged: bool
    acked_by: str | None
    acked_at: datetime | None
    cleared_by: str | None = Field(description="Who cleared it by hand; null when its rule did")
    summary: str
    details: dict[str, Any]
    count: int = Field(description="Times it was raised while open")
    started_at: datetime
    last_at: datetime
    ended_at: datetime | None


class AlarmCountsOut(s.Out):
    """Active alarms of the tenant."""

    active: int
    unacknowledged: int
    by_severity: dict[str, int] = Field(
        examples=[{"critical": 1, "major": 0, "minor": 2, "warning": 0, "info": 0}]
    )


@router.get(
    "/alarms",
    response_model=s.Page[AlarmOut],
    operation_id="list_alarms",
    openapi_extra=sortable(SORTS),
    summary="List alarms (newest first; sort=-severity puts critical first)",
    responses=ERRORS,
)
async def list_alarms(
    roost: RoostDep,
    actor: ActorDep,
    page: PageDep,
    status: Annotated[list[Literal["active", "cleared"]] | None, Query()] = None,
    severity: Annotated[list[Severity] | None, Query()] = None,
    device_id: Annotated[str | None, Query(max_length=128)] = None,
    type: Annotated[str | None, Query(max_length=128)] = None,
    rule_id: Annotated[str | None, Query(max_length=128)] = None,
    acknowledged: bool | None = None,
    q: Annotated[str | None, Query(max_length=200)] = None,
) -> Page[dict[str, Any]]:
    return await roost.alarms.list(
        actor, page, status=status or (), severity=severity or (), device_id=device_id,
        type=type, rule_id=rule_id, acknowledged=acknowledged, q=q,
    )  # fmt: skip


@router.get(
    "/alarms/counts",
    response_model=AlarmCountsOut,
    operation_id="count_alarms",
    summary="Active alarms by severity (for the fleet overview)",
    responses=ERRORS,
)
async def count_alarms(roost: RoostDep, actor: ActorDep) -> dict[str, Any]:
    return await roost.alarms.counts(actor)


AlarmId = Annotated[int, Field(ge=1, le=2**62)]


@router.get(
    "/alarms/{alarm_id}",
    response_model=AlarmOut,
    operation_id="get_alarm",
    summary="One alarm",
    responses=ERRORS,
)
async def get_alarm(roost: RoostDep, actor: ActorDep, alarm_id: AlarmId) -> dict[str, Any]:
    return await roost.alarms.get(actor, alarm_id)


@router.post(
    "/alarms/{alarm_id}/ack",
    response_model=AlarmOut,
    operation_id="acknowledge_alarm",
    summary="Acknowledge an alarm (409 when it already is)",
    responses=ERRORS,
)
async def acknowledge_alarm(roost: RoostDep, actor: ActorDep, alarm_id: AlarmId) -> dict[str, Any]:
    return await roost.alarms.acknowledge(actor, alarm_id)


@router.post(
    "/alarms/{alarm_id}/clear",
    response_model=AlarmOut,
    operation_id="clear_alarm",
    summary="Clear an active alarm by hand (409 when it is cleared)",
    responses=ERRORS,
)
async def clear_alarm(roost: RoostDep, actor: ActorDep, alarm_id: AlarmId) -> dict[str, Any]:
    return await roost.alarms.clear(actor, alarm_id)


@router.websocket("/ws/alarms", name="ws_alarms")
async def ws_alarms(websocket: WebSocket) -> None:
    """Live alarm changes of the tenant: one frame ``{"change", "alarm"}`` per change.

    Auth as ``/ws/stream`` (``Authorization: Bearer``, ``?token=`` or the console's cookie).
    ``{"dropped": n}`` tells a reader too slow to keep up that it missed changes.
    """
    roost: Services = websocket.app.state.roost
    token = websocket_token(websocket)
    try:
        if token is None:
            raise AuthenticationFailed("send Authorization: Bearer <token> or ?token=")
        actor = await _reader(roost, websocket, token)
    except RoostError as exc:
        await deny(websocket, exc)
        return
    queue: asyncio.Queue[bytes] = asyncio.Queue(MAX_QUEUED_CHANGES)
    dropped = 0

    async def on_change(_subject: str, data: bytes) -> None:
        nonlocal dropped
        if f'"tenant_id":{orjson.dumps(actor.tenant_id).decode()}'.encode() not in data:
            return
        if queue.full():
            queue.get_nowait()
            dropped += 1
        queue.put_nowait(data)

    subscription = await roost.bus.subscribe(ALARMS_SUBJECT, on_change)
    await websocket.accept()
    receive = asyncio.ensure_future(websocket.receive())
    try:
        while True:
            change = asyncio.ensure_future(queue.get())
            done, _ = await asyncio.wait({receive, change}, return_when=asyncio.FIRST_COMPLETED)
            if receive in done:
                change.cancel()
                if receive.result()["type"] == "websocket.disconnect":
                    return
                receive = asyncio.ensure_future(websocket.receive())
                continue
            if dropped:
                await websocket.send_text(orjson.dumps({"dropped": dropped}).decode())
                dropped = 0
            frame = orjson.loads(change.result())
            frame.pop("tenant_id", None)
            await websocket.send_text(orjson.dumps(frame).decode())
    finally:
        receive.cancel()
        with contextlib.suppress(Exception):
            await subscription.stop()


async def _reader(roost: Services, websocket: WebSocket, token: str) -> Actor:
    """A user or API key (optionally X-Roost-Tenant, or the console's tenant cookie)."""
    actor: Actor = await roost.identity.authenticate(token)
    tenant = websocket.headers.get("x-roost-tenant")
    if not tenant and token == session.session_of(websocket):
        tenant = websocket.cookies.get(session.TENANT_COOKIE)
    if tenant:
        actor = await roost.identity.act_in_tenant(actor, tenant)
    return actor
