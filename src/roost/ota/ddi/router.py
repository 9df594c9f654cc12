"""HTTP routes: the hawkBit DDI API under ``/{tenant}/controller/v1/{controller_id}``.

Update clients written for Eclipse hawkBit (swupdate's suricatta, rauc-hawkbit-updater, …) poll
Roost unchanged. A client authenticates with ``Authorization: TargetToken <device token>`` (a
Roost device token; ``Bearer``, a SAS token or a client certificate work as on every device
door); the path must name the credential's own tenant and device, else 404 (as for any record
of another tenant or device). The mapping to deployments is in :mod:`roost.ota.ddi.service`.
"""

from __future__ import annotations

from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Body, Depends, Query, Request, Response

from roost.config import Settings
from roost.core.device_identity import BearerToken, PresentedCredential
from roost.credentials.dependencies import DeviceDoors, authenticate_device, presented_credential
from roost.errors import NotFound
from roost.http import schemas as s
from roost.http.deps import get_roost
from roost.ota.artifacts.service import ArtifactService
from roost.ota.ddi import schemas as d
from roost.ota.ddi.adapters import RoostArtifacts
from roost.ota.ddi.service import Controller
from roost.ota.deployments.service import DeploymentService
from roost.state.service import StateService


class Services(DeviceDoors, Protocol):
    """What the DDI routes use of the running Roost."""

    @property
    def settings(self) -> Settings: ...

    @property
    def state(self) -> StateService: ...

    @property
    def deployments(self) -> DeploymentService: ...

    @property
    def artifacts(self) -> ArtifactService: ...


RoostDep = Annotated[Services, Depends(get_roost)]

router = APIRouter(tags=["hawkBit DDI (devices)"])

# What any DDI call may answer: a refused credential (401/403; 429 while its address is over
# the failed-credential limit), another controller (404), a bad path or body (422), a store
# that is down (503); a body may also be malformed (400), too large (413) or not JSON (415).
ERRORS = s.problem_responses(401, 403, 404, 409, 422, 429, 503)
BODY_ERRORS = {**ERRORS, **s.problem_responses(400, 413, 415)}
TARGET_TOKEN = "targettoken"
ROOT = "/{tenant}/controller/v1/{controller_id}"


def ddi_credential(request: Request) -> PresentedCredential:
    """``TargetToken <device token>`` (hawkBit's scheme), else what any device door takes."""
    authorization = request.headers.get("authorization")
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == TARGET_TOKEN and value.strip():
            return BearerToken(value.strip())
    return presented_credential(authorization, request.scope)


async def controller(
    roost: RoostDep, request: Request, tenant: str, controller_id: str
) -> Controller:
    """The controller the path names, which must be the authenticated device itself."""
    identity = await authenticate_device(
        roost, lambda: ddi_credential(request), request.client.host if request.client else ""
    )
    if identity.tenant_id != tenant or identity.device_id != controller_id:
        raise NotFound(f"no controller {controller_id!r} in tenant {tenant!r} for this credential")
    roost.link.activity(identity)  # presence: a poll is a sign of life
    return Controller(
        identity=identity,
        actions=roost.deployments,
        artifacts=RoostArtifacts(roost.artifacts),
        states=roost.state,
        polling_s=roost.settings.ddi_polling_s,
        base_url=str(request.base_url).rstrip("/"),
    )


ControllerDep = Annotated[Controller, Depends(controller)]


@router.get(
    ROOT,
    response_model=d.ControllerBase,
    response_model_by_alias=True,
    responses=ERRORS,
    operation_id="ddi_base",
    summary="The controller's polling interval and links to its next action (hawkBit DDI)",
)
async def ddi_base(ctl: ControllerDep) -> dict[str, Any]:
    return await ctl.base()


@router.get(
    f"{ROOT}/deploymentBase/{{action_id}}",
    response_model=d.DeploymentBase,
    response_model_by_alias=True,
    response_model_exclude_none=True,
    responses=ERRORS,
    operation_id="ddi_deployment_base",
    summary="An update action: chunks, artifacts, hashes and download links (hawkBit DDI)",
)
async def ddi_deployment_base(
    ctl: ControllerDep,
    action_id: int,
    c: Annotated[str | None, Query(description="hawkBit's change tag (ignored)")] = None,
    action_history: Annotated[
        int | None,
        Query(
            alias="actionHistory",
            description="Include the action's status and this many latest messages (-1: all)",
        ),
    ] = None,
) -> dict[str, Any]:
    return await ctl.deployment_base(action_id, action_history)


@router.post(
    f"{ROOT}/deploymentBase/{{action_id}}/feedback",
    status_code=200,
    responses=BODY_ERRORS,
    operation_id="ddi_deployment_feedback",
    summary="Report an update action's progress or result (hawkBit DDI)",
)
async def ddi_deployment_feedback(
    ctl: ControllerDep, action_id: int, body: Annotated[d.FeedbackIn, Body()]
) -> Response:
    await ctl.feedback(action_id, body)
    return Response(status_code=200)


@router.get(
    f"{ROOT}/cancelAction/{{action_id}}",
    response_model=d.CancelAction,
    response_model_by_alias=True,
    responses=ERRORS,
    operation_id="ddi_cancel_action",
    summary="A cancellation of an update action (hawkBit DDI)",
)
async def ddi_cancel_action(ctl: ControllerDep, action_id: int) -> dict[str, Any]:
    return await ctl.cancel_action(action_id)


@router.post(
    f"{ROOT}/cancelAction/{{action_id}}/feedback",
    status_code=200,
    responses=BODY_ERRORS,
    operation_id="ddi_cancel_feedback",
    summary="Acknowledge (or reject) a cancellation (hawkBit DDI)",
)
async def ddi_cancel_feedback(
    ctl: ControllerDep, action_id: int, body: Annotated[d.FeedbackIn, Body()]
) -> Response:
    await ctl.cancel_feedback(action_id, body)
    return Response(status_code=200)


@router.put(
    f"{ROOT}/configData",
    status_code=200,
    responses=BODY_ERRORS,
    operation_id="ddi_config_data",
    summary="The target's attributes, kept as its reported state 'ddi' (hawkBit DDI)",
)
async def ddi_config_data(ctl: ControllerDep, body: Annotated[d.ConfigDataIn, Body()]) -> Response:
    await ctl.config_data(body)
    return Response(status_code=200)


@router.get(
    f"{ROOT}/softwaremodules/{{module_id}}/artifacts",
    response_model=list[d.ArtifactOut],
    response_model_by_alias=True,
    responses=ERRORS,
    operation_id="ddi_module_artifacts",
    summary="The artifacts of a software module (hawkBit DDI)",
)
async def ddi_module_artifacts(ctl: ControllerDep, module_id: int) -> list[dict[str, Any]]:
    return await ctl.module_artifacts(module_id)


@router.get(
    f"{ROOT}/softwaremodules/{{module_id}}/artifacts/{{filename}}",
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "The bytes"},
        206: {"description": "The requested range"},
        416: {"description": "The range is not satisfiable"},
        **ERRORS,
    },
    operation_id="ddi_download",
    summary="Download an artifact (Range supported); append .MD5SUM for its MD5 line",
)
async def ddi_download(
    ctl: ControllerDep, request: Request, module_id: int, filename: str
) -> Response:
    return await ctl.download(request, module_id, filename)
