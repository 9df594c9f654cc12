"""HTTP routes: artifacts (users), their downloads (devices, signed URLs), the signing key."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Protocol

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from roost.core.ids import SLUG_PATTERN
from roost.credentials.dependencies import DeviceDep
from roost.http import schemas as s
from roost.http.deps import ActorDep, PageDep, get_roost
from roost.http.params import sortable
from roost.http.uploads import body_chunks, content_length
from roost.ota.artifacts.schemas import (
    ArtifactOut,
    ArtifactPatch,
    DeviceArtifactOut,
    DownloadOut,
    SigningKeyOut,
)
from roost.ota.artifacts.service import DOWNLOAD_SORTS, SORTS, ArtifactService
from roost.store.queries import Page


class Services(Protocol):
    """What these routes use of the running Roost."""

    @property
    def artifacts(self) -> ArtifactService: ...


RoostDep = Annotated[Services, Depends(get_roost)]

router = APIRouter(tags=["artifacts"])
ERRORS = s.problem_responses(403, 404, 422)
ArtifactType = Literal["firmware", "application", "deb", "file", "container"]
ArtifactId = Annotated[
    str, Path(max_length=128, pattern=SLUG_PATTERN, description="The artifact's id")
]
#: The path of the upload route: the body limit middleware lets it through (see app.py).
UPLOAD_PATH = "/artifacts"

_UPLOAD_BODY: dict[str, Any] = {
    "required": False,
    "description": "The file's bytes, streamed (empty for a container reference).",
    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
}
_DOWNLOAD_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The bytes (HEAD: the headers only)",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    },
    206: {"description": "The range asked for (Range)"},
    304: {"description": "Not modified (If-None-Match matched the ETag)"},
    404: {"model": s.Problem},
    416: {"model": s.Problem, "description": "The range lies outside the file"},
}


@router.post(
    UPLOAD_PATH,
    status_code=201,
    response_model=ArtifactOut,
    operation_id="upload_artifact",
    summary="Upload an artifact: the raw bytes as the body, its metadata in the query",
    description=(
        "Streamed to storage (the size limit is ROOST_ARTIFACT_MAX_BYTES; 413 beyond it) with "
        "SHA-256, SHA-1 and MD5 computed on the way in. A body cut short, or whose SHA-256 is "
        "not the `sha256` given, stores nothing (422). Roost signs the manifest `{id, sha256, "
        "size, type, version}` (canonical JSON, keys sorted) with its Ed25519 key (GET "
        "/api/v1/ota/signing-key), unless `signature` carries the operator's own detached "
        "signature (kept as given, not verified). A Debian package's control fields are read "
        "(its name and version default to Package and Version). Type `container` takes no "
        "bytes, only `reference`."
    ),
    openapi_extra={"requestBody": _UPLOAD_BODY},
    responses={
        **s.problem_responses(403, 409, 422),
        413: {"model": s.Problem, "description": "Over the size limit"},
        431: {
            "model": s.Problem,
            "description": "The query is too long for a request head (64 KiB): send long "
            "release notes with PATCH",
        },
    },
)
async def upload_artifact(
    roost: RoostDep,
    actor: ActorDep,
    request: Request,
    type: Annotated[ArtifactType, Query(description="What the artifact is")],
    id: Annotated[
        str | None, Query(max_length=128, pattern=SLUG_PATTERN, description="Default: generated")
    ] = None,
    name: Annotated[str | None, Query(max_length=200)] = None,
    version: Annotated[
        str | None, Query(max_length=128, description="Required but for a Debian package")
    ] = None,
    filename: Annotated[str | None, Query(max_length=255, description="Default: the id")] = None,
    model_id: Annotated[
        list[str] | None, Query(description="A device model it suits (repeat; none: any)")
    ] = None,
    release_notes: Annotated[
        str | None,
        # A query lives in the request head (64 KiB, percent-encoded): longer notes by PATCH.
        Query(max_length=2000, description="Up to 2,000 characters here; longer ones by PATCH"),
    ] = None,
    sha256: Annotated[
        str | None, Query(pattern="^[0-9a-fA-F]{64}$", description="Refused unless it matches")
    ] = None,
    signature: Annotated[
        str | None, Query(max_length=4096, description="The operator's own signature (base64)")
    ] = None,
    reference: Annotated[
        str | None, Query(max_length=500, description="Container type: the image reference")
    ] = None,
) -> dict[str, Any]:
    meta = {
        "type": type,
        "id": id,
        "name": name,
        "version": version,
        "filename": filename,
        "model_ids": model_id or [],
        "release_notes": release_notes,
        "signature": signature,
        "reference": reference,
    }
    return await roost.artifacts.create(
        actor,
        meta,
        body_chunks(request),
        expected_sha256=sha256,
        expected_size=content_length(request),
    )


@router.get(
    "/artifacts",
    response_model=s.Page[ArtifactOut],
    operation_id="list_artifacts",
    openapi_extra=sortable(SORTS),
    summary="List the tenant's artifacts (newest first by default)",
    responses=ERRORS,
)
async def list_artifacts(
    roost: RoostDep,
    actor: ActorDep,
    page: PageDep,
    type: Annotated[ArtifactType | None, Query()] = None,
    model_id: Annotated[
        str | None, Query(max_length=128, description="Only artifacts that suit this model")
    ] = None,
    q: Annotated[
        str | None, Query(min_length=1, max_length=200, description="Text in id, name, version")
    ] = None,
) -> Page[dict[str, Any]]:
    return await roost.artifacts.list(actor, page, type=type, model_id=model_id, q=q)


@router.get(
    "/artifacts/{artifact_id}",
    response_model=ArtifactOut,
    operation_id="get_artifact",
    summary="One artifact",
    responses=ERRORS,
)
async def get_artifact(roost: RoostDep, actor: ActorDep, artifact_id: ArtifactId) -> dict[str, Any]:
    return await roost.artifacts.get(actor, artifact_id)


@router.patch(
    "/artifacts/{artifact_id}",
    response_model=ArtifactOut,
    operation_id="update_artifact",
    summary="Change an artifact's release notes (its bytes and manifest never change)",
    responses=ERRORS,
)
async def update_artifact(
    roost: RoostDep, actor: ActorDep, artifact_id: ArtifactId, body: ArtifactPatch
) -> dict[str, Any]:
    return await roost.artifacts.update(actor, artifact_id, body.release_notes)


@router.delete(
    "/artifacts/{artifact_id}",
    status_code=204,
    operation_id="delete_artifact",
    summary="Delete an artifact and its bytes (409 while a deployment or a channel uses it)",
    responses=s.problem_responses(403, 404, 409),
)
async def delete_artifact(roost: RoostDep, actor: ActorDep, artifact_id: ArtifactId) -> Response:
    await roost.artifacts.delete(actor, artifact_id)
    return Response(status_code=204)


async def _content(
    roost: RoostDep, actor: ActorDep, request: Request, artifact_id: ArtifactId
) -> Response:
    await roost.artifacts.get(actor, artifact_id)  # the viewer check
    return await roost.artifacts.stream(request, actor.tenant_id, artifact_id, None)


router.get(
    "/artifacts/{artifact_id}/content",
    operation_id="download_artifact",
    summary="Download an artifact's bytes (Range, If-None-Match; a container reference: 404)",
    response_class=Response,
    responses=_DOWNLOAD_RESPONSES,
)(_content)
router.head(
    "/artifacts/{artifact_id}/content",
    summary="An artifact's size, ETag and range support, without its bytes",
    operation_id="head_artifact_content",
    response_class=Response,
    responses=_DOWNLOAD_RESPONSES,
)(_content)


@router.get(
    "/artifacts/{artifact_id}/downloads",
    response_model=s.Page[DownloadOut],
    operation_id="list_artifact_downloads",
    openapi_extra=sortable(DOWNLOAD_SORTS),
    summary="Downloads of an artifact per device (complete ones counted, bytes sent)",
    responses=ERRORS,
)
async def list_artifact_downloads(
    roost: RoostDep, actor: ActorDep, artifact_id: ArtifactId, page: PageDep
) -> Page[dict[str, Any]]:
    return await roost.artifacts.downloads_of(actor, artifact_id, page)


@router.get(
    "/ota/signing-key",
    response_model=SigningKeyOut,
    operation_id="get_ota_signing_key",
    summary="The Ed25519 public key artifact manifests are signed with (no authentication)",
)
async def get_ota_signing_key(roost: RoostDep) -> dict[str, str]:
    return await roost.artifacts.signing_key_document()


@router.get(
    "/ota/artifacts/{artifact_id}",
    response_model=DeviceArtifactOut,
    operation_id="device_get_artifact",
    summary="A device reads an artifact's signed manifest, signature and download URLs",
    description=(
        "`url` is the download path with the device's own credentials; `signed_url` works "
        "without headers for a short while (ROOST_OTA_URL_TTL_S). Verify `signature` over the "
        "manifest `{id, sha256, size, type, version}` (JSON, keys sorted, no spaces) with the "
        "key of GET /api/v1/ota/signing-key before installing."
    ),
    responses={**ERRORS, 401: {"model": s.Problem}},
)
async def device_get_artifact(
    roost: RoostDep, device: DeviceDep, artifact_id: ArtifactId
) -> dict[str, Any]:
    await roost.artifacts.check_sent(device.tenant_id, artifact_id, device.device_id)
    row = await roost.artifacts.row(device.tenant_id, artifact_id)
    return roost.artifacts.device_view(row, device)


async def _device_download(
    roost: RoostDep, device: DeviceDep, request: Request, artifact_id: ArtifactId
) -> Response:
    await roost.artifacts.check_sent(device.tenant_id, artifact_id, device.device_id)
    return await roost.artifacts.stream(request, device.tenant_id, artifact_id, device.device_id)


router.get(
    "/ota/artifacts/{artifact_id}/download",
    operation_id="device_download_artifact",
    summary="A device downloads an artifact it was sent (its token, SAS or certificate)",
    response_class=Response,
    responses={**_DOWNLOAD_RESPONSES, 401: {"model": s.Problem}},
)(_device_download)
router.head(
    "/ota/artifacts/{artifact_id}/download",
    summary="A device's view of an artifact download's headers (size, ETag), without the bytes",
    operation_id="head_device_artifact_download",
    response_class=Response,
    responses={**_DOWNLOAD_RESPONSES, 401: {"model": s.Problem}},
)(_device_download)


async def _signed_download(
    roost: RoostDep,
    request: Request,
    token: Annotated[str, Path(max_length=1000, description="From a device view's signed_url")],
) -> Response:
    return await roost.artifacts.stream_signed(request, token)


router.get(
    "/ota/dl/{token}",
    operation_id="signed_download_artifact",
    summary="Download with a signed URL (for clients that cannot send headers; short-lived)",
    response_class=Response,
    responses={**_DOWNLOAD_RESPONSES, 401: {"model": s.Problem}},
)(_signed_download)
router.head(
    "/ota/dl/{token}",
    summary="A signed download's headers (size, ETag), without the bytes",
    operation_id="head_signed_download",
    response_class=Response,
    responses={**_DOWNLOAD_RESPONSES, 401: {"model": s.Problem}},
)(_signed_download)
