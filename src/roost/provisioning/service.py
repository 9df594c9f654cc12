"""Provisioning: enrollment groups and attestation bootstrap, the ways a device enrolls itself.

* **Enrollment groups** (Azure DPS's symmetric-key groups). A device derives its key from the
  group key and its registration id, and registers itself with a SAS token signed by it; it is
  created in the enrollment's tenant, site, groups and tags and gets a device token. Registering
  again answers the same device with a new token. Enrollment ids are unique across tenants: the
  registering device names nothing else. Group keys are sealed like device keys
  (:class:`~roost.credentials.keys.service.SecretBox`).
* **Attestation bootstrap.** Operators upload SHA-256 hashes of device-specific hardware data;
  a device that presents one (once) is created and gets a device token. Hashes are stored as
  their own SHA-256, unknown and used hashes get the same 403 (a caller cannot tell which), and
  refusals are counted per client address (:data:`BOOTSTRAP_MAX_FAILURES`). A hostname that
  names an existing device gets a random suffix rather than the existing device.

Device keys and the SAS tokens they sign live in :mod:`roost.credentials.keys`.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from roost.audit import service as audit
from roost.core.access import Actor, Role
from roost.core.context import ServiceDeps
from roost.core.device_identity import SAS_PREFIX
from roost.core.ids import generate_id
from roost.core.ratelimit import FailureLimiter
from roost.credentials.keys import sas
from roost.credentials.keys.service import SecretBox
from roost.credentials.tokens.service import CredentialService
from roost.errors import (
    AuthenticationFailed,
    Conflict,
    InvalidInput,
    NotFound,
    PermissionDenied,
    RateLimited,
    ValidationFailed,
)
from roost.inventory.devices.query import check_tags
from roost.inventory.devices.service import DeviceService
from roost.inventory.service import check_id, check_references
from roost.inventory.tables import devices, groups
from roost.provisioning.tables import attestation_hashes, enrollments
from roost.store.queries import Page, PageRequest, fetch_one, fetch_page, order_by

log = logging.getLogger(__name__)

# Bootstrap refusals (unknown or used hash) allowed per client address in the window: an
# honest device fails rarely; guessing a 256-bit hash needs far more tries than this allows.
BOOTSTRAP_MAX_FAILURES = 10
BOOTSTRAP_FAILURE_WINDOW_S = 300.0
# Hashes per upload (one request, one transaction).
MAX_HASHES_PER_UPLOAD = 1000
ENROLLMENT_SORTS = ("id", "created_at", "updated_at")
HASH_SORTS = ("created_at", "used_at", "hint")
HASH_REFUSED = "this attestation hash is not accepted (unknown, or used already)"
REGISTRATION_REFUSED = "unknown enrollment, or the signature does not match"
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_NOT_SLUG = re.compile(r"[^A-Za-z0-9._:-]+")

_ENROLLMENT_COLUMNS = (
    enrollments.c.id,
    enrollments.c.site_id,
    enrollments.c.group_ids,
    enrollments.c.tags,
    enrollments.c.enabled,
    enrollments.c.created_at,
    enrollments.c.updated_at,
)
_HASH_COLUMNS = (
    attestation_hashes.c.id,
    attestation_hashes.c.hint,
    attestation_hashes.c.site_id,
    attestation_hashes.c.group_ids,
    attestation_hashes.c.tags,
    attestation_hashes.c.created_at,
    attestation_hashes.c.used_at,
    attestation_hashes.c.device_id,
)


def system_actor(tenant_id: str) -> Actor:
    """Who creates devices and tokens on a device's own request (named in the audit log)."""
    return Actor(tenant_id=tenant_id, name="provisioning", role=Role.ADMIN)


def hostname_device_id(hostname: str) -> str:
    """A device id from a hostname: other characters become ``-``, at most 128 characters."""
    slug = _NOT_SLUG.sub("-", hostname.strip()).lstrip("._:-")[:128].rstrip("-")
    if not slug:
        raise InvalidInput(f"hostname {hostname!r} has no letters or digits to name a device")
    return slug


def hash_id(hex_hash: str) -> str:
    """How an attestation hash is stored and named: the SHA-256 of its bytes, hex."""
    return hashlib.sha256(bytes.fromhex(hex_hash)).hexdigest()


