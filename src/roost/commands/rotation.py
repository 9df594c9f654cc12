"""The server asks a device to rotate its credentials: the ``roost.rotate_credentials`` command.

``POST /devices/{id}/credentials/rotate-request`` (and ``roost device rotate-credentials``)
queue the command through the command service like any other, so its outcome shows in
``GET /commands/{id}``. The device agent answers it by calling the device's own rotation doors
(:mod:`roost.credentials.rotation`): a new token (and certificate), then retiring the old one.
"""

from __future__ import annotations

from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Depends
from pydantic import Field

from roost.commands.router import CommandOut
from roost.commands.rules import CommandRequest
from roost.commands.service import CommandService
from roost.core.access import Actor, Role
from roost.credentials.certificates.service import CertificateService
from roost.http import schemas as s
from roost.http.deps import ActorDep, get_roost
from roost.store.queries import MAX_LIMIT, PageRequest

#: The command the device agent handles by rotating its credentials.
ROTATE_COMMAND = "roost.rotate_credentials"


class Services(Protocol):
    """What the rotate-request route uses of the running Roost."""

    @property
    def commands(self) -> CommandService: ...

    @property
    def certificates(self) -> CertificateService: ...


RoostDep = Annotated[Services, Depends(get_roost)]

router = APIRouter(tags=["commands"])


class RotateRequestIn(s.Body):
    """Whether the device should get a new client certificate too."""

    certificate: bool | None = Field(
        default=None,
        strict=True,
        description="Default: whether the device holds an unrevoked, unexpired certificate",
    )


async def has_active_certificate(roost: Services, actor: Actor, device_id: str) -> bool:
    """True when the device holds a certificate that is neither revoked nor expired."""
    now = roost.commands.clock()
    offset = 0
    while True:
        page = await roost.certificates.list_certificates(
            actor, device_id, PageRequest(limit=MAX_LIMIT, offset=offset)
        )
        if any(c["revoked_at"] is None and c["not_after"] > now for c in page.items):
            return True
        offset += len(page.items)
        if not page.items or offset >= page.total:
            return False


async def request_rotation(
    roost: Services, actor: Actor, device_id: str, certificate: bool | None = None
) -> dict[str, Any]:
    """Queue ``roost.rotate_credentials`` for a device (operator); answer the command."""
    actor.require(Role.OPERATOR)
    if certificate is None:
        certificate = await has_active_certificate(roost, actor, device_id)
    return await roost.commands.create(
        actor, device_id, CommandRequest(name=ROTATE_COMMAND, params={"certificate": certificate})
    )


@router.post(
    "/devices/{device_id}/credentials/rotate-request",
    status_code=202,
    response_model=CommandOut,
    operation_id="request_credential_rotation",
    summary="Ask a device to rotate its credentials (queues the roost.rotate_credentials "
    "command; operator)",
    responses=s.problem_responses(403, 404, 422),
)
async def request_credential_rotation(
    roost: RoostDep, actor: ActorDep, device_id: str, body: RotateRequestIn | None = None
) -> dict[str, Any]:
    return await request_rotation(
        roost, actor, device_id, None if body is None else body.certificate
    )
