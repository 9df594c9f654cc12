"""Reading telemetry: history and aggregates, last known values, events, consumer groups, live."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Annotated, Any, Literal, Protocol

import orjson
from fastapi import APIRouter, Depends, Header, Query, Request, Response, WebSocket
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import Field

from roost.core.access import Actor
from roost.core.timeparse import ACCEPTED_FORMS, PATTERN
from roost.errors import AuthenticationFailed, RoostError
from roost.http import params as p
from roost.http import schemas as s
from roost.http import session
from roost.http.deps import cookie_actor, get_roost, websocket_token
from roost.http.problems import deny
from roost.identity.service import IdentityService
from roost.inventory.devices.schemas import DeviceFilters
from roost.store.database import Database
from roost.telemetry.consumers.service import scope_of
from roost.telemetry.live.service import LiveFilter, LiveHub
from roost.telemetry.queries.service import (
    DEFAULT_POINTS,
    TelemetryService,
    parse_aggregates,
    parse_bound,
    parse_interval,
    parse_tz,
)
from roost.telemetry.schemas import (
    ConsumerGroupIn,
    ConsumerGroupOut,
    EventsOut,
    FleetLatestOut,
    LatestOut,
    OffsetIn,
    SeriesOut,
    StreamPullOut,
)
from roost.telemetry.streams.service import StreamService


class Services(Protocol):
    """What the telemetry read routes use of the running Roost."""

    @property
    def db(self) -> Database: ...

    @property
    def identity(self) -> IdentityService: ...

    @property
    def live(self) -> LiveHub: ...

    @property
    def streams(self) -> StreamService: ...

    @property
    def telemetry(self) -> TelemetryService: ...


RoostDep = Annotated[Services, Depends(get_roost)]


router = APIRouter(tags=["telemetry"])

# How often a live stream opened with a consumer key re-checks the key and re-resolves its grants
# (group membership, changed grants, a deleted or rotated key): seconds of staleness at most,
# against one small query per reader per interval.
GRANT_REFRESH_S = 5.0

_bearer = HTTPBearer(
    auto_error=False,
    description="A login token, an API key (roost_…), or a consumer key (roostc_…)",
)


async def get_reader(
    request: Request,
    roost: RoostDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    x_roost_tenant: Annotated[
        str | None, Header(description="Superuser only: act inside this tenant")
    ] = None,
) -> Actor:
    """The caller of a read door: a user, an API key, or a consumer key (limited to its grants)."""
    if credentials is None or not credentials.credentials:
        if session.session_of(request) is None:
            raise AuthenticationFailed(
                "send Authorization: Bearer <login token, API or consumer key>"
            )
        return await cookie_actor(request, roost.identity, x_roost_tenant)
    actor = await roost.identity.authenticate(credentials.credentials, allow_consumer=True)
    if x_roost_tenant:
        actor = await roost.identity.act_in_tenant(actor, x_roost_tenant)
    return actor


# The actor of the routes a consumer key may call; every other route refuses consumer keys.
ReaderDep = Annotated[Actor, Depends(get_reader)]


def _json(body: dict[str, Any]) -> Response:
    """Large answers (100k points, 10k devices) serialised by orjson at once.

    The routes keep their ``response_model`` for the OpenAPI document; returning a Response skips
    FastAPI's per-item validation and encoding, which costs ~30 µs an item (tests check the
    shapes against the same models).
    """
    return Response(orjson.dumps(body), media_type="application/json")


NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": s.Problem}, 422: {"model": s.Problem}}

# from/to of every time-ranged read: one parser (roost.core.timeparse), one documented form.
FROM: Any = Field(
    None,
    alias="from",
    description=f"Start (inclusive): {ACCEPTED_FORMS}",
    json_schema_extra={"pattern": PATTERN, "examples": ["2026-11-22", "now-1h", "-7d"]},
)
TO: Any = Field(
    None,
    description=f"End (exclusive): {ACCEPTED_FORMS}",
    json_schema_extra={"pattern": PATTERN, "examples": ["2026-11-23T08:30:00Z", "now"]},
)
TZ: Any = Field(
    None,
    max_length=64,
    description="IANA time zone (Europe/Paris) of dates and offset-less times in from/to, and"
    " of the buckets' calendar (local midnights and hours); default UTC",
)


class HistoryParams(p.QueryParams):
    """A sensor's points or aggregates over a time range."""

    sensor: str = Field(min_length=1, max_length=128, description="The sensor's id")
    from_: str | None = FROM
    to: str | None = TO
    tz: str | None = TZ
    agg: str | None = Field(None, description="avg,min,max,sum,count,first,last (comma list)")
    interval: str | None = Field(
        None,
        description="Bucket width with agg: 30s, 15m, 1h, 1d, 1w. Buckets start on the calendar"
        " (whole hours, midnight in tz or UTC, Mondays for weeks), not at from",
    )
    limit: int = Field(DEFAULT_POINTS, ge=1, le=100_000, description="Raw points at most")
    order: Literal["asc", "desc"] | None = Field(
        None, description="Default: asc when from is given, else desc (the newest points)"
    )


