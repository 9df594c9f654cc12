"""Routes for login, tenants, users and API keys."""

from __future__ import annotations

from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Depends, Query, Request, Response

from roost.errors import InvalidInput
from roost.http import schemas as s
from roost.http.deps import ActorDep, PageDep, get_roost
from roost.http.params import sortable
from roost.identity.apikeys import API_KEY_SORTS
from roost.identity.schemas import (
    ApiKeyCreated,
    ApiKeyIn,
    ApiKeyOut,
    LoginIn,
    LoginOut,
    RoleName,
    TenantIn,
    TenantOut,
    TenantPatch,
    UserId,
    UserIn,
    UserOut,
    UserPatch,
)
from roost.identity.service import IdentityService
from roost.identity.tenants import TenantDirectory
from roost.identity.users import UserDirectory
from roost.store.queries import Page


class Services(Protocol):
    """What the identity routes use of the running Roost."""

    @property
    def identity(self) -> IdentityService: ...


RoostDep = Annotated[Services, Depends(get_roost)]


router = APIRouter(tags=["identity"])
ERRORS: dict[int | str, dict[str, Any]] = {
    403: {"model": s.Problem},
    404: {"model": s.Problem},
    409: {"model": s.Problem},
    422: {"model": s.Problem},
}


@router.post(
    "/auth/login",
    response_model=LoginOut,
    operation_id="login",
    summary="Exchange a username and password for a token",
    responses={401: {"model": s.Problem}, 429: {"model": s.Problem}},
)
async def login(roost: RoostDep, request: Request, body: LoginIn) -> dict[str, Any]:
    address = request.client.host if request.client else "unknown"
    result = await roost.identity.login(body.username, body.password, address)
    return {"token": result.token, "expires_at": result.expires_at, "user": result.user}


@router.post(
    "/auth/logout",
    status_code=204,
    operation_id="logout",
    summary="End every login session of the caller (tokens issued so far stop working)",
)
async def logout(roost: RoostDep, actor: ActorDep) -> Response:
    await roost.identity.logout(actor)
    return Response(status_code=204)


@router.get("/me", response_model=UserOut, operation_id="whoami", summary="The calling user")
async def whoami(roost: RoostDep, actor: ActorDep) -> dict[str, Any]:
    if actor.user_id is None:
        raise InvalidInput("this credential is not a user")
    return await roost.identity.get_user(actor, actor.user_id)


# -- tenants ----------------------------------------------------------------------------------


@router.get(
    "/tenants",
    response_model=s.Page[TenantOut],
    operation_id="list_tenants",
    openapi_extra=sortable(TenantDirectory.TENANT_SORTS),
    summary="List tenants (superuser)",
    responses=ERRORS,
)
async def list_tenants(
    roost: RoostDep,
    actor: ActorDep,
    page: PageDep,
    q: Annotated[str | None, Query(max_length=200)] = None,
) -> Page[dict[str, Any]]:
    return await roost.identity.list_tenants(actor, page, q)


@router.post(
    "/tenants",
    response_model=TenantOut,
    status_code=201,
    operation_id="create_tenant",
    summary="Create a tenant, optionally with its first admin (superuser)",
    responses=ERRORS,
)
async def create_tenant(roost: RoostDep, actor: ActorDep, body: TenantIn) -> dict[str, Any]:
    return await roost.identity.create_tenant(
        actor,
        body.id,
        body.name,
        body.description,
        admin_username=body.admin.username if body.admin else None,
        admin_password=body.admin.password if body.admin else None,
    )


@router.get(
    "/tenants/{tenant_id}",
    response_model=TenantOut,
    operation_id="get_tenant",
    summary="Get a tenant",
    responses=ERRORS,
)
async def get_tenant(roost: RoostDep, actor: ActorDep, tenant_id: str) -> dict[str, Any]:
    return await roost.identity.get_tenant(actor, tenant_id)


