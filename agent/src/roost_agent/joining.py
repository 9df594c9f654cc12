"""Joining: a device that has no credentials yet obtains them from Roost by itself.

A ``[join]`` section names the way (used only while ``data_dir/credentials.json`` does not exist):

```toml
[join]
api_url = "https://roost.example:8443"   # else [device] api_url
enrollment_id = "store-displays"         # an enrollment group (Azure DPS-style symmetric key)
registration_id = "till-07"              # default: the hostname
group_key = "…"                          # or device_key = "…" (already derived)
# or: attestation_hash = "…" / attestation_hash_file = "/path" (+ hostname = "…")
certificate = false                      # true: a key made here, a CSR, the certificate used
```

An enrollment group's member signs a SAS token for ``{enrollment_id}/registrations/{id}`` (key
name ``registration``) with its key, ``Base64(HMAC-SHA256(Base64Decode(group key), id))``, and
posts it to ``/api/v1/provisioning/register``; an attestation hash goes to
``/api/v1/provisioning/bootstrap`` with the hostname. The answer (device id, token, certificate)
is written to credentials.json before the agent starts. The network may be down at boot: the
agent tries again with the link's backoff, logging why each attempt failed; a refusal (a 4xx
other than 429) is final and :class:`JoinRefused` carries the server's reason.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any

from roost_agent.config import Config, ConfigError, with_credentials
from roost_agent.credentials import (
    CredentialError,
    ServerRefused,
    new_key_and_csr,
    now_text,
    post_json,
    write_credentials,
    write_key_pair,
)
from roost_agent.link import backoff_delay
from roost_agent.metadata import sign_sas

log = logging.getLogger(__name__)

REGISTER_PATH = "/api/v1/provisioning/register"
BOOTSTRAP_PATH = "/api/v1/provisioning/bootstrap"
REGISTRATION_KEY_NAME = "registration"
#: A registration SAS token lives this long: one request, with room for a skewed clock.
SAS_TTL_S = 3600
#: Answers worth trying again: rate limited, or the server (or a proxy) failing.
RETRY_STATUSES = frozenset({408, 429})


class JoinRefused(Exception):
    """The server refused to let the device join; the message is its reason."""


def derive_device_key(group_key: str, registration_id: str) -> str:
    """An enrollment member's key (Base64): HMAC-SHA256 of the registration id, group key."""
    try:
        raw = base64.b64decode(group_key, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigError("[join] group_key must be Base64") from exc
    mac = hmac.new(raw, registration_id.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(mac).decode("ascii")


def registration_sas(enrollment_id: str, registration_id: str, device_key: str) -> str:
    """The ``Authorization`` of a registration: a SAS token signed with the device's key."""
    try:
        key = base64.b64decode(device_key, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigError("[join] device_key must be Base64") from exc
    resource = f"{enrollment_id}/registrations/{registration_id}"
    token = sign_sas(key, resource, int(time.time()) + SAS_TTL_S)
    return f"{token}&skn={REGISTRATION_KEY_NAME}"


def plan(config: Config) -> str:
    """What ``roost-agent run`` will do for credentials (``roost-agent check`` prints it)."""
    join = config.join
    if config.credentials_path.exists() and config.joined:
        return f"has credentials (obtained by the agent: {config.credentials_path})"
    if config.joined:
        return "has credentials (from the configuration)"
    if join is None:
        return "has no credentials"
    how = "with a client certificate" if join.get("certificate") else "with a token"
    if "enrollment_id" in join:
        rid = join.get("registration_id") or socket.gethostname()
        return (
            f"would join enrollment group {join['enrollment_id']!r} as registration {rid!r} ({how})"
        )
    host = join.get("hostname") or socket.gethostname()
    return f"would join with an attestation hash as host {host!r} ({how})"


def _request(
    config: Config, join: dict[str, Any], csr: str | None
) -> tuple[str, dict[str, Any], str | None]:
    """The path, body and Authorization of one join request."""
    if "enrollment_id" in join:
        rid = join.get("registration_id") or socket.gethostname()
        key = join.get("device_key") or derive_device_key(join["group_key"], rid)
        body: dict[str, Any] = {"registration_id": rid}
        auth = registration_sas(join["enrollment_id"], rid, key)
        path = REGISTER_PATH
    else:
        if "attestation_hash_file" in join:
            try:
                value = Path(join["attestation_hash_file"]).read_text().strip()
            except OSError as exc:
                raise ConfigError(f"[join] attestation_hash_file: {exc}") from exc
        else:
            value = join["attestation_hash"].strip()
        body = {"hostname": join.get("hostname") or socket.gethostname(), "hash": value}
        auth = None
        path = BOOTSTRAP_PATH
    if csr is not None:
        body["csr"] = csr
    return path, body, auth


def join(config: Config, stop: threading.Event | None = None) -> Config:
    """Obtain the device's credentials (trying until it works or is refused), write them to
    credentials.json, and answer ``config`` with them. Raises JoinRefused, ConfigError."""
    settings = config.join
    if settings is None:
        raise ConfigError("[device] id and token are missing, and there is no [join] section")
    stop = stop or threading.Event()
    key_pem = csr = None
    if settings.get("certificate"):
        try:
            key_pem, csr = new_key_and_csr(settings.get("registration_id") or socket.gethostname())
        except CredentialError as exc:
            raise ConfigError(f"[join] certificate: {exc}") from exc
    source = "enrollment" if "enrollment_id" in settings else "attestation"
    api_url = settings.get("api_url") or config.api_url
    attempt = 0
    while True:
        path, body, auth = _request(config, settings, csr)
        try:
            answer = post_json(config, path, body, authorization=auth, api_url=api_url)
            break
        except ServerRefused as exc:
            if 400 <= exc.status < 500 and exc.status not in RETRY_STATUSES:
                raise JoinRefused(
                    f"the server refused to let this device join ({exc.status}): {exc.detail}"
                ) from exc
            why = f"the server answered {exc.status}: {exc.detail}"
        except (OSError, ssl.SSLError) as exc:
            why = f"the server cannot be reached: {getattr(exc, 'reason', None) or exc}"
        delay = backoff_delay(attempt, config.reconnect_max_s)
        attempt += 1
        log.warning("joining via %s%s: %s; next attempt in %.1f s", api_url, path, why, delay)
        if stop.wait(delay):
            raise JoinRefused("stopped before the device could join")
    if not isinstance(answer, dict) or not answer.get("device_id") or not answer.get("token"):
        raise JoinRefused(f"the server's answer holds no device credential: {answer!r:.200}")
    record: dict[str, Any] = {
        "device_id": answer["device_id"],
        "tenant_id": answer.get("tenant_id") or config.tenant_id,
        "token": answer["token"],
        "token_id": answer.get("token_id"),
        "client_cert": None,
        "client_key": None,
        "certificate_id": None,
        "obtained_at": now_text(),
        "source": source,
    }
    try:
        if key_pem is not None:
            if not answer.get("certificate"):
                raise JoinRefused("the server issued no certificate for the CSR")
            cert_path, key_path = write_key_pair(config.data_dir, answer["certificate"], key_pem)
            record.update(client_cert=str(cert_path), client_key=str(key_path))
        write_credentials(config.data_dir, record)
    except CredentialError as exc:
        raise ConfigError(str(exc)) from exc
    log.info(
        "joined as device %s of tenant %s (%s); credentials in %s",
        record["device_id"],
        record["tenant_id"],
        source,
        config.credentials_path,
    )
    return with_credentials(config)