@router.get(
    "/devices/{device_id}/telemetry",
    response_model=SeriesOut,
    operation_id="device_telemetry",
    responses=NOT_FOUND,
    summary="A sensor's history, raw or aggregated per interval",
)
async def device_telemetry(
    roost: RoostDep, actor: ReaderDep, device_id: str, query: Annotated[HistoryParams, Query()]
) -> Response:
    zone = parse_tz(query.tz)
    start = parse_bound(query.from_, 0, "from", zone) if query.from_ is not None else None
    end = parse_bound(query.to, 0, "to", zone) if query.to is not None else None
    if query.agg is not None or query.interval is not None:
        if query.agg is None or query.interval is None:
            from roost.errors import InvalidInput

            raise InvalidInput("agg and interval go together (e.g. agg=avg,max&interval=1h)")
        return _json(
            await roost.telemetry.aggregate(
                actor,
                device_id,
                query.sensor,
                start=start,
                end=end,
                interval=parse_interval(query.interval),
                functions=parse_aggregates(query.agg),
                zone=zone,
            )
        )
    return _json(
        await roost.telemetry.history(
            actor,
            device_id,
            query.sensor,
            start=start,
            end=end,
            limit=query.limit,
            order=query.order,
        )
    )


@router.get(
    "/devices/{device_id}/latest",
    response_model=LatestOut,
    operation_id="device_latest",
    responses=NOT_FOUND,
    summary="The last known value of every sensor of a device",
)
async def device_latest(roost: RoostDep, actor: ReaderDep, device_id: str) -> Response:
    return _json(await roost.telemetry.latest(actor, device_id))


class EventParams(p.QueryParams):
    """A device's events over a time range."""

    type: list[str] = Field(default_factory=list, description="Event types (repeatable)")
    from_: str | None = FROM
    to: str | None = TO
    tz: str | None = TZ
    limit: int = Field(DEFAULT_POINTS, ge=1, le=100_000)
    order: Literal["asc", "desc"] | None = None


@router.get(
    "/devices/{device_id}/events",
    response_model=EventsOut,
    operation_id="device_events",
    responses=NOT_FOUND,
    summary="A device's events, filtered by type and time",
)
async def device_events(
    roost: RoostDep, actor: ReaderDep, device_id: str, query: Annotated[EventParams, Query()]
) -> Response:
    zone = parse_tz(query.tz)
    return _json(
        await roost.telemetry.events(
            actor,
            device_id,
            types=query.type,
            start=parse_bound(query.from_, 0, "from", zone) if query.from_ is not None else None,
            end=parse_bound(query.to, 0, "to", zone) if query.to is not None else None,
            limit=query.limit,
            order=query.order,
        )
    )


class FleetParams(DeviceFilters):
    """Which devices, and optionally which sensors."""

    sensor: list[str] = Field(default_factory=list, description="Only these sensors (repeatable)")


@router.get(
    "/telemetry/latest",
    response_model=FleetLatestOut,
    operation_id="fleet_latest",
    responses=NOT_FOUND,
    summary="Last known values across the fleet, by group, site, model, tag…",
)
async def fleet_latest(
    roost: RoostDep, actor: ReaderDep, query: Annotated[FleetParams, Query()]
) -> Response:
    return _json(await roost.telemetry.fleet_latest(actor, query.device_query(), query.sensor))


# -- consumer groups ----------------------------------------------------------------------------


@router.post(
    "/streams",
    response_model=ConsumerGroupOut,
    status_code=201,
    operation_id="create_consumer_group",
    responses=NOT_FOUND,
    summary="Create a consumer group reading the ingest log from its start or its end",
)
async def create_group(roost: RoostDep, actor: ReaderDep, body: ConsumerGroupIn) -> dict[str, Any]:
    return await roost.streams.create(actor, body.id, body.start)


@router.get(
    "/streams/{group}",
    response_model=ConsumerGroupOut,
    operation_id="consumer_group",
    responses=NOT_FOUND,
    summary="A consumer group's committed offset and the log's extent",
)
async def group_status(roost: RoostDep, actor: ReaderDep, group: str) -> dict[str, Any]:
    return await roost.streams.status(actor, group)


