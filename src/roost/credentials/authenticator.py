"""The device authenticator: what every device door calls, for every kind of device credential.

:class:`DeviceAuthenticator` turns a credential into a device: it checks device tokens itself
(issued by :mod:`roost.credentials.tokens.service`) and hands SAS tokens and client certificates
to the verifiers their rooms register (:data:`Verifier`). Every device door (MQTT, HTTP ingest,
WebSocket) calls it, and it never touches the database on the hot path:

* the token's signature proves its claims (:mod:`roost.credentials.tokens.signing`);
* revoked token ids live in a set, loaded at :meth:`DeviceAuthenticator.start` and kept current
  through the bus (:data:`REVOCATION_SUBJECT`), so a token revoked through the API of one process
  is refused at once by the gateways of every other;
* ``(tenant, device id) → device pk`` comes from a cache (:mod:`roost.credentials.directory`);
  the first sight of a device reads it;
* a verified token is cached by its text, so a device that posts every few seconds costs a few
  dictionary lookups per request.

A device that is deleted takes its tokens with it: its cache entry is dropped at once (locally
through :attr:`DeviceService.deletion_listeners <roost.inventory.devices.service.DeviceService>`,
elsewhere through the bus), and a token names its device's *generation* (``dgn``), so a device
created again under the same id is not opened by the old device's tokens. The bus delivers at most
once; :meth:`DeviceAuthenticator.reconcile` catches up from the database every
:data:`RECONCILE_INTERVAL_S` (revocations the bus lost, deleted tenants, deleted devices). A
process learns the revocations made before it started from the rows of revoked tokens: a purge may
delete such a row only once the token has expired (never, for a token without expiry).

What the authenticator raises, and what the doors answer (DESIGN §3):

====================================================  =====================  =====  ========
condition                                              exception              HTTP   MQTT 5
====================================================  =====================  =====  ========
no credential; not a JWT (shape, base64, JSON,         AuthenticationFailed   401    0x86
over 2 KiB); MQTT without username/password or with
a password that is not UTF-8
bad signature or algorithm, another audience (a user   InvalidDeviceToken     403    0x86
token) or issuer, missing or ill-typed claims,         (an Authentication-
expired                                                Failed)
revoked; its device deleted (or re-created: another    PermissionDenied       403    0x87
generation); MQTT username neither ``JWT`` nor the
token's device id
a first-seen device cannot be looked up                Unavailable            503    0x88
====================================================  =====================  =====  ========

(MQTT 3.1.1: 0x86 → return code 4, 0x87 → 5, 0x88 → 3.)
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa

from roost.bus.base import Bus, Subscription
from roost.core.device_identity import (
    SAS_PREFIX,
    BearerToken,
    ClientCertificate,
    DeviceIdentity,
    PresentedCredential,
    SasToken,
)
from roost.credentials.directory import DeviceDirectory, DeviceKey, put_bounded
from roost.credentials.tokens.signing import device_generation, verify_device_token
from roost.credentials.tokens.tables import device_tokens
from roost.errors import AuthenticationFailed, PermissionDenied
from roost.inventory.tables import devices
from roost.store.database import Database

log = logging.getLogger(__name__)

# Bus subject of revocation notices. Payload (JSON): {"tokens": [{"id": <token id>, "exp": <epoch
# seconds or null>}], "devices": [{"tenant_id": ..., "device_id": ...}]}, either list may be empty.
REVOCATION_SUBJECT = "roost.credentials.revoked"
# The MQTT username that lets the token alone name the device (the seed system's convention).
MQTT_JWT_USERNAME = "JWT"
REVOKED = "device token revoked"
DEVICE_GONE = "the token's device has been deleted"

# Verified tokens kept by their text. HTTP devices that post every few seconds stay in it; an
# entry is ~0.5 KB, so 16k entries cost ~8 MB, and a miss costs one signature check (~17 µs),
# never a database trip.
TOKEN_CACHE_SIZE = 16_384
# last_used_at tells an unused token from a live one; once a minute is precise enough, and spares
# the database a write per request.
USAGE_WRITE_INTERVAL_S = 60.0
# How often pending last_used_at writes are flushed (one batched UPDATE).
MAINTENANCE_INTERVAL_S = 10.0
# How often the database is read for revocations and deletions the bus did not bring: the bound
# on how long a lost notification can leave a revoked token usable.
RECONCILE_INTERVAL_S = 60.0
# Revocations are looked for back to the previous pass minus this margin: revoked_at is the
# revoking process's clock before its commit, and processes' clocks differ a little.
RECONCILE_MARGIN_S = 120.0
# Devices checked per query when reconciling (well under every backend's parameter limit).
RECONCILE_CHUNK = 500

RevocationCallback = Callable[[str], None]
#: Checks one kind of credential (a SAS token, a client certificate): ``await verifier(presented,
#: now)`` answers the device or raises as the module docstring tabulates. Verifiers resolve the
#: device with :meth:`DeviceAuthenticator.device_entry` and report what they let in with
#: :meth:`DeviceAuthenticator.admitted`, so deletion and revocation work for every kind alike.
Verifier = Callable[[Any, float], Awaitable[DeviceIdentity]]
#: Revoked credentials of one kind that are still unexpired: ``await source(since)`` answers
#: ``(credential id, expires_at)`` pairs revoked at or after ``since`` (every one when None).
RevocationSource = Callable[[datetime | None], Awaitable[Iterable[tuple[str, datetime | None]]]]


def _call_safely(callback: Callable[..., None], *args: str) -> None:
    """Run a revocation callback; one gateway's fault must not stop the others hearing of it."""
    try:
        callback(*args)
    except Exception:
        log.exception("revocation callback %r failed", callback)


