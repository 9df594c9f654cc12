"""The edge metadata service's data: who the device is, what it should be, a short-lived token.

Apps and containers on the device ask the local API (``/v1/metadata/…``) instead of holding
long-lived secrets. :class:`Metadata` keeps

- the device's **identity** (``GET /api/v1/device``: id, tenant, name, site, model, groups, tags),
- its **desired state** (the ``desired`` section of ``GET /api/v1/device/state``),

each cached in ``data_dir`` (``identity.json``, ``desired.json``) so that both answer while the
server is unreachable, across agent restarts. :meth:`Metadata.refresh` reads them again (the
agent calls it on every connect and on every delta); an identity older than
:data:`IDENTITY_MAX_AGE_S` is refreshed in the background while the cached copy answers.

:meth:`Metadata.local_token` signs a SAS token with the device key of the offline bundle
(``SharedAccessSignature sr=…&sig=…&se=…``, the form ``roost.credentials.keys.sas`` verifies),
valid ``token_ttl_s``; the same token is handed out until less than half of its life is left,
then a new one is signed, so a caller always gets at least half a lifetime.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

from roost_agent.config import Config
from roost_agent.credentials import authorize

logger = logging.getLogger(__name__)

SAS_PREFIX = "SharedAccessSignature "
# How long one HTTP read of the server may take: short, since a caller of the local API may be
# waiting on the first fetch (later fetches run in the background).
HTTP_TIMEOUT_S = 5.0
# A cached identity older than this is re-read in the background (tags and groups change
# without a state delta telling the agent).
IDENTITY_MAX_AGE_S = 300.0
# A token is handed out again while more than this share of its lifetime is left.
TOKEN_RENEW_FRACTION = 0.5
# The server's Date header has whole seconds: a smaller difference is not clock drift.
MIN_CLOCK_SKEW_S = 2.0
# The shortest key the server accepts (roost.credentials.keys.sas.MIN_KEY_BYTES).
MIN_KEY_BYTES = 16

IDENTITY_FILE = "identity.json"
DESIRED_FILE = "desired.json"


class MetadataUnavailable(Exception):
    """The metadata cannot be given (never fetched and the server unreachable, or no key)."""


def sign_sas(key: bytes, resource: str, expiry: int) -> str:
    """A SAS token for ``resource`` until ``expiry`` (epoch s): Azure IoT Hub's form."""
    encoded = quote_plus(resource)
    mac = hmac.new(key, f"{encoded}\n{expiry}".encode(), hashlib.sha256).digest()
    sig = base64.b64encode(mac).decode("ascii")
    return f"{SAS_PREFIX}sr={encoded}&sig={quote_plus(sig)}&se={expiry}"


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat().replace("+00:00", "Z")


def _ssl_context(config: Config) -> ssl.SSLContext:
    """Verify the server against the bundle's CA only (or the system's when there is none)."""
    if config.ca_certificate:
        context = ssl.create_default_context(cadata=config.ca_certificate)
    else:
        context = ssl.create_default_context()
    if config.client_cert is not None and config.client_key is not None:
        context.load_cert_chain(str(config.client_cert), str(config.client_key))
    return context


