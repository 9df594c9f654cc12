"""HTTP routes: APT repositories (the channels operators manage, and apt's own doors).

Devices fetch ``/api/v1/apt/<tenant>/dists/…`` and ``…/pool/…`` with HTTP Basic, the way apt's
``auth.conf`` sends credentials (login = the device id, password = a device token), or with
``Authorization: Bearer <device token>``. A missing or malformed credential answers 401 with a
Basic challenge, a well-formed token that is not valid 403 (as on every device door);
another tenant's repository, a channel the device does not see and a package outside its channels
answer 404.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Depends, Path, Request, Response

from roost.core import metrics
from roost.core.device_identity import BearerToken, DeviceIdentity, PresentedCredential
from roost.credentials.dependencies import DeviceDoors, authenticate_device, presented_credential
from roost.errors import AuthenticationFailed, RoostError
from roost.http import schemas as s
from roost.http.deps import ActorDep, PageDep, get_roost
from roost.http.params import sortable
from roost.http.problems import problem
from roost.ota.apt.schemas import (
    ChannelIn,
    ChannelOut,
    ChannelWithPackages,
    PublishedOut,
    PublishIn,
)
from roost.ota.apt.service import MAX_NAME_CHARS, SORTS, AptService
from roost.ota.artifacts.service import ArtifactService
from roost.store.queries import Page


class Services(DeviceDoors, Protocol):
    """What these routes use of the running Roost."""

    @property
    def apt(self) -> AptService: ...

    @property
    def artifacts(self) -> ArtifactService: ...


RoostDep = Annotated[Services, Depends(get_roost)]

router = APIRouter(tags=["apt"])
ERRORS = s.problem_responses(403, 404, 422)
# apt's doors take no user credential: their refusals are declared here (429: the brute-force
# limit of device credentials).
DEVICE_ERRORS = s.problem_responses(401, 403, 404, 429)
#: The challenge of a refused apt request: apt answers it with its auth.conf entry.
CHALLENGE = 'Basic realm="Roost APT repository", Bearer'

ChannelName = Annotated[str, Path(max_length=MAX_NAME_CHARS, pattern=r"^[a-z0-9][a-z0-9._-]*$")]
TenantId = Annotated[str, Path(min_length=1, max_length=64)]
ArtifactId = Annotated[str, Path(min_length=1, max_length=128)]


def _basic(value: str) -> tuple[str, str]:
    """``login:password`` of a Basic credential."""
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise AuthenticationFailed("malformed Basic credential") from exc
    login, sep, password = decoded.partition(":")
    if not sep or not login or not password:
        raise AuthenticationFailed("Basic credential must be <device id>:<device token>")
    return login, password


# What apt asked of the repositories: an index (InRelease, Release, Packages…) or a package, and
# whether it was served or refused (a refused credential, a channel the device does not see).
REQUESTS = metrics.tally(
    "roost_apt_requests",
    "Requests of devices' apt to the APT repositories, by file kind and result",
    ["kind", "result"],
)


def _served(kind: str, status: int) -> None:
    REQUESTS.inc((kind, "served" if status < 400 else "refused"))


async def _device(roost: Services, request: Request) -> DeviceIdentity:
    """The calling device, from Basic (apt's auth.conf) or any device credential."""
    header = request.headers.get("authorization") or ""
    scheme, _, value = header.partition(" ")
    login: str | None = None
    presented: PresentedCredential
    address = request.client.host if request.client else ""
    if scheme.lower() == "basic":
        try:
            login, password = _basic(value)
        except AuthenticationFailed:
            roost.limits.credential_failed(address)
            raise
        presented = BearerToken(password)
    else:
        presented = presented_credential(header or None, request.scope)
    identity = await authenticate_device(roost, lambda: presented, address)
    if login is not None and login != identity.device_id:
        roost.limits.credential_failed(address)
        raise AuthenticationFailed("the login is not the device the token was issued to")
    roost.link.activity(identity)
    return identity


def _refused(exc: AuthenticationFailed) -> Response:
    """The refusal of a credential: 401 with the Basic challenge, or the 403 of a well-formed
    token that is not valid (the device contract's answer on every door)."""
    headers = {"WWW-Authenticate": CHALLENGE} if exc.status == 401 else None
    return problem(exc.status, exc.detail, title=exc.title, headers=headers)


# -- the operators' routes -------------------------------------------------------------------------


@router.post(
    "/apt/channels",
    status_code=201,
    response_model=ChannelOut,
    operation_id="create_apt_channel",
    summary="Make an APT channel (a suite of the tenant's repository) for all devices, a site "
    "or a group",
    responses=s.problem_responses(403, 409, 422),
)
async def create_apt_channel(roost: RoostDep, actor: ActorDep, body: ChannelIn) -> dict[str, Any]:
    return await roost.apt.create_channel(actor, body.name, body.audience, body.description)


@router.get(
    "/apt/channels",
    response_model=s.Page[ChannelOut],
    operation_id="list_apt_channels",
    openapi_extra=sortable(SORTS),
    summary="List the tenant's APT channels",
    responses=ERRORS,
)
async def list_apt_channels(
    roost: RoostDep, actor: ActorDep, page: PageDep
) -> Page[dict[str, Any]]:
    return await roost.apt.list_channels(actor, page)


@router.get(
    "/apt/channels/{name}",
    response_model=ChannelWithPackages,
    operation_id="get_apt_channel",
    summary="An APT channel and the packages published into it",
    responses=ERRORS,
)
async def get_apt_channel(roost: RoostDep, actor: ActorDep, name: ChannelName) -> dict[str, Any]:
    return await roost.apt.get_channel(actor, name)


@router.delete(
    "/apt/channels/{name}",
    status_code=204,
    operation_id="delete_apt_channel",
    summary="Delete an APT channel (its artifacts stay)",
    responses=ERRORS,
)
async def delete_apt_channel(roost: RoostDep, actor: ActorDep, name: ChannelName) -> Response:
    await roost.apt.delete_channel(actor, name)
    return Response(status_code=204)


@router.post(
    "/apt/channels/{name}/packages",
    status_code=201,
    response_model=PublishedOut,
    operation_id="publish_apt_package",
    summary="Publish a Debian-package artifact into a channel (seen at the devices' next update)",
    responses=s.problem_responses(403, 404, 409, 422),
)
async def publish_apt_package(
    roost: RoostDep, actor: ActorDep, name: ChannelName, body: PublishIn
) -> dict[str, Any]:
    return await roost.apt.publish(actor, name, body.artifact_id)


@router.delete(
    "/apt/channels/{name}/packages/{package_id}",
    status_code=204,
    operation_id="unpublish_apt_package",
    summary="Take an artifact out of a channel",
    responses=ERRORS,
)
async def unpublish_apt_package(
    roost: RoostDep, actor: ActorDep, name: ChannelName, package_id: ArtifactId
) -> Response:
    await roost.apt.unpublish(actor, name, package_id)
    return Response(status_code=204)


# -- apt's doors -----------------------------------------------------------------------------------


@router.get(
    "/apt/key.asc",
    operation_id="get_apt_key",
    summary="The public key of the APT repositories' signatures (apt's signed-by=)",
    response_class=Response,
    responses={200: {"content": {"application/pgp-keys": {"schema": {"type": "string"}}}}},
)
async def get_apt_key(roost: RoostDep) -> Response:
    return Response(await roost.apt.public_key(), media_type="application/pgp-keys")


@router.get(
    "/apt/{tenant}/dists/{channel}/{path:path}",
    operation_id="get_apt_index",
    summary="A device fetches a channel's InRelease, Release, Release.gpg or Packages(.gz)",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
        **DEVICE_ERRORS,
    },
)
async def get_apt_index(
    roost: RoostDep, request: Request, tenant: TenantId, channel: ChannelName, path: str
) -> Response:
    try:
        device = await _device(roost, request)
        data, media_type = await roost.apt.channel_file(device, tenant, channel, path)
    except AuthenticationFailed as exc:
        _served("index", exc.status)
        return _refused(exc)
    except RoostError as exc:
        _served("index", exc.status)
        raise
    _served("index", 200)
    return Response(data, media_type=media_type)


@router.get(
    "/apt/{tenant}/pool/{package_id}/{package_file}",
    operation_id="get_apt_package",
    summary="A device downloads a package of a channel it sees (Range, ETag)",
    response_class=Response,
    responses={
        200: {"content": {"application/vnd.debian.binary-package": {}}},
        **DEVICE_ERRORS,
    },
)
async def get_apt_package(
    roost: RoostDep,
    request: Request,
    tenant: TenantId,
    package_id: ArtifactId,
    package_file: Annotated[str, Path(min_length=1, max_length=255)],
) -> Response:
    try:
        device = await _device(roost, request)
        await roost.apt.check_package(device, tenant, package_id, package_file)
    except AuthenticationFailed as exc:
        _served("package", exc.status)
        return _refused(exc)
    except RoostError as exc:
        _served("package", exc.status)
        raise
    response = await roost.artifacts.stream(request, tenant, package_id, device.device_id)
    _served("package", response.status_code)
    return response
