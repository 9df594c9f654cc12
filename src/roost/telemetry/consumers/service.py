"""Consumers (apps) with keys limited by grants on devices, groups or sensors.

A consumer is a dashboard or a worker of one tenant. Its key (``roostc_<key id>_<secret>``, shown
once, stored as a keyed hash like API keys) authenticates on the read doors only: device telemetry,
events and latest values, fleet latest, the live stream and consumer-group pulls. What it reads is
cut down to its grants, resolved when the data is read, so a grant on a group follows the group's
membership (static or dynamic).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from roost.audit import service as audit
from roost.core.access import Actor, Grants, GrantScope, Role
from roost.core.ids import SLUG_RULE, is_slug
from roost.errors import AuthenticationFailed, Conflict, InvalidInput, NotFound
from roost.inventory.devices.query import group_condition
from roost.inventory.tables import devices, groups
from roost.store.database import Database
from roost.store.queries import Page, PageRequest, fetch_one, fetch_page, order_by
from roost.telemetry.consumers.tables import consumers

if TYPE_CHECKING:
    from roost.core.context import ServiceDeps

KEY_PREFIX = "roostc_"
# Separates consumer key hashes from API key hashes made with the same server secret.
_HASH_CONTEXT = b"roost consumer key\x00"
_PUBLIC_COLUMNS = (
    consumers.c.id,
    consumers.c.name,
    consumers.c.grants,
    consumers.c.key_id,
    consumers.c.key_created_at,
    consumers.c.created_at,
    consumers.c.updated_at,
)
SORTS = ("id", "name", "created_at")


def looks_like_consumer_key(credential: str) -> bool:
    """True when a bearer credential has the consumer key shape."""
    return credential.startswith(KEY_PREFIX)


def _hash_secret(pepper: str, secret: str) -> str:
    return hmac.new(pepper.encode(), _HASH_CONTEXT + secret.encode(), hashlib.sha256).hexdigest()


def _new_key(pepper: str) -> tuple[str, str, str]:
    """(key id, full key text shown once, hash to store)."""
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return key_id, f"{KEY_PREFIX}{key_id}_{secret}", _hash_secret(pepper, secret)


async def authenticate_consumer_key(db: Database, pepper: str, credential: str) -> Actor:
    """The consumer acting with ``credential``; AuthenticationFailed when it is not a valid key."""
    key_id, sep, secret = credential[len(KEY_PREFIX) :].partition("_")
    if not sep or not key_id or not secret or len(credential) > 200:
        raise AuthenticationFailed("malformed consumer key")
    async with db.read() as conn:
        row = await fetch_one(
            conn,
            sa.select(
                consumers.c.tenant_id, consumers.c.id, consumers.c.grants, consumers.c.secret_hash
            ).where(consumers.c.key_id == key_id),
        )
    if row is None or not hmac.compare_digest(_hash_secret(pepper, secret), row["secret_hash"]):
        raise AuthenticationFailed("invalid consumer key (deleted, rotated or mistyped)")
    return Actor(
        tenant_id=row["tenant_id"],
        name=f"consumer:{row['id']}",
        role=Role.VIEWER,
        consumer_id=row["id"],
        grants=Grants.parse(row["grants"]),
    )


async def resolve_scope(conn: AsyncConnection, tenant_id: str, grants: Grants) -> GrantScope:
    """The devices and sensors ``grants`` name now (groups resolved to their current members)."""
    whole = set(grants.devices)
    if grants.groups:
        found = (
            (
                await conn.execute(
                    sa.select(groups).where(
                        groups.c.tenant_id == tenant_id, groups.c.id.in_(sorted(grants.groups))
                    )
                )
            )
            .mappings()
            .all()
        )
        for group in found:
            members = await conn.execute(
                sa.select(devices.c.id).where(
                    devices.c.tenant_id == tenant_id, group_condition(tenant_id, dict(group))
                )
            )
            whole.update(members.scalars())
    by_device: dict[str, set[str]] = {}
    for device_id, sensor_id in grants.sensors:
        if device_id not in whole:
            by_device.setdefault(device_id, set()).add(sensor_id)
    return GrantScope(frozenset(whole), {d: frozenset(s) for d, s in by_device.items()})


async def scope_of(db: Database, actor: Actor) -> GrantScope | None:
    """The actor's resolved grants, or None when the actor is not a consumer (no limit)."""
    if actor.grants is None:
        return None
    async with db.read() as conn:
        return await resolve_scope(conn, actor.tenant_id, actor.grants)


