"""The device's own door ``GET /api/v1/device``: who the presented credential proves it is.

The device agent's metadata service reads it (id, tenant, name, site, model, groups, tags) to
answer local apps and containers; any device credential works (token, SAS, client certificate).
It lives with the credentials because it answers for one: the record itself is the inventory's.
"""

from __future__ import annotations

from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Depends

from roost.credentials.dependencies import DeviceDep
from roost.http import schemas as s
from roost.http.deps import get_roost
from roost.inventory.devices.schemas import DeviceSelfOut
from roost.inventory.devices.service import DeviceService


class Services(Protocol):
    """What the route uses of the running Roost."""

    @property
    def devices(self) -> DeviceService: ...


RoostDep = Annotated[Services, Depends(get_roost)]

router = APIRouter(prefix="/device", tags=["devices (devices)"])


@router.get(
    "",
    response_model=DeviceSelfOut,
    operation_id="device_get_own_identity",
    summary="(device) The caller's identity: id, tenant, name, site, model, groups, tags",
    responses={401: {"model": s.Problem}, 403: {"model": s.Problem}},
)
async def device_get_identity(roost: RoostDep, identity: DeviceDep) -> dict[str, Any]:
    return await roost.devices.own(identity)