@router.patch(
    "/tenants/{tenant_id}",
    response_model=TenantOut,
    operation_id="update_tenant",
    summary="Rename a tenant (superuser)",
    responses=ERRORS,
)
async def update_tenant(
    roost: RoostDep, actor: ActorDep, tenant_id: str, body: TenantPatch
) -> dict[str, Any]:
    return await roost.identity.update_tenant(actor, tenant_id, body.model_dump(exclude_unset=True))


@router.delete(
    "/tenants/{tenant_id}",
    status_code=204,
    operation_id="delete_tenant",
    summary="Delete a tenant and everything it owns (superuser)",
    responses=ERRORS,
)
async def delete_tenant(roost: RoostDep, actor: ActorDep, tenant_id: str) -> Response:
    await roost.identity.delete_tenant(actor, tenant_id)
    return Response(status_code=204)


# -- users ------------------------------------------------------------------------------------


@router.get(
    "/users",
    response_model=s.Page[UserOut],
    operation_id="list_users",
    openapi_extra=sortable(UserDirectory.USER_SORTS),
    summary="List the tenant's users (admin)",
    responses=ERRORS,
)
async def list_users(
    roost: RoostDep,
    actor: ActorDep,
    page: PageDep,
    role: Annotated[RoleName | None, Query()] = None,
    q: Annotated[str | None, Query(max_length=200)] = None,
) -> Page[dict[str, Any]]:
    return await roost.identity.list_users(actor, page, role=role, q=q)


@router.post(
    "/users",
    response_model=UserOut,
    status_code=201,
    operation_id="create_user",
    summary="Add a user to the tenant (admin)",
    responses=ERRORS,
)
async def create_user(roost: RoostDep, actor: ActorDep, body: UserIn) -> dict[str, Any]:
    return await roost.identity.create_user(
        actor, body.username, body.password, body.role, body.tenant
    )


@router.get(
    "/users/{user_id}",
    response_model=UserOut,
    operation_id="get_user",
    summary="Get a user",
    responses=ERRORS,
)
async def get_user(roost: RoostDep, actor: ActorDep, user_id: UserId) -> dict[str, Any]:
    return await roost.identity.get_user(actor, user_id)


@router.patch(
    "/users/{user_id}",
    response_model=UserOut,
    operation_id="update_user",
    summary="Change a user's role, password or disabled flag",
    responses=ERRORS,
)
async def update_user(
    roost: RoostDep, actor: ActorDep, user_id: UserId, body: UserPatch
) -> dict[str, Any]:
    return await roost.identity.update_user(actor, user_id, body.model_dump(exclude_unset=True))


@router.delete(
    "/users/{user_id}",
    status_code=204,
    operation_id="delete_user",
    summary="Remove a user (admin)",
    responses=ERRORS,
)
async def delete_user(roost: RoostDep, actor: ActorDep, user_id: UserId) -> Response:
    await roost.identity.delete_user(actor, user_id)
    return Response(status_code=204)


# -- API keys ---------------------------------------------------------------------------------


@router.get(
    "/api-keys",
    response_model=s.Page[ApiKeyOut],
    operation_id="list_api_keys",
    openapi_extra=sortable(API_KEY_SORTS),
    summary="Your API keys (an admin sees all of the tenant's)",
)
async def list_api_keys(roost: RoostDep, actor: ActorDep, page: PageDep) -> Page[dict[str, Any]]:
    return await roost.identity.list_api_keys(actor, page)


@router.post(
    "/api-keys",
    response_model=ApiKeyCreated,
    status_code=201,
    operation_id="create_api_key",
    summary="Create an API key (the key is shown once)",
    responses=ERRORS,
)
async def create_api_key(roost: RoostDep, actor: ActorDep, body: ApiKeyIn) -> dict[str, Any]:
    row, key = await roost.identity.create_api_key(actor, body.name, body.role, body.expires_at)
    return {**row, "key": key}


@router.delete(
    "/api-keys/{key_id}",
    status_code=204,
    operation_id="revoke_api_key",
    summary="Revoke an API key at once",
    responses=ERRORS,
)
async def revoke_api_key(roost: RoostDep, actor: ActorDep, key_id: str) -> Response:
    await roost.identity.revoke_api_key(actor, key_id)
    return Response(status_code=204)
