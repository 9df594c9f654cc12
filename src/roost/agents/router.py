"""HTTP route: the tenant's agents (devices whose roost-agent reports its status)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Depends, Query
from pydantic import AwareDatetime, Field

from roost.agents.service import AgentService
from roost.http import schemas as s
from roost.http.deps import ActorDep, get_roost
from roost.inventory.devices.schemas import DeviceStatus
from roost.store.queries import DEFAULT_LIMIT, MAX_LIMIT


class Services(Protocol):
    """What the agents route uses of the running Roost."""

    @property
    def agents(self) -> AgentService: ...


RoostDep = Annotated[Services, Depends(get_roost)]

router = APIRouter(tags=["agents"])


class AgentOut(s.Out):
    device_id: str
    name: str
    presence: DeviceStatus
    version: str | None = Field(description="The roost-agent version it reports")
    python: str | None = Field(description="The Python the agent runs on")
    queued_points: int | None = Field(description="Points waiting in its queue (its backlog)")
    queued_bytes: int | None
    dropped_points: int | None = Field(description="Points dropped by a full queue")
    refused_points: int | None = Field(description="Points the server refused")
    forwarded_points: int | None = Field(description="Points forwarded since the agent started")
    connected_since: AwareDatetime | None
    started_at: AwareDatetime | None
    reported_at: AwareDatetime | None = Field(description="When its last report was stored")


class AgentPageOut(s.Out):
    items: list[AgentOut]
    total: int = Field(description="Agents matching the filters, across all pages")
    limit: int
    next_cursor: str | None = Field(description="Pass as cursor for the next page; null: last")


@router.get(
    "/agents",
    response_model=AgentPageOut,
    operation_id="list_agents",
    summary="List the devices whose roost-agent reports its status (by device id)",
    description=(
        "Each device's last report in its named state `agent` (version, queue, forwarded "
        "points) with its name and presence. Filter by `version`, or `backlog=true` for agents "
        "with points waiting; page with `limit` and the previous page's `next_cursor`."
    ),
    responses=s.problem_responses(401, 403, 422),
)
async def list_agents(
    roost: RoostDep,
    actor: ActorDep,
    version: Annotated[
        str | None, Query(max_length=64, description="Only agents of this version")
    ] = None,
    backlog: Annotated[bool, Query(description="Only agents with points queued")] = False,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page")] = DEFAULT_LIMIT,
    cursor: Annotated[
        str | None, Query(max_length=128, description="The next_cursor of the previous page")
    ] = None,
) -> dict[str, Any]:
    page = await roost.agents.list(
        actor, version=version, backlog=backlog, limit=limit, cursor=cursor
    )
    return asdict(page)
