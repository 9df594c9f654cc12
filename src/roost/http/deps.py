"""FastAPI dependencies: the running Roost, the authenticated actor, paging parameters."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from roost.core.access import Actor
from roost.errors import AuthenticationFailed
from roost.runtime import Roost
from roost.store.queries import DEFAULT_LIMIT, MAX_LIMIT, PageRequest

_bearer = HTTPBearer(
    auto_error=False,
    description="A login token from POST /api/v1/auth/login, or an API key (roost_…)",
)


def get_roost(request: Request) -> Roost:
    """The Roost instance serving this app."""
    roost: Roost = request.app.state.roost
    return roost


RoostDep = Annotated[Roost, Depends(get_roost)]


async def get_actor(
    roost: RoostDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    x_roost_tenant: Annotated[
        str | None, Header(description="Superuser only: act inside this tenant")
    ] = None,
) -> Actor:
    """The caller, from ``Authorization: Bearer``; 401 when missing, malformed or invalid."""
    if credentials is None or not credentials.credentials:
        raise AuthenticationFailed("send Authorization: Bearer <login token or API key>")
    actor = await roost.identity.authenticate(credentials.credentials)
    if x_roost_tenant:
        actor = await roost.identity.act_in_tenant(actor, x_roost_tenant)
    return actor


ActorDep = Annotated[Actor, Depends(get_actor)]


def page_params(
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page")] = DEFAULT_LIMIT,
    offset: Annotated[int, Query(ge=0, description="Items to skip")] = 0,
    sort: Annotated[
        str | None, Query(max_length=64, description="A field to sort by; prefix - for descending")
    ] = None,
) -> PageRequest:
    """Paging and sorting parameters shared by every collection."""
    return PageRequest(limit=limit, offset=offset, sort=sort)


PageDep = Annotated[PageRequest, Depends(page_params)]
