"""Users of a tenant: accounts, roles, passwords, and the rule that a tenant keeps an admin."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from roost.audit import service as audit
from roost.core.access import Actor, Role
from roost.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from roost.identity.passwords import MIN_PASSWORD_LENGTH, hash_password_async
from roost.identity.tables import tenants, users
from roost.store.database import Database
from roost.store.queries import Page, PageRequest, fetch_one, fetch_page, order_by, text_match

USER_COLUMNS = (
    users.c.id,
    users.c.tenant_id,
    users.c.username,
    users.c.role,
    users.c.is_superuser,
    users.c.disabled,
    users.c.last_login_at,
    users.c.created_at,
    users.c.updated_at,
)


def user_out(row: dict[str, Any]) -> dict[str, Any]:
    """The user record as shown: without the password hash and the session epoch."""
    out = {k: v for k, v in row.items() if k not in {"password_hash", "session_epoch"}}
    return out


def check_password_rule(password: str) -> None:
    """Raise InvalidInput when a new password is too weak to accept."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(f"password must have at least {MIN_PASSWORD_LENGTH} characters")


async def insert_user(
    conn: AsyncConnection,
    actor: Actor,
    tenant_id: str,
    username: str,
    password: str,
    role: Role,
    clock: Callable[[], datetime],
) -> dict[str, Any]:
    """Add a user inside the caller's transaction, with its audit record; ``clock`` stamps it."""
    if not username or len(username) > 64 or not username.isprintable() or " " in username:
        raise InvalidInput("username must be 1-64 printable characters without spaces")
    check_password_rule(password)
    if await fetch_one(conn, sa.select(users.c.id).where(users.c.username == username)):
        raise Conflict(f"username {username!r} is taken")
    now = clock()
    values = {
        "tenant_id": tenant_id,
        "username": username,
        "role": role.label,
        "is_superuser": False,
        "disabled": False,
        "created_at": now,
        "updated_at": now,
    }
    result = await conn.execute(
        users.insert().values(**values, password_hash=await hash_password_async(password))
    )
    row = {"id": result.inserted_primary_key[0], **values, "last_login_at": None}  # type: ignore[index]
    await audit.record(conn, actor, "create", "user", username, after=row, tenant_id=tenant_id)
    return row


