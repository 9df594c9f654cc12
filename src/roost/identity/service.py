"""Tenants, users, API keys, login and the check behind every authenticated call."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from roost.audit import service as audit
from roost.audit.tables import audit_log
from roost.config import Settings
from roost.core.access import Actor, Role
from roost.core.ids import TENANT_RULE, is_tenant_slug
from roost.core.ratelimit import FailureLimiter
from roost.errors import (
    AuthenticationFailed,
    Conflict,
    InvalidInput,
    NotFound,
    PermissionDenied,
    RateLimited,
)
from roost.identity import apikeys
from roost.identity.passwords import (
    MIN_PASSWORD_LENGTH,
    hash_password_async,
    verify_password_async,
)
from roost.identity.tables import api_keys, tenants, users
from roost.identity.tokens import issue_user_token, verify_user_token
from roost.store.database import Database
from roost.store.queries import Page, PageRequest, fetch_one, fetch_page, order_by, text_match

DEFAULT_TENANT = "default"
SUPERUSER = "admin"
# An address may fail more often than one (username, address) pair: many users share a NAT.
ADDRESS_FAILURE_FACTOR = 4
# Writing last_used_at on every request would turn each read into a write; once a minute is
# precise enough to tell an unused key.
API_KEY_TOUCH_INTERVAL = timedelta(minutes=1)

_USER_COLUMNS = (
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
_KEY_COLUMNS = (
    api_keys.c.id,
    api_keys.c.user_id,
    api_keys.c.name,
    api_keys.c.role,
    api_keys.c.created_at,
    api_keys.c.expires_at,
    api_keys.c.revoked_at,
    api_keys.c.last_used_at,
)


@dataclass(frozen=True, slots=True)
class LoginResult:
    """A successful login: the token, its expiry, and who logged in."""

    token: str
    expires_at: datetime
    user: dict[str, Any]


def _user_out(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if k not in {"password_hash", "session_epoch"}}
    return out


def check_password_rule(password: str) -> None:
    """Raise InvalidInput when a new password is too weak to accept."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(f"password must have at least {MIN_PASSWORD_LENGTH} characters")


#: Whether a bearer credential is of a registered kind, and the check that turns it into its actor.
KeyKind = tuple[Callable[[str], bool], Callable[[str], Awaitable[Actor]]]


