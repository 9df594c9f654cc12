"""HTTP routes: enrollment groups, attestation hashes, and the two doors by which a device
provisions itself (``/provisioning/register``, ``/provisioning/bootstrap``).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Protocol
from urllib.parse import urlsplit

import orjson
from fastapi import APIRouter, Depends, Header, Request, Response
from pydantic import Field

from roost.config import Settings
from roost.core.ids import SLUG_PATTERN
from roost.core.limits import DeviceLimits
from roost.credentials.certificates.ca import read_csr
from roost.credentials.certificates.service import CertificateService
from roost.errors import AuthenticationFailed, InvalidInput, PermissionDenied
from roost.http import schemas as s
from roost.http.deps import ActorDep, PageDep, get_roost
from roost.http.params import sortable
from roost.provisioning.bundles import (
    MAX_BUNDLE_DEVICES,
    BundleServices,
    Endpoints,
    make_bundle,
    numbered_ids,
)
from roost.provisioning.service import (
    ENROLLMENT_SORTS,
    HASH_SORTS,
    ProvisioningService,
    system_actor,
)
from roost.store.queries import Page


class Services(BundleServices, Protocol):
    """What the provisioning routes use of the running Roost."""

    @property
    def settings(self) -> Settings: ...

    @property
    def certificates(self) -> CertificateService: ...

    @property
    def limits(self) -> DeviceLimits: ...

    @property
    def provisioning(self) -> ProvisioningService: ...


RoostDep = Annotated[Services, Depends(get_roost)]


router = APIRouter(tags=["provisioning"])
ERRORS = s.problem_responses(403, 404, 409, 422)
DEVICE_ERRORS = s.problem_responses(401, 403, 422, 429)
TagValue = str | int | float | bool


class EnrollmentIn(s.Body):
    """A new enrollment group; without ``key`` one is generated."""

    id: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        json_schema_extra=s.documented(pattern=SLUG_PATTERN),
    )
    key: str | None = Field(default=None, description="Base64, at least 16 bytes")
    site_id: str | None = None
    group_ids: list[str] = Field(default_factory=list)
    tags: dict[str, TagValue] = Field(default_factory=dict)
    enabled: bool = Field(default=True, strict=True)


class EnrollmentPatch(s.Body):
    """What may change in an enrollment group."""

    site_id: str | None = None
    group_ids: list[str] | None = None
    tags: dict[str, TagValue] | None = None
    enabled: bool | None = Field(default=None, strict=True, json_schema_extra=s.never_null)


class EnrollmentOut(s.Out):
    """An enrollment group (never its key)."""

    id: str
    site_id: str | None
    group_ids: list[str]
    tags: dict[str, str]
    enabled: bool
    created_at: datetime
    updated_at: datetime


class EnrollmentCreated(EnrollmentOut):
    """A new enrollment group with its group key (Base64), shown this once."""

    key: str


class RegistrationIn(s.Body):
    """A device of an enrollment group registering itself."""

    registration_id: str = Field(min_length=1, max_length=128)
    csr: str | None = None


# provisioning.service checks it (422): a SHA-256 in hex.
HASH_RULE = s.documented(pattern="^[0-9a-fA-F]{64}$")


class BootstrapIn(s.Body):
    """A device bootstrapping itself with an attestation hash."""

    hostname: str = Field(min_length=1, max_length=253)
    hash: str = Field(
        description="SHA-256 of the device's hardware data, hex", json_schema_extra=HASH_RULE
    )
    csr: str | None = None


class ProvisionedOut(s.Out):
    """A provisioned device and its new device token."""

    device_id: str
    tenant_id: str
    token_id: str
    token: str
    enrollment_id: str | None = None
    created: bool = True
    certificate: str | None = None


class HashesIn(s.Body):
    """Attestation hashes to accept, and where their devices land."""

    hashes: list[Annotated[str, Field(json_schema_extra=HASH_RULE)]] = Field(min_length=1)
    site_id: str | None = None
    group_ids: list[str] = Field(default_factory=list)
    tags: dict[str, TagValue] = Field(default_factory=dict)


class HashOut(s.Out):
    """An attestation hash as listed: its id (SHA-256 of the hash) and first characters."""

    id: str
    hint: str
    site_id: str | None
    group_ids: list[str]
    tags: dict[str, str]
    created_at: datetime
    used_at: datetime | None = None
    device_id: str | None = None


class HashesCreated(s.Out):
    """The stored hashes."""

    items: list[HashOut]


# An API URL devices can dial: http(s), a host, nothing but a path after it.
_API_URL = re.compile(r"^https?://[^/?#]+")


class BundleIn(s.Body):
    """Devices of an offline bundle: ``device_ids``, or ``count`` numbered ids after ``prefix``;
    the missing ones are created in ``site_id`` and ``group_ids``."""

    device_ids: list[str] = Field(default_factory=list, max_length=MAX_BUNDLE_DEVICES)
    count: int | None = Field(default=None, ge=1, le=MAX_BUNDLE_DEVICES, strict=True)
    prefix: str | None = Field(default=None, min_length=1, max_length=100)
    site_id: str | None = None
    group_ids: list[str] = Field(default_factory=list)
    api_url: str | None = Field(
        default=None,
        max_length=2000,
        description="The API the devices reach (default: the address this request came to)",
        json_schema_extra=s.documented(pattern=_API_URL.pattern),
    )
    mqtt_host: str | None = Field(
        default=None, min_length=1, max_length=253, description="Default: the API URL's host"
    )


class BundleDevice(s.Out):
    """One device of a bundle with its fresh credentials (secrets, shown this once)."""

    device_id: str
    created: bool
    token_id: str
    token: str
    key_id: str
    key: str
    sas_resource: str


class BundleMqtt(s.Out):
    """Where devices reach the MQTT gateway (a port is null when that listener is off)."""

    host: str
    port: int | None
    tls_port: int | None


class BundleSigningKey(s.Out):
    """Roost's OTA signing key (as GET /api/v1/ota/signing-key): agents pin it from the bundle."""

    id: str
    algorithm: str
    public_key: str = Field(description="PEM (SubjectPublicKeyInfo)")


