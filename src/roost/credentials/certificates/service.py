"""Device X.509 certificates from the platform CA: issue, list, revoke, rotate; verification.

The CA (:mod:`roost.credentials.certificates.ca`) is the operator's, when ``ROOST_CA_CERT_FILE`` and
``ROOST_CA_KEY_FILE`` name one, or Roost's own: made on first start and kept in the database
(table ``certificate_authorities``, key sealed under the secret key), so that every process of a
scale deployment signs and verifies with the same CA whatever disk it runs on. Its certificate is
also written to ``data_dir/ca/ca.pem`` for operators; the TLS listeners' server certificate and
key live in ``data_dir/tls/`` (key mode 0600), issued again when missing, not from the current
CA, not for the configured names, or near its end.

A device presents its certificate on MQTT over TLS (the TLS layer checked it against the CA) or
through a trusted HTTPS proxy (nobody checked it yet): :meth:`CertificateService.verify` checks
the CA signature and validity itself, then the certificate row (revoked → 403, unknown → 401) and
the device's generation, like the token path (see :mod:`roost.credentials.authenticator`).

Rotation: ``POST …/certificates/{id}/rotate`` issues the new certificate and revokes the old one
in the same transaction (its live sessions close once the answer is committed). A device that
needs an overlap gets a second certificate with ``POST …/certificates`` and the old one is
revoked later with ``DELETE``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from cryptography import x509
from sqlalchemy.ext.asyncio import AsyncConnection

from roost.audit import service as audit
from roost.core.access import Actor, Role
from roost.core.context import ServiceDeps
from roost.core.device_identity import ClientCertificate, DeviceIdentity
from roost.credentials.authenticator import DeviceAuthenticator
from roost.credentials.certificates import ca as x509ca
from roost.credentials.certificates.ca import CertificateAuthority, DeviceName
from roost.credentials.certificates.tables import certificate_authorities, device_certificates
from roost.credentials.tokens.signing import device_generation
from roost.errors import (
    AuthenticationFailed,
    ConfigError,
    Conflict,
    InvalidInput,
    NotFound,
    PermissionDenied,
)
from roost.inventory.tables import devices
from roost.store.queries import Page, PageRequest, fetch_one, fetch_page, order_by

log = logging.getLogger(__name__)

PLATFORM_CA_ID = "platform"
CA_DIR = "ca"
TLS_DIR = "tls"
SERVER_CERT_FILE = "server.pem"
SERVER_KEY_FILE = "server.key"
# A server certificate with less than this left is issued again at start (a year's certificate
# thus renews at a restart in its last month).
SERVER_RENEW_BEFORE = timedelta(days=30)
# Certificates known by fingerprint (~300 B each): every device a large gateway serves. A miss
# costs one indexed read.
CERTIFICATE_CACHE_SIZE = 262_144
CERT_ID_PREFIX = "crt_"
REVOKED = "device certificate revoked"
DEVICE_GONE = "the certificate's device has been deleted"

_COLUMNS = (
    device_certificates.c.id,
    device_certificates.c.serial,
    device_certificates.c.fingerprint,
    device_certificates.c.certificate,
    device_certificates.c.key_generated,
    device_certificates.c.not_before,
    device_certificates.c.not_after,
    device_certificates.c.created_at,
    device_certificates.c.revoked_at,
)
SORTS = ("id", "created_at", "not_after", "revoked_at")


def new_certificate_id() -> str:
    """A certificate row id: ``crt_`` and 96 random bits (unique across credential kinds)."""
    return CERT_ID_PREFIX + secrets.token_hex(12)


@dataclass(frozen=True, slots=True)
class _Known:
    """A certificate whose signature was checked and whose row was found, by fingerprint."""

    id: str
    name: DeviceName
    not_before: float
    not_after: datetime


class CertificateService:
    """The platform CA, device certificates, and the verifier of client certificates."""

    def __init__(self, deps: ServiceDeps, device_auth: DeviceAuthenticator) -> None:
        self.deps = deps
        self.device_auth = device_auth
        self._authority: CertificateAuthority | None = None
        self._authority_lock = asyncio.Lock()
        self._known: OrderedDict[str, _Known] = OrderedDict()
        device_auth.register_verifier(ClientCertificate, self.verify)
        device_auth.register_revocation_source(self.revoked_since)

    async def start(self) -> None:
        """Load (or create) the CA now, so the first device does not wait for it."""
        await self.authority()

    async def close(self) -> None:
        """Nothing runs in the background."""

    # -- the CA --------------------------------------------------------------------------------

    async def authority(self) -> CertificateAuthority:
        """The platform CA: the operator's files, else the one in the database (made once)."""
        if self._authority is not None:
            return self._authority
        async with self._authority_lock:
            if self._authority is None:
                self._authority = await self._load_authority()
                self._write_public_ca(self._authority)
        return self._authority

    async def ca_pem(self) -> str:
        """The CA certificate (PEM), which devices trust and the TLS layer checks against."""
        return (await self.authority()).pem

    async def _load_authority(self) -> CertificateAuthority:
        settings = self.deps.settings
        if settings.ca_cert_file or settings.ca_key_file:
            if not (settings.ca_cert_file and settings.ca_key_file):
                raise ConfigError("set both ROOST_CA_CERT_FILE and ROOST_CA_KEY_FILE, or neither")
            try:
                cert_data, key_data = await asyncio.to_thread(
                    lambda: (
                        Path(settings.ca_cert_file).read_bytes(),
                        Path(settings.ca_key_file).read_bytes(),
                    )
                )
                authority = CertificateAuthority.from_pem(cert_data, key_data)
            except OSError as exc:
                raise ConfigError(f"ROOST_CA_CERT_FILE / ROOST_CA_KEY_FILE: {exc}") from None
            log.info("using the operator's CA from %s", settings.ca_cert_file)
            return authority
        stored = await self._read_stored_authority()
        if stored is not None:
            return stored
        made = CertificateAuthority.generate(self.deps.clock())
        sealed = x509ca.seal_private_key(made.key, self.deps.secret_key)
        try:
            async with self.deps.db.write() as conn:
                await conn.execute(
                    certificate_authorities.insert().values(
                        id=PLATFORM_CA_ID,
                        certificate=made.pem,
                        sealed_key=sealed,
                        created_at=self.deps.clock(),
                    )
                )
        except Conflict:  # another process made it first: use theirs
            stored = await self._read_stored_authority()
            if stored is None:
                raise
            return stored
        log.info("created the platform CA (stored in the database)")
        return made

    async def _read_stored_authority(self) -> CertificateAuthority | None:
        async with self.deps.db.read() as conn:
            row = await fetch_one(
                conn,
                sa.select(
                    certificate_authorities.c.certificate, certificate_authorities.c.sealed_key
                ).where(certificate_authorities.c.id == PLATFORM_CA_ID),
            )
        if row is None:
            return None
        key = x509ca.open_private_key(row["sealed_key"], self.deps.secret_key)
        return CertificateAuthority(
            x509.load_pem_x509_certificate(row["certificate"].encode("ascii")), key
        )

    def _write_public_ca(self, authority: CertificateAuthority) -> None:
        """Keep a copy of the CA certificate in the data dir (public; handy for clients)."""
        try:
            folder = self.deps.settings.data_dir / CA_DIR
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "ca.pem").write_text(authority.pem)
        except OSError:
            log.warning("could not write the CA certificate to the data dir", exc_info=True)

    async def server_credentials(self) -> tuple[Path, Path]:
        """The TLS listeners' certificate and key files (issued by the CA when needed)."""
        authority = await self.authority()
        return await asyncio.to_thread(self._server_files, authority, self.deps.clock())

    def _server_files(self, authority: CertificateAuthority, now: datetime) -> tuple[Path, Path]:
        folder = self.deps.settings.data_dir / TLS_DIR
        cert_path, key_path = folder / SERVER_CERT_FILE, folder / SERVER_KEY_FILE
        hostnames = tuple(self.deps.settings.tls_hostnames) or ("localhost",)
        if cert_path.is_file() and key_path.is_file():
            try:
                current = x509.load_pem_x509_certificate(cert_path.read_bytes())
                sans = current.extensions.get_extension_for_class(x509.SubjectAlternativeName)
                names = {str(v) for v in sans.value.get_values_for_type(x509.DNSName)} | {
                    str(v) for v in sans.value.get_values_for_type(x509.IPAddress)
                }
                if (
                    authority.signed(current)
                    and names == set(hostnames)
                    and current.not_valid_after_utc - now > SERVER_RENEW_BEFORE
                ):
                    return cert_path, key_path
            except (ValueError, x509.ExtensionNotFound):
                pass  # unreadable or foreign: issue a new one
        key = x509ca.generate_key()
        issued = authority.issue_server_certificate(key.public_key(), hostnames, now)
        folder.mkdir(parents=True, exist_ok=True)
        tmp_key = key_path.with_suffix(".tmp")
        tmp_key.unlink(missing_ok=True)
        fd = os.open(tmp_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(x509ca.private_key_pem(key))
        os.replace(tmp_key, key_path)
        cert_path.write_text(issued.pem + authority.pem)  # the chain: leaf, then the CA
        log.info("issued the TLS server certificate for %s", ", ".join(hostnames))
        return cert_path, key_path

    # -- issuing -------------------------------------------------------------------------------

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

    async def issue_in(
        self,
        conn: AsyncConnection,
        tenant_id: str,
        device_id: str,
        csr: str | None = None,
        days: int | None = None,
    ) -> tuple[dict[str, Any], str | None]:
        """Issue a certificate for a device inside the caller's write transaction (provisioning
        uses this too); answer the stored row and, when no CSR was given, the generated private
        key (PEM), which is never stored. InvalidInput for a bad CSR or ``days``.

        Await :meth:`authority` before opening the transaction: making the CA on first use
        writes to the database, which on SQLite must not wait inside another write.
        """
        if days is None:
            days = x509ca.DEVICE_VALIDITY_DAYS
        if not 1 <= days <= x509ca.MAX_DEVICE_DAYS:
            raise InvalidInput(f"days must be between 1 and {x509ca.MAX_DEVICE_DAYS}")
        generated = None
        if csr is not None:
            public_key = x509ca.read_csr(csr)
        else:
            generated = x509ca.generate_key()
            public_key = generated.public_key()
        authority = await self.authority()
        device = await self._device(conn, tenant_id, device_id)
        now = self.deps.clock()
        name = DeviceName(tenant_id, device_id, device_generation(device["created_at"]))
        issued = authority.issue_device_certificate(public_key, name, now, days)
        row = {
            "id": new_certificate_id(),
            "device_id": device_id,
            "serial": issued.serial,
            "fingerprint": issued.fingerprint,
            "certificate": issued.pem,
            "key_generated": generated is not None,
            "not_before": issued.not_before,
            "not_after": issued.not_after,
            "created_at": now,
            "revoked_at": None,
        }
        await conn.execute(
            device_certificates.insert().values(
                tenant_id=tenant_id,
                device_pk=device["pk"],
                **{k: v for k, v in row.items() if k != "device_id"},
            )
        )
        return row, None if generated is None else x509ca.private_key_pem(generated)

    async def issue(
        self, actor: Actor, device_id: str, csr: str | None = None, days: int | None = None
    ) -> tuple[dict[str, Any], str | None]:
        """Issue a device certificate (operator): from a CSR, or with a generated key pair
        whose private key is answered this once."""
        actor.require(Role.OPERATOR)
        await self.authority()  # before the transaction (see issue_in)
        async with self.deps.db.write() as conn:
            row, key = await self.issue_in(conn, actor.tenant_id, device_id, csr, days)
            await audit.record(
                conn,
                actor,
                "create",
                "device_certificate",
                row["id"],
                after=_audited(row),
                device_id=device_id,
            )
        return row, key

    # -- reading, revoking, rotating -----------------------------------------------------------

    async def list_certificates(
        self, actor: Actor, device_id: str, page: PageRequest
    ) -> Page[dict[str, Any]]:
        """A device's certificates, revoked ones included."""
        actor.require(Role.VIEWER)
        async with self.deps.db.read() as conn:
            device = await self._device(conn, actor.tenant_id, device_id)
            query = sa.select(*_COLUMNS).where(device_certificates.c.device_pk == device["pk"])
            items, total = await fetch_page(
                conn, query, order_by(device_certificates, page.sort, SORTS, "created_at"), page
            )
        for item in items:
            item["device_id"] = device_id
        return Page(items, total, page.limit, page.offset)

    async def _row(
        self, conn: AsyncConnection, tenant_id: str, device_id: str, cert_id: str
    ) -> dict[str, Any]:
        device = await self._device(conn, tenant_id, device_id)
        row = await fetch_one(
            conn,
            sa.select(*_COLUMNS).where(
                device_certificates.c.id == cert_id,
                device_certificates.c.device_pk == device["pk"],
            ),
        )
        if row is None:
            raise NotFound(f"no certificate {cert_id!r} for device {device_id!r}")
        row["device_id"] = device_id
        return row

    async def get(self, actor: Actor, device_id: str, cert_id: str) -> dict[str, Any]:
        """One certificate of a device."""
        actor.require(Role.VIEWER)
        async with self.deps.db.read() as conn:
            return await self._row(conn, actor.tenant_id, device_id, cert_id)

    async def _revoke_in(
        self, conn: AsyncConnection, actor: Actor, before: dict[str, Any]
    ) -> dict[str, Any]:
        if before["revoked_at"] is not None:
            return before
        after = {**before, "revoked_at": self.deps.clock()}
        await conn.execute(
            device_certificates.update()
            .where(device_certificates.c.id == before["id"])
            .values(revoked_at=after["revoked_at"])
        )
        await audit.record(
            conn,
            actor,
            "revoke",
            "device_certificate",
            before["id"],
            before=_audited(before),
            after=_audited(after),
            device_id=before["device_id"],
        )
        return after

    async def revoke(self, actor: Actor, device_id: str, cert_id: str) -> dict[str, Any]:
        """Revoke a certificate: refused at once in every process, live sessions closed.

        Revoking a revoked certificate changes nothing (and announces it again).
        """
        actor.require(Role.OPERATOR)
        async with self.deps.db.write() as conn:
            before = await self._row(conn, actor.tenant_id, device_id, cert_id)
            after = await self._revoke_in(conn, actor, before)
        await self.device_auth.revoked(cert_id, after["not_after"])
        return after

    async def rotate(
        self,
        actor: Actor,
        device_id: str,
        cert_id: str,
        csr: str | None = None,
        days: int | None = None,
    ) -> tuple[dict[str, Any], str | None]:
        """Issue a new certificate for the device and revoke ``cert_id``, in one transaction."""
        actor.require(Role.OPERATOR)
        await self.authority()  # before the transaction (see issue_in)
        async with self.deps.db.write() as conn:
            old = await self._row(conn, actor.tenant_id, device_id, cert_id)
            if old["revoked_at"] is not None:
                raise Conflict(f"certificate {cert_id!r} is revoked already: issue a new one")
            row, key = await self.issue_in(conn, actor.tenant_id, device_id, csr, days)
            await audit.record(
                conn,
                actor,
                "create",
                "device_certificate",
                row["id"],
                after={**_audited(row), "rotates": cert_id},
                device_id=device_id,
            )
            old_after = await self._revoke_in(conn, actor, old)
        await self.device_auth.revoked(cert_id, old_after["not_after"])
        return row, key

    async def revoked_since(self, since: datetime | None) -> Iterable[tuple[str, datetime | None]]:
        """Revoked, unexpired certificates (revoked at or after ``since``; all when None): the
        device authenticator's revocation source."""
        query = sa.select(device_certificates.c.id, device_certificates.c.not_after).where(
            device_certificates.c.revoked_at.is_not(None)
            if since is None
            else device_certificates.c.revoked_at >= since,
            device_certificates.c.not_after > self.deps.clock(),
        )
        async with self.deps.db.read() as conn:
            return [(cert_id, not_after) for cert_id, not_after in await conn.execute(query)]

    # -- verifying -----------------------------------------------------------------------------

    async def verify(self, presented: ClientCertificate, now: float) -> DeviceIdentity:
        """The device a client certificate belongs to (the ``ClientCertificate`` verifier).

        401 for bytes that are not a certificate or an unknown one; 403 for another CA's, a
        forged or expired one, a revoked one, or one whose device is gone (or re-created).
        """
        der = presented.der
        moment = datetime.fromtimestamp(now, UTC)
        fingerprint = x509ca.fingerprint(der)
        known = self._known.get(fingerprint)
        if known is None:
            certificate = (await self.authority()).verify_client_certificate(der, moment)
            name = x509ca.device_name_of(certificate)
            if name is None:
                raise x509ca.InvalidClientCertificate(
                    "client certificate does not name a Roost device"
                )
            async with self.deps.db.read() as conn:
                row = await fetch_one(
                    conn,
                    sa.select(
                        device_certificates.c.id,
                        device_certificates.c.tenant_id,
                        device_certificates.c.not_after,
                        device_certificates.c.revoked_at,
                    ).where(device_certificates.c.fingerprint == fingerprint),
                )
            if row is None or row["tenant_id"] != name.tenant_id:
                raise AuthenticationFailed("unknown client certificate")
            if row["revoked_at"] is not None:
                raise PermissionDenied(REVOKED)
            known = _Known(
                row["id"], name, certificate.not_valid_before_utc.timestamp(), row["not_after"]
            )
            if len(self._known) >= CERTIFICATE_CACHE_SIZE:
                self._known.popitem(last=False)
            self._known[fingerprint] = known
        elif not known.not_before <= now <= known.not_after.timestamp():
            raise x509ca.InvalidClientCertificate(
                "client certificate is outside its validity period"
            )
        if self.device_auth.is_revoked(known.id):
            raise PermissionDenied(REVOKED)
        entry = await self.device_auth.device_entry(known.name.tenant_id, known.name.device_id)
        if entry is None or entry[1] != known.name.generation:
            raise PermissionDenied(DEVICE_GONE)
        identity = DeviceIdentity(
            tenant_id=known.name.tenant_id,
            device_id=known.name.device_id,
            device_pk=entry[0],
            credential_id=known.id,
            expires_at=known.not_after,
        )
        self.device_auth.admitted(identity, known.name.generation)
        return identity


def _audited(row: dict[str, Any]) -> dict[str, Any]:
    """What the audit log keeps of a certificate row (not the PEM: it is in the row)."""
    return {k: v for k, v in row.items() if k != "certificate"}
