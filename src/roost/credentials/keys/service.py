"""Device keys: symmetric keys handed out once and kept sealed, and the SAS tokens signed by them.

``POST /devices/{id}/keys`` hands out a random key once; it is kept encrypted (AES-GCM under a key
derived from the server's secret key with HKDF, :class:`SecretBox`), because verifying an HMAC
needs the key itself. A device signs ``SharedAccessSignature`` tokens with it
(:mod:`roost.credentials.keys.sas`); :meth:`KeyService.verify_sas` is the device authenticator's
verifier for them, so every door (HTTP, WebSocket, MQTT) takes them. The key id (``key_…``) is the
credential id: revoking it refuses it in every process and closes the sessions opened with it
(:meth:`KeyService.revoked_keys` is the authenticator's revocation source for keys).
"""

from __future__ import annotations

import base64
import logging
import secrets
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from roost.audit import service as audit
from roost.core.access import Actor, Role
from roost.core.context import ServiceDeps
from roost.core.device_identity import DeviceIdentity, SasToken
from roost.credentials.authenticator import DeviceAuthenticator
from roost.credentials.keys import sas
from roost.credentials.keys.tables import device_keys
from roost.errors import AuthenticationFailed, InvalidInput, NotFound, PermissionDenied
from roost.inventory.devices.registry import device_pk_of
from roost.store.queries import Page, PageRequest, fetch_one, fetch_page, order_by

log = logging.getLogger(__name__)


# Devices whose decrypted keys are kept (~200 B each with one key): a SAS token costs an HMAC,
# not a database read and an AES decryption, once its device has been seen.
KEY_CACHE_SIZE = 65_536
# A token whose key is not in the cache reads the device's keys again, at most this often per
# device: a key made in another process works within this delay, and a flood of forged tokens
# costs at most one read a second per device.
KEY_RELOAD_INTERVAL_S = 1.0
# AES-GCM nonce size (bytes), as NIST SP 800-38D recommends.
NONCE_BYTES = 12
# Every stored secret (device keys, enrollment group keys) is sealed under this: never change it.
HKDF_INFO = b"roost provisioning secrets v1"
KEY_SORTS = ("id", "name", "created_at", "revoked_at")

_KEY_COLUMNS = (
    device_keys.c.id,
    device_keys.c.name,
    device_keys.c.created_at,
    device_keys.c.revoked_at,
)


class SecretBox:
    """AES-GCM encryption of stored secrets, under a key derived from the server secret."""

    def __init__(self, secret_key: str) -> None:
        derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=HKDF_INFO).derive(
            secret_key.encode("utf-8")
        )
        self._aead = AESGCM(derived)

    def seal(self, plaintext: bytes, context: str) -> bytes:
        """Nonce + ciphertext; ``context`` (the row's id) is bound to it as associated data."""
        nonce = secrets.token_bytes(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, context.encode("utf-8"))

    def open(self, sealed: bytes, context: str) -> bytes:
        """The plaintext; raises ValueError when it was sealed under another key or context."""
        try:
            return self._aead.decrypt(
                sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], context.encode("utf-8")
            )
        except InvalidTag as exc:
            raise ValueError(
                "a stored secret cannot be decrypted (was the secret key changed?)"
            ) from exc


@dataclass(slots=True)
class _DeviceKeys:
    """A device's keys as the verifier keeps them: id → (key bytes, revoked)."""

    loaded_at: float
    keys: dict[str, tuple[bytes, bool]]


def _key_out(row: Mapping[str, Any], device_id: str) -> dict[str, Any]:
    return {**row, "device_id": device_id}


