"""The audit log route."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query

from roost.http import schemas as s
from roost.http.deps import ActorDep, PageDep, RoostDep
from roost.services.audit import AuditQuery
from roost.store.queries import Page

router = APIRouter(tags=["audit"])


@router.get("/audit", response_model=s.Page[s.AuditEntry], operation_id="list_audit",
            summary="Who changed what and when, before → after (operator and admin)",
            responses={403: {"model": s.Problem}})
async def list_audit(
    roost: RoostDep, actor: ActorDep, page: PageDep,
    entity_type: Annotated[str | None, Query(description="device, sensor, site, user, …")] = None,
    entity_id: Annotated[str | None, Query()] = None,
    device_id: Annotated[str | None, Query(description="A device and everything under it")] = None,
    actor_name: Annotated[str | None, Query(alias="actor")] = None,
    action: Annotated[str | None, Query(description="create, update, delete, …")] = None,
    since: Annotated[datetime | None, Query(description="RFC 3339, inclusive")] = None,
    until: Annotated[datetime | None, Query(description="RFC 3339, exclusive")] = None,
) -> Page[dict[str, Any]]:
    query = AuditQuery(entity_type=entity_type, entity_id=entity_id, device_id=device_id,
                       actor=actor_name, action=action, since=since, until=until)
    return await roost.audit.list(actor, query, page)
