"""API keys for automation: ``roost_<key id>_<secret>``, stored as a keyed hash of the secret.

The secret is 256 random bits, so a fast keyed hash (HMAC-SHA256) protects it at rest as well as
a slow password hash would, and keeps each authenticated request cheap. The key id in the clear
lets the server find the row without scanning.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

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
