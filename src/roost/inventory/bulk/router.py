"""Routes for bulk import and export of devices (CSV or JSON files).

Registered before the devices router so that ``/devices/import`` and ``/devices/export`` are not
taken for device ids.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Protocol

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import Field

from roost.http import schemas as s
from roost.http.deps import ActorDep, get_roost
from roost.inventory.bulk import export, importer
from roost.inventory.bulk.parse import CSV_COLUMNS
from roost.inventory.bulk.schemas import ImportReport
from roost.inventory.devices.schemas import ComponentIn, DeviceFilters, DeviceIn, SensorIn
from roost.inventory.devices.service import DeviceService


class Services(Protocol):
    """What the import and export routes use of the running Roost."""

    @property
    def devices(self) -> DeviceService: ...


RoostDep = Annotated[Services, Depends(get_roost)]


router = APIRouter(prefix="/devices", tags=["devices"])

# Media types an import file may be sent as, and the format each one means.
IMPORT_MEDIA_TYPES: dict[str, str] = {
    "text/csv": "csv",
    "application/csv": "csv",
    "application/json": "json",
}
EXPORT_MEDIA_TYPES: dict[str, str] = {
    "csv": "text/csv; charset=utf-8",
    "json": "application/json",
}


class ImportItem(DeviceIn):
    """One device of a JSON import: the create body, plus its sensors and components."""

    id: str = Field(min_length=1, max_length=128, description="Letters, digits and . _ : -")
    tags: dict[str, str | None] | None = Field(  # type: ignore[assignment]
        default=None, description="With on_existing=update, a null value removes the tag"
    )
    sensors: list[SensorIn] | None = None
    components: list[ComponentIn] | None = Field(
        default=None, description="Each with an id; a parent_id names another of the list"
    )


def _import_body_schema() -> dict[str, Any]:
    """The request body of an import as OpenAPI content (the route reads the raw body)."""
    item = ImportItem.model_json_schema(ref_template="#/components/schemas/{model}")
    item.pop("$defs", None)
    csv_example = (
        "id,name,site_id,model_id,group_ids,tag.floor\n"
        "kiosk-001,Kiosk 1,paris,c2,store-paris;kiosks,1\n"
    )
    return {
        "required": True,
        "description": "The file itself. CSV columns: "
        + ",".join(CSV_COLUMNS)
        + " (group ids separated by ;) and tag.<key> for each tag; an empty cell is no value.",
        "content": {
            "text/csv": {"schema": {"type": "string"}, "example": csv_example},
            "application/json": {"schema": {"type": "array", "items": item}},
        },
    }


class ExportParams(DeviceFilters):
    """Which devices to export, and in which format."""

    format: Literal["csv", "json"] = Field(
        "csv", description="csv, or json with sensors and components"
    )


def _import_format(request: Request, fmt: str | None) -> str:
    """The format named by ?format=, else by the Content-Type (described when unsupported)."""
    if fmt is not None:
        return fmt
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not media_type:
        return "a body without Content-Type (send text/csv or application/json)"
    return IMPORT_MEDIA_TYPES.get(media_type, f"{media_type} (send text/csv or application/json)")


@router.post(
    "/import",
    response_model=ImportReport,
    operation_id="import_devices",
    summary="Import devices from a CSV or JSON file (all-or-nothing unless atomic=false)",
    description=(
        "Validates every row first; by default one bad row refuses the whole file (422, with "
        "every bad row in `errors`: its 1-based data row number, device id, field and reason) "
        "and nothing is written. `atomic=false` imports the good rows and reports the bad ones; "
        "`dry_run=true` checks and counts without writing. `on_existing` decides what a row whose "
        "device exists does: `error`, `skip`, or `update` (fields and tags the row gives are set; "
        "missing groups, sensors and components are added)."
    ),
    openapi_extra={"requestBody": _import_body_schema()},
    responses={
        400: {"model": s.Problem, "description": "The file cannot be decoded"},
        403: {"model": s.Problem},
        415: {"model": s.Problem, "description": "Not CSV or JSON"},
        422: {"model": s.Problem, "description": "Refused: `errors` lists every bad row"},
    },
)
async def import_devices(
    roost: RoostDep,
    actor: ActorDep,
    request: Request,
    dry_run: Annotated[bool, Query(description="Check and count, write nothing")] = False,
    on_existing: Annotated[
        Literal["error", "skip", "update"], Query(description="What a row whose device exists does")
    ] = "error",
    atomic: Annotated[
        bool, Query(description="All-or-nothing (default) or keep the good rows")
    ] = True,
    format: Annotated[
        Literal["csv", "json"] | None, Query(description="Overrides the Content-Type")
    ] = None,
) -> dict[str, Any]:
    return await importer.import_file(
        roost.devices,
        actor,
        await request.body(),
        _import_format(request, format),
        dry_run=dry_run,
        on_existing=on_existing,
        atomic=atomic,
    )


@router.get(
    "/export",
    operation_id="export_devices",
    summary="Export devices as a CSV or JSON file that imports back",
    response_class=Response,
    responses={
        200: {
            "description": "The file (Content-Disposition: attachment)",
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "application/json": {"schema": {"type": "array", "items": {"type": "object"}}},
            },
        },
        404: {"model": s.Problem, "description": "The group filter names no group"},
    },
)
async def export_devices(
    roost: RoostDep, actor: ActorDep, params: Annotated[ExportParams, Query()]
) -> Response:
    query = params.device_query()
    content = await export.export_devices(roost.devices, actor, query, params.format)
    return Response(
        content,
        media_type=EXPORT_MEDIA_TYPES[params.format],
        headers={"Content-Disposition": f"attachment; filename=devices.{params.format}"},
    )
