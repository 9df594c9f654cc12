"""The audit log route."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from roost.audit.service import AuditQuery
from roost.http import params as p
from roost.http import schemas as s
from roost.http.deps import ActorDep, RoostDep
from roost.store.queries import Page

router = APIRouter(tags=["audit"])


@router.get(
    "/audit",
    response_model=s.Page[s.AuditEntry],
    operation_id="list_audit",
    summary="Who changed what and when, before → after (operator and admin)",
    responses={403: {"model": s.Problem}},
)
async def list_audit(
    roost: RoostDep, actor: ActorDep, query: Annotated[p.AuditParams, Query()]
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