def _epoch_or_inf(moment: datetime | None) -> float:
    return math.inf if moment is None else moment.timestamp()


@dataclass(slots=True)  # not frozen: built on every first sight, and frozen init costs ~1 µs
class _Verified:
    """A token whose signature and claims were checked, kept by its text."""

    identity: DeviceIdentity
    key: DeviceKey
    generation: int
    expires: float  # epoch seconds; inf without expiry


class DeviceAuthenticator:
    """Turns a device's credential into a :class:`DeviceIdentity`, without a database round trip
    once the device has been seen (see the module docstring for what each refusal raises)."""

    def __init__(
        self, db: Database, bus: Bus, secret_key: str, clock: Callable[[], datetime]
    ) -> None:
        self._db = db
        self._bus = bus
        self._secret = secret_key
        self._clock = clock
        self._verified: OrderedDict[str, _Verified] = OrderedDict()
        self._directory = DeviceDirectory(db)
        # Token id → (its expiry, inf for none; why it is refused).
        self._revoked: dict[str, tuple[float, str]] = {}
        # Tokens this process let in, by device: what to refuse and whose sessions to close when
        # the device is deleted (its token rows go with it).
        self._seen: dict[DeviceKey, dict[str, tuple[int, float]]] = {}
        self._last_usage: dict[str, float] = {}
        self._pending_usage: dict[str, float] = {}
        self._callbacks: list[RevocationCallback] = []
        self._scoped: dict[str, list[Callable[[], None]]] = {}
        self._subscription: Subscription | None = None
        self._task: asyncio.Task[None] | None = None
        self._reconciled_at: datetime | None = None
        self._verifiers: dict[type, Verifier] = {}
        self._revocation_sources: list[RevocationSource] = []

    # -- life cycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen for revocations, load the revoked tokens, start the background upkeep."""
        # Subscribed before loading, so that nothing revoked in between is missed.
        self._subscription = await self._bus.subscribe(REVOCATION_SUBJECT, self._on_notice)
        now = self._clock()
        query = sa.select(device_tokens.c.id, device_tokens.c.expires_at).where(
            device_tokens.c.revoked_at.is_not(None),
            sa.or_(device_tokens.c.expires_at.is_(None), device_tokens.c.expires_at > now),
        )
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).all()
        for token_id, expires_at in rows:
            self._revoked[token_id] = (_epoch_or_inf(expires_at), REVOKED)
        for source in self._revocation_sources:
            for credential_id, expires_at in await source(None):
                self._revoked[credential_id] = (_epoch_or_inf(expires_at), REVOKED)
        self._reconciled_at = now
        log.debug("device authenticator started with %d revoked tokens", len(rows))
        self._task = asyncio.create_task(self._upkeep(), name="roost-device-auth-upkeep")

    async def close(self) -> None:
        """Stop the upkeep, write pending usage times, stop listening."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        try:
            await self.flush_usage()
        except Exception:  # closing must go on; the times are only informative
            log.warning("could not write device token usage times", exc_info=True)
        if self._subscription is not None:
            await self._subscription.stop()
            self._subscription = None

    # -- the doors' calls --------------------------------------------------------------------

    async def authenticate_token(self, token: str) -> DeviceIdentity:
        """The device a bearer token belongs to; raises as the module docstring tabulates."""
        now = self._clock().timestamp()
        hit = self._verified.get(token)
        if hit is not None:
            identity = hit.identity
            device = self._directory.entries.get(hit.key)
            if (
                now < hit.expires
                and identity.credential_id not in self._revoked
                and device is not None
                and device.generation == hit.generation
            ):
                self._note_usage(identity.credential_id, now)
                return identity
            # Expired, revoked, or the device changed: the full path says why, or re-resolves.
            del self._verified[token]
        return await self._authenticate_uncached(token, now)

    async def authenticate(self, presented: PresentedCredential) -> DeviceIdentity:
        """The device behind any kind of credential (token, SAS token, client certificate)."""
        if isinstance(presented, BearerToken):
            return await self.authenticate_token(presented.text)
        verifier = self._verifiers.get(type(presented))
        if verifier is None:
            kind = "SAS tokens" if isinstance(presented, SasToken) else "client certificates"
            raise AuthenticationFailed(f"{kind} are not accepted by this server")
        return await verifier(presented, self._clock().timestamp())

    async def authenticate_mqtt(
        self,
        username: str | None,
        password: bytes | None,
        client_certificate: bytes | None = None,
    ) -> DeviceIdentity:
        """Authenticate an MQTT CONNECT.

        A client certificate checked by TLS names the device by itself (username and password
        are not needed; a username, when sent, must be the certificate's device). Otherwise the
        username is the device id (which must be the credential's) or ``JWT`` (the token alone
        names the device), and the password a device token or a ``SharedAccessSignature …``.
        """
        if client_certificate is not None:
            identity = await self.authenticate(ClientCertificate(client_certificate))
            if username and username not in (MQTT_JWT_USERNAME, identity.device_id):
                raise PermissionDenied(f"this certificate does not belong to device {username!r}")
            return identity
        if not username:
            raise AuthenticationFailed("MQTT username required: the device id, or JWT")
        if not password:
            raise AuthenticationFailed("MQTT password required: a device token")
        try:
            text = password.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise AuthenticationFailed("malformed device token: the password is not UTF-8") from exc
        presented: PresentedCredential = (
            SasToken(text) if text.startswith(SAS_PREFIX) else BearerToken(text)
        )
        identity = await self.authenticate(presented)
        if username != MQTT_JWT_USERNAME and username != identity.device_id:
            raise PermissionDenied(f"this credential does not belong to device {username!r}")
        return identity

    # -- extension points for other credential kinds ------------------------------------------

    def register_verifier(self, kind: type, verifier: Verifier) -> None:
        """Check credentials of ``kind`` (:class:`SasToken`, :class:`ClientCertificate`) with
        ``verifier`` (see :data:`Verifier`)."""
        self._verifiers[kind] = verifier

    def register_revocation_source(self, source: RevocationSource) -> None:
        """Load revoked credentials of another kind at start and at every reconcile."""
        self._revocation_sources.append(source)

    async def device_entry(self, tenant_id: str, device_id: str) -> tuple[int, int] | None:
        """The device's ``(pk, generation)`` (cached; read once when first seen), or None."""
        key = (tenant_id, device_id)
        device = self._directory.entries.get(key)
        if device is None:
            device = await self._directory.load(key)
        return None if device is None else (device.pk, device.generation)

    def admitted(self, identity: DeviceIdentity, generation: int) -> None:
        """A verifier let ``identity`` in: its sessions close when the credential is revoked
        or the device deleted (as for tokens)."""
        if identity.credential_id in self._revoked:
            raise PermissionDenied(self._revoked[identity.credential_id][1])
        expires = math.inf if identity.expires_at is None else identity.expires_at.timestamp()
        key = (identity.tenant_id, identity.device_id)
        self._seen.setdefault(key, {})[identity.credential_id] = (generation, expires)

    def on_revoked(self, callback: RevocationCallback) -> Callable[[], None]:
        """Call ``callback(credential id)`` when a credential is revoked, here or in another
        process, and for each token this process let in when its device is deleted (gateways
        close the sessions opened with it).

        Called once per credential, synchronously, from the event loop; it must not block.
        Answers a function that removes the callback.
        """
        self._callbacks.append(callback)

        def remove() -> None:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

        return remove

    def on_revoked_scoped(
        self, credential_id: str, callback: Callable[[], None]
    ) -> Callable[[], None]:
        """Call ``callback()`` once when this one credential is revoked (a session's watch; at
        once if it already is). Answers a function that removes the callback.
        """
        if credential_id in self._revoked:
            callback()
            return lambda: None
        self._scoped.setdefault(credential_id, []).append(callback)

        def remove() -> None:
            waiting = self._scoped.get(credential_id)
            if waiting is not None and callback in waiting:
                waiting.remove(callback)
                if not waiting:
                    del self._scoped[credential_id]

        return remove

    def is_revoked(self, credential_id: str) -> bool:
        """True when the credential is known revoked (a cheap check for long-lived sessions)."""
        return credential_id in self._revoked

    # -- what the services tell it ----------------------------------------------------------

    async def revoked(self, token_id: str, expires_at: datetime | None) -> None:
        """A revocation this process committed: refuse the credential (a token, certificate or
        key id) here now, then tell the others."""
        expires = _epoch_or_inf(expires_at)
        self._revoke_locally(token_id, expires)
        exp = None if math.isinf(expires) else int(expires)
        await self._publish({"tokens": [{"id": token_id, "exp": exp}], "devices": []})

    async def device_deleted(self, tenant_id: str, device_id: str) -> None:
        """A device deletion this process committed: refuse its tokens here now, then tell the
        others (a ``DeviceService`` deletion listener)."""
        key = (tenant_id, device_id)
        self._directory.forget(key)
        self._refuse_other_generations(key, None, list(self._seen.get(key, ())))
        await self._publish(
            {"tokens": [], "devices": [{"tenant_id": tenant_id, "device_id": device_id}]}
        )

    # -- background upkeep -----------------------------------------------------------------

    async def flush_usage(self) -> None:
        """Write the pending ``last_used_at`` times in one batched UPDATE."""
        if not self._pending_usage:
            return
        pending, self._pending_usage = self._pending_usage, {}
        params = [
            {"token_id": token_id, "used_at": datetime.fromtimestamp(at, UTC)}
            for token_id, at in pending.items()
        ]
        statement = (
            device_tokens.update()
            .where(device_tokens.c.id == sa.bindparam("token_id"))
            .values(last_used_at=sa.bindparam("used_at"))
        )
        try:
            async with self._db.write() as conn:
                await conn.execute(statement, params)
        except BaseException:
            # Kept for the next flush, unless a newer time was noted meanwhile.
            self._pending_usage = {**pending, **self._pending_usage}
            raise

    async def reconcile(self) -> None:
        """Catch up from the database with what the bus may have lost: tokens revoked since the
        last pass, and devices (or whole tenants) deleted or re-created since they were seen."""
        started = self._clock()
        since = (self._reconciled_at or started).timestamp() - RECONCILE_MARGIN_S
        # Only tokens seen before the read are judged by it: one seen later may belong to a
        # device created after the read.
        seen_before = {key: list(seen) for key, seen in self._seen.items()}
        keys = list({*self._directory.entries, *seen_before})
        current: dict[DeviceKey, int] = {}
        async with self._db.read() as conn:
            revoked = (
                await conn.execute(
                    sa.select(device_tokens.c.id, device_tokens.c.expires_at).where(
                        device_tokens.c.revoked_at >= datetime.fromtimestamp(since, UTC)
                    )
                )
            ).all()
            for i in range(0, len(keys), RECONCILE_CHUNK):
                found = await conn.execute(
                    sa.select(devices.c.tenant_id, devices.c.id, devices.c.created_at).where(
                        sa.tuple_(devices.c.tenant_id, devices.c.id).in_(
                            keys[i : i + RECONCILE_CHUNK]
                        )
                    )
                )
                for tenant_id, device_id, created_at in found:
                    current[(tenant_id, device_id)] = device_generation(created_at)
        for token_id, expires_at in revoked:
            self._revoke_locally(token_id, _epoch_or_inf(expires_at))
        for source in self._revocation_sources:
            for credential_id, expires_at in await source(datetime.fromtimestamp(since, UTC)):
                self._revoke_locally(credential_id, _epoch_or_inf(expires_at))
        for key in keys:
            generation = current.get(key)
            cached = self._directory.entries.get(key)
            if cached is not None and cached.generation != generation:
                self._directory.forget(key)  # at worst one extra read if the entry was newer
            if key in seen_before:
                self._refuse_other_generations(key, generation, seen_before[key])
        self._prune(started.timestamp())
        self._reconciled_at = started

    async def _upkeep(self) -> None:
        loop = asyncio.get_running_loop()
        next_reconcile = loop.time() + RECONCILE_INTERVAL_S
        while True:
            await asyncio.sleep(MAINTENANCE_INTERVAL_S)
            # A background loop must outlive a database or bus hiccup: log, and try next time.
            try:
                await self.flush_usage()
                if loop.time() >= next_reconcile:
                    next_reconcile = loop.time() + RECONCILE_INTERVAL_S
                    await self.reconcile()
            except Exception:
                log.warning("device credential upkeep failed; retrying later", exc_info=True)

    # -- internals ---------------------------------------------------------------------------

    async def _authenticate_uncached(self, token: str, now: float) -> DeviceIdentity:
        claims = verify_device_token(self._secret, token, now)
        token_id = claims.token_id
        if token_id in self._revoked:
            raise PermissionDenied(self._revoked[token_id][1])
        key = (claims.tenant_id, claims.device_id)
        generation = claims.device_generation
        device = self._directory.entries.get(key)
        if device is None or device.generation < generation:
            # Never seen, or our entry predates the device's re-creation: read it once.
            if self._directory.is_gone(key, generation):
                raise PermissionDenied(DEVICE_GONE)
            device = await self._directory.load(key)
            if token_id in self._revoked:  # revoked while we were reading
                raise PermissionDenied(self._revoked[token_id][1])
        if device is None or device.generation != generation:
            if device is None or device.generation > generation:
                self._directory.mark_gone(key, generation)
            raise PermissionDenied(DEVICE_GONE)
        expires = math.inf if claims.expires_at is None else float(claims.expires_at)
        identity = DeviceIdentity(
            tenant_id=claims.tenant_id,
            device_id=claims.device_id,
            device_pk=device.pk,
            credential_id=token_id,
            expires_at=None
            if claims.expires_at is None
            else datetime.fromtimestamp(claims.expires_at, UTC),
        )
        put_bounded(
            self._verified, token, _Verified(identity, key, generation, expires), TOKEN_CACHE_SIZE
        )
        self._seen.setdefault(key, {})[token_id] = (generation, expires)
        self._note_usage(token_id, now)
        return identity

    def _note_usage(self, token_id: str, now: float) -> None:
        last = self._last_usage.get(token_id)
        if last is None or now - last >= USAGE_WRITE_INTERVAL_S:
            self._last_usage[token_id] = now
            self._pending_usage[token_id] = now

    def _revoke_locally(self, token_id: str, expires: float, reason: str = REVOKED) -> None:
        """Refuse a token from now on; tell the callbacks the first time only."""
        if token_id in self._revoked:
            return
        self._revoked[token_id] = (expires, reason)
        for callback in list(self._callbacks):
            _call_safely(callback, token_id)
        for scoped in self._scoped.pop(token_id, ()):
            _call_safely(scoped)

    def _refuse_other_generations(
        self, key: DeviceKey, generation: int | None, token_ids: Iterable[str]
    ) -> None:
        """Among ``token_ids`` seen for ``key``, revoke those not of the device's current
        ``generation`` (all of them when the device is gone): a generation never comes back."""
        seen = self._seen.get(key)
        if not seen:
            return
        for token_id in token_ids:
            entry = seen.get(token_id)
            if entry is not None and entry[0] != generation:
                del seen[token_id]
                self._revoke_locally(token_id, entry[1], DEVICE_GONE)
        if not seen:
            del self._seen[key]

    def _prune(self, now: float) -> None:
        """Forget what expiry already refuses, and usage times older than the write interval."""
        for token_id in [t for t, (exp, _) in self._revoked.items() if exp <= now]:
            del self._revoked[token_id]
        for token in [t for t, v in self._verified.items() if v.expires <= now]:
            del self._verified[token]
        for token_id in [
            t for t, at in self._last_usage.items() if now - at >= USAGE_WRITE_INTERVAL_S
        ]:
            del self._last_usage[token_id]
        for key, seen in list(self._seen.items()):
            for token_id in [t for t, (_, exp) in seen.items() if exp <= now]:
                del seen[token_id]
            if not seen:
                del self._seen[key]

    async def _publish(self, notice: dict[str, Any]) -> None:
        try:
            await self._bus.publish(REVOCATION_SUBJECT, orjson.dumps(notice))
        except Exception:  # committed already; every process reconciles from the database
            log.warning(
                "could not announce a revocation on the bus; other processes will see it "
                "within %.0f s",
                RECONCILE_INTERVAL_S,
                exc_info=True,
            )

    async def _on_notice(self, subject: str, data: bytes) -> None:
        """A revocation notice from the bus (our own come back too: applying is idempotent)."""
        try:
            notice = orjson.loads(data)
            tokens = [(str(t["id"]), t.get("exp")) for t in notice.get("tokens", ())]
            keys = [(str(d["tenant_id"]), str(d["device_id"])) for d in notice.get("devices", ())]
        except (orjson.JSONDecodeError, TypeError, KeyError, AttributeError):
            log.warning("ignored a malformed revocation notice: %r", data[:200])
            return
        for token_id, exp in tokens:
            self._revoke_locally(token_id, float(exp) if isinstance(exp, int | float) else math.inf)
        for key in keys:
            await self._device_deleted_elsewhere(key)

    async def _device_deleted_elsewhere(self, key: DeviceKey) -> None:
        # Forget at once; then ask the database which generation (if any) exists now, so that
        # a late notice never refuses the tokens of a device created again since.
        token_ids = list(self._seen.get(key, ()))
        self._directory.forget(key)
        device = await self._directory.read(key)
        self._refuse_other_generations(
            key, None if device is None else device.generation, token_ids
        )
