"""Routes for device credentials: device tokens (issue once, list, revoke)."""

from __future__ import annotations

from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Depends, Response

from roost.credentials.tokens.schemas import DeviceTokenCreated, DeviceTokenIn, DeviceTokenOut
from roost.credentials.tokens.service import TOKEN_SORTS, CredentialService
from roost.http import schemas as s
from roost.http.deps import ActorDep, PageDep, get_roost
from roost.http.params import sortable
from roost.store.queries import Page


class Services(Protocol):
    """What the device token routes use of the running Roost."""

    @property
    def credentials(self) -> CredentialService: ...


RoostDep = Annotated[Services, Depends(get_roost)]


router = APIRouter(prefix="/devices", tags=["credentials"])
ERRORS: dict[int | str, dict[str, Any]] = {
    403: {"model": s.Problem},
    404: {"model": s.Problem},
    422: {"model": s.Problem},
}


@router.post(
    "/{device_id}/tokens",
    response_model=DeviceTokenCreated,
    status_code=201,
    operation_id="create_device_token",
    summary="Issue a device token (shown once; operator)",
    responses=ERRORS,
)
async def create_device_token(
    roost: RoostDep, actor: ActorDep, device_id: str, body: DeviceTokenIn | None = None
) -> dict[str, Any]:
    body = body or DeviceTokenIn()
    row, token = await roost.credentials.issue_token(
        actor, device_id, name=body.name, expires_at=body.expires_at
    )
    return {**row, "token": token}


@router.get(
    "/{device_id}/tokens",
    response_model=s.Page[DeviceTokenOut],
    operation_id="list_device_tokens",
    openapi_extra=sortable(TOKEN_SORTS),
    summary="List a device's tokens, revoked ones included (never the token itself)",
    responses=ERRORS,
)
async def list_device_tokens(
    roost: RoostDep, actor: ActorDep, device_id: str, page: PageDep
) -> Page[dict[str, Any]]:
    return await roost.credentials.list_tokens(actor, device_id, page)


@router.delete(
    "/{device_id}/tokens/{token_id}",
    status_code=204,
    operation_id="revoke_device_token",
    summary="Revoke a device token at once, in every process (operator)",
    responses=ERRORS,
)
async def revoke_device_token(
    roost: RoostDep, actor: ActorDep, device_id: str, token_id: str
) -> Response:
    await roost.credentials.revoke_token(actor, device_id, token_id)
    return Response(status_code=204)
