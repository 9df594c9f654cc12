"""Keeping credentials out of the logs, whoever writes the line.

Roost's own code never logs a credential, but the servers under it do: uvicorn logs a WebSocket
upgrade's path with its query (``?token=`` is how browsers authenticate) at INFO, and the
``websockets`` implementation logs every request header, ``Authorization`` included, at DEBUG.
:class:`RedactSecrets` rewrites such records before any handler writes them; :func:`install`
puts it on the loggers and handlers that exist, and on uvicorn's loggers (whose handlers are made
later, when uvicorn configures logging: a filter on the logger itself survives that).
"""

from __future__ import annotations

import logging
import re
from typing import Final

REDACTED: Final = "[redacted]"

#: Loggers that log request lines and headers themselves (filters on a logger apply to the
#: records logged on it, so each is named; the root's handlers cover every propagating one).
SERVER_LOGGERS: Final = (
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "websockets",
    "websockets.server",
)

# A substring every secret-bearing message holds; most records hold none and cost one scan each.
_MARKERS: Final = ("eyJ", "token", "uthorization", "UTHORIZATION", "SharedAccessSignature",
                   "sig=", "key", "assword", "roost_", "Cookie", "cookie")  # fmt: skip
_PATTERNS: Final = (
    # A JWT (user and device tokens): header.claims.signature, each base64url.
    (re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), REDACTED),
    # Credentials in a query string or form: ?token=…, &sig=…, &key=…, password=….
    (
        re.compile(r"(?i)\b((?:access_)?token|sig|key|password|secret|api_key|apikey)=[^&\s\"']+"),
        rf"\1={REDACTED}",
    ),
    # A header line as the websockets library logs it ("< authorization: Bearer …").
    (
        re.compile(
            r"(?i)\b(authorization|proxy-authorization|cookie|set-cookie|x-api-key)"
            r"(\s*[:=]\s*)[^\r\n\"']+"
        ),
        rf"\1\2{REDACTED}",
    ),
    # A SAS token anywhere else.
    (re.compile(r"SharedAccessSignature\s+[^\s\"']+"), f"SharedAccessSignature {REDACTED}"),
    # A Roost API key (roost_<id>_<secret>).
    (re.compile(r"\broost_[A-Za-z0-9_-]{16,}"), f"roost_{REDACTED}"),
)


def redact(text: str) -> str:
    """``text`` with every credential it holds replaced by :data:`REDACTED`."""
    if not any(marker in text for marker in _MARKERS):
        return text
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactSecrets(logging.Filter):
    """A logging filter that rewrites a record's message without the credentials it holds."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact in place; never drops a record.

        String arguments are redacted one by one, keeping the record's shape (uvicorn's access
        formatter unpacks ``record.args``); a secret only the formatted message shows (inside
        an object's repr) makes the record a plain, redacted message.
        """
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: let the handler report it as it would
            return True
        if redact(message) == message:
            return True
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        args = record.args
        if isinstance(args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in args)
        elif isinstance(args, dict):
            record.args = {k: redact(v) if isinstance(v, str) else v for k, v in args.items()}
        try:
            message = record.getMessage()
        except Exception:
            message = ""
        cleaned = redact(message)
        if cleaned != message or not message:
            record.msg, record.args = cleaned or REDACTED, None
        return True


_FILTER: Final = RedactSecrets()


def install() -> None:
    """Put the filter on the root logger's handlers and on the servers' loggers (idempotent)."""
    targets: list[logging.Filterer] = [*logging.getLogger().handlers]
    targets.extend(logging.getLogger(name) for name in SERVER_LOGGERS)
    for target in targets:
        if _FILTER not in target.filters:
            target.addFilter(_FILTER)
