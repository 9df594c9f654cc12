"""Identifier rules: what a user-chosen id may look like, and generated ids."""

from __future__ import annotations

import re
import secrets

# Device ids appear in MQTT topics and URLs: no '/', '+', '#', spaces or '%'.
_SLUG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_TENANT = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
_PATH = re.compile(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*")
_MAC = re.compile(r"([0-9A-Fa-f]{2})([:-]?)([0-9A-Fa-f]{2})(?:\2([0-9A-Fa-f]{2})){4}")

SLUG_RULE = "1-128 characters: letters, digits and . _ : - (not starting with a symbol)"
TENANT_RULE = "1-64 characters: lower-case letters, digits and - (not starting with -)"
# The same rules as anchored JSON Schema patterns, for the OpenAPI document.
SLUG_PATTERN = f"^{_SLUG.pattern}$"
TENANT_PATTERN = f"^{_TENANT.pattern}$"


def is_slug(value: str) -> bool:
    """True for a valid resource id."""
    return _SLUG.fullmatch(value) is not None


def is_tenant_slug(value: str) -> bool:
    """True for a valid tenant id."""
    return _TENANT.fullmatch(value) is not None


def is_sensor_path(value: str) -> bool:
    """True for an empty path or slash-separated segments like ``wheels/front/left``."""
    return value == "" or (len(value) <= 500 and _PATH.fullmatch(value) is not None)


def normalise_mac(value: str) -> str | None:
    """``AA-BB-CC-DD-EE-FF``, ``aabbccddeeff`` … → ``aa:bb:cc:dd:ee:ff``; None if not a MAC."""
    if _MAC.fullmatch(value) is None:
        return None
    digits = re.sub(r"[:-]", "", value).lower()
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


def generate_id(prefix: str) -> str:
    """A fresh id such as ``dev-3f9a1c0b7e`` for records created without one."""
    return f"{prefix}-{secrets.token_hex(5)}"
