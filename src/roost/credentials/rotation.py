"""A device rotates its own credentials: ``POST /device/credentials/rotate`` and ``…/retire``.

Rotation is two steps so that a lost answer never locks a device out: ``rotate`` issues a new
device token (and, given a CSR, a new certificate of the platform CA) while the credential the
device called with stays valid; the device switches to the new one and then retires the old ids
(``retire``), calling with the new credential. Retiring revokes through the token and certificate
services, so the old credential is refused at once on every door (HTTP, WebSocket, MQTT) and its
live sessions are closed, as an operator's revocation does.

The operator's side (asking a device to rotate, the ``roost.rotate_credentials`` command) lives
with the commands (:mod:`roost.commands.rotation`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Protocol

import sqlalchemy as sa
from fastapi import APIRouter, Depends
from pydantic import Field

from roost.core import metrics
from roost.core.access import Actor, Role
from roost.core.device_identity import DeviceIdentity
from roost.credentials.certificates.ca import read_csr
from roost.credentials.certificates.service import CERT_ID_PREFIX, CertificateService
from roost.credentials.certificates.tables import device_certificates
from roost.credentials.dependencies import DeviceDep
from roost.credentials.tokens.service import CredentialService
from roost.credentials.tokens.tables import device_tokens
from roost.errors import Conflict, NotFound
from roost.http import schemas as s
from roost.http.deps import get_roost
from roost.store.database import Database

#: The name a rotated token carries (the device's token list shows it).
ROTATED_TOKEN_NAME = "rotated"
#: Ids one retire call takes of each kind: a device holds a handful of credentials.
MAX_RETIRE_IDS = 100
SAS_KEY_PREFIX = "key_"

ROTATIONS = metrics.tally(
    "roost_credential_rotations", "Credentials devices obtained by rotating their own", ("kind",)
)


class Services(Protocol):
    """What the rotation routes use of the running Roost."""

    @property
    def db(self) -> Database: ...

    @property
    def credentials(self) -> CredentialService: ...

    @property
    def certificates(self) -> CertificateService: ...


RoostDep = Annotated[Services, Depends(get_roost)]

router = APIRouter(prefix="/device/credentials", tags=["devices (devices)"])
ERRORS = s.problem_responses(401, 403, 404, 409, 422)

CredentialKind = Literal["token", "certificate", "sas"]


class RotateIn(s.Body):
    """What the device asks for: a new token, and a certificate too when it sends a CSR."""

    csr: str | None = Field(
        default=None, description="A PEM certificate signing request for a new client certificate"
    )


class PreviousCredential(s.Out):
    """The credential the rotate call was made with (still valid until retired)."""

    kind: CredentialKind
    id: str


class RotatedOut(s.Out):
    """The device's new credentials (secrets, shown this once) and the one it called with."""

    device_id: str
    tenant_id: str
    token_id: str
    token: str
    certificate_id: str | None
    certificate: str | None = Field(description="PEM, signed by the platform CA (GET /ca)")
    previous: PreviousCredential


class RetireIn(s.Body):
    """The caller's own credentials to revoke (not the one this request presents)."""

    token_ids: list[str] = Field(default_factory=list, max_length=MAX_RETIRE_IDS)
    certificate_ids: list[str] = Field(default_factory=list, max_length=MAX_RETIRE_IDS)


class RetiredIds(s.Out):
    """Ids now revoked (those revoked before included)."""

    token_ids: list[str]
    certificate_ids: list[str]


class RetiredOut(s.Out):
    """What the retire call revoked."""

    revoked: RetiredIds


def kind_of(credential_id: str) -> CredentialKind:
    """Which kind of credential an identity's ``credential_id`` names (by its id's shape)."""
    if credential_id.startswith(CERT_ID_PREFIX):
        return "certificate"
    if credential_id.startswith(SAS_KEY_PREFIX):
        return "sas"
    return "token"


def device_actor(identity: DeviceIdentity) -> Actor:
    """The device acting on its own credentials (named ``device:<id>`` in the audit log)."""
    return Actor(
        tenant_id=identity.tenant_id, name=f"device:{identity.device_id}", role=Role.OPERATOR
    )


