"""HTTP routes: a device uploads a diagnostics archive; operators list, download, delete."""

from __future__ import annotations

from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from roost.core.ids import SLUG_PATTERN
from roost.credentials.dependencies import DeviceDep
from roost.diagnostics.schemas import DiagnosticOut
from roost.diagnostics.service import MAX_BYTES, MAX_NOTE_CHARS, SORTS, DiagnosticsService
from roost.http import schemas as s
from roost.http.deps import ActorDep, PageDep, get_roost
from roost.http.params import sortable
from roost.http.uploads import body_chunks, content_length
from roost.store.queries import Page


class Services(Protocol):
    """What these routes use of the running Roost."""

    @property
    def diagnostics(self) -> DiagnosticsService: ...


RoostDep = Annotated[Services, Depends(get_roost)]

router = APIRouter(tags=["diagnostics"])
#: The device's upload path: the body limit middleware lets it through up to MAX_BYTES.
UPLOAD_PATH = "/device/diagnostics"
DiagId = Annotated[str, Path(max_length=32, pattern=SLUG_PATTERN, description="The archive's id")]


_UPLOAD_BODY: dict[str, Any] = {
    "required": True,
    "description": "The archive's bytes (a tar.gz), streamed",
    "content": {
        media: {"schema": {"type": "string", "format": "binary"}}
        for media in ("application/gzip", "application/octet-stream")
    },
}


@router.post(
    UPLOAD_PATH,
    status_code=201,
    response_model=DiagnosticOut,
    operation_id="device_upload_diagnostics",
    summary="A device uploads a diagnostics archive (raw tar.gz body, at most 50 MiB)",
    description=(
        "Streamed to storage with its SHA-256 computed on the way. A body over 50 MiB is "
        "refused (413), one cut short or empty stores nothing (422). The device keeps its "
        "newest 20 archives; older ones are deleted."
    ),
    openapi_extra={"requestBody": _UPLOAD_BODY},
    responses={
        **s.problem_responses(401, 403, 422),
        413: {"model": s.Problem, "description": "Over 50 MiB"},
    },
)
async def device_upload_diagnostics(
    roost: RoostDep,
    device: DeviceDep,
    request: Request,
    note: Annotated[
        str | None, Query(max_length=MAX_NOTE_CHARS, description="Why it was collected")
    ] = None,
    command_id: Annotated[
        str | None, Query(max_length=64, description="The command that asked for it")
    ] = None,
) -> dict[str, Any]:
    return await roost.diagnostics.upload(
        device,
        body_chunks(request),
        content_type=request.headers.get("content-type"),
        note=note,
        command_id=command_id,
        expected_size=content_length(request),
    )


@router.get(
    "/devices/{device_id}/diagnostics",
    response_model=s.Page[DiagnosticOut],
    operation_id="list_device_diagnostics",
    openapi_extra=sortable(SORTS),
    summary="List a device's diagnostics archives (newest first)",
    responses=s.problem_responses(403, 404),
)
async def list_device_diagnostics(
    roost: RoostDep, actor: ActorDep, device_id: str, page: PageDep
) -> Page[dict[str, Any]]:
    return await roost.diagnostics.list(actor, device_id, page)


@router.get(
    "/devices/{device_id}/diagnostics/{diag_id}",
    response_model=DiagnosticOut,
    operation_id="get_device_diagnostics",
    summary="One diagnostics archive's record",
    responses=s.problem_responses(403, 404),
)
async def get_device_diagnostics(
    roost: RoostDep, actor: ActorDep, device_id: str, diag_id: DiagId
) -> dict[str, Any]:
    return await roost.diagnostics.get(actor, device_id, diag_id)


@router.get(
    "/devices/{device_id}/diagnostics/{diag_id}/content",
    operation_id="download_device_diagnostics",
    summary="Download a diagnostics archive (an attachment; Range, If-None-Match)",
    response_class=Response,
    responses={
        200: {
            "description": "The archive's bytes",
            "content": {"application/gzip": {"schema": {"type": "string", "format": "binary"}}},
        },
        206: {"description": "The range asked for (Range)"},
        304: {"description": "Not modified (If-None-Match matched the ETag)"},
        **s.problem_responses(403, 404),
    },
)
async def download_device_diagnostics(
    roost: RoostDep, actor: ActorDep, request: Request, device_id: str, diag_id: DiagId
) -> Response:
    return await roost.diagnostics.content(request, actor, device_id, diag_id)


@router.delete(
    "/devices/{device_id}/diagnostics/{diag_id}",
    status_code=204,
    operation_id="delete_device_diagnostics",
    summary="Delete a diagnostics archive and its bytes (operators)",
    responses=s.problem_responses(403, 404),
)
async def delete_device_diagnostics(
    roost: RoostDep, actor: ActorDep, device_id: str, diag_id: DiagId
) -> Response:
    await roost.diagnostics.delete(actor, device_id, diag_id)
    return Response(status_code=204)


__all__ = ["MAX_BYTES", "UPLOAD_PATH", "router"]
