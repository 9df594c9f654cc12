"""HTTP routes: consumers (apps reading granted telemetry with a consumer key)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Depends, Response
from pydantic import Field

from roost.core.ids import SLUG_PATTERN
from roost.http import schemas as s
from roost.http.deps import ActorDep, PageDep, get_roost
from roost.http.params import sortable
from roost.store.queries import Page
from roost.telemetry.consumers.service import SORTS, ConsumerService


class Services(Protocol):
    """What the consumer routes use of the running Roost."""

    @property
    def consumers(self) -> ConsumerService: ...


RoostDep = Annotated[Services, Depends(get_roost)]


router = APIRouter(tags=["consumers"])
ERRORS = s.problem_responses(403, 404, 409, 422)
GRANTS_DOC = (
    'A list of grants: {"devices": [ids]}, {"groups": [ids]} (members at read time), '
    '{"sensors": [{"device_id", "sensor_ids": [ids]}]}'
)


class ConsumerIn(s.Body):
    """A new consumer."""

    id: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        description="Default: generated",
        json_schema_extra=s.documented(pattern=SLUG_PATTERN),
    )
    name: str = Field(min_length=1, max_length=200)
    grants: list[dict[str, Any]] = Field(description=GRANTS_DOC)


class ConsumerPatch(s.Body):
    """Changes to a consumer; grants, when given, replace the old ones."""

    name: str | None = Field(None, min_length=1, max_length=200)
    grants: list[dict[str, Any]] | None = Field(None, description=GRANTS_DOC)


class ConsumerOut(s.Out):
    """A consumer (its key is never shown again)."""

    id: str
    name: str
    grants: list[dict[str, Any]]
    key_id: str = Field(description="Identifies the current key (roostc_<key_id>_…)")
    key_created_at: datetime
    created_at: datetime
    updated_at: datetime


class ConsumerWithKeyOut(ConsumerOut):
    """A consumer with its new key, shown this once."""

    key: str = Field(description="Send as Authorization: Bearer <key> on the read APIs")


@router.post(
    "/consumers",
    response_model=ConsumerWithKeyOut,
    status_code=201,
    operation_id="create_consumer",
    summary="Create a consumer with grants; its key is in the answer, shown once",
    responses=ERRORS,
)
async def create_consumer(roost: RoostDep, actor: ActorDep, body: ConsumerIn) -> dict[str, Any]:
    return await roost.consumers.create(actor, body.id, body.name, body.grants)


@router.get(
    "/consumers",
    response_model=s.Page[ConsumerOut],
    operation_id="list_consumers",
    openapi_extra=sortable(SORTS),
    summary="List the tenant's consumers",
    responses=ERRORS,
)
async def list_consumers(roost: RoostDep, actor: ActorDep, page: PageDep) -> Page[dict[str, Any]]:
    return await roost.consumers.list(actor, page)


@router.get(
    "/consumers/{consumer_id}",
    response_model=ConsumerOut,
    operation_id="get_consumer",
    summary="A consumer and its grants",
    responses=ERRORS,
)
async def get_consumer(roost: RoostDep, actor: ActorDep, consumer_id: str) -> dict[str, Any]:
    return await roost.consumers.get(actor, consumer_id)


@router.patch(
    "/consumers/{consumer_id}",
    response_model=ConsumerOut,
    operation_id="update_consumer",
    summary="Rename a consumer or replace its grants (effective on its next read)",
    responses=ERRORS,
)
async def update_consumer(
    roost: RoostDep, actor: ActorDep, consumer_id: str, body: ConsumerPatch
) -> dict[str, Any]:
    return await roost.consumers.update(actor, consumer_id, name=body.name, raw_grants=body.grants)


@router.delete(
    "/consumers/{consumer_id}",
    status_code=204,
    operation_id="delete_consumer",
    summary="Delete a consumer; its key stops working at once",
    responses=ERRORS,
)
async def delete_consumer(roost: RoostDep, actor: ActorDep, consumer_id: str) -> Response:
    await roost.consumers.delete(actor, consumer_id)
    return Response(status_code=204)


@router.post(
    "/consumers/{consumer_id}/keys",
    response_model=ConsumerWithKeyOut,
    status_code=201,
    operation_id="rotate_consumer_key",
    summary="Give a consumer a new key (the old one stops working at once)",
    responses=ERRORS,
)
async def rotate_consumer_key(roost: RoostDep, actor: ActorDep, consumer_id: str) -> dict[str, Any]:
    return await roost.consumers.rotate_key(actor, consumer_id)
