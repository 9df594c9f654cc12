"""Device tokens: issue (shown once), list and revoke them, the use cases of /devices/{id}/tokens.

:class:`CredentialService` makes a token (a signed JWT, :mod:`roost.credentials.tokens.signing`,
shown once: only its record is stored), lists a device's tokens and revokes them, with audit. A
revocation is handed to the :class:`~roost.credentials.authenticator.DeviceAuthenticator`, which
refuses the token at once in this process and, through the bus, in every other; the authenticator
is also what checks tokens when devices present them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from roost.audit import service as audit
from roost.core.access import Actor, Role
from roost.credentials.authenticator import DeviceAuthenticator
from roost.credentials.tokens.signing import (
    device_generation,
    issue_device_token,
    new_token_id,
    whole_seconds,
)
from roost.credentials.tokens.tables import device_tokens
from roost.errors import InvalidInput, NotFound
from roost.inventory.tables import devices
from roost.store.database import Database
from roost.store.queries import Page, PageRequest, fetch_one, fetch_page, order_by

MAX_TOKEN_NAME = 200

_TOKEN_COLUMNS = (
    device_tokens.c.id,
    device_tokens.c.name,
    device_tokens.c.created_at,
    device_tokens.c.expires_at,
    device_tokens.c.revoked_at,
    device_tokens.c.last_used_at,
)
TOKEN_SORTS = ("id", "name", "created_at", "expires_at", "last_used_at")


class CredentialService:
    """Device tokens: issue (shown once), list, revoke at once."""

    def __init__(
        self,
        db: Database,
        secret_key: str,
        clock: Callable[[], datetime],
        authenticator: DeviceAuthenticator,
    ) -> None:
        self.db = db
        self.secret_key = secret_key
        self.clock = clock
        self.authenticator = authenticator

    async def _device(
        self, conn: AsyncConnection, tenant_id: str, device_id: str
    ) -> dict[str, Any]:
        row = await fetch_one(
            conn,
            sa.select(devices.c.pk, devices.c.created_at).where(
                devices.c.tenant_id == tenant_id, devices.c.id == device_id
            ),
        )
        if row is None:
            raise NotFound(f"no device {device_id!r}")
        return row

    async def issue_token(
        self, actor: Actor, device_id: str, name: str = "", expires_at: datetime | None = None
    ) -> tuple[dict[str, Any], str]:
        """Make a token for a device; answer the stored record and the token, shown this once.

        ``expires_at`` is truncated to the second (JWT times are whole seconds) and must be in
        the future; without it the token lives until revoked.
        """
        actor.require(Role.OPERATOR)
        if len(name) > MAX_TOKEN_NAME:
            raise InvalidInput(f"name must have at most {MAX_TOKEN_NAME} characters")
        now = self.clock()
        if expires_at is not None:
            if expires_at.tzinfo is None:
                raise InvalidInput("expires_at needs a UTC offset, e.g. 2030-01-01T00:00:00Z")
            expires_at = whole_seconds(expires_at.astimezone(UTC))
            if expires_at <= now:
                raise InvalidInput("expires_at must be in the future")
        token_id = new_token_id()
        row = {
            "id": token_id,
            "device_id": device_id,
            "name": name,
            "created_at": now,
            "expires_at": expires_at,
            "revoked_at": None,
            "last_used_at": None,
        }
        async with self.db.write() as conn:
            device = await self._device(conn, actor.tenant_id, device_id)
            token = issue_device_token(
                self.secret_key,
                token_id=token_id,
                tenant_id=actor.tenant_id,
                device_id=device_id,
                device_generation=device_generation(device["created_at"]),
                issued_at=now,
                expires_at=expires_at,
            )
            await conn.execute(
                device_tokens.insert().values(
                    id=token_id,
                    tenant_id=actor.tenant_id,
                    device_pk=device["pk"],
                    name=name,
                    created_at=now,
                    expires_at=expires_at,
                )
            )
            await audit.record(
                conn, actor, "create", "device_token", token_id, after=row, device_id=device_id
            )
        return row, token

    async def list_tokens(
        self, actor: Actor, device_id: str, page: PageRequest
    ) -> Page[dict[str, Any]]:
        """A device's tokens, revoked ones included (never the token text)."""
        actor.require(Role.VIEWER)
        async with self.db.read() as conn:
            device = await self._device(conn, actor.tenant_id, device_id)
            query = sa.select(*_TOKEN_COLUMNS).where(device_tokens.c.device_pk == device["pk"])
            items, total = await fetch_page(
                conn, query, order_by(device_tokens, page.sort, TOKEN_SORTS, "created_at"), page
            )
        for item in items:
            item["device_id"] = device_id
        return Page(items, total, page.limit, page.offset)

    async def revoke_token(self, actor: Actor, device_id: str, token_id: str) -> dict[str, Any]:
        """Revoke a token: refused at once by this process, and by every other through the bus.

        Revoking a revoked token changes nothing (and announces it again).
        """
        actor.require(Role.OPERATOR)
        async with self.db.write() as conn:
            device = await self._device(conn, actor.tenant_id, device_id)
            before = await fetch_one(
                conn,
                sa.select(*_TOKEN_COLUMNS).where(
                    device_tokens.c.id == token_id, device_tokens.c.device_pk == device["pk"]
                ),
            )
            if before is None:
                raise NotFound(f"no token {token_id!r} for device {device_id!r}")
            before["device_id"] = device_id
            after = before
            if before["revoked_at"] is None:
                after = {**before, "revoked_at": self.clock()}
                await conn.execute(
                    device_tokens.update()
                    .where(device_tokens.c.id == token_id)
                    .values(revoked_at=after["revoked_at"])
                )
                await audit.record(
                    conn,
                    actor,
                    "revoke",
                    "device_token",
                    token_id,
                    before=before,
                    after=after,
                    device_id=device_id,
                )
        await self.authenticator.revoked(token_id, after["expires_at"])
        return after
