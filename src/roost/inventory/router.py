"""CRUD routes for customers, sites, manufacturers, device models, firmware and groups."""

from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Depends, Query, Response, status
from pydantic import BaseModel

from roost.http import params as p
from roost.http import schemas as s
from roost.http.deps import ActorDep, get_roost
from roost.inventory.schemas import (
    CustomerIn,
    CustomerOut,
    CustomerParams,
    CustomerPatch,
    DeviceModelIn,
    DeviceModelOut,
    DeviceModelParams,
    DeviceModelPatch,
    FirmwareIn,
    FirmwareOut,
    FirmwareParams,
    FirmwarePatch,
    GroupIn,
    GroupOut,
    GroupParams,
    GroupPatch,
    ManufacturerIn,
    ManufacturerOut,
    ManufacturerParams,
    ManufacturerPatch,
    SiteIn,
    SiteOut,
    SiteParams,
    SitePatch,
)
from roost.inventory.service import RESOURCES, InventoryService


def crud_router(
    kind: str,
    path: str,
    tag: str,
    create: type[BaseModel],
    patch: type[BaseModel],
    out: type[BaseModel],
    list_params: type[p.ListParams],
) -> APIRouter:
    """List/create/get/patch/delete routes for one inventory kind."""
    router = APIRouter(prefix=f"/{path}", tags=[tag])
    label = kind.replace("_", " ")

    async def list_items(
        roost: RoostDep,
        actor: ActorDep,
        query: Annotated[list_params, Query()],  # type: ignore[valid-type]
    ) -> Any:
        params: p.ListParams = query
        return await roost.inventory.list(actor, kind, params.page(), params.filters(), params.q)

    async def create_item(roost: RoostDep, actor: ActorDep, body: create) -> Any:  # type: ignore[valid-type]
        data: BaseModel = body
        return await roost.inventory.create(actor, kind, data.model_dump(exclude_unset=True))

    async def get_item(roost: RoostDep, actor: ActorDep, item_id: str) -> Any:
        return await roost.inventory.get(actor, kind, item_id)

    async def patch_item(roost: RoostDep, actor: ActorDep, item_id: str, body: patch) -> Any:  # type: ignore[valid-type]
        changes: BaseModel = body
        return await roost.inventory.update(
            actor, kind, item_id, changes.model_dump(exclude_unset=True)
        )

    async def delete_item(roost: RoostDep, actor: ActorDep, item_id: str) -> Response:
        await roost.inventory.delete(actor, kind, item_id)
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    router.add_api_route(
        "",
        list_items,
        methods=["GET"],
        response_model=s.Page[out],  # type: ignore[valid-type]
        operation_id=f"list_{kind}s",
        openapi_extra=p.sortable(RESOURCES[kind].sorts),
        summary=f"List {label}s (paginated, filterable, sortable)",
    )
    router.add_api_route(
        "",
        create_item,
        methods=["POST"],
        response_model=out,
        status_code=201,
        operation_id=f"create_{kind}",
        summary=f"Create a {label}",
        responses={409: {"model": s.Problem}, 422: {"model": s.Problem}},
    )
    router.add_api_route(
        "/{item_id}",
        get_item,
        methods=["GET"],
        response_model=out,
        operation_id=f"get_{kind}",
        summary=f"Get a {label}",
        responses={404: {"model": s.Problem}},
    )
    router.add_api_route(
        "/{item_id}",
        patch_item,
        methods=["PATCH"],
        response_model=out,
        operation_id=f"update_{kind}",
        summary=f"Change some fields of a {label}",
        responses={404: {"model": s.Problem}, 422: {"model": s.Problem}},
    )
    router.add_api_route(
        "/{item_id}",
        delete_item,
        methods=["DELETE"],
        status_code=204,
        operation_id=f"delete_{kind}",
        summary=f"Delete a {label}",
        responses={404: {"model": s.Problem}, 409: {"model": s.Problem}},
    )
    return router


class Services(Protocol):
    """What the inventory routes use of the running Roost."""

    @property
    def inventory(self) -> InventoryService: ...


RoostDep = Annotated[Services, Depends(get_roost)]


ROUTERS = [
    crud_router(
        "customer",
        "customers",
        "inventory",
        CustomerIn,
        CustomerPatch,
        CustomerOut,
        CustomerParams,
    ),
    crud_router("site", "sites", "inventory", SiteIn, SitePatch, SiteOut, SiteParams),
    crud_router(
        "manufacturer",
        "manufacturers",
        "inventory",
        ManufacturerIn,
        ManufacturerPatch,
        ManufacturerOut,
        ManufacturerParams,
    ),
    crud_router(
        "device_model",
        "device-models",
        "inventory",
        DeviceModelIn,
        DeviceModelPatch,
        DeviceModelOut,
        DeviceModelParams,
    ),
    crud_router(
        "firmware",
        "firmware",
        "inventory",
        FirmwareIn,
        FirmwarePatch,
        FirmwareOut,
        FirmwareParams,
    ),
    crud_router("group", "groups", "groups", GroupIn, GroupPatch, GroupOut, GroupParams),
]
