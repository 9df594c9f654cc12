"""HTTP routes: deployments (user side) and a device's OTA actions (device side).

User side (operators create, cancel and resume; viewers read): ``/deployments``,
``/deployments/{id}`` (the overview: counts per step, phase and site, failures),
``/deployments/{id}/cancel``, ``/deployments/{id}/resume``, ``/deployments/{id}/devices`` and
``/devices/{id}/software`` (what deployments installed). Device side (device credentials):
``/ota/actions`` (the calling device's current actions, with signed download URLs) and
``/ota/actions/{action_id}``; devices report steps through the jobs update door.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, Protocol

from fastapi import APIRouter, Body, Depends, Query
from pydantic import Field

from roost.core.ids import SLUG_PATTERN
from roost.credentials.dependencies import DeviceDep
from roost.http import schemas as s
from roost.http.deps import ActorDep, PageDep, get_roost
from roost.http.params import sortable
from roost.jobs.router import AbortIn, RetryIn, RolloutIn, TargetsIn, WindowIn
from roost.ota.deployments.service import ACTION_SORTS, SORTS, DeploymentService
from roost.store.queries import Page


class Services(Protocol):
    """What the deployment routes use of the running Roost."""

    @property
    def deployments(self) -> DeploymentService: ...


RoostDep = Annotated[Services, Depends(get_roost)]

router = APIRouter(tags=["deployments"])

ERRORS = s.problem_responses(403, 404, 409, 422)
StatusName = Literal[
    "SCHEDULED", "IN_PROGRESS", "PAUSED", "HALTED", "SUCCEEDED", "FAILED", "CANCELED"
]
StepName = Literal[
    "QUEUED",
    "DOWNLOADING",
    "INSTALLING",
    "REBOOTING",
    "SUCCEEDED",
    "FAILED",
    "ROLLED_BACK",
    "CANCELED",
]


class PhaseIn(s.Body):
    """One phase: the devices it updates, and the success it must reach before the next."""

    name: str | None = Field(None, max_length=200)
    devices: list[str] | None = Field(None, description="Target devices of this phase")
    groups: list[str] | None = Field(None, description="Groups whose target members it takes")
    percent: float | None = Field(
        None, description="This share of all targets (in a stable hashed order)"
    )
    success_threshold_pct: float = Field(
        100, description="Share of the phase's executed devices that must succeed (0-100)"
    )
    min_executed: int | None = Field(
        None, description="Judge the phase once this many ended (else when all ended)"
    )


class DeploymentIn(s.Body):
    """A new deployment."""

    id: str | None = Field(
        None,
        min_length=1,
        max_length=100,
        description="A slug; generated when absent",
        json_schema_extra=s.documented(pattern=SLUG_PATTERN),
    )
    name: str | None = Field(None, max_length=200)
    artifact_ids: list[str] = Field(description="The artifacts to install (1-20)")
    targets: TargetsIn
    phases: list[PhaseIn] | None = Field(
        None, description="In order; default one phase 'all'. Unplaced targets join the last"
    )
    rollout: RolloutIn | None = None
    abort: list[AbortIn] | None = None
    retries: list[RetryIn] | None = None
    timeout_in_progress_s: int | None = None
    maintenance: list[WindowIn] | None = Field(
        None, description="Windows in each device's site's local time"
    )
    schedule_at: s.Rfc3339Time | None = None


class CancelIn(s.Body):
    """Why a deployment is cancelled."""

    reason: str | None = Field(None, max_length=500)


class DeploymentOut(s.Out):
    """A deployment (list form)."""

    id: str
    name: str
    artifact_ids: list[str]
    targets: dict[str, Any]
    status: str = Field(
        description="SCHEDULED, IN_PROGRESS, PAUSED, HALTED, SUCCEEDED, FAILED or CANCELED"
    )
    current_phase: int
    reason: str | None
    rollout: dict[str, Any] | None
    abort: list[dict[str, Any]] | None
    retries: list[dict[str, Any]] | None
    timeout_in_progress_s: int | None
    maintenance: list[dict[str, Any]] | None
    schedule_at: datetime | None
    created_by: str
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None


class OverviewOut(DeploymentOut):
    """A deployment with its progress."""

    devices: int
    steps: dict[str, int] = Field(description="Devices per step")
    phases: list[dict[str, Any]] = Field(description="Per phase: job, steps, success_pct")
    sites: list[dict[str, Any]] = Field(description="Per site: devices per step")
    failures: list[dict[str, Any]] = Field(description="The latest failures with details")


class ActionOut(s.Out):
    """A device of a deployment: its step and details."""

    action_id: int
    deployment_id: str
    job_id: str
    phase: int
    device_id: str
    site_id: str | None
    step: str
    step_details: dict[str, Any] | None
    execution_status: str
    attempt: int
    version_reported: str | None
    updated_at: datetime


class InstalledOut(s.Out):
    """A piece of software on a device, as a deployment installed it."""

    name: str
    type: str
    version: str
    artifact_id: str | None
    deployment_id: str | None
    installed_at: datetime


class DeviceActionsOut(s.Out):
    """The calling device's current actions."""

    actions: list[dict[str, Any]]


