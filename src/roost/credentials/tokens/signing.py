"""Signed device tokens (JWT, HS256): the credential a device presents on every door.

A device token carries

=======  ==================================================================================
``iss``  ``roost``
``aud``  ``roost:device`` (a user token, ``roost:user``, is never accepted as a device's)
``sub``  the device id
``tid``  the tenant id
``jti``  the token's id, which is its row in ``device_tokens``: revoking names the id, never
         the secret
``dgn``  the device's generation (its ``created_at`` in µs since the epoch): a device deleted
         and created again under the same id is another device, and the tokens of the first
         one do not open it
``iat``  issue time
``exp``  only when the token was issued with an expiry
=======  ==================================================================================

The server stores the row, never the token text nor a hash of it. Verification needs no
database: the signature proves the claims, and the caller (``DeviceAuthenticator``) checks
revocation and the device's existence against in-memory state.

Tokens are signed with pyjwt; they are verified here, with the standard library's HMAC and
orjson, because pyjwt's general decoder costs ~75 µs a token (per-character base64 checks in
Python, key preparation on every call) and a reconnect storm of a large fleet verifies one token
per device. The check is the strict subset of RFC 7515/7519 that Roost issues: compact form,
``alg`` HS256 only, no ``crit``, canonical base64url without padding, one ``aud`` string.

Failures come in two kinds, told apart by type and HTTP status (DESIGN §3: "401 missing/malformed
auth; 403 invalid/expired/revoked token"): text that is not a JWT at all raises
:class:`~roost.errors.AuthenticationFailed` (401); a well-formed JWT that fails verification raises
:class:`InvalidDeviceToken`, an ``AuthenticationFailed`` answered 403.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import re
import secrets
from base64 import urlsafe_b64encode
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import jwt
import orjson

from roost.errors import AuthenticationFailed
from roost.identity.tokens import ALGORITHM, ISSUER

DEVICE_AUDIENCE = "roost:device"
# A device JWT is about 300 characters; anything far longer is not one of ours, and refusing it
# before decoding bounds the work an anonymous caller can cause.
MAX_TOKEN_LENGTH = 2048
# 96 random bits: never collides in practice, and 24 hex characters fit the 32-character column.
TOKEN_ID_BYTES = 12
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
# A compact JWS: three base64url segments without padding. The signature may be empty here, so
# that an unsecured JWT (alg "none") counts as a JWT, refused for its algorithm (403).
_COMPACT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
# HMAC-SHA256 signatures are 32 bytes: 43 base64url characters.
_SIGNATURE_LENGTH = 43
# Header segments already found acceptable. Every token Roost signs has the same one, so the
# check is a set lookup; capped, so that headers made up by others cannot grow it.
_KNOWN_HEADERS: set[str] = set()
_KNOWN_HEADERS_MAX = 16


class InvalidDeviceToken(AuthenticationFailed):
    """A well-formed JWT that is not a valid device token: bad signature, another audience or
    issuer, missing or ill-typed claims, expired.

    Still an authentication failure (the caller proved nothing), but answered 403 on every door,
    as the device contract says; malformed or missing credentials stay 401.
    """

    status = 403
    title = "Forbidden"


@dataclass(frozen=True, slots=True)
class DeviceClaims:
    """What a verified device token says (times in whole seconds since the epoch)."""

    token_id: str
    tenant_id: str
    device_id: str
    device_generation: int
    issued_at: int
    expires_at: int | None


def new_token_id() -> str:
    """A fresh random token id (also the token's ``jti``)."""
    return secrets.token_hex(TOKEN_ID_BYTES)


def device_generation(created_at: datetime) -> int:
    """A device's generation: its creation time in whole microseconds since the epoch (exact)."""
    return (created_at - _EPOCH) // _MICROSECOND


def whole_seconds(moment: datetime) -> datetime:
    """``moment`` truncated to the second: JWT times are whole seconds, and the stored expiry
    must be the one in the token."""
    return moment.replace(microsecond=0)


def issue_device_token(
    secret: str,
    *,
    token_id: str,
    tenant_id: str,
    device_id: str,
    device_generation: int,
    issued_at: datetime,
    expires_at: datetime | None = None,
) -> str:
    """Sign a device token; ``expires_at`` (if any) should already be in whole seconds."""
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": DEVICE_AUDIENCE,
        "sub": device_id,
        "tid": tenant_id,
        "jti": token_id,
        "dgn": device_generation,
        "iat": int(issued_at.timestamp()),
    }
    if expires_at is not None:
        claims["exp"] = int(expires_at.timestamp())
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _b64decode(segment: str) -> bytes:
    """Decode base64url without padding (alphabet already checked); binascii.Error if invalid."""
    standard = segment.replace("-", "+").replace("_", "/") + "=" * (-len(segment) % 4)
    return binascii.a2b_base64(standard.encode(), strict_mode=True)


