"""Signed session tokens (JWT, HS256) for users.

A token names the user (``sub``), the tenant and the role at issue time; the API re-reads the user
on every request, so disabling a user or changing a role takes effect before the token expires.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt

from roost.errors import AuthenticationFailed

ALGORITHM = "HS256"
ISSUER = "roost"
USER_AUDIENCE = "roost:user"


@dataclass(frozen=True, slots=True)
class UserClaims:
    """What a verified user token says."""

    user_id: int
    tenant_id: str
    issued_at: datetime
    expires_at: datetime
    session_epoch: int = 0


def new_secret_key() -> str:
    """A fresh random signing key (256 bits, URL-safe text)."""
    return secrets.token_urlsafe(32)


def issue_user_token(
    secret: str,
    user_id: int,
    tenant_id: str,
    ttl_s: int,
    now: datetime | None = None,
    session_epoch: int = 0,
) -> tuple[str, datetime]:
    """Sign a token for a user in its current session epoch; answer the token and its expiry."""
    now = now or datetime.now(UTC)
    issued = now.replace(microsecond=0)
    # Whole seconds in the claims: round the expiry up, so a token lives at least ttl_s seconds
    # (rounding down made a 1-second token expire at once half of the time).
    expires = issued + timedelta(seconds=ttl_s + (1 if now.microsecond else 0))
    claims = {
        "iss": ISSUER,
        "aud": USER_AUDIENCE,
        "sub": str(user_id),
        "tid": tenant_id,
        "iat": int(issued.timestamp()),
        "exp": int(expires.timestamp()),
        "jti": secrets.token_urlsafe(8),
        "sev": session_epoch,
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM), expires


def verify_user_token(secret: str, token: str) -> UserClaims:
    """Check signature, audience and expiry; raise AuthenticationFailed with the reason."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            audience=USER_AUDIENCE,
            issuer=ISSUER,
            options={"require": ["exp", "iat", "sub", "tid", "sev"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise AuthenticationFailed("token expired") from exc
    except jwt.InvalidTokenError as exc:
        raise AuthenticationFailed(f"invalid token: {exc}") from exc
    try:
        user_id = int(claims["sub"])
        epoch = claims["sev"]
        if not isinstance(epoch, int) or isinstance(epoch, bool):
            raise TypeError("sev")
    except (TypeError, ValueError) as exc:
        raise AuthenticationFailed("invalid token: bad subject or session epoch") from exc
    return UserClaims(
        user_id=user_id,
        tenant_id=str(claims["tid"]),
        issued_at=datetime.fromtimestamp(claims["iat"], UTC),
        expires_at=datetime.fromtimestamp(claims["exp"], UTC),
        session_epoch=epoch,
    )
