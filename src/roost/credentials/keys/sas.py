"""Shared access signatures (SAS tokens) as Azure IoT Hub and DPS make them; no IO.

A token is ``SharedAccessSignature sr={resource}&sig={signature}&se={expiry}[&skn={key name}]``
where every value is URL-encoded, ``expiry`` is in epoch seconds and the signature is
``Base64(HMAC-SHA256(Base64Decode(key), url_encode(resource) + "\\n" + expiry))``.

Roost names a device's resource ``{tenant}/devices/{device_id}`` (:func:`device_resource`) and
an enrollment registration ``{enrollment_id}/registrations/{registration_id}``
(:func:`registration_resource`). An enrollment group's member derives its own key from the group
key: ``Base64(HMAC-SHA256(Base64Decode(group key), registration_id))`` (:func:`derive_key`).

Clients URL-encode the resource in slightly different ways (``quote_plus`` in Azure's Python
sample, ``encodeURIComponent`` in Node); a signature is accepted over
the resource as sent in the token, or over its canonical encoding (:func:`signed_texts`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from urllib.parse import quote, quote_plus, unquote_plus

from roost.core.device_identity import SAS_PREFIX
from roost.errors import AuthenticationFailed, InvalidInput

# Longer than any honest token (a resource of two ids, a 44-character signature, an expiry and
# a key name), so that parsing never works on an attacker's megabyte.
MAX_TOKEN_LENGTH = 2048
# Bytes of a freshly made key: 256 bits, HMAC-SHA256's block-safe size.
KEY_BYTES = 32
# A key shorter than this is refused when an operator brings their own (128 bits).
MIN_KEY_BYTES = 16
# Azure DPS's key name for tokens signed with a derived enrollment key.
REGISTRATION_KEY_NAME = "registration"


@dataclass(frozen=True, slots=True)
class SasFields:
    """A parsed SAS token: the resource (decoded), as sent, the signature, expiry, key name."""

    resource: str
    raw_resource: str
    signature: bytes
    expiry: int
    key_name: str | None


def _malformed(why: str) -> AuthenticationFailed:
    return AuthenticationFailed(f"malformed SAS token: {why}")


def parse_sas(text: str) -> SasFields:
    """Split a ``SharedAccessSignature …`` token; raises AuthenticationFailed when malformed."""
    if len(text) > MAX_TOKEN_LENGTH:
        raise _malformed(f"longer than {MAX_TOKEN_LENGTH} characters")
    if not text.startswith(SAS_PREFIX):
        raise _malformed("it must start with 'SharedAccessSignature '")
    raw: dict[str, str] = {}
    for part in text[len(SAS_PREFIX) :].strip().split("&"):
        name, sep, value = part.partition("=")
        if not sep or not name:
            raise _malformed(f"{part[:40]!r} is not name=value")
        if name in raw:
            raise _malformed(f"{name!r} appears twice")
        raw[name] = value
    missing = [name for name in ("sr", "sig", "se") if not raw.get(name)]
    if missing:
        raise _malformed("missing " + ", ".join(missing))
    expiry_text = unquote_plus(raw["se"])
    if not expiry_text.isdecimal() or len(expiry_text) > 12:
        raise _malformed("se must be whole epoch seconds")
    try:
        signature = base64.b64decode(unquote_plus(raw["sig"]), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _malformed("sig is not Base64") from exc
    if len(signature) != hashlib.sha256().digest_size:
        raise _malformed("sig is not an HMAC-SHA256")
    key_name = unquote_plus(raw["skn"]) if raw.get("skn") else None
    return SasFields(
        resource=unquote_plus(raw["sr"]),
        raw_resource=raw["sr"],
        signature=signature,
        expiry=int(expiry_text),
        key_name=key_name,
    )


def decode_key(key: str) -> bytes:
    """A Base64 key's bytes; raises InvalidInput when it is not Base64 or too short."""
    try:
        raw = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput("key must be Base64") from exc
    if len(raw) < MIN_KEY_BYTES:
        raise InvalidInput(f"key must hold at least {MIN_KEY_BYTES} bytes")
    return raw


def new_key() -> str:
    """A fresh random key, Base64 (what ``POST …/keys`` and enrollments hand out once)."""
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")


def derive_key(group_key: bytes, registration_id: str) -> bytes:
    """An enrollment member's key: HMAC-SHA256(group key, registration id) (raw bytes)."""
    return hmac.digest(group_key, registration_id.encode("utf-8"), "sha256")


def derive_key_b64(group_key_b64: str, registration_id: str) -> str:
    """:func:`derive_key` on and to Base64, as Azure DPS documents it."""
    derived = derive_key(base64.b64decode(group_key_b64), registration_id)
    return base64.b64encode(derived).decode("ascii")


def _mac(key: bytes, encoded_resource: str, expiry: int) -> bytes:
    return hmac.digest(key, f"{encoded_resource}\n{expiry}".encode(), "sha256")


def sign(key: bytes, resource: str, expiry: int, key_name: str | None = None) -> str:
    """A SAS token for ``resource`` valid until ``expiry`` (epoch s), signed with ``key``."""
    encoded = quote_plus(resource)
    sig = base64.b64encode(_mac(key, encoded, expiry)).decode("ascii")
    token = f"{SAS_PREFIX}sr={encoded}&sig={quote_plus(sig)}&se={expiry}"
    return f"{token}&skn={quote_plus(key_name)}" if key_name else token


def signed_texts(fields: SasFields) -> tuple[str, ...]:
    """The encodings of the resource a client may have signed (as sent, then canonical)."""
    candidates = (
        fields.raw_resource,
        quote_plus(fields.resource),
        quote(fields.resource, safe=""),
    )
    return tuple(dict.fromkeys(candidates))


def signature_matches(key: bytes, fields: SasFields) -> bool:
    """True when ``key`` made the token's signature (compared in constant time)."""
    found = False
    for encoded in signed_texts(fields):
        # Every candidate is compared, so the time taken does not tell which one matched.
        found |= hmac.compare_digest(_mac(key, encoded, fields.expiry), fields.signature)
    return found


def device_resource(tenant_id: str, device_id: str) -> str:
    """The resource a device's SAS tokens name."""
    return f"{tenant_id}/devices/{device_id}"


def parse_device_resource(resource: str) -> tuple[str, str]:
    """``(tenant, device id)`` from ``{tenant}/devices/{device_id}``; AuthenticationFailed else."""
    parts = resource.split("/")
    if len(parts) != 3 or parts[1] != "devices" or not parts[0] or not parts[2]:
        raise _malformed("sr must be {tenant}/devices/{device_id}")
    return parts[0], parts[2]


def registration_resource(enrollment_id: str, registration_id: str) -> str:
    """The resource a registering device's SAS token names (Azure DPS's form)."""
    return f"{enrollment_id}/registrations/{registration_id}"


def parse_registration_resource(resource: str) -> tuple[str, str]:
    """``(enrollment id, registration id)`` from the registration resource."""
    parts = resource.split("/")
    if len(parts) != 3 or parts[1] != "registrations" or not parts[0] or not parts[2]:
        raise _malformed("sr must be {enrollment_id}/registrations/{registration_id}")
    return parts[0], parts[2]