@lru_cache(maxsize=4)
def _mac_template(secret: str) -> hmac.HMAC:
    """An HMAC keyed with ``secret``, copied per token (saves re-deriving the key pads)."""
    return hmac.new(secret.encode(), digestmod=hashlib.sha256)


def _check_header(segment: str) -> None:
    if segment in _KNOWN_HEADERS:
        return
    header = _json_object(segment)
    if header.get("alg") != ALGORITHM or "crit" in header:
        raise InvalidDeviceToken(f"invalid device token: algorithm must be {ALGORITHM}")
    if len(_KNOWN_HEADERS) < _KNOWN_HEADERS_MAX:
        _KNOWN_HEADERS.add(segment)


def _json_object(segment: str) -> dict[str, Any]:
    """A base64url segment holding a JSON object; AuthenticationFailed (401) otherwise."""
    try:
        value = orjson.loads(_b64decode(segment))
    except (binascii.Error, orjson.JSONDecodeError) as exc:
        raise AuthenticationFailed(
            "malformed device token: a segment is not base64url JSON"
        ) from exc
    if not isinstance(value, dict):
        raise AuthenticationFailed("malformed device token: a segment is not a JSON object")
    return value


def verify_device_token(secret: str, token: str, now: float) -> DeviceClaims:
    """Check shape, signature, audience, issuer, claims and expiry (``now`` in epoch seconds).

    Raises AuthenticationFailed (401) for text that is not a JWT, and InvalidDeviceToken (403)
    for a JWT that does not verify or has expired.
    """
    if len(token) > MAX_TOKEN_LENGTH or not _COMPACT.fullmatch(token):
        raise AuthenticationFailed("malformed device token: expected a JWT")
    header_segment, payload_segment, signature_segment = token.split(".")
    _check_header(header_segment)
    mac = _mac_template(secret).copy()
    mac.update(token[: len(header_segment) + 1 + len(payload_segment)].encode())
    expected = mac.digest()
    # Compared as text: only the canonical encoding of the right signature matches, so one token
    # has exactly one spelling (and one entry in the authenticator's cache).
    encoded = urlsafe_b64encode(expected).rstrip(b"=").decode()
    if len(signature_segment) != _SIGNATURE_LENGTH or not hmac.compare_digest(
        encoded, signature_segment
    ):
        raise InvalidDeviceToken("invalid device token: signature verification failed")
    claims = _json_object(payload_segment)
    if claims.get("aud") != DEVICE_AUDIENCE:
        raise InvalidDeviceToken(f"invalid device token: the audience is not {DEVICE_AUDIENCE}")
    if claims.get("iss") != ISSUER:
        raise InvalidDeviceToken(f"invalid device token: the issuer is not {ISSUER}")
    sub, tid, jti = claims.get("sub"), claims.get("tid"), claims.get("jti")
    gen, iat, exp = claims.get("dgn"), claims.get("iat"), claims.get("exp")
    if not (
        isinstance(sub, str)
        and isinstance(tid, str)
        and isinstance(jti, str)
        and sub
        and tid
        and jti
        and isinstance(gen, int)
        and not isinstance(gen, bool)
        and isinstance(iat, int)
        and not isinstance(iat, bool)
        and (exp is None or _is_int(exp))
    ):
        raise InvalidDeviceToken(
            "invalid device token: missing or ill-typed sub, tid, jti, dgn, iat or exp"
        )
    if exp is not None and exp <= now:
        raise InvalidDeviceToken("device token expired")
    return DeviceClaims(
        token_id=jti,
        tenant_id=tid,
        device_id=sub,
        device_generation=gen,
        issued_at=iat,
        expires_at=exp,
    )
