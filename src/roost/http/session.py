"""Browser sessions: the console's login cookie, its CSRF token, and the superuser's tenant.

The console keeps the user's login token in an ``HttpOnly`` cookie (``SameSite=Strict``), so page
navigation, reloads and new tabs stay signed in while no script can read the token. The API and
the live WebSocket accept that cookie as a second way to carry the same token. A request that
changes something and authenticates by cookie must also send ``X-CSRF-Token``: an HMAC of the
session under the server's secret, which the console puts in every page it renders; a WebSocket
authenticated by cookie must come from the same origin. Bearer tokens and API keys need neither.
"""

from __future__ import annotations

import hashlib
import hmac

import jwt
from starlette.requests import HTTPConnection

from roost.errors import PermissionDenied

SESSION_COOKIE = "roost_session"
# The superuser's chosen tenant in the console (the API's X-Roost-Tenant header wins over it).
TENANT_COOKIE = "roost_tenant"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def csrf_token(secret: str, session: str) -> str:
    """The CSRF token of the login session ``session`` belongs to.

    It names the user and the session epoch, not the token itself: the console renews the
    cookie's token as it is used, and pages already open in other tabs keep a token that still
    matches; logging out (a new epoch) changes it. The session token is verified where it is
    used; here only its claims are read.
    """
    try:
        claims = jwt.decode(session, options={"verify_signature": False})
        subject = f"{claims['sub']}|{claims['sev']}"
    except (jwt.InvalidTokenError, KeyError, TypeError):
        subject = session
    return hmac.new(secret.encode(), b"csrf|" + subject.encode(), hashlib.sha256).hexdigest()


def session_of(connection: HTTPConnection) -> str | None:
    """The login token the browser's session cookie carries, if any."""
    return connection.cookies.get(SESSION_COOKIE) or None


def check_csrf(secret: str, session: str, sent: str | None) -> None:
    """Refuse (403) a cookie-authenticated change without this session's CSRF token."""
    if not sent or not hmac.compare_digest(sent, csrf_token(secret, session)):
        raise PermissionDenied(
            "a change made with the console's session cookie needs its X-CSRF-Token header"
        )


def same_origin(connection: HTTPConnection) -> bool:
    """Whether a browser connection comes from a page of this server (its Origin is our host)."""
    origin = connection.headers.get("origin")
    if not origin:
        return False
    host = connection.headers.get("host", "")
    _, _, origin_host = origin.partition("://")
    return bool(host) and origin_host == host