@router.post(
    "/deployments",
    response_model=OverviewOut,
    status_code=201,
    operation_id="create_deployment",
    summary="Deploy artifacts to devices, in phases",
    responses=ERRORS,
    description="Devices whose model an artifact does not suit answer 422, each in `errors`.",
)
async def create_deployment(roost: RoostDep, actor: ActorDep, body: DeploymentIn) -> dict[str, Any]:
    return await roost.deployments.create(actor, body.model_dump(exclude_none=True))


@router.get(
    "/deployments",
    response_model=s.Page[DeploymentOut],
    operation_id="list_deployments",
    openapi_extra=sortable(SORTS),
    summary="List deployments, newest first",
)
async def list_deployments(
    roost: RoostDep,
    actor: ActorDep,
    page: PageDep,
    status: Annotated[list[StatusName] | None, Query(description="Repeat for several")] = None,
) -> Page[dict[str, Any]]:
    return await roost.deployments.list(actor, status or [], page)


@router.get(
    "/deployments/{deployment_id}",
    response_model=OverviewOut,
    operation_id="get_deployment",
    summary="A deployment's overview: counts per step, phase and site, and failures",
    responses=ERRORS,
)
async def get_deployment(roost: RoostDep, actor: ActorDep, deployment_id: str) -> dict[str, Any]:
    return await roost.deployments.get(actor, deployment_id)


@router.post(
    "/deployments/{deployment_id}/cancel",
    response_model=OverviewOut,
    operation_id="cancel_deployment",
    summary="Cancel a deployment (in-progress devices are told to cancel)",
    responses=ERRORS,
)
async def cancel_deployment(
    roost: RoostDep,
    actor: ActorDep,
    deployment_id: str,
    body: Annotated[CancelIn | None, Body()] = None,
) -> dict[str, Any]:
    reason = body.reason if body is not None else None
    return await roost.deployments.cancel(actor, deployment_id, reason=reason)


@router.post(
    "/deployments/{deployment_id}/resume",
    response_model=OverviewOut,
    operation_id="resume_deployment",
    summary="Go on with a HALTED deployment: its next phase starts",
    responses=ERRORS,
)
async def resume_deployment(roost: RoostDep, actor: ActorDep, deployment_id: str) -> dict[str, Any]:
    return await roost.deployments.resume(actor, deployment_id)


@router.get(
    "/deployments/{deployment_id}/devices",
    response_model=s.Page[ActionOut],
    operation_id="list_deployment_devices",
    openapi_extra=sortable(ACTION_SORTS),
    summary="A deployment's devices with their step and failure details",
    responses=ERRORS,
)
async def list_deployment_devices(
    roost: RoostDep,
    actor: ActorDep,
    deployment_id: str,
    page: PageDep,
    step: Annotated[list[StepName] | None, Query(description="Repeat for several")] = None,
    site_id: Annotated[str | None, Query()] = None,
    phase: Annotated[int | None, Query(ge=0)] = None,
) -> Page[dict[str, Any]]:
    return await roost.deployments.actions(
        actor, deployment_id, step=step or [], site_id=site_id, phase=phase, page=page
    )


@router.get(
    "/devices/{device_id}/software",
    response_model=list[InstalledOut],
    operation_id="list_device_software",
    summary="What deployments installed on a device",
    responses=ERRORS,
)
async def list_device_software(
    roost: RoostDep, actor: ActorDep, device_id: str
) -> list[dict[str, Any]]:
    return await roost.deployments.installed(actor, device_id)


@router.get(
    "/ota/actions",
    response_model=DeviceActionsOut,
    tags=["deployments (devices)"],
    operation_id="device_ota_actions",
    summary="The calling device's current OTA actions, with signed download URLs",
)
async def device_ota_actions(roost: RoostDep, device: DeviceDep) -> dict[str, Any]:
    return {"actions": await roost.deployments.device_actions(device)}


@router.get(
    "/ota/actions/{action_id}",
    tags=["deployments (devices)"],
    operation_id="device_ota_action",
    summary="One of the calling device's OTA actions",
    responses=ERRORS,
)
async def device_ota_action(roost: RoostDep, device: DeviceDep, action_id: int) -> dict[str, Any]:
    return await roost.deployments.action_for_device(device, action_id)
