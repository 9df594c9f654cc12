"""Signing: the platform's Ed25519 key for artifact manifests, and signed download URLs.

One key for the platform (as the CA): Roost generates it on first use and keeps it in the
database sealed with AES-256-GCM under a key derived (HKDF-SHA256) from the secret key, so every
process of a deployment signs alike and a database dump alone cannot sign; or the operator's own
key from ``ROOST_OTA_SIGNING_KEY_FILE`` (PEM, PKCS#8), never stored. ``key_id`` is the first 16
hex digits of the SHA-256 of the raw public key. A manifest is signed over its canonical bytes
(:func:`canonical`: JSON with sorted keys, no spaces, as orjson writes it).

Signed URLs let a client that cannot send headers download: ``<payload>.<mac>``, both base64url,
the payload ``[tenant, artifact, device, expiry]`` as JSON, the MAC an HMAC-SHA256 under another
key derived from the secret key.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from roost.credentials.keys.service import SecretBox
from roost.errors import AuthenticationFailed, ConfigError, Conflict
from roost.ota.artifacts.tables import ota_signing_keys
from roost.store.database import Database

log = logging.getLogger(__name__)

ALGORITHM = "ed25519"
#: The row of ``ota_signing_keys`` holding the generated platform key.
KEY_ROW = "platform"
# Bound to the sealed key as associated data: a sealed secret of another kind never opens as it.
_SEAL_CONTEXT = "roost ota signing key v1"
_URL_INFO = b"roost ota signed url v1"


def _derive(secret_key: str, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(
        secret_key.encode("utf-8")
    )


def canonical(manifest: Mapping[str, Any]) -> bytes:
    """The bytes a manifest's signature covers: JSON, keys sorted, no whitespace."""
    return orjson.dumps(dict(manifest), option=orjson.OPT_SORT_KEYS)


def raw_public(key: ed25519.Ed25519PublicKey) -> bytes:
    """The 32 raw bytes of a public key."""
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id_of(key: ed25519.Ed25519PublicKey) -> str:
    """First 16 hex digits of the SHA-256 of the raw public key."""
    return hashlib.sha256(raw_public(key)).hexdigest()[:16]


def verify(
    public_key: ed25519.Ed25519PublicKey, manifest: Mapping[str, Any], signature: str
) -> bool:
    """True when ``signature`` (base64) is the key's signature of ``manifest``."""
    try:
        public_key.verify(base64.b64decode(signature, validate=True), canonical(manifest))
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


def seal(key: ed25519.Ed25519PrivateKey, secret_key: str) -> str:
    """The private key encrypted under the secret key (:class:`SecretBox`), Base64 text."""
    raw = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return base64.b64encode(SecretBox(secret_key).seal(raw, _SEAL_CONTEXT)).decode()


def unseal(sealed: str, secret_key: str) -> ed25519.Ed25519PrivateKey:
    """The key :func:`seal` sealed; ConfigError under another secret key."""
    try:
        raw = SecretBox(secret_key).open(base64.b64decode(sealed), _SEAL_CONTEXT)
    except ValueError as exc:
        raise ConfigError(
            "the OTA signing key in the database cannot be decrypted: this process has another "
            "secret key (ROOST_SECRET_KEY) than the one that created it"
        ) from exc
    return ed25519.Ed25519PrivateKey.from_private_bytes(raw)


def load_key_file(path: str) -> ed25519.Ed25519PrivateKey:
    """The operator's Ed25519 private key from a PEM file (ConfigError otherwise)."""
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"ROOST_OTA_SIGNING_KEY_FILE {path}: cannot read the key: {exc}") from exc
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ConfigError(f"ROOST_OTA_SIGNING_KEY_FILE {path}: not an Ed25519 private key")
    return key


@dataclass(frozen=True)
class SigningKey:
    """The platform's signing key, with what devices need to verify."""

    private: ed25519.Ed25519PrivateKey
    origin: str  # "generated" or "operator"

    @property
    def public(self) -> ed25519.Ed25519PublicKey:
        """The public half."""
        return self.private.public_key()

    @property
    def key_id(self) -> str:
        """First 16 hex digits of the SHA-256 of the raw public key."""
        return key_id_of(self.public)

    def sign(self, manifest: Mapping[str, Any]) -> str:
        """The base64 signature of ``manifest``'s canonical bytes."""
        return base64.b64encode(self.private.sign(canonical(manifest))).decode()

    def public_document(self) -> dict[str, str]:
        """``GET /api/v1/ota/signing-key``: algorithm, key id, public key as PEM and raw."""
        pem = self.public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()
        return {
            "algorithm": ALGORITHM,
            "key_id": self.key_id,
            "public_key": pem,
            "public_key_raw": base64.b64encode(raw_public(self.public)).decode(),
        }


# -- signed URLs -----------------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class UrlSigner:
    """Makes and checks signed download tokens (HMAC-SHA256 under a key from the secret)."""

    def __init__(self, secret_key: str) -> None:
        self._key = _derive(secret_key, _URL_INFO)

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()

    def make(self, tenant_id: str, artifact_id: str, device_id: str, expires: int) -> str:
        """A token for ``device_id`` to download ``artifact_id`` until ``expires`` (Unix s)."""
        payload = orjson.dumps([tenant_id, artifact_id, device_id, expires])
        return f"{_b64url(payload)}.{_b64url(self._mac(payload))}"

    def check(self, token: str, now: float) -> tuple[str, str, str]:
        """(tenant, artifact, device) of a valid, unexpired token; 401 otherwise."""
        encoded, _, mac = token.partition(".")
        try:
            payload = _unb64url(encoded)
            given = _unb64url(mac)
        except (binascii.Error, ValueError) as exc:
            raise AuthenticationFailed("the signed URL is malformed") from exc
        if not hmac.compare_digest(given, self._mac(payload)):
            raise AuthenticationFailed("the signed URL's signature does not verify")
        try:
            tenant_id, artifact_id, device_id, expires = orjson.loads(payload)
        except (orjson.JSONDecodeError, ValueError, TypeError) as exc:  # cannot happen unforged
            raise AuthenticationFailed("the signed URL is malformed") from exc
        if not isinstance(expires, int) or expires < now:
            raise AuthenticationFailed("the signed URL has expired: ask for a new one")
        return str(tenant_id), str(artifact_id), str(device_id)


async def load_signing_key(
    db: Database, secret_key: str, key_file: str, clock: Callable[[], datetime]
) -> SigningKey:
    """The operator's key from ``key_file``, else the sealed platform key (made on first use;
    when two processes race to make it, the one stored first wins)."""
    if key_file:
        return SigningKey(await asyncio.to_thread(load_key_file, key_file), "operator")
    query = sa.select(ota_signing_keys.c.sealed_key).where(ota_signing_keys.c.id == KEY_ROW)
    async with db.read() as conn:
        sealed = (await conn.execute(query)).scalar_one_or_none()
    if sealed is None:
        made = SigningKey(ed25519.Ed25519PrivateKey.generate(), "generated")
        try:
            async with db.write() as conn:
                await conn.execute(
                    ota_signing_keys.insert().values(
                        id=KEY_ROW,
                        key_id=made.key_id,
                        public_key=made.public_document()["public_key"],
                        sealed_key=seal(made.private, secret_key),
                        created_at=clock(),
                    )
                )
        except Conflict:  # another process made it first: use that one
            async with db.read() as conn:
                sealed = (await conn.execute(query)).scalar_one()
        else:
            log.info("generated the OTA signing key %s", made.key_id)
            return made
    return SigningKey(unseal(sealed, secret_key), "generated")
