"""Console pages of the administration section: users, API keys and tenants.

Every page reads through the identity service with the signed-in actor, as the API routes do; a
read the service refuses (a viewer listing users, an admin listing tenants) is shown inside the
section, with the service's own message, so the other administration pages stay one click away.
Changes are sent by the browser to ``/api/v1/users``, ``/api/v1/api-keys`` and
``/api/v1/tenants``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.responses import Response

from roost.console.web import ConsoleRoute, PageDep
from roost.core.access import ROLE_NAMES, Role
from roost.errors import PermissionDenied
from roost.identity.router import Services
from roost.identity.tenants import DEFAULT_TENANT
from roost.store.queries import Page

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)


def _empty() -> Page[dict[str, Any]]:
    """No rows (what a refused read shows)."""
    return Page([], 0, 0, 0)


@router.get("/admin/users")
async def users_page(page: PageDep) -> Response:
    """The tenant's users: search, role filter, sort and pages; admins add and change them."""
    roost: Services = page.roost
    paging = page.paging(default_sort="username")
    q = page.request.query_params.get("q", "").strip()[:200]
    role = page.request.query_params.get("role", "")
    role = role if role in ROLE_NAMES else ""
    refused = None
    try:
        users = await roost.identity.list_users(
            page.actor, paging.request_page, role=role or None, q=q or None
        )
    except PermissionDenied as exc:
        refused, users = exc.detail, _empty()
    return page.render(
        "identity/users.html",
        users=users,
        paging=paging,
        q=q,
        role=role,
        roles=ROLE_NAMES,
        refused=refused,
    )


@router.get("/admin/api-keys")
async def api_keys_page(page: PageDep) -> Response:
    """API keys: the user's own (an admin sees the tenant's); create one, revoke one."""
    roost: Services = page.roost
    paging = page.paging(default_sort="-created_at")
    keys = await roost.identity.list_api_keys(page.actor, paging.request_page)
    actor = page.actor
    return page.render(
        "identity/api_keys.html",
        keys=keys,
        paging=paging,
        # A key has at most its maker's role (the API refuses more).
        key_roles=[r.label for r in Role if r <= actor.role],
        # The API keeps the superuser's keys in its own tenant (it refuses them elsewhere).
        keys_elsewhere=actor.is_superuser and actor.tenant_id != DEFAULT_TENANT,
        can_create=actor.user_id is not None and actor.api_key_id is None,
        default_tenant=DEFAULT_TENANT,
    )


@router.get("/admin/tenants")
async def tenants_page(page: PageDep) -> Response:
    """Every tenant (superuser only): create, rename, set retention, delete."""
    roost: Services = page.roost
    paging = page.paging(default_sort="id")
    q = page.request.query_params.get("q", "").strip()[:200]
    refused = None
    try:
        tenants = await roost.identity.list_tenants(page.actor, paging.request_page, q or None)
    except PermissionDenied as exc:
        refused, tenants = exc.detail, _empty()
    return page.render(
        "identity/tenants.html",
        tenants=tenants,
        paging=paging,
        q=q,
        refused=refused,
        default_tenant=DEFAULT_TENANT,
    )