class BundleOut(s.Out):
    """An offline bundle: endpoints, the CA certificate, the OTA signing key and each device's
    credentials."""

    format: str
    created_at: str
    tenant_id: str
    api_url: str
    https_url: str | None
    mqtt: BundleMqtt
    ca_certificate: str
    ota_signing_key: BundleSigningKey
    devices: list[BundleDevice]


# -- offline bundles -------------------------------------------------------------------------


@router.post(
    "/provisioning/bundles",
    status_code=201,
    response_model=BundleOut,
    operation_id="make_bundle",
    responses=ERRORS,
    summary="Make an offline bundle: endpoints, CA and fresh credentials of devices",
)
async def make_offline_bundle(
    roost: RoostDep, actor: ActorDep, body: BundleIn, request: Request
) -> Response:
    """The bundle ``roost provision bundle`` writes, as a download: it holds secrets (each
    device's new token and SAS key), so it is answered once and never cached."""
    if body.count is not None:
        if body.device_ids or not body.prefix:
            raise InvalidInput("give device_ids, or count with prefix")
        ids = numbered_ids(body.prefix, body.count)
    elif body.prefix is not None:
        raise InvalidInput("prefix goes with count")
    else:
        ids = body.device_ids
    api_url = (str(request.base_url) if body.api_url is None else body.api_url).rstrip("/")
    parts = urlsplit(api_url)
    if not _API_URL.match(api_url) or not parts.hostname:
        raise InvalidInput(f"api_url must be an http(s) URL with a host, not {api_url!r}")
    settings = roost.settings
    endpoints = Endpoints(
        api_url=api_url,
        mqtt_host=body.mqtt_host or parts.hostname,
        mqtt_port=settings.mqtt_port or None,
        mqtts_port=settings.mqtts_port or None,
        https_url=f"https://{parts.hostname}:{settings.https_port}"
        if settings.https_port
        else None,
    )
    bundle = await make_bundle(
        roost, actor, ids, site_id=body.site_id, group_ids=body.group_ids, endpoints=endpoints
    )
    stamp = bundle["created_at"].replace(":", "").replace("-", "")[:15]
    return Response(
        orjson.dumps(bundle, option=orjson.OPT_INDENT_2),
        status_code=201,
        media_type="application/json",
        headers={
            "Content-Disposition": f'attachment; filename="roost-bundle-{stamp}.json"',
            "Cache-Control": "no-store",
        },
    )


# -- enrollment groups ---------------------------------------------------------------------


@router.post(
    "/enrollments",
    response_model=EnrollmentCreated,
    status_code=201,
    operation_id="create_enrollment",
    summary="Make an enrollment group (its key is shown once; operator)",
    responses=ERRORS,
)
async def create_enrollment(roost: RoostDep, actor: ActorDep, body: EnrollmentIn) -> dict[str, Any]:
    row, key = await roost.provisioning.create_enrollment(
        actor, body.model_dump(exclude_unset=True)
    )
    return {**row, "key": key}


@router.get(
    "/enrollments",
    response_model=s.Page[EnrollmentOut],
    operation_id="list_enrollments",
    openapi_extra=sortable(ENROLLMENT_SORTS),
    summary="List enrollment groups",
    responses=ERRORS,
)
async def list_enrollments(roost: RoostDep, actor: ActorDep, page: PageDep) -> Page[dict[str, Any]]:
    return await roost.provisioning.list_enrollments(actor, page)