class IdentityService:
    """Everything about who may call Roost."""

    USER_SORTS = ("id", "username", "role", "created_at")
    TENANT_SORTS = ("id", "name", "created_at")

    def __init__(
        self, db: Database, settings: Settings, secret_key: str, clock: Callable[[], datetime]
    ) -> None:
        self.db = db
        self.settings = settings
        self.secret_key = secret_key
        self.clock = clock
        self._pair_limiter = FailureLimiter(settings.login_max_failures, settings.login_window_s)
        self._address_limiter = FailureLimiter(
            settings.login_max_failures * ADDRESS_FAILURE_FACTOR, settings.login_window_s
        )
        self._consumer_keys: list[KeyKind] = []

    def accept_consumer_keys(
        self, recognises: Callable[[str], bool], verify: Callable[[str], Awaitable[Actor]]
    ) -> None:
        """Take bearer credentials that ``recognises`` as consumer keys, checked by ``verify``.

        The consumers room registers its keys here (identity knows no consumer table)."""
        self._consumer_keys.append((recognises, verify))

    # -- first start -------------------------------------------------------------------------

    async def bootstrap(self, admin_password: str | None) -> str | None:
        """Create the ``default`` tenant and the superuser if missing.

        Answers the generated password when the superuser was just created without one given,
        so the caller can print it once; otherwise None.
        """
        now = self.clock()
        async with self.db.write() as conn:
            if (
                await fetch_one(conn, sa.select(tenants.c.id).where(tenants.c.id == DEFAULT_TENANT))
                is None
            ):
                await conn.execute(
                    tenants.insert().values(
                        id=DEFAULT_TENANT,
                        name="Default",
                        description="",
                        created_at=now,
                        updated_at=now,
                    )
                )
            existing = await fetch_one(
                conn, sa.select(users.c.id).where(users.c.username == SUPERUSER)
            )
            if existing is not None:
                return None
            generated = None
            if not admin_password:
                generated = admin_password = secrets.token_urlsafe(12)
            await conn.execute(
                users.insert().values(
                    tenant_id=DEFAULT_TENANT,
                    username=SUPERUSER,
                    password_hash=await hash_password_async(admin_password),
                    role=Role.ADMIN.label,
                    is_superuser=True,
                    disabled=False,
                    created_at=now,
                    updated_at=now,
                )
            )
            return generated

    # -- login and authentication -------------------------------------------------------------

    async def login(self, username: str, password: str, address: str) -> LoginResult:
        """Check a username and password; refuse for a while after repeated failures."""
        pair_key, address_key = f"{username.lower()}|{address}", address
        wait = max(
            self._pair_limiter.retry_after(pair_key),
            self._address_limiter.retry_after(address_key),
        )
        if wait:
            raise RateLimited("too many failed logins; try again later", retry_after=wait)
        # Count the attempt as a failure before the slow checks below and take it back on
        # success: counted after them, any number of concurrent guesses passed the check above.
        self._pair_limiter.record_failure(pair_key)
        self._address_limiter.record_failure(address_key)
        async with self.db.read() as conn:
            row = await fetch_one(conn, sa.select(users).where(users.c.username == username))
        valid = await verify_password_async(row["password_hash"] if row else None, password)
        if row is None or not valid or row["disabled"]:
            raise AuthenticationFailed("invalid username or password")
        self._pair_limiter.reset(pair_key)
        self._address_limiter.forgive(address_key)
        now = self.clock()
        async with self.db.write() as conn:
            await conn.execute(
                users.update().where(users.c.id == row["id"]).values(last_login_at=now)
            )
        token, expires = issue_user_token(
            self.secret_key,
            row["id"],
            row["tenant_id"],
            self.settings.token_ttl_s,
            now=now,
            session_epoch=row["session_epoch"],
        )
        row["last_login_at"] = now
        return LoginResult(token, expires, _user_out(row))

    async def authenticate(self, credential: str, *, allow_consumer: bool = False) -> Actor:
        """Turn a bearer credential (user token, API key, consumer key) into the actor.

        A consumer key is accepted only where the caller says so (the read doors of telemetry):
        anywhere else it is refused with 403, so a new route is closed to consumers by default.
        """
        for recognises, verify in self._consumer_keys:
            if recognises(credential):
                actor = await verify(credential)
                if not allow_consumer:
                    raise PermissionDenied(
                        "a consumer key only reads telemetry, events and live streams of its grants"
                    )
                return actor
        if apikeys.looks_like_api_key(credential):
            return await self._authenticate_api_key(credential)
        claims = verify_user_token(self.secret_key, credential)
        async with self.db.read() as conn:
            row = await fetch_one(
                conn,
                sa.select(*_USER_COLUMNS, users.c.session_epoch).where(
                    users.c.id == claims.user_id
                ),
            )
        if row is None or row["disabled"] or row["tenant_id"] != claims.tenant_id:
            raise AuthenticationFailed("token no longer valid: the user was removed or disabled")
        if claims.session_epoch != row["session_epoch"]:
            raise AuthenticationFailed(
                "token no longer valid: the password changed or the user logged out"
            )
        return Actor(
            tenant_id=row["tenant_id"],
            name=row["username"],
            role=Role.parse(row["role"]),
            is_superuser=row["is_superuser"],
            user_id=row["id"],
        )

    async def logout(self, actor: Actor) -> None:
        """End every login session of the caller: tokens issued until now stop working."""
        if actor.user_id is None or actor.api_key_id is not None:
            raise InvalidInput("log out with a login token; revoke API keys instead")
        async with self.db.write() as conn:
            await conn.execute(
                users.update()
                .where(users.c.id == actor.user_id)
                .values(session_epoch=users.c.session_epoch + 1)
            )

    async def _authenticate_api_key(self, credential: str) -> Actor:
        parts = apikeys.split_api_key(credential)
        if parts is None:
            raise AuthenticationFailed("malformed API key")
        key_id, secret = parts
        query = (
            sa.select(
                api_keys.c.id,
                api_keys.c.role,
                api_keys.c.secret_hash,
                api_keys.c.expires_at,
                api_keys.c.revoked_at,
                api_keys.c.last_used_at,
                users.c.id.label("user_id"),
                users.c.username,
                users.c.role.label("user_role"),
                users.c.tenant_id,
                users.c.is_superuser,
                users.c.disabled,
            )
            .join(users, users.c.id == api_keys.c.user_id)
            .where(api_keys.c.id == key_id)
        )
        async with self.db.read() as conn:
            row = await fetch_one(conn, query)
        now = self.clock()
        if row is None or not apikeys.verify_api_key_secret(
            self.secret_key, secret, row["secret_hash"]
        ):
            raise AuthenticationFailed("invalid API key")
        if row["revoked_at"] is not None:
            raise AuthenticationFailed("API key revoked")
        if row["expires_at"] is not None and row["expires_at"] <= now:
            raise AuthenticationFailed("API key expired")
        if row["disabled"]:
            raise AuthenticationFailed("the API key's user is disabled")
        if row["last_used_at"] is None or now - row["last_used_at"] > API_KEY_TOUCH_INTERVAL:
            async with self.db.write() as conn:
                await conn.execute(
                    api_keys.update().where(api_keys.c.id == key_id).values(last_used_at=now)
                )
        # A key never does more than its user can do today, even if the user was demoted.
        role = min(Role.parse(row["role"]), Role.parse(row["user_role"]))
        return Actor(
            tenant_id=row["tenant_id"],
            name=f"{row['username']}/apikey:{key_id}",
            role=role,
            is_superuser=row["is_superuser"] and role == Role.ADMIN,
            user_id=row["user_id"],
            api_key_id=key_id,
        )

    async def act_in_tenant(self, actor: Actor, tenant_id: str) -> Actor:
        """The superuser acting in another tenant; 404 if it does not exist."""
        if tenant_id == actor.tenant_id:
            return actor
        if not actor.is_superuser:
            raise PermissionDenied("only the platform superuser may act in another tenant")
        await self.get_tenant(actor, tenant_id)
        return actor.in_tenant(tenant_id)

    # -- tenants -----------------------------------------------------------------------------

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
                await self._insert_user(
                    conn, actor, tenant_id, admin_username, admin_password, Role.ADMIN
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

    # -- users -------------------------------------------------------------------------------

    async def _insert_user(
        self,
        conn: AsyncConnection,
        actor: Actor,
        tenant_id: str,
        username: str,
        password: str,
        role: Role,
    ) -> dict[str, Any]:
        if not username or len(username) > 64 or not username.isprintable() or " " in username:
            raise InvalidInput("username must be 1-64 printable characters without spaces")
        check_password_rule(password)
        if await fetch_one(conn, sa.select(users.c.id).where(users.c.username == username)):
            raise Conflict(f"username {username!r} is taken")
        now = self.clock()
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
            return await self._insert_user(conn, actor, target, username, password, parsed)

    async def list_users(
        self, actor: Actor, page: PageRequest, role: str | None = None, q: str | None = None
    ) -> Page[dict[str, Any]]:
        """Users of the actor's tenant."""
        actor.require(Role.ADMIN)
        query = sa.select(*_USER_COLUMNS).where(users.c.tenant_id == actor.tenant_id)
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
        query = sa.select(*_USER_COLUMNS).where(users.c.id == user_id)
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
        return _user_out({k: v for k, v in after.items() if k != "password_changed"})

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
                conn, sa.select(*_USER_COLUMNS).where(users.c.username == username)
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
        return _user_out({k: v for k, v in after.items() if k != "password_changed"})

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

    # -- API keys ----------------------------------------------------------------------------

    async def create_api_key(
        self, actor: Actor, name: str, role: str | None = None, expires_at: datetime | None = None
    ) -> tuple[dict[str, Any], str]:
        """Make an API key acting as the caller with at most the caller's role.

        Answers the stored record and the key text, which is shown this once.
        """
        if actor.user_id is None:
            raise PermissionDenied("API keys belong to a user; log in as one to create a key")
        if actor.api_key_id is not None:
            # Otherwise a leaked key could mint keys that outlive its own revocation.
            raise PermissionDenied("an API key cannot create API keys; log in with a password")
        if actor.is_superuser and actor.tenant_id != DEFAULT_TENANT:
            raise PermissionDenied(
                "the superuser's keys live in its own tenant: create them without X-Roost-Tenant"
            )
        try:
            key_role = Role.parse(role) if role else actor.role
        except ValueError as exc:
            raise InvalidInput(str(exc)) from exc
        if key_role > actor.role:
            raise PermissionDenied(f"a key cannot have more than your role ({actor.role.label})")
        now = self.clock()
        if expires_at is not None and expires_at.tzinfo is None:
            raise InvalidInput("expires_at needs a UTC offset, e.g. 2030-01-01T00:00:00Z")
        if expires_at is not None and expires_at <= now:
            raise InvalidInput("expires_at must be in the future")
        if not name.strip():
            raise InvalidInput("name must not be empty")
        key = apikeys.new_api_key(self.secret_key)
        row = {
            "id": key.key_id,
            "user_id": actor.user_id,
            "name": name,
            "role": key_role.label,
            "created_at": now,
            "expires_at": expires_at,
            "revoked_at": None,
            "last_used_at": None,
        }
        async with self.db.write() as conn:
            await conn.execute(
                api_keys.insert().values(
                    **row, tenant_id=actor.tenant_id, secret_hash=key.secret_hash
                )
            )
            await audit.record(conn, actor, "create", "api_key", key.key_id, after=row)
        return row, key.plaintext

    async def list_api_keys(self, actor: Actor, page: PageRequest) -> Page[dict[str, Any]]:
        """The caller's keys; an admin sees every key of the tenant."""
        query = sa.select(*_KEY_COLUMNS, users.c.username).join(
            users, users.c.id == api_keys.c.user_id
        )
        query = query.where(api_keys.c.tenant_id == actor.tenant_id)
        if actor.role < Role.ADMIN:
            query = query.where(api_keys.c.user_id == actor.user_id)
        async with self.db.read() as conn:
            items, total = await fetch_page(
                conn,
                query,
                order_by(api_keys, page.sort, ("id", "created_at", "name"), "created_at"),
                page,
            )
        return Page(items, total, page.limit, page.offset)

    async def revoke_api_key(self, actor: Actor, key_id: str) -> dict[str, Any]:
        """Revoke a key at once; its owner or a tenant admin may do it."""
        async with self.db.write() as conn:
            before = await fetch_one(
                conn,
                sa.select(*_KEY_COLUMNS).where(
                    api_keys.c.id == key_id, api_keys.c.tenant_id == actor.tenant_id
                ),
            )
            if before is None or (before["user_id"] != actor.user_id and actor.role < Role.ADMIN):
                raise NotFound(f"no API key {key_id!r}")
            if before["revoked_at"] is not None:
                return before
            after = {**before, "revoked_at": self.clock()}
            await conn.execute(
                api_keys.update()
                .where(api_keys.c.id == key_id)
                .values(revoked_at=after["revoked_at"])
            )
            await audit.record(conn, actor, "revoke", "api_key", key_id, before=before, after=after)
        return after


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