def _check_hash(value: Any) -> str:
    if not isinstance(value, str) or _HEX64.fullmatch(value) is None:
        raise InvalidInput("an attestation hash is a SHA-256 in hex: 64 characters 0-9, a-f")
    return value.lower()


class ProvisioningService:
    """Enrollment groups and their registrations, attestation hashes and their bootstrap."""

    def __init__(
        self,
        deps: ServiceDeps,
        devices: DeviceService,
        credentials: CredentialService,
    ) -> None:
        self.deps = deps
        self.devices = devices
        self.credentials = credentials
        self._box = SecretBox(deps.secret_key)
        self.bootstrap_failures = FailureLimiter(BOOTSTRAP_MAX_FAILURES, BOOTSTRAP_FAILURE_WINDOW_S)

    def _now(self) -> datetime:
        return self.deps.clock()

    # -- enrollment groups ------------------------------------------------------------------

    async def _check_placement(
        self, conn: AsyncConnection, tenant_id: str, values: Mapping[str, Any]
    ) -> None:
        """Site and groups must exist in the tenant, and the groups be static: a device joins
        them when it registers, and a dynamic group's members follow its filter instead (422
        naming each, when the enrollment or hash is made, not at a device's registration)."""
        if values.get("site_id") is not None:
            await check_references(conn, tenant_id, {"site_id": "site"}, values)
        group_ids = list(values.get("group_ids") or [])
        if group_ids:
            dynamic = {
                group_id: group_filter is not None
                for group_id, group_filter in (
                    await conn.execute(
                        sa.select(groups.c.id, groups.c.filter).where(
                            groups.c.tenant_id == tenant_id, groups.c.id.in_(group_ids)
                        )
                    )
                ).all()
            }
            errors = [
                {"field": "group_ids", "value": g, "message": f"no group {g!r}"}
                for g in group_ids
                if g not in dynamic
            ] + [
                {
                    "field": "group_ids",
                    "value": g,
                    "message": f"group {g!r} is dynamic (its filter chooses its members)",
                }
                for g in group_ids
                if dynamic.get(g)
            ]
            if errors:
                raise ValidationFailed(
                    "bad group: " + "; ".join(e["message"] for e in errors), errors
                )

    @staticmethod
    def _placement(data: Mapping[str, Any]) -> dict[str, Any]:
        """site_id, group_ids and tags of a body, checked."""
        values: dict[str, Any] = {}
        if "site_id" in data:
            site = data["site_id"]
            if site is not None and not isinstance(site, str):
                raise InvalidInput("site_id must be a string")
            values["site_id"] = site
        if "group_ids" in data:
            group_ids = data["group_ids"] or []
            if not isinstance(group_ids, list) or not all(isinstance(g, str) for g in group_ids):
                raise InvalidInput("group_ids must be a list of group ids")
            values["group_ids"] = list(dict.fromkeys(group_ids))
        if "tags" in data:
            tags = check_tags(data["tags"] or {}, allow_null=False)
            values["tags"] = {k: v for k, v in tags.items() if v is not None}
        return values

    async def create_enrollment(
        self, actor: Actor, data: Mapping[str, Any]
    ) -> tuple[dict[str, Any], str]:
        """Make an enrollment group; answer it and its group key (Base64), shown this once."""
        actor.require(Role.OPERATOR)
        enrollment_id = check_id(data.get("id") or generate_id("enr"), "enrollment")
        key = data.get("key") or sas.new_key()
        if not isinstance(key, str):
            raise InvalidInput("key must be a Base64 string")
        raw_key = sas.decode_key(key)
        enabled = data.get("enabled", True)
        if not isinstance(enabled, bool):
            raise InvalidInput("enabled must be true or false")
        now = self._now()
        values = {"site_id": None, "group_ids": [], "tags": {}, **self._placement(data)}
        row = {
            "id": enrollment_id,
            **values,
            "enabled": enabled,
            "created_at": now,
            "updated_at": now,
        }
        async with self.deps.db.write() as conn:
            await self._check_placement(conn, actor.tenant_id, values)
            if await fetch_one(
                conn, sa.select(enrollments.c.id).where(enrollments.c.id == enrollment_id)
            ):
                raise Conflict(f"enrollment {enrollment_id!r} already exists")
            await conn.execute(
                enrollments.insert().values(
                    **row,
                    tenant_id=actor.tenant_id,
                    secret=self._box.seal(raw_key, f"enrollment:{enrollment_id}"),
                )
            )
            await audit.record(conn, actor, "create", "enrollment", enrollment_id, after=row)
        return row, key

    async def _enrollment(
        self, conn: AsyncConnection, tenant_id: str, enrollment_id: str
    ) -> dict[str, Any]:
        row = await fetch_one(
            conn,
            sa.select(*_ENROLLMENT_COLUMNS).where(
                enrollments.c.tenant_id == tenant_id, enrollments.c.id == enrollment_id
            ),
        )
        if row is None:
            raise NotFound(f"no enrollment {enrollment_id!r}")
        return row

    async def get_enrollment(self, actor: Actor, enrollment_id: str) -> dict[str, Any]:
        """One enrollment group (never its key)."""
        actor.require(Role.VIEWER)
        async with self.deps.db.read() as conn:
            return await self._enrollment(conn, actor.tenant_id, enrollment_id)

    async def list_enrollments(self, actor: Actor, page: PageRequest) -> Page[dict[str, Any]]:
        """The tenant's enrollment groups (never their keys)."""
        actor.require(Role.VIEWER)
        async with self.deps.db.read() as conn:
            query = sa.select(*_ENROLLMENT_COLUMNS).where(
                enrollments.c.tenant_id == actor.tenant_id
            )
            items, total = await fetch_page(
                conn, query, order_by(enrollments, page.sort, ENROLLMENT_SORTS, "created_at"), page
            )
        return Page(items, total, page.limit, page.offset)

    async def update_enrollment(
        self, actor: Actor, enrollment_id: str, data: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Enable or disable an enrollment, or change where its devices land."""
        actor.require(Role.OPERATOR)
        values = self._placement(data)
        if "enabled" in data:
            if not isinstance(data["enabled"], bool):
                raise InvalidInput("enabled must be true or false")
            values["enabled"] = data["enabled"]
        async with self.deps.db.write() as conn:
            before = await self._enrollment(conn, actor.tenant_id, enrollment_id)
            await self._check_placement(conn, actor.tenant_id, values)
            if not values:
                return before
            values["updated_at"] = self._now()
            await conn.execute(
                enrollments.update().where(enrollments.c.id == enrollment_id).values(**values)
            )
            after = {**before, **values}
            await audit.record(
                conn, actor, "update", "enrollment", enrollment_id, before=before, after=after
            )
        return after

    async def delete_enrollment(self, actor: Actor, enrollment_id: str) -> None:
        """Delete an enrollment group (its devices stay; no new device can register by it)."""
        actor.require(Role.OPERATOR)
        async with self.deps.db.write() as conn:
            before = await self._enrollment(conn, actor.tenant_id, enrollment_id)
            await conn.execute(enrollments.delete().where(enrollments.c.id == enrollment_id))
            await audit.record(conn, actor, "delete", "enrollment", enrollment_id, before=before)

    async def register(self, authorization: str | None, registration_id: Any) -> dict[str, Any]:
        """A device of an enrollment group registers itself (DPS symmetric-key attestation).

        The SAS token (``skn=registration``) must be signed with the key derived from the group
        key and the registration id. Answers the device and a new device token; registering
        again answers the same device.
        """
        if not isinstance(registration_id, str) or not registration_id:
            raise InvalidInput("registration_id must be a non-empty string")
        if not authorization or not authorization.startswith(SAS_PREFIX):
            raise AuthenticationFailed(
                "send Authorization: SharedAccessSignature sr={enrollment}/registrations/"
                "{registration id}&sig=…&se=…&skn=registration"
            )
        fields = sas.parse_sas(authorization)
        if fields.key_name != sas.REGISTRATION_KEY_NAME:
            raise AuthenticationFailed("malformed SAS token: skn must be 'registration'")
        enrollment_id, signed_id = sas.parse_registration_resource(fields.resource)
        if signed_id != registration_id:
            raise AuthenticationFailed("the token is signed for another registration id")
        if fields.expiry <= self._now().timestamp():
            raise AuthenticationFailed("SAS token expired")
        async with self.deps.db.read() as conn:
            row = await fetch_one(
                conn,
                sa.select(
                    *_ENROLLMENT_COLUMNS, enrollments.c.tenant_id, enrollments.c.secret
                ).where(enrollments.c.id == enrollment_id),
            )
        if row is None:
            log.warning("registration %r refused: no enrollment %r", registration_id, enrollment_id)
            raise AuthenticationFailed(REGISTRATION_REFUSED)
        try:
            group_key = self._box.open(row["secret"], f"enrollment:{enrollment_id}")
        except ValueError:
            log.error("enrollment %s: its key cannot be decrypted", enrollment_id)
            raise AuthenticationFailed(REGISTRATION_REFUSED) from None
        if not sas.signature_matches(sas.derive_key(group_key, registration_id), fields):
            log.warning(
                "registration %r refused: bad signature for enrollment %r",
                registration_id,
                enrollment_id,
            )
            raise AuthenticationFailed(REGISTRATION_REFUSED)
        if not row["enabled"]:
            raise PermissionDenied(f"enrollment {enrollment_id!r} is disabled")
        device_id = check_id(registration_id, "device")
        actor = system_actor(row["tenant_id"])
        created = await self._ensure_device(
            actor,
            device_id,
            {"site_id": row["site_id"], "group_ids": row["group_ids"], "tags": row["tags"]},
        )
        token_row, token = await self.credentials.issue_token(
            actor, device_id, name=f"enrollment {enrollment_id}"
        )
        log.info(
            "device %s/%s registered by enrollment %s (%s)",
            row["tenant_id"],
            device_id,
            enrollment_id,
            "new" if created else "again",
        )
        return {
            "device_id": device_id,
            "tenant_id": row["tenant_id"],
            "enrollment_id": enrollment_id,
            "created": created,
            "token_id": token_row["id"],
            "token": token,
            "certificate": None,
        }

    async def _ensure_device(
        self, actor: Actor, device_id: str, placement: Mapping[str, Any]
    ) -> bool:
        """Create the device unless it exists; True when it was created."""
        async with self.deps.db.write() as conn:
            exists = await fetch_one(
                conn,
                sa.select(devices.c.pk).where(
                    devices.c.tenant_id == actor.tenant_id, devices.c.id == device_id
                ),
            )
            if exists:
                return False
            try:
                await self.devices.create_in(conn, actor, {"id": device_id, **placement})
            except Conflict:  # registered at this very moment by a concurrent request
                return False
        return True

    # -- attestation bootstrap --------------------------------------------------------------

    async def add_hashes(self, actor: Actor, data: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Store attestation hashes (each usable once) with where their devices land."""
        actor.require(Role.OPERATOR)
        raw = data.get("hashes")
        if not isinstance(raw, list) or not raw:
            raise InvalidInput("hashes must be a non-empty list of hex SHA-256 values")
        if len(raw) > MAX_HASHES_PER_UPLOAD:
            raise InvalidInput(f"at most {MAX_HASHES_PER_UPLOAD} hashes per request")
        hexes = list(dict.fromkeys(_check_hash(h) for h in raw))
        values = {"site_id": None, "group_ids": [], "tags": {}, **self._placement(data)}
        now = self._now()
        rows = [
            {
                "id": hash_id(h),
                "hint": h[:8],
                **values,
                "created_at": now,
                "used_at": None,
                "device_id": None,
            }
            for h in hexes
        ]
        async with self.deps.db.write() as conn:
            await self._check_placement(conn, actor.tenant_id, values)
            ids = [r["id"] for r in rows]
            taken = set(
                (
                    await conn.execute(
                        sa.select(attestation_hashes.c.id).where(attestation_hashes.c.id.in_(ids))
                    )
                ).scalars()
            )
            if taken:
                raise Conflict(
                    f"{len(taken)} of these hashes are stored already",
                    errors=[{"hint": r["hint"]} for r in rows if r["id"] in taken],
                )
            await conn.execute(
                attestation_hashes.insert(), [{**r, "tenant_id": actor.tenant_id} for r in rows]
            )
            await audit.record_many(
                conn,
                actor,
                [
                    {
                        "action": "create",
                        "entity_type": "attestation_hash",
                        "entity_id": r["id"],
                        "after": {**r, "tenant_id": actor.tenant_id},
                    }
                    for r in rows
                ],
                now,
            )
        return rows

    async def list_hashes(self, actor: Actor, page: PageRequest) -> Page[dict[str, Any]]:
        """The tenant's attestation hashes: id, first 8 hex characters, placement, use."""
        actor.require(Role.VIEWER)
        async with self.deps.db.read() as conn:
            query = sa.select(*_HASH_COLUMNS).where(
                attestation_hashes.c.tenant_id == actor.tenant_id
            )
            items, total = await fetch_page(
                conn,
                query,
                order_by(attestation_hashes, page.sort, HASH_SORTS, "created_at"),
                page,
            )
        return Page(items, total, page.limit, page.offset)

    async def delete_hash(self, actor: Actor, entry_id: str) -> None:
        """Withdraw an attestation hash (by its id as listed)."""
        actor.require(Role.OPERATOR)
        async with self.deps.db.write() as conn:
            before = await fetch_one(
                conn,
                sa.select(*_HASH_COLUMNS).where(
                    attestation_hashes.c.tenant_id == actor.tenant_id,
                    attestation_hashes.c.id == entry_id,
                ),
            )
            if before is None:
                raise NotFound(f"no attestation hash {entry_id!r}")
            await conn.execute(
                attestation_hashes.delete().where(attestation_hashes.c.id == entry_id)
            )
            await audit.record(conn, actor, "delete", "attestation_hash", entry_id, before=before)

    def _refuse_bootstrap(self, address: str, hint: str, why: str) -> PermissionDenied:
        self.bootstrap_failures.record_failure(address)
        log.warning("bootstrap refused from %s: hash %s… %s", address, hint, why)
        return PermissionDenied(HASH_REFUSED)

    async def bootstrap(self, hostname: Any, hex_hash: Any, address: str) -> dict[str, Any]:
        """A device presents an uploaded hash (once): it is created and gets a device token."""
        wait = self.bootstrap_failures.retry_after(address)
        if wait:
            raise RateLimited("too many refused bootstrap attempts from this address", wait)
        if not isinstance(hostname, str):
            raise InvalidInput("hostname must be a string")
        wanted = hostname_device_id(hostname)
        hex_hash = _check_hash(hex_hash)
        entry_id = hash_id(hex_hash)
        hint = hex_hash[:8]
        now = self._now()
        async with self.deps.db.write() as conn:
            row = await fetch_one(
                conn,
                sa.select(*_HASH_COLUMNS, attestation_hashes.c.tenant_id).where(
                    attestation_hashes.c.id == entry_id
                ),
            )
            if row is None:
                raise self._refuse_bootstrap(address, hint, "is unknown")
            if row["used_at"] is not None:
                raise self._refuse_bootstrap(
                    address, hint, f"was used already (by device {row['device_id']!r})"
                )
            actor = system_actor(row["tenant_id"])
            device_id = wanted
            if await fetch_one(
                conn,
                sa.select(devices.c.pk).where(
                    devices.c.tenant_id == actor.tenant_id, devices.c.id == device_id
                ),
            ):
                device_id = f"{wanted[:121]}-{secrets.token_hex(3)}"
            claimed = await conn.execute(
                attestation_hashes.update()
                .where(attestation_hashes.c.id == entry_id, attestation_hashes.c.used_at.is_(None))
                .values(used_at=now, device_id=device_id)
            )
            if claimed.rowcount != 1:
                raise self._refuse_bootstrap(address, hint, "was used by a concurrent request")
            await self.devices.create_in(
                conn,
                actor,
                {
                    "id": device_id,
                    "site_id": row["site_id"],
                    "group_ids": row["group_ids"],
                    "tags": row["tags"],
                },
            )
            await audit.record(
                conn,
                actor,
                "use",
                "attestation_hash",
                entry_id,
                after={"hint": hint, "hostname": hostname, "address": address},
                device_id=device_id,
            )
        token_row, token = await self.credentials.issue_token(
            actor, device_id, name="attestation bootstrap"
        )
        log.info(
            "device %s/%s bootstrapped from %s with hash %s…",
            actor.tenant_id,
            device_id,
            address,
            hint,
        )
        return {
            "device_id": device_id,
            "tenant_id": actor.tenant_id,
            "token_id": token_row["id"],
            "token": token,
            "certificate": None,
        }
