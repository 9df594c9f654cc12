"""Routes for devices, their sensors, components and history, and group membership."""

from __future__ import annotations

from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Depends, Query, Response

from roost.audit.schemas import AuditEntry
from roost.audit.service import AuditQuery, AuditService
from roost.core.access import Role
from roost.http import params as p
from roost.http import schemas as s
from roost.http.deps import ActorDep, get_roost
from roost.inventory.devices.components import COMPONENT_SORTS
from roost.inventory.devices.schemas import (
    ComponentIn,
    ComponentOut,
    ComponentParams,
    ComponentPatch,
    DeviceIn,
    DeviceOut,
    DeviceParams,
    DevicePatch,
    SensorIn,
    SensorOut,
    SensorParams,
    SensorPatch,
)
from roost.inventory.devices.sensors import SENSOR_SORTS
from roost.inventory.devices.service import DEVICE_SORTS, DeviceService
from roost.inventory.schemas import GroupMembersAdded, GroupMembersIn
from roost.store.queries import Page


class Services(Protocol):
    """What the device routes use of the running Roost."""

    @property
    def audit(self) -> AuditService: ...

    @property
    def devices(self) -> DeviceService: ...


RoostDep = Annotated[Services, Depends(get_roost)]


router = APIRouter(prefix="/devices", tags=["devices"])
groups_router = APIRouter(prefix="/groups", tags=["groups"])
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": s.Problem}}
WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": s.Problem},
    409: {"model": s.Problem},
    422: {"model": s.Problem},
}


@router.get(
    "",
    response_model=s.Page[DeviceOut],
    operation_id="list_devices",
    openapi_extra=p.sortable(DEVICE_SORTS),
    summary="List devices (filter by site, model, firmware, customer, group, tag, text)",
)
async def list_devices(
    roost: RoostDep, actor: ActorDep, query: Annotated[DeviceParams, Query()]
) -> Page[dict[str, Any]]:
    return await roost.devices.list(actor, query.device_query(), query.page())


@router.post(
    "",
    response_model=DeviceOut,
    status_code=201,
    operation_id="create_device",
    summary="Register a device",
    responses=WRITE_ERRORS,
)
async def create_device(roost: RoostDep, actor: ActorDep, body: DeviceIn) -> dict[str, Any]:
    return await roost.devices.create(actor, body.model_dump(exclude_unset=True))


@router.get(
    "/{device_id}",
    response_model=DeviceOut,
    operation_id="get_device",
    summary="Get a device",
    responses=NOT_FOUND,
)
async def get_device(roost: RoostDep, actor: ActorDep, device_id: str) -> dict[str, Any]:
    return await roost.devices.get(actor, device_id)


@router.patch(
    "/{device_id}",
    response_model=DeviceOut,
    operation_id="update_device",
    summary="Change a device (tags merge; a null tag value removes it)",
    responses=WRITE_ERRORS,
)
async def update_device(
    roost: RoostDep, actor: ActorDep, device_id: str, body: DevicePatch
) -> dict[str, Any]:
    return await roost.devices.update(actor, device_id, body.model_dump(exclude_unset=True))


@router.delete(
    "/{device_id}",
    status_code=204,
    operation_id="delete_device",
    summary="Delete a device with its sensors and components",
    responses=NOT_FOUND,
)
async def delete_device(roost: RoostDep, actor: ActorDep, device_id: str) -> Response:
    await roost.devices.delete(actor, device_id)
    return Response(status_code=204)


@router.get(
    "/{device_id}/history",
    response_model=s.Page[AuditEntry],
    operation_id="device_history",
    openapi_extra=p.sortable(AuditService.SORTS),
    summary="Every recorded change of a device and what hangs under it",
    responses=NOT_FOUND,
)
async def device_history(
    roost: RoostDep, actor: ActorDep, device_id: str, query: Annotated[p.PageParams, Query()]
) -> Page[dict[str, Any]]:
    # Reading a device's history needs only read access to the device; a deleted device's
    # history stays readable through /audit.
    await roost.devices.get(actor, device_id)
    return await roost.audit.list(
        actor, AuditQuery(device_id=device_id), query.page(), min_role=Role.VIEWER
    )


# -- sensors ----------------------------------------------------------------------------------


@router.get(
    "/{device_id}/sensors",
    response_model=s.Page[SensorOut],
    operation_id="list_sensors",
    openapi_extra=p.sortable(SENSOR_SORTS),
    summary="List a device's sensors",
    responses=NOT_FOUND,
)
async def list_sensors(
    roost: RoostDep, actor: ActorDep, device_id: str, query: Annotated[SensorParams, Query()]
) -> Page[dict[str, Any]]:
    return await roost.devices.list_sensors(
        actor, device_id, query.page(), type=query.type, path=query.path, q=query.q
    )


@router.post(
    "/{device_id}/sensors",
    response_model=SensorOut,
    status_code=201,
    operation_id="create_sensor",
    summary="Add a sensor to a device",
    responses=WRITE_ERRORS,
)
async def create_sensor(
    roost: RoostDep, actor: ActorDep, device_id: str, body: SensorIn
) -> dict[str, Any]:
    return await roost.devices.create_sensor(actor, device_id, body.model_dump(exclude_unset=True))