async def rotate(roost: Services, identity: DeviceIdentity, csr: str | None) -> dict[str, Any]:
    """Issue the device a new token (and a certificate from ``csr``); the old one stays valid."""
    if csr is not None:
        read_csr(csr)  # a bad CSR is refused (422) before a token is issued
    actor = device_actor(identity)
    token_row, token = await roost.credentials.issue_token(
        actor, identity.device_id, name=ROTATED_TOKEN_NAME
    )
    ROTATIONS.inc(("token",))
    certificate: dict[str, Any] | None = None
    if csr is not None:
        certificate, _ = await roost.certificates.issue(actor, identity.device_id, csr)
        ROTATIONS.inc(("certificate",))
    return {
        "device_id": identity.device_id,
        "tenant_id": identity.tenant_id,
        "token_id": token_row["id"],
        "token": token,
        "certificate_id": None if certificate is None else certificate["id"],
        "certificate": None if certificate is None else certificate["certificate"],
        "previous": {"kind": kind_of(identity.credential_id), "id": identity.credential_id},
    }


async def retire(
    roost: Services, identity: DeviceIdentity, token_ids: list[str], certificate_ids: list[str]
) -> dict[str, Any]:
    """Revoke the caller's own tokens and certificates, all or none.

    An id that is not the caller's (unknown, or another device's) is 404 and the one the request
    presents is 409, both before anything is revoked; one revoked already is revoked again
    (nothing changes).
    """
    token_ids, certificate_ids = (
        list(dict.fromkeys(token_ids)),
        list(dict.fromkeys(certificate_ids)),
    )
    if identity.credential_id in (*token_ids, *certificate_ids):
        raise Conflict(
            f"credential {identity.credential_id!r} is the one this request presents: "
            "retire it with the new credential"
        )
    async with roost.db.read() as conn:
        own_tokens = set(
            (
                await conn.execute(
                    sa.select(device_tokens.c.id).where(
                        device_tokens.c.device_pk == identity.device_pk,
                        device_tokens.c.id.in_(token_ids),
                    )
                )
            ).scalars()
        )
        own_certificates = set(
            (
                await conn.execute(
                    sa.select(device_certificates.c.id).where(
                        device_certificates.c.device_pk == identity.device_pk,
                        device_certificates.c.id.in_(certificate_ids),
                    )
                )
            ).scalars()
        )
    for token_id in token_ids:
        if token_id not in own_tokens:
            raise NotFound(f"no token {token_id!r} for device {identity.device_id!r}")
    for cert_id in certificate_ids:
        if cert_id not in own_certificates:
            raise NotFound(f"no certificate {cert_id!r} for device {identity.device_id!r}")
    actor = device_actor(identity)
    for token_id in token_ids:
        await roost.credentials.revoke_token(actor, identity.device_id, token_id)
    for cert_id in certificate_ids:
        await roost.certificates.revoke(actor, identity.device_id, cert_id)
    return {"revoked": {"token_ids": token_ids, "certificate_ids": certificate_ids}}


@router.post(
    "/rotate",
    status_code=201,
    response_model=RotatedOut,
    operation_id="device_rotate_credentials",
    summary="(device) Get a new token (and a certificate, given a CSR); the old one stays "
    "valid until retired",
    responses=ERRORS,
)
async def device_rotate_credentials(
    roost: RoostDep, identity: DeviceDep, body: RotateIn | None = None
) -> dict[str, Any]:
    return await rotate(roost, identity, None if body is None else body.csr)


@router.post(
    "/retire",
    response_model=RetiredOut,
    operation_id="device_retire_credentials",
    summary="(device) Revoke own old tokens and certificates (not the one presented: 409)",
    responses=ERRORS,
)
async def device_retire_credentials(
    roost: RoostDep, identity: DeviceDep, body: RetireIn
) -> dict[str, Any]:
    return await retire(roost, identity, body.token_ids, body.certificate_ids)
