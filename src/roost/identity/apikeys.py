"""API keys for automation: the ``roost_<id>_<secret>`` format, issuing, revoking and checking.

The secret is 256 random bits, so a fast keyed hash (HMAC-SHA256) protects it at rest as well as
a slow password hash would, and keeps each authenticated request cheap. The key id in the clear
lets the server find the row without scanning.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from roost.audit import service as audit
from roost.core.access import Actor, Role
from roost.errors import (
    AuthenticationFailed,
    InvalidInput,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from roost.identity.tables import api_keys, users
from roost.identity.tenants import DEFAULT_TENANT
from roost.store.database import Database
from roost.store.queries import Page, PageRequest, fetch_one, fetch_page, order_by

log = logging.getLogger(__name__)

PREFIX = "roost_"


@dataclass(frozen=True, slots=True)
class NewApiKey:
    """A freshly made key: the full text (shown once) and what is stored."""

    key_id: str
    plaintext: str
    secret_hash: str


def _hash_secret(pepper: str, secret: str) -> str:
    return hmac.new(pepper.encode(), secret.encode(), hashlib.sha256).hexdigest()


def new_api_key(pepper: str) -> NewApiKey:
    """Make a key; only ``secret_hash`` is to be stored."""
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return NewApiKey(key_id, f"{PREFIX}{key_id}_{secret}", _hash_secret(pepper, secret))


def looks_like_api_key(credential: str) -> bool:
    """True when the bearer credential has the API key shape rather than a JWT."""
    return credential.startswith(PREFIX)


def split_api_key(credential: str) -> tuple[str, str] | None:
    """Answer (key id, secret), or None when the text is not a well-formed key."""
    if not credential.startswith(PREFIX):
        return None
    key_id, sep, secret = credential[len(PREFIX) :].partition("_")
    if not sep or not key_id or not secret or len(credential) > 200:
        return None
    return key_id, secret


def verify_api_key_secret(pepper: str, secret: str, stored_hash: str) -> bool:
    """Constant-time comparison of a presented secret with the stored hash."""
    return hmac.compare_digest(_hash_secret(pepper, secret), stored_hash)


# Writing last_used_at on every request would turn each read into a write; once a minute is
# precise enough to tell an unused key.
API_KEY_TOUCH_INTERVAL = timedelta(minutes=1)

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


API_KEY_SORTS = ("id", "created_at", "name")


class ApiKeyDirectory:
    """The API keys of a tenant's users: made, listed and revoked, and checked on each call."""

    db: Database
    clock: Callable[[], datetime]
    secret_key: str

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
        key = new_api_key(self.secret_key)
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
        # The answer names its user as the list does (a key is made by a logged-in user only).
        return {**row, "username": actor.name}, key.plaintext

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
                order_by(api_keys, page.sort, API_KEY_SORTS, "created_at"),
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

    async def _authenticate_api_key(self, credential: str) -> Actor:
        parts = split_api_key(credential)
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
        if row is None or not verify_api_key_secret(self.secret_key, secret, row["secret_hash"]):
            raise AuthenticationFailed("invalid API key")
        if row["revoked_at"] is not None:
            raise AuthenticationFailed("API key revoked")
        if row["expires_at"] is not None and row["expires_at"] <= now:
            raise AuthenticationFailed("API key expired")
        if row["disabled"]:
            raise AuthenticationFailed("the API key's user is disabled")
        if row["last_used_at"] is None or now - row["last_used_at"] > API_KEY_TOUCH_INTERVAL:
            # Bookkeeping only: a store that cannot write (a full disk) must not refuse a key
            # that reads; the key's last use is then simply not brought up to date.
            try:
                async with self.db.write() as conn:
                    await conn.execute(
                        api_keys.update().where(api_keys.c.id == key_id).values(last_used_at=now)
                    )
            except Unavailable as exc:
                log.warning("last use of API key %s not recorded: %s", key_id, exc.detail)
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