class _Cached:
    """One document cached in memory and in a JSON file (written atomically)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.value: dict[str, Any] | None = None
        self.fetched_at = 0.0  # time.time() of the last fetch (or of the file, once loaded)
        self.loaded = False

    def get(self) -> dict[str, Any] | None:
        if not self.loaded:
            self.loaded = True
            try:
                value = json.loads(self.path.read_text())
                if isinstance(value, dict):
                    self.value = value
                    self.fetched_at = self.path.stat().st_mtime
            except FileNotFoundError:
                pass
            except (OSError, ValueError) as exc:
                logger.warning(
                    "metadata cache %s is unreadable (%s): fetched again", self.path, exc
                )
        return self.value

    def put(self, value: dict[str, Any]) -> None:
        self.value = value
        self.fetched_at = time.time()
        self.loaded = True
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "w") as out:
                json.dump(value, out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            logger.warning("metadata cache %s not written: %s", self.path, exc)


class Metadata:
    """The device's identity, desired state and local tokens (thread-safe)."""

    def __init__(self, config: Config, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._clock = clock
        self._lock = threading.Lock()
        self._refreshing = threading.Lock()  # one background refresh at a time
        self._identity = _Cached(config.data_dir / IDENTITY_FILE)
        self._desired = _Cached(config.data_dir / DESIRED_FILE)
        self._token: dict[str, Any] | None = None
        self._token_expiry = 0
        self._skew_s = 0.0  # server clock minus ours, when it is more than MIN_CLOCK_SKEW_S
        self._failing = False  # the last fetch failed (logged once until one succeeds)

    # -- reading the server -------------------------------------------------------------------

    def _get(self, path: str) -> dict[str, Any]:
        """GET ``/api/v1/{path}`` with the device's credential; raises OSError or ValueError."""
        url = self.config.api_url.rstrip("/") + "/api/v1/" + path
        request = urllib.request.Request(url, headers={"Accept": "application/json"})
        authorize(request, self.config)  # the current credential (rotation switches it)
        context = _ssl_context(self.config) if url.startswith("https:") else None
        sent = self._clock()
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S, context=context) as resp:
            body = json.loads(resp.read())
            self._note_clock(resp.headers.get("Date"), sent)
        if not isinstance(body, dict):
            raise ValueError(f"{path}: the server answered {type(body).__name__}, not an object")
        return body

    def _note_clock(self, date: str | None, sent: float) -> None:
        """Follow the server's clock (kiosk clocks drift): tokens must not expire early."""
        if not date:
            return
        try:
            server = parsedate_to_datetime(date).timestamp()
        except (TypeError, ValueError):
            return
        skew = server - (sent + self._clock()) / 2
        self._skew_s = skew if abs(skew) > MIN_CLOCK_SKEW_S else 0.0

    def _fetch_identity(self) -> dict[str, Any]:
        identity = self._get("device")
        with self._lock:
            self._identity.put(identity)
        return identity

    def _fetch_desired(self) -> dict[str, Any]:
        state = self._get("device/state")
        desired = state.get("desired")
        if not isinstance(desired, dict):
            raise ValueError("device/state: the document has no desired object")
        with self._lock:
            self._desired.put(desired)
        return desired

    def _failed(self, what: str, exc: BaseException) -> None:
        if isinstance(exc, urllib.error.HTTPError):
            reason = f"HTTP {exc.code} {exc.reason}"
        else:
            reason = str(exc) or type(exc).__name__
        if not self._failing:
            logger.warning(
                "metadata: cannot read %s from the server (%s); the cached copy answers meanwhile",
                what,
                reason,
            )
        self._failing = True

    def _attempt(self, what: str, fetch: Callable[[], dict[str, Any]]) -> BaseException | None:
        try:
            fetch()
        except Exception as exc:  # refresh must never raise
            self._failed(what, exc)
            return exc
        return None

    def refresh(self) -> None:
        """Read identity and desired state again; keeps the cache on failure (never raises)."""
        with self._refreshing:
            error = self._attempt("identity", self._fetch_identity)
            unreachable = isinstance(error, OSError) and not isinstance(
                error, urllib.error.HTTPError
            )
            if not unreachable:  # an unreachable server would only make the caller wait twice
                error = self._attempt("desired state", self._fetch_desired) or error
            if error is None and self._failing:
                logger.info("metadata: identity and desired state read from the server again")
                self._failing = False

    def refresh_in_background(self) -> None:
        """Start :meth:`refresh` on a thread of its own unless one is running."""
        if self._refreshing.locked():
            return
        threading.Thread(target=self.refresh, name="roost-metadata", daemon=True).start()

    # -- what the local API serves ------------------------------------------------------------

    def _read(
        self, cached: _Cached, fetch: Callable[[], dict[str, Any]], what: str, max_age: float | None
    ) -> dict[str, Any]:
        with self._lock:
            value = cached.get()
            fetched_at = cached.fetched_at
        if value is None:
            try:
                return fetch()
            except Exception as exc:  # told to the caller as unavailable
                self._failed(what, exc)
                raise MetadataUnavailable(
                    f"the device's {what} was never read from the server and the server is "
                    f"not reachable now ({exc})"
                ) from exc
        if max_age is not None and self._clock() - fetched_at > max_age:
            self.refresh_in_background()
        return dict(value)

    def identity(self) -> dict[str, Any]:
        """The device's identity: cached, fetched the first time; MetadataUnavailable else."""
        return self._read(self._identity, self._fetch_identity, "identity", IDENTITY_MAX_AGE_S)

    def desired(self) -> dict[str, Any]:
        """The desired state (the device's configuration), cached like the identity."""
        return self._read(self._desired, self._fetch_desired, "desired state", None)

    def _resource(self) -> str:
        if self.config.sas_resource:
            return self.config.sas_resource
        with self._lock:
            identity = self._identity.get()
        tenant = (identity or {}).get("tenant_id") or self.config.tenant_id
        return f"{tenant}/devices/{self.config.device_id}"

    def _key(self) -> bytes:
        if not self.config.key:
            raise MetadataUnavailable(
                "no device key: the offline bundle (or [device] key) must hold one to sign "
                "local tokens"
            )
        try:
            key = base64.b64decode(self.config.key, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise MetadataUnavailable("the device key is not Base64") from exc
        if len(key) < MIN_KEY_BYTES:
            raise MetadataUnavailable(f"the device key must hold at least {MIN_KEY_BYTES} bytes")
        return key

    def local_token(self) -> dict[str, Any]:
        """A SAS token for local apps, valid ``token_ttl_s`` (renewed at half its life)."""
        key = self._key()
        ttl = self.config.token_ttl_s
        now = self._clock() + self._skew_s
        with self._lock:
            token = self._token
            if token is None or self._token_expiry - now < ttl * TOKEN_RENEW_FRACTION:
                token = None
            expiry = self._token_expiry
        if token is None:
            expiry = int(now) + ttl
            token = {
                "token": sign_sas(key, self._resource(), expiry),
                "header": "Authorization",
                "expires_at": _iso(expiry),
                "api_url": self.config.api_url,
                "device_id": self.config.device_id,
            }
            with self._lock:
                self._token, self._token_expiry = token, expiry
        return {**token, "expires_in": max(0, int(expiry - now))}