class UserDirectory:
    """Users of the actor's tenant, read and changed under the tenant's access rules."""

    USER_SORTS = ("id", "username", "role", "created_at")

    db: Database
    clock: Callable[[], datetime]

    async def create_user(
        self, actor: Actor, username: str, password: str, role: str, tenant_id: str | None = None
    ) -> dict[str, Any]:
        """Add a user to the actor's tenant (the superuser may name another tenant)."""
        actor.require(Role.ADMIN)
        target = tenant_id or actor.tenant_id
        if target != actor.tenant_id:
            actor.require_superuser()
        try:
            parsed = Role.parse(role)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from exc
        async with self.db.write() as conn:
            if await fetch_one(conn, sa.select(tenants.c.id).where(tenants.c.id == target)) is None:
                raise NotFound(f"no tenant {target!r}")
            return await insert_user(conn, actor, target, username, password, parsed, self.clock)

    async def list_users(
        self, actor: Actor, page: PageRequest, role: str | None = None, q: str | None = None
    ) -> Page[dict[str, Any]]:
        """Users of the actor's tenant."""
        actor.require(Role.ADMIN)
        query = sa.select(*USER_COLUMNS).where(users.c.tenant_id == actor.tenant_id)
        if role:
            query = query.where(users.c.role == role)
        if q:
            query = query.where(text_match([users.c.username], q))
        async with self.db.read() as conn:
            items, total = await fetch_page(
                conn, query, order_by(users, page.sort, self.USER_SORTS, "id"), page
            )
        return Page(items, total, page.limit, page.offset)

    async def _user_row(self, conn: AsyncConnection, actor: Actor, user_id: int) -> dict[str, Any]:
        query = sa.select(*USER_COLUMNS).where(users.c.id == user_id)
        # Your own record stays yours while the superuser acts in another tenant.
        if actor.user_id != user_id:
            query = query.where(users.c.tenant_id == actor.tenant_id)
        row = await fetch_one(conn, query)
        if row is None:
            raise NotFound(f"no user {user_id}")
        return row

    async def get_user(self, actor: Actor, user_id: int) -> dict[str, Any]:
        """One user of the tenant; any user may read their own record."""
        if actor.user_id != user_id:
            actor.require(Role.ADMIN)
        async with self.db.read() as conn:
            return await self._user_row(conn, actor, user_id)

    async def update_user(
        self, actor: Actor, user_id: int, changes: dict[str, Any]
    ) -> dict[str, Any]:
        """Change a user's role, password or disabled flag.

        A user may change their own password; role and disabled need an admin, and nobody may
        demote or disable the superuser.
        """
        own = actor.user_id == user_id
        if not own or set(changes) - {"password"}:
            actor.require(Role.ADMIN)
        async with self.db.write() as conn:
            before = await self._user_row(conn, actor, user_id)
            values: dict[str, Any] = {}
            if "role" in changes and changes["role"] is not None:
                try:
                    values["role"] = Role.parse(changes["role"]).label
                except ValueError as exc:
                    raise InvalidInput(str(exc)) from exc
            if "disabled" in changes and changes["disabled"] is not None:
                values["disabled"] = bool(changes["disabled"])
            if before["is_superuser"] and (
                values.get("disabled") or values.get("role", "admin") != "admin"
            ):
                raise Conflict("the superuser cannot be demoted or disabled")
            if (values.get("disabled") or values.get("role", "admin") != "admin") and before[
                "role"
            ] == "admin":
                await _keep_an_admin(conn, before)
            if changes.get("password") is not None:
                if before["is_superuser"] and not actor.is_superuser:
                    raise PermissionDenied("only the superuser may change the superuser's password")
                check_password_rule(changes["password"])
                values["password_hash"] = await hash_password_async(changes["password"])
                # Sessions opened with the old password end; the caller logs in again.
                values["session_epoch"] = users.c.session_epoch + 1
            values["updated_at"] = self.clock()
            await conn.execute(users.update().where(users.c.id == user_id).values(**values))
            after = {**before, **{k: v for k, v in values.items() if k != "session_epoch"}}
            if "password_hash" in values:
                after["password_changed"] = True
            await audit.record(
                conn, actor, "update", "user", before["username"], before=before, after=after
            )
        return user_out({k: v for k, v in after.items() if k != "password_changed"})

    async def set_password_by_username(
        self, actor: Actor, username: str, password: str
    ) -> dict[str, Any]:
        """Set a user's password by username (``roost user set-password``).

        The platform superuser (and the local administrator of ``roost`` commands, which acts
        as it) may set anyone's, the superuser's included: that is how a lost admin password is
        reset. A tenant admin may set the passwords of their tenant's other users, and anyone
        their own. Another tenant's user answers 404, as if it did not exist.
        """
        check_password_rule(password)
        async with self.db.write() as conn:
            before = await fetch_one(
                conn, sa.select(*USER_COLUMNS).where(users.c.username == username)
            )
            if before is None or (
                before["tenant_id"] != actor.tenant_id and not actor.is_superuser
            ):
                raise NotFound(f"no user {username!r}")
            if actor.user_id != before["id"] and not actor.is_superuser:
                actor.require(Role.ADMIN)
                if before["is_superuser"]:
                    raise PermissionDenied("only the superuser may change the superuser's password")
            values = {
                "password_hash": await hash_password_async(password),
                "session_epoch": users.c.session_epoch + 1,
                "updated_at": self.clock(),
            }
            await conn.execute(users.update().where(users.c.id == before["id"]).values(**values))
            after = {**before, "updated_at": values["updated_at"], "password_changed": True}
            await audit.record(
                conn,
                actor,
                "update",
                "user",
                username,
                before=before,
                after=after,
                tenant_id=before["tenant_id"],
            )
        return user_out({k: v for k, v in after.items() if k != "password_changed"})

    async def delete_user(self, actor: Actor, user_id: int) -> None:
        """Remove a user and their API keys."""
        actor.require(Role.ADMIN)
        async with self.db.write() as conn:
            before = await self._user_row(conn, actor, user_id)
            if before["is_superuser"]:
                raise Conflict("the superuser cannot be deleted")
            if before["role"] == "admin" and not before["disabled"]:
                await _keep_an_admin(conn, before)
            await conn.execute(users.delete().where(users.c.id == user_id))
            await audit.record(conn, actor, "delete", "user", before["username"], before=before)


async def _keep_an_admin(conn: AsyncConnection, leaving: dict[str, Any]) -> None:
    """Refuse to remove the last enabled admin of a tenant (nobody could manage it after)."""
    others = (
        await conn.execute(
            sa.select(sa.func.count())
            .select_from(users)
            .where(
                users.c.tenant_id == leaving["tenant_id"],
                users.c.role == "admin",
                users.c.disabled.is_(False),
                users.c.id != leaving["id"],
            )
        )
    ).scalar_one()
    if not others:
        raise Conflict(
            f"{leaving['username']!r} is the last admin of tenant {leaving['tenant_id']!r}; "
            "make another user admin first"
        )
