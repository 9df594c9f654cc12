"""The audit log route."""

from __future__ import annotations

from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Depends, Query

from roost.audit.schemas import AuditEntry, AuditParams
from roost.audit.service import AuditQuery, AuditService
from roost.http import schemas as s
from roost.http.deps import ActorDep, get_roost
from roost.http.params import sortable
from roost.store.queries import Page


class Services(Protocol):
    """What the audit routes use of the running Roost."""

    @property
    def audit(self) -> AuditService: ...


RoostDep = Annotated[Services, Depends(get_roost)]


router = APIRouter(tags=["audit"])


@router.get(
    "/audit",
    response_model=s.Page[AuditEntry],
    operation_id="list_audit",
    openapi_extra=sortable(AuditService.SORTS),
    summary="Who changed what and when, before → after (operator and admin)",
    responses={403: {"model": s.Problem}},
)
async def list_audit(
    roost: RoostDep, actor: ActorDep, query: Annotated[AuditParams, Query()]
) -> Page[dict[str, Any]]:
    audit_query = AuditQuery(
        entity_type=query.entity_type,
        entity_id=query.entity_id,
        device_id=query.device_id,
        actor=query.actor,
        action=query.action,
        since=query.since,
        until=query.until,
    )
    return await roost.audit.list(actor, audit_query, query.page())
