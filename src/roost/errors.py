"""The Roost exception tree.

Every error a service raises on purpose derives from ``RoostError``; the HTTP layer turns each
into an RFC 9457 problem with the status named here, the MQTT gateway into a reason code, the CLI
into a message and an exit status. Driver errors (sqlite3, asyncpg, nats) are translated at the
store/bus boundary and re-raised ``from`` the original.

    RoostError
    ├── ConfigError                 bad settings (startup)
    ├── InvalidInput       400/422  a value breaks a rule (ValidationFailed carries per-item errors)
    │   └── ValidationFailed
    ├── AuthenticationFailed 401    missing, malformed, wrong or expired credentials
    ├── PermissionDenied   403      authenticated but not allowed
    ├── NotFound           404      does not exist (or belongs to another tenant)
    ├── Conflict           409      already exists, stale version, still referenced
    ├── PayloadTooLarge    413
    ├── RateLimited        429      carries retry_after seconds
    └── Unavailable        503      store/bus down or overloaded; carries retry_after
"""

from __future__ import annotations

from typing import Any


class RoostError(Exception):
    """Base of every deliberate Roost error."""

    status: int = 500
    title: str = "Internal error"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class ConfigError(RoostError):
    """The configuration cannot be used."""

    title = "Configuration error"


class InvalidInput(RoostError):
    """A value in the request breaks a rule."""

    status = 422
    title = "Invalid input"


class ValidationFailed(InvalidInput):
    """Several items failed validation; ``errors`` lists each with where and why."""

    def __init__(self, detail: str, errors: list[dict[str, Any]], status: int = 422) -> None:
        super().__init__(detail, errors=errors)
        self.errors = errors
        self.status = status


class AuthenticationFailed(RoostError):
    """Credentials are missing, malformed, wrong or expired."""

    status = 401
    title = "Authentication required"


class PermissionDenied(RoostError):
    """The caller is known but may not do this."""

    status = 403
    title = "Forbidden"


class NotFound(RoostError):
    """The resource does not exist in the caller's tenant."""

    status = 404
    title = "Not found"


class Conflict(RoostError):
    """The change collides with existing state."""

    status = 409
    title = "Conflict"


class PayloadTooLarge(RoostError):
    """The request body is over the configured limit."""

    status = 413
    title = "Payload too large"


class RateLimited(RoostError):
    """Too many attempts; try again after ``retry_after`` seconds."""

    status = 429
    title = "Too many requests"

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class Unavailable(RoostError):
    """A backing service is down or the server is overloaded."""

    status = 503
    title = "Service unavailable"

    def __init__(self, detail: str, retry_after: int = 1) -> None:
        super().__init__(detail)
        self.retry_after = retry_after