def _out(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "grants": row["grants"],
        "key_id": row["key_id"],
        "key_created_at": row["key_created_at"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


class ConsumerService:
    """Create, list, change, delete consumers and rotate their keys (operators and admins)."""

    def __init__(self, deps: ServiceDeps) -> None:
        self.deps = deps
        self.db: Database = deps.db
        self.clock: Callable[[], datetime] = deps.clock

    async def authenticate(self, credential: str) -> Actor:
        """The consumer acting with ``credential`` (identity's check for consumer keys)."""
        return await authenticate_consumer_key(self.db, self.deps.secret_key, credential)

    async def start(self) -> None:
        """Nothing runs in the background: keys are checked on each request."""

    async def close(self) -> None:
        """Nothing to stop."""

    async def _check_grants(self, conn: AsyncConnection, tenant_id: str, grants: Grants) -> None:
        """Refuse grants naming devices or groups the tenant does not have."""
        device_ids = grants.devices | {d for d, _ in grants.sensors}
        if device_ids:
            known = set(
                (
                    await conn.execute(
                        sa.select(devices.c.id).where(
                            devices.c.tenant_id == tenant_id, devices.c.id.in_(sorted(device_ids))
                        )
                    )
                ).scalars()
            )
            if missing := sorted(device_ids - known):
                raise InvalidInput(f"grants name unknown devices: {', '.join(missing)}")
        if grants.groups:
            known = set(
                (
                    await conn.execute(
                        sa.select(groups.c.id).where(
                            groups.c.tenant_id == tenant_id, groups.c.id.in_(sorted(grants.groups))
                        )
                    )
                ).scalars()
            )
            if missing := sorted(grants.groups - known):
                raise InvalidInput(f"grants name unknown groups: {', '.join(missing)}")
        # Sensors may be named before they exist: a device creates them with its first reading.

    async def _row(self, conn: AsyncConnection, actor: Actor, consumer_id: str) -> dict[str, Any]:
        row = await fetch_one(
            conn,
            sa.select(*_PUBLIC_COLUMNS).where(
                consumers.c.tenant_id == actor.tenant_id, consumers.c.id == consumer_id
            ),
        )
        if row is None:
            raise NotFound(f"no consumer {consumer_id!r}")
        return row

    async def create(
        self, actor: Actor, consumer_id: str | None, name: str, raw_grants: Any
    ) -> dict[str, Any]:
        """Make a consumer; the answer holds its key (``key``), shown this once."""
        actor.require(Role.OPERATOR)
        consumer_id = consumer_id or f"consumer-{secrets.token_hex(4)}"
        if not is_slug(consumer_id):
            raise InvalidInput(f"consumer id {consumer_id!r} is not valid: {SLUG_RULE}")
        if not name.strip():
            raise InvalidInput("name must not be empty")
        grants = Grants.parse(raw_grants)
        key_id, key, secret_hash = _new_key(self.deps.secret_key)
        now = self.clock()
        row = {
            "id": consumer_id,
            "name": name,
            "grants": grants.to_json(),
            "key_id": key_id,
            "key_created_at": now,
            "created_at": now,
            "updated_at": now,
        }
        async with self.db.write() as conn:
            if await fetch_one(
                conn,
                sa.select(consumers.c.id).where(
                    consumers.c.tenant_id == actor.tenant_id, consumers.c.id == consumer_id
                ),
            ):
                raise Conflict(f"consumer {consumer_id!r} already exists")
            await self._check_grants(conn, actor.tenant_id, grants)
            await conn.execute(
                consumers.insert().values(**row, tenant_id=actor.tenant_id, secret_hash=secret_hash)
            )
            await audit.record(conn, actor, "create", "consumer", consumer_id, after=row)
        return {**_out(row), "key": key}

    async def list(self, actor: Actor, page: PageRequest) -> Page[dict[str, Any]]:
        """The tenant's consumers (without keys)."""
        actor.require(Role.VIEWER)
        query = sa.select(*_PUBLIC_COLUMNS).where(consumers.c.tenant_id == actor.tenant_id)
        async with self.db.read() as conn:
            items, total = await fetch_page(
                conn, query, order_by(consumers, page.sort, SORTS, "id"), page
            )
        return Page([_out(item) for item in items], total, page.limit, page.offset)

    async def get(self, actor: Actor, consumer_id: str) -> dict[str, Any]:
        """One consumer (without its key)."""
        actor.require(Role.VIEWER)
        async with self.db.read() as conn:
            return _out(await self._row(conn, actor, consumer_id))

    async def update(
        self, actor: Actor, consumer_id: str, *, name: str | None, raw_grants: Any | None
    ) -> dict[str, Any]:
        """Rename a consumer or replace its grants (effective on its next read)."""
        actor.require(Role.OPERATOR)
        values: dict[str, Any] = {}
        if name is not None:
            if not name.strip():
                raise InvalidInput("name must not be empty")
            values["name"] = name
        grants = None
        if raw_grants is not None:
            grants = Grants.parse(raw_grants)
            values["grants"] = grants.to_json()
        async with self.db.write() as conn:
            before = await self._row(conn, actor, consumer_id)
            if grants is not None:
                await self._check_grants(conn, actor.tenant_id, grants)
            values["updated_at"] = self.clock()
            await conn.execute(
                consumers.update()
                .where(consumers.c.tenant_id == actor.tenant_id, consumers.c.id == consumer_id)
                .values(**values)
            )
            after = {**before, **values}
            await audit.record(
                conn, actor, "update", "consumer", consumer_id, before=before, after=after
            )
        return _out(after)

    async def rotate_key(self, actor: Actor, consumer_id: str) -> dict[str, Any]:
        """Give a consumer a new key; the old one stops working at once."""
        actor.require(Role.OPERATOR)
        key_id, key, secret_hash = _new_key(self.deps.secret_key)
        now = self.clock()
        async with self.db.write() as conn:
            before = await self._row(conn, actor, consumer_id)
            values = {"key_id": key_id, "key_created_at": now, "updated_at": now}
            await conn.execute(
                consumers.update()
                .where(consumers.c.tenant_id == actor.tenant_id, consumers.c.id == consumer_id)
                .values(**values, secret_hash=secret_hash)
            )
            after = {**before, **values}
            await audit.record(
                conn, actor, "rotate_key", "consumer", consumer_id, before=before, after=after
            )
        return {**_out(after), "key": key}

    async def delete(self, actor: Actor, consumer_id: str) -> None:
        """Remove a consumer; its key stops working at once."""
        actor.require(Role.OPERATOR)
        async with self.db.write() as conn:
            before = await self._row(conn, actor, consumer_id)
            await conn.execute(
                consumers.delete().where(
                    consumers.c.tenant_id == actor.tenant_id, consumers.c.id == consumer_id
                )
            )
            await audit.record(conn, actor, "delete", "consumer", consumer_id, before=before)