@router.get(
    "/{device_id}/sensors/{sensor_id}",
    response_model=SensorOut,
    operation_id="get_sensor",
    summary="Get a sensor",
    responses=NOT_FOUND,
)
async def get_sensor(
    roost: RoostDep, actor: ActorDep, device_id: str, sensor_id: str
) -> dict[str, Any]:
    return await roost.devices.get_sensor(actor, device_id, sensor_id)


@router.patch(
    "/{device_id}/sensors/{sensor_id}",
    response_model=SensorOut,
    operation_id="update_sensor",
    summary="Change a sensor",
    responses=WRITE_ERRORS,
)
async def update_sensor(
    roost: RoostDep, actor: ActorDep, device_id: str, sensor_id: str, body: SensorPatch
) -> dict[str, Any]:
    return await roost.devices.update_sensor(
        actor, device_id, sensor_id, body.model_dump(exclude_unset=True)
    )


@router.delete(
    "/{device_id}/sensors/{sensor_id}",
    status_code=204,
    operation_id="delete_sensor",
    summary="Remove a sensor",
    responses=NOT_FOUND,
)
async def delete_sensor(
    roost: RoostDep, actor: ActorDep, device_id: str, sensor_id: str
) -> Response:
    await roost.devices.delete_sensor(actor, device_id, sensor_id)
    return Response(status_code=204)


# -- components -------------------------------------------------------------------------------


@router.get(
    "/{device_id}/components",
    response_model=s.Page[ComponentOut],
    operation_id="list_components",
    openapi_extra=p.sortable(COMPONENT_SORTS),
    summary="List a device's components",
    responses=NOT_FOUND,
)
async def list_components(
    roost: RoostDep, actor: ActorDep, device_id: str, query: Annotated[ComponentParams, Query()]
) -> Page[dict[str, Any]]:
    return await roost.devices.list_components(
        actor, device_id, query.page(), parent_id=query.parent_id, kind=query.kind, q=query.q
    )


@router.post(
    "/{device_id}/components",
    response_model=ComponentOut,
    status_code=201,
    operation_id="create_component",
    summary="Add a component or sub-component",
    responses=WRITE_ERRORS,
)
async def create_component(
    roost: RoostDep, actor: ActorDep, device_id: str, body: ComponentIn
) -> dict[str, Any]:
    return await roost.devices.create_component(
        actor, device_id, body.model_dump(exclude_unset=True)
    )


@router.get(
    "/{device_id}/components/{component_id}",
    response_model=ComponentOut,
    operation_id="get_component",
    summary="Get a component",
    responses=NOT_FOUND,
)
async def get_component(
    roost: RoostDep, actor: ActorDep, device_id: str, component_id: str
) -> dict[str, Any]:
    return await roost.devices.get_component(actor, device_id, component_id)


@router.patch(
    "/{device_id}/components/{component_id}",
    response_model=ComponentOut,
    operation_id="update_component",
    summary="Change or move a component",
    responses=WRITE_ERRORS,
)
async def update_component(
    roost: RoostDep, actor: ActorDep, device_id: str, component_id: str, body: ComponentPatch
) -> dict[str, Any]:
    return await roost.devices.update_component(
        actor, device_id, component_id, body.model_dump(exclude_unset=True)
    )


@router.delete(
    "/{device_id}/components/{component_id}",
    status_code=204,
    operation_id="delete_component",
    summary="Remove a component and its sub-components",
    responses=NOT_FOUND,
)
async def delete_component(
    roost: RoostDep, actor: ActorDep, device_id: str, component_id: str
) -> Response:
    await roost.devices.delete_component(actor, device_id, component_id)
    return Response(status_code=204)


# -- group membership -------------------------------------------------------------------------


@groups_router.get(
    "/{group_id}/devices",
    response_model=s.Page[DeviceOut],
    operation_id="list_group_devices",
    openapi_extra=p.sortable(DEVICE_SORTS),
    summary="Devices in a group (static or dynamic)",
    responses=NOT_FOUND,
)
async def list_group_devices(
    roost: RoostDep, actor: ActorDep, group_id: str, query: Annotated[DeviceParams, Query()]
) -> Page[dict[str, Any]]:
    return await roost.devices.list(actor, query.device_query(group=group_id), query.page())


@groups_router.post(
    "/{group_id}/devices",
    response_model=GroupMembersAdded,
    operation_id="add_group_devices",
    summary="Add devices to a static group",
    responses=WRITE_ERRORS,
)
async def add_group_devices(
    roost: RoostDep, actor: ActorDep, group_id: str, body: GroupMembersIn
) -> dict[str, Any]:
    return {"added": await roost.devices.add_to_group(actor, group_id, body.device_ids)}


@groups_router.delete(
    "/{group_id}/devices/{device_id}",
    status_code=204,
    operation_id="remove_group_device",
    summary="Take a device out of a static group",
    responses=NOT_FOUND,
)
async def remove_group_device(
    roost: RoostDep, actor: ActorDep, group_id: str, device_id: str
) -> Response:
    await roost.devices.remove_from_group(actor, group_id, device_id)
    return Response(status_code=204)
