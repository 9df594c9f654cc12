"""Routes for device keys: make one (shown once), list, revoke; devices sign SAS tokens by them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Depends, Response
from pydantic import Field

from roost.credentials.keys.service import KEY_SORTS, KeyService
from roost.http import schemas as s
from roost.http.deps import ActorDep, PageDep, get_roost
from roost.http.params import sortable
from roost.store.queries import Page


class Services(Protocol):
    """What the device key routes use of the running Roost."""

    @property
    def keys(self) -> KeyService: ...


RoostDep = Annotated[Services, Depends(get_roost)]


# Tagged "provisioning" as they were before the keys had a room of their own: generated clients
# group operations by tag.
router = APIRouter(prefix="/devices", tags=["provisioning"])
ERRORS = s.problem_responses(403, 404, 409, 422)


class DeviceKeyIn(s.Body):
    """A new device key."""

    name: str = Field(default="", max_length=200)


class DeviceKeyOut(s.Out):
    """A device key as listed (never the key)."""

    id: str
    device_id: str
    name: str
    created_at: datetime
    revoked_at: datetime | None = None


class DeviceKeyCreated(DeviceKeyOut):
    """A new device key, with the key itself (Base64), shown this once."""

    key: str


@router.post(
    "/{device_id}/keys",
    response_model=DeviceKeyCreated,
    status_code=201,
    operation_id="create_device_key",
    summary="Make a device key for SAS tokens (shown once; operator)",
    responses=ERRORS,
)
async def create_device_key(
    roost: RoostDep, actor: ActorDep, device_id: str, body: DeviceKeyIn | None = None
) -> dict[str, Any]:
    body = body or DeviceKeyIn()
    row, key = await roost.keys.create_key(actor, device_id, body.name)
    return {**row, "key": key}


@router.get(
    "/{device_id}/keys",
    response_model=s.Page[DeviceKeyOut],
    operation_id="list_device_keys",
    openapi_extra=sortable(KEY_SORTS),
    summary="List a device's keys, revoked ones included (never the key itself)",
    responses=ERRORS,
)
async def list_device_keys(
    roost: RoostDep, actor: ActorDep, device_id: str, page: PageDep
) -> Page[dict[str, Any]]:
    return await roost.keys.list_keys(actor, device_id, page)


@router.delete(
    "/{device_id}/keys/{key_id}",
    status_code=204,
    operation_id="revoke_device_key",
    summary="Revoke a device key at once, in every process; its sessions close (operator)",
    responses=ERRORS,
)
async def revoke_device_key(
    roost: RoostDep, actor: ActorDep, device_id: str, key_id: str
) -> Response:
    await roost.keys.revoke_key(actor, device_id, key_id)
    return Response(status_code=204)
