"""FastAPI dependencies of every room: the running Roost, the authenticated user, paging.

The HTTP shell knows no capability. A room's router types the running Roost with a Protocol of
what its routes use (``RoostDep = Annotated[Services, Depends(get_roost)]``), so it depends on the
services it calls, not on the runtime that wires them. Users are authenticated through the
:class:`UserAuthenticator` port, which the identity room's service implements.
"""

from __future__ import annotations

from typing import Annotated, Any, Protocol

from fastapi import Depends, Header, Query, Request, WebSocket
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from roost.core.access import Actor
from roost.errors import AuthenticationFailed
from roost.http import session
from roost.store.queries import DEFAULT_LIMIT, MAX_LIMIT, MAX_OFFSET, PageRequest

_bearer = HTTPBearer(
    auto_error=False,
    description="A login token from POST /api/v1/auth/login, or an API key (roost_…)",
)


class UserAuthenticator(Protocol):
    """Turns a bearer credential into the acting user (the identity service)."""

    async def authenticate(self, credential: str, *, allow_consumer: bool = False) -> Actor:
        """The actor holding ``credential`` (401 when it is missing or invalid)."""
        ...

    async def act_in_tenant(self, actor: Actor, tenant_id: str) -> Actor:
        """The superuser ``actor`` acting inside ``tenant_id``."""
        ...

    @property
    def secret_key(self) -> str:
        """The server's signing secret (the console's CSRF tokens derive from it)."""
        ...


def get_roost(request: Request) -> Any:
    """The Roost serving this app (each router types it with the Protocol of what it uses)."""
    return request.app.state.roost


def user_authenticator(request: Request) -> UserAuthenticator:
    """The identity service of the Roost serving this app."""
    users: UserAuthenticator = request.app.state.roost.identity
    return users


async def get_actor(
    request: Request,
    users: Annotated[UserAuthenticator, Depends(user_authenticator)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    x_roost_tenant: Annotated[
        str | None, Header(description="Superuser only: act inside this tenant")
    ] = None,
) -> Actor:
    """The caller, from ``Authorization: Bearer`` or the console's session cookie (see
    :mod:`roost.http.session`); 401 when missing, malformed or invalid."""
    if credentials is None or not credentials.credentials:
        return await cookie_actor(request, users, x_roost_tenant)
    actor = await users.authenticate(credentials.credentials)
    if x_roost_tenant:
        actor = await users.act_in_tenant(actor, x_roost_tenant)
    return actor


async def cookie_actor(
    request: Request, users: UserAuthenticator, x_roost_tenant: str | None
) -> Actor:
    """The user of the console's session cookie; a change also needs the CSRF header."""
    cookie = session.session_of(request)
    if cookie is None:
        raise AuthenticationFailed("send Authorization: Bearer <login token or API key>")
    actor = await users.authenticate(cookie)
    if request.method not in session.SAFE_METHODS:
        session.check_csrf(users.secret_key, cookie, request.headers.get(session.CSRF_HEADER))
    tenant = x_roost_tenant or request.cookies.get(session.TENANT_COOKIE)
    if tenant:
        actor = await users.act_in_tenant(actor, tenant)
    return actor


ActorDep = Annotated[Actor, Depends(get_actor)]


def websocket_token(websocket: WebSocket) -> str | None:
    """A user's bearer token at upgrade: the Authorization header, ?token=, or the console's
    session cookie when the page that opens the socket is ours (same Origin: no cross-site
    WebSocket can ride on the cookie)."""
    header = websocket.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    token = websocket.query_params.get("token")
    if token:
        return token
    cookie = session.session_of(websocket)
    if cookie is not None and session.same_origin(websocket):
        return cookie
    return None


def page_params(
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page")] = DEFAULT_LIMIT,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Items to skip")] = 0,
    sort: Annotated[
        str | None,
        Query(
            min_length=1, max_length=64, description="A field to sort by; prefix - for descending"
        ),
    ] = None,
) -> PageRequest:
    """Paging and sorting parameters shared by every collection."""
    return PageRequest(limit=limit, offset=offset, sort=sort)


PageDep = Annotated[PageRequest, Depends(page_params)]