class PullParams(p.QueryParams):
    after_offset: int | None = Field(None, description="Default: the group's committed offset")
    limit: int = Field(1000, ge=1, le=10_000)


@router.get(
    "/streams/{group}/messages",
    response_model=StreamPullOut,
    operation_id="pull_messages",
    responses=NOT_FOUND,
    summary="Pull the tenant's telemetry and events after an offset (404 for an unknown group)",
)
async def pull(
    roost: RoostDep, actor: ReaderDep, group: str, query: Annotated[PullParams, Query()]
) -> Response:
    return _json(
        await roost.streams.pull(actor, group, after_offset=query.after_offset, limit=query.limit)
    )


@router.post(
    "/streams/{group}/offset",
    response_model=ConsumerGroupOut,
    operation_id="commit_offset",
    responses=NOT_FOUND,
    summary="Commit a consumer group's offset",
)
async def commit(roost: RoostDep, actor: ReaderDep, group: str, body: OffsetIn) -> dict[str, Any]:
    return await roost.streams.commit(actor, group, body.offset)


@router.delete(
    "/streams/{group}",
    status_code=204,
    operation_id="delete_consumer_group",
    responses=NOT_FOUND,
    summary="Delete a consumer group",
)
async def delete_group(roost: RoostDep, actor: ReaderDep, group: str) -> Response:
    await roost.streams.delete(actor, group)
    return Response(status_code=204)


# -- live -----------------------------------------------------------------------------------------


@router.websocket("/ws/stream", name="ws_stream")
async def ws_stream(websocket: WebSocket) -> None:
    """Live telemetry and events of the tenant, as they are committed.

    Query: ``device`` (repeatable), ``sensor`` (repeatable), ``event`` (event types, repeatable),
    ``kind=telemetry|events``; auth by ``Authorization: Bearer`` or ``?token=``. Each frame is
    ``{"items": [...]}`` in the consumer-group item format; ``{"dropped": n}`` tells that a slow
    reader missed items.
    """
    roost: Services = websocket.app.state.roost
    token = websocket_token(websocket)
    try:
        if token is None:
            raise AuthenticationFailed("send Authorization: Bearer <token> or ?token=")
        actor = await _stream_actor(roost, websocket, token)
        live_filter = LiveFilter.from_query(actor.tenant_id, websocket.query_params)
        live_filter = dataclasses.replace(live_filter, scope=await scope_of(roost.db, actor))
    except RoostError as exc:
        await deny(websocket, exc)
        return
    await websocket.accept()
    subscription = roost.live.subscribe(live_filter)
    refresh: asyncio.Future[Any] | None = None
    frame: asyncio.Future[dict[str, Any]] | None = None
    try:
        receive = asyncio.ensure_future(websocket.receive())
        if actor.is_consumer:
            refresh = asyncio.ensure_future(asyncio.sleep(GRANT_REFRESH_S))
        while True:
            frame = asyncio.ensure_future(subscription.next_frame())
            waiting = {receive, frame} if refresh is None else {receive, frame, refresh}
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if receive in done:
                frame.cancel()
                if receive.result()["type"] == "websocket.disconnect":
                    return
                receive = asyncio.ensure_future(websocket.receive())
                continue
            if refresh is not None and refresh in done:
                frame.cancel()
                try:
                    actor = await _stream_actor(roost, websocket, token)
                    scope = await scope_of(roost.db, actor)
                except RoostError:
                    # The consumer was deleted or its key rotated: the stream ends.
                    receive.cancel()
                    await websocket.close(code=1008, reason="credential no longer valid")
                    return
                subscription.filter = dataclasses.replace(subscription.filter, scope=scope)
                refresh = asyncio.ensure_future(asyncio.sleep(GRANT_REFRESH_S))
                continue
            await websocket.send_text(orjson.dumps(frame.result()).decode())
    finally:
        if refresh is not None:
            refresh.cancel()
        subscription.close()


async def _stream_actor(roost: Services, websocket: WebSocket, token: str) -> Actor:
    """The live reader: a user, an API key or a consumer key (optionally X-Roost-Tenant)."""
    actor = await roost.identity.authenticate(token, allow_consumer=True)
    tenant = websocket.headers.get("x-roost-tenant")
    if not tenant and token == session.session_of(websocket):
        tenant = websocket.cookies.get(session.TENANT_COOKIE)
    if tenant:
        actor = await roost.identity.act_in_tenant(actor, tenant)
    return actor
