"""HTTP routes: reference tables (tenant-owned lookup data that rules join on)."""

from __future__ import annotations

from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from roost.alarms.reference import parse
from roost.alarms.reference.schemas import (
    CSV_EXAMPLE,
    JSON_EXAMPLE,
    ReferenceRowOut,
    ReferenceTableIn,
    ReferenceTableOut,
    ReferenceTableWithRows,
    ReferenceVersionOut,
)
from roost.alarms.reference.service import KEPT_VERSIONS, MAX_NAME_CHARS, SORTS, ReferenceService
from roost.core.ids import SLUG_PATTERN
from roost.http import schemas as s
from roost.http.deps import ActorDep, PageDep, get_roost
from roost.http.params import sortable
from roost.store.queries import Page


class Services(Protocol):
    """What these routes use of the running Roost."""

    @property
    def reference(self) -> ReferenceService: ...


RoostDep = Annotated[Services, Depends(get_roost)]

router = APIRouter(tags=["reference"])
ERRORS = s.problem_responses(403, 404, 422)

# Media types an upload may be sent as, and the format each one means.
UPLOAD_MEDIA_TYPES: dict[str, str] = {
    "text/csv": "csv",
    "application/csv": "csv",
    "application/json": "json",
}

TableName = Annotated[
    str,
    Path(
        max_length=MAX_NAME_CHARS,
        pattern=SLUG_PATTERN,
        description="The table's name: letters, digits and . _ : -",
    ),
]
RowKey = Annotated[
    str,
    Path(
        max_length=parse.MAX_KEY_CHARS,
        pattern=r"^[^/]+$",
        description="A row's key (a key holding / is found with the table's ?q=)",
    ),
]


def _upload_body() -> dict[str, Any]:
    """The request body of a replace as OpenAPI content (the route reads the raw body)."""
    schema = ReferenceTableIn.model_json_schema(ref_template="#/components/schemas/{model}")
    schema.pop("$defs", None)
    return {
        "required": True,
        "description": (
            "The whole table. CSV: a header row, then one row per line; the key column is "
            "?key= (default: the first column). A cell is text, except that an empty cell is "
            "null, true/false are booleans and a JSON number (12, -3.5, 1e3; not 007) is a "
            "number. JSON: the key column and the rows, values as sent (strings, numbers, "
            f"booleans, null). At most {parse.MAX_ROWS} rows, {parse.MAX_COLUMNS} columns and "
            f"{parse.MAX_UPLOAD_BYTES} bytes; keys at most {parse.MAX_KEY_CHARS} characters."
        ),
        "content": {
            "text/csv": {"schema": {"type": "string"}, "example": CSV_EXAMPLE},
            "application/json": {"schema": schema, "example": JSON_EXAMPLE},
        },
    }


def _upload_format(request: Request) -> str:
    """The format the Content-Type names (described when unsupported)."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not media_type:
        return "a body without Content-Type"
    return UPLOAD_MEDIA_TYPES.get(media_type, media_type)


@router.get(
    "/reference-tables",
    response_model=s.Page[ReferenceTableOut],
    operation_id="list_reference_tables",
    openapi_extra=sortable(SORTS),
    summary="List the tenant's reference tables (metadata, no rows)",
    responses=ERRORS,
)
async def list_reference_tables(
    roost: RoostDep, actor: ActorDep, page: PageDep
) -> Page[dict[str, Any]]:
    return await roost.reference.list(actor, page)


@router.put(
    "/reference-tables/{table}",
    response_model=ReferenceTableOut,
    operation_id="replace_reference_table",
    summary="Create or replace a reference table whole, from CSV or JSON (a new version)",
    description=(
        "All or nothing: every row is checked first, and one bad row (wrong number of cells, "
        "empty or duplicate key, a value too long, bad UTF-8, too many rows) refuses the upload "
        "with 422, its `errors` naming each bad row (`line` of the CSV file, 1 = the header; "
        "`row`, 1 = the first data row) and the reason; nothing is replaced. Lookups see the "
        f"new version at once. The rows of the last {KEPT_VERSIONS} versions are kept."
    ),
    openapi_extra={"requestBody": _upload_body()},
    responses={
        403: {"model": s.Problem},
        409: {"model": s.Problem, "description": "Replaced by another upload at the same time"},
        413: {"model": s.Problem, "description": "The upload is over the size limit"},
        415: {"model": s.Problem, "description": "Not CSV or JSON"},
        422: {"model": s.Problem, "description": "Refused: `errors` names every bad row"},
    },
)
async def replace_reference_table(
    roost: RoostDep,
    actor: ActorDep,
    request: Request,
    table: TableName,
    key: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=parse.MAX_COLUMN_CHARS,
            description="CSV only: the key column (default: the first column)",
        ),
    ] = None,
) -> dict[str, Any]:
    return await roost.reference.replace(
        actor, table, await request.body(), _upload_format(request), key=key
    )


@router.get(
    "/reference-tables/{table}",
    response_model=ReferenceTableWithRows,
    operation_id="get_reference_table",
    summary="A reference table's metadata and a page of its rows (q searches keys and values)",
    responses=ERRORS,
)
async def get_reference_table(
    roost: RoostDep,
    actor: ActorDep,
    table: TableName,
    page: PageDep,
    q: Annotated[
        str | None,
        Query(min_length=1, max_length=200, description="Case-insensitive text in any value"),
    ] = None,
    version: Annotated[
        int | None,
        Query(
            ge=1,
            le=2**31 - 1,
            description=f"Rows of this version (one of the last {KEPT_VERSIONS}); default current",
        ),
    ] = None,
) -> dict[str, Any]:
    return await roost.reference.get(actor, table, page, q=q, version=version)


@router.get(
    "/reference-tables/{table}/rows/{key}",
    response_model=ReferenceRowOut,
    operation_id="get_reference_row",
    summary="One row of a reference table's current version, by its key",
    responses=ERRORS,
)
async def get_reference_row(
    roost: RoostDep, actor: ActorDep, table: TableName, key: RowKey
) -> dict[str, Any]:
    return await roost.reference.get_row(actor, table, key)


@router.get(
    "/reference-tables/{table}/versions",
    response_model=s.Page[ReferenceVersionOut],
    operation_id="list_reference_table_versions",
    summary="A reference table's versions, newest first: who uploaded each, when, how many rows",
    responses=ERRORS,
)
async def list_reference_table_versions(
    roost: RoostDep, actor: ActorDep, table: TableName, page: PageDep
) -> Page[dict[str, Any]]:
    return await roost.reference.versions(actor, table, page)


@router.delete(
    "/reference-tables/{table}",
    status_code=204,
    operation_id="delete_reference_table",
    summary="Delete a reference table and its history; lookups on it find nothing",
    responses=ERRORS,
)
async def delete_reference_table(roost: RoostDep, actor: ActorDep, table: TableName) -> Response:
    await roost.reference.delete(actor, table)
    return Response(status_code=204)