@router.get(
    "/enrollments/{enrollment_id}",
    response_model=EnrollmentOut,
    operation_id="get_enrollment",
    summary="Show an enrollment group",
    responses=ERRORS,
)
async def get_enrollment(roost: RoostDep, actor: ActorDep, enrollment_id: str) -> dict[str, Any]:
    return await roost.provisioning.get_enrollment(actor, enrollment_id)


@router.patch(
    "/enrollments/{enrollment_id}",
    response_model=EnrollmentOut,
    operation_id="update_enrollment",
    summary="Enable or disable an enrollment group, or change where its devices land",
    responses=ERRORS,
)
async def update_enrollment(
    roost: RoostDep, actor: ActorDep, enrollment_id: str, body: EnrollmentPatch
) -> dict[str, Any]:
    return await roost.provisioning.update_enrollment(
        actor, enrollment_id, body.model_dump(exclude_unset=True)
    )


@router.delete(
    "/enrollments/{enrollment_id}",
    status_code=204,
    operation_id="delete_enrollment",
    summary="Delete an enrollment group (its devices stay)",
    responses=ERRORS,
)
async def delete_enrollment(roost: RoostDep, actor: ActorDep, enrollment_id: str) -> Response:
    await roost.provisioning.delete_enrollment(actor, enrollment_id)
    return Response(status_code=204)


# -- attestation hashes --------------------------------------------------------------------


@router.post(
    "/attestation-hashes",
    response_model=HashesCreated,
    status_code=201,
    operation_id="add_attestation_hashes",
    summary="Accept attestation hashes, each usable once (operator)",
    responses=ERRORS,
)
async def add_attestation_hashes(
    roost: RoostDep, actor: ActorDep, body: HashesIn
) -> dict[str, Any]:
    rows = await roost.provisioning.add_hashes(actor, body.model_dump(exclude_unset=True))
    return {"items": rows}


@router.get(
    "/attestation-hashes",
    response_model=s.Page[HashOut],
    operation_id="list_attestation_hashes",
    openapi_extra=sortable(HASH_SORTS),
    summary="List attestation hashes (by id and first characters, never whole)",
    responses=ERRORS,
)
async def list_attestation_hashes(
    roost: RoostDep, actor: ActorDep, page: PageDep
) -> Page[dict[str, Any]]:
    return await roost.provisioning.list_hashes(actor, page)


@router.delete(
    "/attestation-hashes/{hash_id}",
    status_code=204,
    operation_id="delete_attestation_hash",
    summary="Withdraw an attestation hash (operator)",
    responses=ERRORS,
)
async def delete_attestation_hash(roost: RoostDep, actor: ActorDep, hash_id: str) -> Response:
    await roost.provisioning.delete_hash(actor, hash_id)
    return Response(status_code=204)


# -- the devices' doors --------------------------------------------------------------------


@router.post(
    "/provisioning/register",
    response_model=ProvisionedOut,
    operation_id="register_device",
    summary="A device registers itself through an enrollment group (SAS signed with its "
    "derived key, skn=registration)",
    responses=DEVICE_ERRORS,
)
async def register_device(
    roost: RoostDep,
    request: Request,
    body: RegistrationIn,
    authorization: Annotated[str | None, Header()] = None,
) -> dict[str, Any]:
    if body.csr is not None:
        read_csr(body.csr)  # a bad CSR is refused (422) before anything is created
    address = _address(request)
    roost.limits.check_source(address)  # brute-force limit, as on every credential check
    try:
        answer = await roost.provisioning.register(authorization, body.registration_id)
    except (AuthenticationFailed, PermissionDenied):
        roost.limits.credential_failed(address)
        raise
    return await _with_certificate(roost, answer, body.csr)


@router.post(
    "/provisioning/bootstrap",
    response_model=ProvisionedOut,
    status_code=201,
    operation_id="bootstrap_device",
    summary="A device bootstraps itself with an attestation hash (no credential; once per hash)",
    responses=DEVICE_ERRORS,
)
async def bootstrap_device(roost: RoostDep, request: Request, body: BootstrapIn) -> dict[str, Any]:
    address = _address(request)
    if body.csr is not None:
        read_csr(body.csr)
    roost.limits.check_source(address)
    try:
        answer = await roost.provisioning.bootstrap(body.hostname, body.hash, address)
    except (AuthenticationFailed, PermissionDenied):
        roost.limits.credential_failed(address)
        raise
    return await _with_certificate(roost, answer, body.csr)


def _address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def _with_certificate(
    roost: Services, answer: dict[str, Any], csr: str | None
) -> dict[str, Any]:
    """A provisioned device that sent a CSR gets a certificate of the platform CA too."""
    if csr is None:
        return answer
    row, _ = await roost.certificates.issue(
        system_actor(answer["tenant_id"]), answer["device_id"], csr
    )
    return {**answer, "certificate": row["certificate"]}
