"""Tenants, the platform's unit of isolation, made, changed and deleted by the superuser."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from roost.audit import service as audit
from roost.audit.tables import audit_log
from roost.core.access import Actor, Role
from roost.core.ids import TENANT_RULE, is_tenant_slug
from roost.errors import Conflict, InvalidInput, NotFound
from roost.identity.tables import tenants
from roost.identity.users import insert_user
from roost.store.database import Database
from roost.store.queries import Page, PageRequest, fetch_one, fetch_page, order_by, text_match

DEFAULT_TENANT = "default"


class TenantDirectory:
    """The tenants of the platform; all but reading one's own tenant need the superuser."""

    TENANT_SORTS = ("id", "name", "created_at")

    db: Database
    clock: Callable[[], datetime]

    async def create_tenant(
        self,
        actor: Actor,
        tenant_id: str,
        name: str,
        description: str = "",
        admin_username: str | None = None,
        admin_password: str | None = None,
    ) -> dict[str, Any]:
        """Create a tenant, optionally with its first admin user."""
        actor.require_superuser()
        if not is_tenant_slug(tenant_id):
            raise InvalidInput(f"tenant id {tenant_id!r} is not valid: {TENANT_RULE}")
        if (admin_username is None) != (admin_password is None):
            raise InvalidInput("give both admin username and admin password, or neither")
        now = self.clock()
        row = {
            "id": tenant_id,
            "name": name,
            "description": description,
            "created_at": now,
            "updated_at": now,
        }
        async with self.db.write() as conn:
            if await fetch_one(conn, sa.select(tenants.c.id).where(tenants.c.id == tenant_id)):
                raise Conflict(f"tenant {tenant_id!r} already exists")
            await conn.execute(tenants.insert().values(**row))
            # Tenant records belong to the platform's log, never to a tenant the superuser acts in.
            await audit.record(
                conn, actor, "create", "tenant", tenant_id, after=row, tenant_id=DEFAULT_TENANT
            )
            if admin_username is not None and admin_password is not None:
                await insert_user(
                    conn, actor, tenant_id, admin_username, admin_password, Role.ADMIN, self.clock
                )
        return row

    async def list_tenants(
        self, actor: Actor, page: PageRequest, q: str | None = None
    ) -> Page[dict[str, Any]]:
        """All tenants (superuser only)."""
        actor.require_superuser()
        query = sa.select(tenants)
        if q:
            query = query.where(text_match([tenants.c.id, tenants.c.name], q))
        async with self.db.read() as conn:
            items, total = await fetch_page(
                conn, query, order_by(tenants, page.sort, self.TENANT_SORTS, "id"), page
            )
        return Page(items, total, page.limit, page.offset)

    async def get_tenant(self, actor: Actor, tenant_id: str) -> dict[str, Any]:
        """One tenant: any member may read its own, the superuser any."""
        if tenant_id != actor.tenant_id and not actor.is_superuser:
            raise NotFound(f"no tenant {tenant_id!r}")
        async with self.db.read() as conn:
            row = await fetch_one(conn, sa.select(tenants).where(tenants.c.id == tenant_id))
        if row is None:
            raise NotFound(f"no tenant {tenant_id!r}")
        return row

    async def update_tenant(
        self, actor: Actor, tenant_id: str, changes: dict[str, Any]
    ) -> dict[str, Any]:
        """Rename or re-describe a tenant."""
        actor.require_superuser()
        allowed = {
            k: v for k, v in changes.items() if k in {"name", "description", "retention_days"}
        }
        if (
            allowed.get("retention_days") is not None
            and not 1 <= allowed["retention_days"] <= 36_500
        ):
            raise InvalidInput("retention_days must be between 1 and 36500 (or null: keep forever)")
        async with self.db.write() as conn:
            before = await fetch_one(conn, sa.select(tenants).where(tenants.c.id == tenant_id))
            if before is None:
                raise NotFound(f"no tenant {tenant_id!r}")
            after = {**before, **allowed, "updated_at": self.clock()}
            await conn.execute(
                tenants.update()
                .where(tenants.c.id == tenant_id)
                .values(**allowed, updated_at=after["updated_at"])
            )
            await audit.record(
                conn,
                actor,
                "update",
                "tenant",
                tenant_id,
                before=before,
                after=after,
                tenant_id=DEFAULT_TENANT,
            )
        return after

    async def delete_tenant(self, actor: Actor, tenant_id: str) -> None:
        """Delete a tenant and everything it owns (never the default tenant)."""
        actor.require_superuser()
        if tenant_id == DEFAULT_TENANT:
            raise Conflict("the default tenant holds the superuser and cannot be deleted")
        async with self.db.write() as conn:
            before = await fetch_one(conn, sa.select(tenants).where(tenants.c.id == tenant_id))
            if before is None:
                raise NotFound(f"no tenant {tenant_id!r}")
            await conn.execute(tenants.delete().where(tenants.c.id == tenant_id))
            # The log has no foreign key: left behind, it would be shown to a new tenant that
            # reuses the id.
            await conn.execute(audit_log.delete().where(audit_log.c.tenant_id == tenant_id))
            await audit.record(
                conn, actor, "delete", "tenant", tenant_id, before=before, tenant_id=DEFAULT_TENANT
            )