class KeyService:
    """Device keys: make (shown once), list, revoke; and the SAS tokens signed with them."""

    def __init__(self, deps: ServiceDeps, device_auth: DeviceAuthenticator) -> None:
        self.deps = deps
        self.device_auth = device_auth
        self._box = SecretBox(deps.secret_key)
        self._keys: OrderedDict[int, _DeviceKeys] = OrderedDict()
        # Registered here: the authenticator loads revocations at its start, before ours.
        device_auth.register_verifier(SasToken, self.verify_sas)
        device_auth.register_revocation_source(self.revoked_keys)

    async def start(self) -> None:
        """Start background work (server only): none; the cache fills on use."""

    async def close(self) -> None:
        """Stop background work."""
        self._keys.clear()

    def _now(self) -> datetime:
        return self.deps.clock()

    # -- device keys ----------------------------------------------------------------------

    async def create_key(
        self, actor: Actor, device_id: str, name: str = ""
    ) -> tuple[dict[str, Any], str]:
        """Make a device key; answer its record and the key (Base64), shown this once."""
        actor.require(Role.OPERATOR)
        if len(name) > 200:
            raise InvalidInput("name must have at most 200 characters")
        key = sas.new_key()
        key_id = "key_" + secrets.token_hex(12)
        row = {"id": key_id, "name": name, "created_at": self._now(), "revoked_at": None}
        async with self.deps.db.write() as conn:
            pk = await device_pk_of(conn, actor.tenant_id, device_id)
            await conn.execute(
                device_keys.insert().values(
                    **row,
                    tenant_id=actor.tenant_id,
                    device_pk=pk,
                    secret=self._box.seal(base64.b64decode(key), key_id),
                )
            )
            out = _key_out(row, device_id)
            await audit.record(
                conn, actor, "create", "device_key", key_id, after=out, device_id=device_id
            )
        self._keys.pop(pk, None)
        return out, key

    async def list_keys(
        self, actor: Actor, device_id: str, page: PageRequest
    ) -> Page[dict[str, Any]]:
        """A device's keys, revoked ones included (never the key itself)."""
        actor.require(Role.VIEWER)
        async with self.deps.db.read() as conn:
            pk = await device_pk_of(conn, actor.tenant_id, device_id)
            query = sa.select(*_KEY_COLUMNS).where(device_keys.c.device_pk == pk)
            items, total = await fetch_page(
                conn, query, order_by(device_keys, page.sort, KEY_SORTS, "created_at"), page
            )
        return Page([_key_out(i, device_id) for i in items], total, page.limit, page.offset)

    async def revoke_key(self, actor: Actor, device_id: str, key_id: str) -> dict[str, Any]:
        """Revoke a device key at once, in every process; its sessions close."""
        actor.require(Role.OPERATOR)
        async with self.deps.db.write() as conn:
            pk = await device_pk_of(conn, actor.tenant_id, device_id)
            before = await fetch_one(
                conn,
                sa.select(*_KEY_COLUMNS).where(
                    device_keys.c.id == key_id, device_keys.c.device_pk == pk
                ),
            )
            if before is None:
                raise NotFound(f"no key {key_id!r} for device {device_id!r}")
            after = before
            if before["revoked_at"] is None:
                after = {**before, "revoked_at": self._now()}
                await conn.execute(
                    device_keys.update()
                    .where(device_keys.c.id == key_id)
                    .values(revoked_at=after["revoked_at"])
                )
                await audit.record(
                    conn,
                    actor,
                    "revoke",
                    "device_key",
                    key_id,
                    before=_key_out(before, device_id),
                    after=_key_out(after, device_id),
                    device_id=device_id,
                )
        self._keys.pop(pk, None)
        await self.device_auth.revoked(key_id, None)
        return _key_out(after, device_id)

    async def revoked_keys(self, since: datetime | None) -> list[tuple[str, datetime | None]]:
        """Revoked key ids (revoked at or after ``since``): the authenticator's source."""
        query = sa.select(device_keys.c.id).where(device_keys.c.revoked_at.is_not(None))
        if since is not None:
            query = query.where(device_keys.c.revoked_at >= since)
        async with self.deps.db.read() as conn:
            return [(key_id, None) for key_id in (await conn.execute(query)).scalars()]

    # -- verifying SAS tokens ---------------------------------------------------------------

    async def _load_keys(self, device_pk: int, now: float) -> _DeviceKeys:
        async with self.deps.db.read() as conn:
            rows = (
                await conn.execute(
                    sa.select(
                        device_keys.c.id, device_keys.c.secret, device_keys.c.revoked_at
                    ).where(device_keys.c.device_pk == device_pk)
                )
            ).all()
        entry = _DeviceKeys(now, {})
        for key_id, secret, revoked_at in rows:
            try:
                entry.keys[key_id] = (self._box.open(secret, key_id), revoked_at is not None)
            except ValueError:
                # Sealed under another server secret: that key cannot sign anything here.
                log.error("device key %s cannot be decrypted (was the secret key changed?)", key_id)
        if device_pk not in self._keys and len(self._keys) >= KEY_CACHE_SIZE:
            self._keys.popitem(last=False)
        self._keys[device_pk] = entry
        return entry

    def _match(self, entry: _DeviceKeys, fields: sas.SasFields) -> str | None:
        if fields.key_name is not None:
            named = entry.keys.get(fields.key_name)
            candidates = {} if named is None else {fields.key_name: named}
        else:
            candidates = entry.keys
        for key_id, (key, _revoked) in candidates.items():
            if sas.signature_matches(key, fields):
                return key_id
        return None

    async def verify_sas(self, presented: SasToken, now: float) -> DeviceIdentity:
        """The device behind a SAS token signed with one of its keys (the authenticator's
        verifier): malformed, expired or forged → AuthenticationFailed, revoked key →
        PermissionDenied."""
        fields = sas.parse_sas(presented.text)
        if fields.expiry <= now:
            raise AuthenticationFailed("SAS token expired")
        tenant_id, device_id = sas.parse_device_resource(fields.resource)
        entry = await self.device_auth.device_entry(tenant_id, device_id)
        if entry is None:
            raise AuthenticationFailed("no such device, or the signature does not match")
        device_pk, generation = entry
        keys = self._keys.get(device_pk)
        if keys is None:
            keys = await self._load_keys(device_pk, now)
        matched = self._match(keys, fields)
        if matched is None and now - keys.loaded_at >= KEY_RELOAD_INTERVAL_S:
            keys = await self._load_keys(device_pk, now)  # a key made since, maybe elsewhere
            matched = self._match(keys, fields)
        if matched is None:
            raise AuthenticationFailed("SAS signature does not match any key of the device")
        if keys.keys[matched][1] or self.device_auth.is_revoked(matched):
            raise PermissionDenied("device key revoked")
        identity = DeviceIdentity(
            tenant_id=tenant_id,
            device_id=device_id,
            device_pk=device_pk,
            credential_id=matched,
            expires_at=datetime.fromtimestamp(fields.expiry, UTC),
        )
        self.device_auth.admitted(identity, generation)
        return identity
