"""HTTP routes: device presence, its history, and the fleet summary."""

from __future__ import annotations

from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Depends, Query
from pydantic import AwareDatetime, BaseModel, Field

from roost.http.deps import ActorDep, PageDep, get_roost
from roost.http.schemas import Out, Rfc3339Time
from roost.inventory.devices.schemas import DeviceFilters, DeviceStatus
from roost.presence.service import PresenceService
from roost.store.queries import Page


class Services(Protocol):
    """What the presence routes use of the running Roost."""

    @property
    def presence(self) -> PresenceService: ...


RoostDep = Annotated[Services, Depends(get_roost)]


router = APIRouter(tags=["presence"])


class PresenceOut(Out):
    device_id: str
    status: DeviceStatus
    since: AwareDatetime | None = Field(description="When the status last changed")
    last_seen_at: AwareDatetime | None
    connected: bool = Field(description="Holds an MQTT or WebSocket connection")
    heartbeat_interval_s: float = Field(description="The device's, else its model's, else 60")
    missed_heartbeats: int
    offline_after_s: float = Field(description="Silence after which the device is offline")
    clock_skew_ms: int | None = Field(
        description="Median of device time minus receive time: positive when the device's "
        "clock runs ahead"
    )


class PresenceChangeOut(Out):
    at: AwareDatetime
    status: DeviceStatus
    reason: str = Field(description="connected, disconnected, message, missed heartbeats")


class PresenceHistoryOut(BaseModel):
    items: list[PresenceChangeOut]
    total: int
    limit: int
    offset: int


class StatusCounts(BaseModel):
    online: int
    offline: int
    never_seen: int


class SiteCounts(StatusCounts):
    site_id: str | None
    total: int


class ModelCounts(StatusCounts):
    model_id: str | None
    total: int


class FirmwareCounts(StatusCounts):
    firmware_id: str | None
    total: int


class FleetSummaryOut(BaseModel):
    total: int
    by_status: StatusCounts
    by_site: list[SiteCounts]
    by_model: list[ModelCounts]
    by_firmware: list[FirmwareCounts]


@router.get(
    "/devices/{device_id}/presence",
    response_model=PresenceOut,
    operation_id="get_device_presence",
    summary="A device's presence, heartbeat policy and clock skew",
)
async def get_presence(roost: RoostDep, actor: ActorDep, device_id: str) -> dict[str, Any]:
    return await roost.presence.get(actor, device_id)


@router.get(
    "/devices/{device_id}/presence/history",
    response_model=PresenceHistoryOut,
    operation_id="list_device_presence_history",
    summary="A device's presence changes, newest first",
)
async def presence_history(
    roost: RoostDep,
    actor: ActorDep,
    device_id: str,
    page: PageDep,
    since: Annotated[Rfc3339Time | None, Query(description="RFC 3339, inclusive")] = None,
    until: Annotated[Rfc3339Time | None, Query(description="RFC 3339, exclusive")] = None,
) -> Page[dict[str, Any]]:
    return await roost.presence.history(actor, device_id, page, since, until)


@router.get(
    "/fleet/summary",
    response_model=FleetSummaryOut,
    operation_id="fleet_summary",
    summary="Device counts by presence, and by presence per site, model and firmware",
    description="Takes the device list's filters (site_id, model_id, group, tag, status, q…).",
)
async def fleet_summary(
    roost: RoostDep, actor: ActorDep, query: Annotated[DeviceFilters, Query()]
) -> dict[str, Any]:
    return await roost.presence.summary(actor, query.device_query())
