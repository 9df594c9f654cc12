"""Sign-in to Roost: first-start bootstrap, login, the check behind every authenticated call."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from roost.config import Settings
from roost.core.access import Actor, Role
from roost.core.ratelimit import FailureLimiter
from roost.errors import (
    AuthenticationFailed,
    PermissionDenied,
    RateLimited,
    Unavailable,
)
from roost.identity.apikeys import ApiKeyDirectory, looks_like_api_key
from roost.identity.passwords import hash_password_async, verify_password_async
from roost.identity.tables import tenants, users
from roost.identity.tenants import DEFAULT_TENANT, TenantDirectory
from roost.identity.tokens import issue_user_token, verify_user_token
from roost.identity.users import USER_COLUMNS, UserDirectory, user_out
from roost.store.database import Database
from roost.store.queries import fetch_one

log = logging.getLogger(__name__)

SUPERUSER = "admin"
# An address may fail more often than one (username, address) pair: many users share a NAT.
ADDRESS_FAILURE_FACTOR = 4


@dataclass(frozen=True, slots=True)
class LoginResult:
    """A successful login: the token, its expiry, and who logged in."""

    token: str
    expires_at: datetime
    user: dict[str, Any]


#: Whether a bearer credential is of a registered kind, and the check that turns it into its actor.
KeyKind = tuple[Callable[[str], bool], Callable[[str], Awaitable[Actor]]]


class IdentityService(TenantDirectory, UserDirectory, ApiKeyDirectory):
    """Everything about who may call Roost: sign-in here, tenants, users and API keys mixed in."""

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
        try:
            async with self.db.read() as conn:
                row = await fetch_one(conn, sa.select(users).where(users.c.username == username))
        except Unavailable:
            # Not a guess that failed: a store outage must not lock people out once it is over.
            self._pair_limiter.forgive(pair_key)
            self._address_limiter.forgive(address_key)
            raise
        valid = await verify_password_async(row["password_hash"] if row else None, password)
        if row is None or not valid or row["disabled"]:
            raise AuthenticationFailed("invalid username or password")
        self._pair_limiter.reset(pair_key)
        self._address_limiter.forgive(address_key)
        now = self.clock()
        await self._record_login(row["id"], now)
        token, expires = issue_user_token(
            self.secret_key,
            row["id"],
            row["tenant_id"],
            self.settings.token_ttl_s,
            now=now,
            session_epoch=row["session_epoch"],
        )
        row["last_login_at"] = now
        return LoginResult(token, expires, user_out(row))

    async def _record_login(self, user_id: int, now: datetime) -> None:
        """Save the time of a successful login; a store that cannot write does not stop it.

        With the disk full an operator must still get in to look: the login then succeeds and
        only this timestamp is lost (``last_login_at`` keeps the previous login's time).
        """
        try:
            async with self.db.write() as conn:
                await conn.execute(
                    users.update().where(users.c.id == user_id).values(last_login_at=now)
                )
        except Unavailable as exc:
            log.warning("login of user %s not recorded (last_login_at): %s", user_id, exc.detail)

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
        if looks_like_api_key(credential):
            return await self._authenticate_api_key(credential)
        claims = verify_user_token(self.secret_key, credential)
        async with self.db.read() as conn:
            row = await fetch_one(
                conn,
                sa.select(*USER_COLUMNS, users.c.session_epoch).where(users.c.id == claims.user_id),
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

    def renew(self, actor: Actor, token: str) -> tuple[str, datetime] | None:
        """A fresh login token for ``token`` once half its life is over (the console's sliding
        session: it ends after ``token_ttl_s`` without a page); None while it is young.

        The new token keeps the session epoch, so logging out or a password change ends it too.
        """
        if actor.user_id is None or actor.api_key_id is not None:
            return None
        claims = verify_user_token(self.secret_key, token)
        now = self.clock()
        if (claims.expires_at - now).total_seconds() > self.settings.token_ttl_s / 2:
            return None
        return issue_user_token(
            self.secret_key,
            claims.user_id,
            claims.tenant_id,
            self.settings.token_ttl_s,
            now=now,
            session_epoch=claims.session_epoch,
        )

    async def logout(self, actor: Actor) -> None:
        """End every login session of the caller: tokens issued until now stop working."""
        if actor.user_id is None or actor.api_key_id is not None:
            # A well-formed request this credential may not make: 403, not 422.
            raise PermissionDenied("log out with a login token; revoke API keys instead")
        async with self.db.write() as conn:
            await conn.execute(
                users.update()
                .where(users.c.id == actor.user_id)
                .values(session_epoch=users.c.session_epoch + 1)
            )

    async def act_in_tenant(self, actor: Actor, tenant_id: str) -> Actor:
        """The superuser acting in another tenant; 404 if it does not exist."""
        if tenant_id == actor.tenant_id:
            return actor
        if not actor.is_superuser:
            raise PermissionDenied("only the platform superuser may act in another tenant")
        await self.get_tenant(actor, tenant_id)
        return actor.in_tenant(tenant_id)
