"""HTTP routes: the platform CA (public) and device certificates (issue, list, revoke, rotate)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Depends, Response
from pydantic import Field

from roost.credentials.certificates.ca import MAX_DEVICE_DAYS
from roost.credentials.certificates.service import SORTS, CertificateService
from roost.http import schemas as s
from roost.http.deps import ActorDep, PageDep, get_roost
from roost.http.params import sortable
from roost.store.queries import Page


class Services(Protocol):
    """What the certificate routes use of the running Roost."""

    @property
    def certificates(self) -> CertificateService: ...


RoostDep = Annotated[Services, Depends(get_roost)]


router = APIRouter(tags=["certificates"])
ERRORS = s.problem_responses(403, 404, 422)


class CertificateAuthorityOut(s.Out):
    """The platform CA certificate devices trust."""

    certificate: str = Field(description="PEM")


class CertificateIn(s.Body):
    """What to issue: from the device's CSR, or (without one) with a generated key pair."""

    csr: str | None = Field(
        default=None,
        max_length=16_384,
        description="A PEM certificate signing request; its key is used, its subject ignored. "
        "Without it Roost generates the key pair and answers the private key once",
    )
    days: int | None = Field(
        default=None, ge=1, le=MAX_DEVICE_DAYS, description="Validity in days (default 365)"
    )


class CertificateOut(s.Out):
    """A device certificate (public)."""

    id: str = Field(description="Revoke it with DELETE …/certificates/{id}")
    device_id: str
    serial: str = Field(description="Hexadecimal")
    fingerprint: str = Field(description="SHA-256 of the DER, hexadecimal")
    certificate: str = Field(description="PEM")
    key_generated: bool = Field(description="True when Roost generated the key pair")
    not_before: datetime
    not_after: datetime
    created_at: datetime
    revoked_at: datetime | None


class CertificateCreated(CertificateOut):
    """A new certificate; ``private_key`` only when Roost generated the pair (shown once)."""

    private_key: str | None = Field(
        default=None, description="PKCS#8 PEM, shown this once and never stored"
    )


def created(row: dict[str, Any], private_key: str | None) -> dict[str, Any]:
    """A new certificate's answer: the private key only when Roost generated it."""
    return {**row, "private_key": private_key} if private_key else dict(row)


@router.get(
    "/ca",
    response_model=CertificateAuthorityOut,
    operation_id="get_ca_certificate",
    summary="The platform CA certificate (public: devices and TLS clients trust it)",
)
async def get_ca_certificate(roost: RoostDep) -> dict[str, Any]:
    return {"certificate": await roost.certificates.ca_pem()}


@router.post(
    "/devices/{device_id}/certificates",
    response_model=CertificateCreated,
    # private_key only when Roost generated the pair; revoked_at (null) always, as declared.
    response_model_exclude_unset=True,
    status_code=201,
    operation_id="create_device_certificate",
    summary="Issue a device certificate from a CSR, or with a generated key pair (operator)",
    responses=ERRORS,
)
async def create_device_certificate(
    roost: RoostDep, actor: ActorDep, device_id: str, body: CertificateIn | None = None
) -> dict[str, Any]:
    body = body or CertificateIn()
    row, key = await roost.certificates.issue(actor, device_id, body.csr, body.days)
    return created(row, key)


@router.get(
    "/devices/{device_id}/certificates",
    response_model=s.Page[CertificateOut],
    operation_id="list_device_certificates",
    openapi_extra=sortable(SORTS),
    summary="List a device's certificates, revoked ones included",
    responses=ERRORS,
)
async def list_device_certificates(
    roost: RoostDep, actor: ActorDep, device_id: str, page: PageDep
) -> Page[dict[str, Any]]:
    return await roost.certificates.list_certificates(actor, device_id, page)


@router.get(
    "/devices/{device_id}/certificates/{cert_id}",
    response_model=CertificateOut,
    operation_id="get_device_certificate",
    summary="One device certificate",
    responses=ERRORS,
)
async def get_device_certificate(
    roost: RoostDep, actor: ActorDep, device_id: str, cert_id: str
) -> dict[str, Any]:
    return await roost.certificates.get(actor, device_id, cert_id)


@router.delete(
    "/devices/{device_id}/certificates/{cert_id}",
    status_code=204,
    operation_id="revoke_device_certificate",
    summary="Revoke a device certificate at once; its live sessions close (operator)",
    responses=ERRORS,
)
async def revoke_device_certificate(
    roost: RoostDep, actor: ActorDep, device_id: str, cert_id: str
) -> Response:
    await roost.certificates.revoke(actor, device_id, cert_id)
    return Response(status_code=204)


@router.post(
    "/devices/{device_id}/certificates/{cert_id}/rotate",
    response_model=CertificateCreated,
    # private_key only when Roost generated the pair; revoked_at (null) always, as declared.
    response_model_exclude_unset=True,
    status_code=201,
    operation_id="rotate_device_certificate",
    summary="Issue a new certificate and revoke this one, in one step (operator)",
    responses={**ERRORS, 409: {"model": s.Problem}},
)
async def rotate_device_certificate(
    roost: RoostDep,
    actor: ActorDep,
    device_id: str,
    cert_id: str,
    body: CertificateIn | None = None,
) -> dict[str, Any]:
    body = body or CertificateIn()
    row, key = await roost.certificates.rotate(actor, device_id, cert_id, body.csr, body.days)
    return created(row, key)
