"""Roost settings: the one place that reads ``ROOST_*`` environment variables and ``roost.toml``.

Precedence, highest first: explicit overrides (CLI flags), environment variables, the
``roost.toml`` file (``ROOST_CONFIG`` or ``./roost.toml``; keys are the variable names without the
``ROOST_`` prefix, in lower case), then the defaults below.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from roost.errors import ConfigError


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {raw!r}")


def _smtp_tls(raw: str) -> str:
    value = raw.strip().lower()
    if value not in {"none", "starttls", "tls"}:
        raise ValueError(f"expected none, starttls or tls, got {raw!r}")
    return value


def _list(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


@dataclass(frozen=True, slots=True)
class Settings:
    """Every tunable of a Roost process, with its default."""

    data_dir: Path = Path("./roost-data")
    # Empty means "SQLite file roost.db inside data_dir".
    database_url: str = ""
    bus_url: str = "memory://"
    # Stands for "roost" at the start of every NATS subject and JetStream stream name, so that
    # several installations can share one NATS account without seeing each other's messages.
    bus_prefix: str = "roost"
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    mqtt_port: int = 1883
    mqtts_port: int = 8883
    # Largest MQTT packet accepted (and advertised to v5 clients): a 5,000-point telemetry batch
    # is ~400 KB of JSON; 1 MiB leaves room and bounds what one connection can make us buffer.
    mqtt_max_packet_bytes: int = 1024 * 1024
    # Keep alive a client may ask for at most; 0 (none) is taken as this, as AWS IoT does.
    mqtt_max_keepalive_s: int = 1200
    # How long a persistent MQTT session (clean start 0) is kept after its connection ends.
    mqtt_max_session_expiry_s: int = 24 * 3600
    # Undelivered server-to-device QoS 1/2 messages a session holds before refusing more.
    mqtt_max_queued_messages: int = 100
    admin_password: str = ""
    # Signs user login tokens; generated into data_dir on first start when empty.
    # Set it explicitly when several processes must accept each other's tokens.
    secret_key: str = ""
    # One hour: long enough for a console session, short enough that a leaked token dies soon.
    token_ttl_s: int = 3600
    # Batches of 5,000 telemetry points are ~400 KB of JSON; 4 MiB leaves room and still bounds
    # the memory one request can pin.
    max_body_bytes: int = 4 * 1024 * 1024
    # A device import file: 64 MiB holds several hundred thousand CSV rows.
    max_import_bytes: int = 64 * 1024 * 1024
    # HTTP request heads (issue 11): a client gets this long to send a whole head (ten seconds, as
    # MQTT gets for CONNECT: generous for a device on a slow link, short for a slowloris); a
    # head may be this large (64 KiB holds a forwarded client certificate and any token many
    # times over; nginx takes 32 KiB) with at most this many header fields (Apache's limit).
    # An idle keep-alive connection is closed after this many seconds (uvicorn's default).
    http_head_timeout_s: float = 10.0
    http_max_head_bytes: int = 64 * 1024
    http_max_headers: int = 100
    http_keepalive_timeout_s: int = 5
    # Five failures in five minutes per (username, address) before logins are refused for a while.
    login_max_failures: int = 5
    login_window_s: int = 300
    cors_origins: tuple[str, ...] = ()
    # Consumer groups can read the ingest log this far back (compacted data stays queryable).
    stream_retention_s: int = 3600
    # Points accepted and not yet committed (their devices wait for the acknowledgement) beyond
    # which the doors push back: MQTT stops reading, HTTP waits then answers 503. Bounds
    # ingest's memory under overload (issue 11.3); under a second of SQLite's commit rate.
    ingest_max_unacked_points: int = 500_000
    # How often tenants' telemetry retention (retention_days) is applied; also once at start.
    retention_check_s: int = 3600
    # Presence: heartbeats a silent device may miss before it is offline (interval per model or
    # device), and how often the sweeper looks (seconds; also how often last-seen is saved).
    presence_missed_heartbeats: int = 3
    presence_check_s: float = 1.0
    # Alarms: cleared alarms are kept this many days (the alarm history), then deleted.
    alarm_retention_days: int = 90
    # Device state documents: versions kept for this many days (history queries).
    state_history_days: int = 30
    # Commands: default seconds a device has to answer once a command is sent.
    command_timeout_s: int = 60
    # How often durable timers (command expiry/timeouts, schedules, job rollouts and timeouts)
    # look for due work at the latest; services wake them sooner when work is due now.
    timer_check_s: float = 1.0
    # TLS (issue 5): names the platform CA puts in the server certificate of the MQTTS and
    # HTTPS listeners; an operator's own CA instead of the generated one (PEM files); an HTTPS
    # listener for devices with client certificates (0: off); the header a trusted TLS proxy
    # sets with the client certificate it verified (URL-encoded PEM; empty: trust none).
    tls_hostnames: tuple[str, ...] = ("localhost", "127.0.0.1")
    ca_cert_file: str = ""
    ca_key_file: str = ""
    https_port: int = 0
    client_cert_header: str = ""
    # Abuse limits per device (0: no limit): messages and bytes per second (averaged over a
    # short burst window), live connections; failed credential checks per source address and
    # minute before that address is refused for a while.
    device_max_messages_per_s: float = 0.0
    device_max_bytes_per_s: float = 0.0
    device_max_connections: int = 0
    credential_max_failures: int = 100
    log_level: str = "info"
    # Logs on stderr as text lines or one JSON object per line (for a log shipper); the access
    # log (a line per HTTP request: method, path, status, duration, client) is off by default:
    # a fleet's devices polling over HTTP would drown everything else.
    log_format: str = "text"
    access_log: bool = False
    # SQLite's PRAGMA synchronous on every connection. FULL (WAL mode): the WAL is fsynced at each
    # commit, so an acknowledged point survives a power cut or a kernel crash; group commit keeps
    # it to one fsync per batch. NORMAL skips that fsync (a process crash still loses nothing,
    # a power cut may lose the last acknowledged commits) for more ingest on slow-fsync disks.
    sqlite_synchronous: str = "FULL"
    # E-mail notifications (alarm channels of kind ``email``): the SMTP relay they go through.
    # No host means e-mail channels cannot send (each attempt fails, with that reason, in the
    # delivery log). ``smtp_tls``: ``none``, ``starttls`` (upgrade after connecting, port 587)
    # or ``tls`` (implicit TLS, port 465). Ten seconds bound a send to a relay that hangs.
    smtp_host: str = ""
    smtp_port: int = 25
    smtp_username: str = ""
    smtp_password: str = ""
    smtp_from: str = "roost@localhost"
    smtp_tls: str = "none"
    smtp_timeout_s: float = 10.0
    # Software delivery (issue 14): the largest artifact an upload may hold (8 GiB: a full disk
    # image or a container export, still bounded); where artifact bytes live (empty: files under
    # data_dir/blobs; ``s3://bucket/prefix?endpoint=http://…`` for an S3-compatible service); the
    # operator's own Ed25519 signing key (PEM; empty: a platform key generated and sealed in the
    # database); how long a signed download URL stays valid (an hour: enough to fetch a large
    # image on a slow link, short enough that a leaked URL dies soon).
    artifact_max_bytes: int = 8 * 1024**3
    blob_url: str = ""
    ota_signing_key_file: str = ""
    ota_url_ttl_s: int = 3600
    # hawkBit DDI: the polling interval announced to update clients (config.polling.sleep);
    # five minutes is hawkBit's own default, light for a fleet and soon enough for a rollout.
    ddi_polling_s: int = 300

    @property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to a SQLite file inside the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'roost.db').resolve()}"


_CASTS: dict[str, Callable[[str], Any]] = {
    "data_dir": Path,
    "http_port": int,
    "mqtt_port": int,
    "mqtts_port": int,
    "mqtt_max_packet_bytes": int,
    "mqtt_max_keepalive_s": int,
    "mqtt_max_session_expiry_s": int,
    "mqtt_max_queued_messages": int,
    "token_ttl_s": int,
    "max_body_bytes": int,
    "max_import_bytes": int,
    "http_head_timeout_s": float,
    "http_max_head_bytes": int,
    "http_max_headers": int,
    "http_keepalive_timeout_s": int,
    "login_max_failures": int,
    "login_window_s": int,
    "stream_retention_s": int,
    "ingest_max_unacked_points": int,
    "retention_check_s": int,
    "presence_missed_heartbeats": int,
    "presence_check_s": float,
    "alarm_retention_days": int,
    "state_history_days": int,
    "command_timeout_s": int,
    "timer_check_s": float,
    "tls_hostnames": _list,
    "https_port": int,
    "device_max_messages_per_s": float,
    "device_max_bytes_per_s": float,
    "device_max_connections": int,
    "credential_max_failures": int,
    "cors_origins": _list,
    "access_log": _bool,
    "smtp_port": int,
    "smtp_tls": _smtp_tls,
    "smtp_timeout_s": float,
    "artifact_max_bytes": int,
    "ota_url_ttl_s": int,
    "ddi_polling_s": int,
}


def _cast(name: str, raw: Any) -> Any:
    cast = _CASTS.get(name, str)
    if isinstance(raw, str):
        try:
            return cast(raw)
        except ValueError as exc:
            expected = "an integer" if cast is int else "a number" if cast is float else ""
            reason = f"expected {expected}, got {raw!r}" if expected else str(exc)
            raise ConfigError(f"ROOST_{name.upper()}: {reason}") from exc
    if name in ("cors_origins", "tls_hostnames") and isinstance(raw, list):
        return tuple(str(item) for item in raw)
    if name == "data_dir":
        return Path(str(raw))
    return raw


def load_settings(env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Build settings from the environment (and ``roost.toml``), then apply non-None overrides."""
    environ = os.environ if env is None else env
    names = {f.name for f in fields(Settings)}
    values: dict[str, Any] = {}

    config_path = Path(environ.get("ROOST_CONFIG", "roost.toml"))
    if config_path.is_file():
        try:
            document = tomllib.loads(config_path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read {config_path}: {exc}") from exc
        for key, raw in document.items():
            if key not in names:
                raise ConfigError(f"{config_path}: unknown setting {key!r}")
            values[key] = _cast(key, raw)

    for name in names:
        raw = environ.get(f"ROOST_{name.upper()}")
        if raw is not None:
            values[name] = _cast(name, raw)

    for name, value in overrides.items():
        if name not in names:
            raise ConfigError(f"unknown setting {name!r}")
        if value is not None:
            values[name] = value
    return replace(Settings(), **values)


def environ_flag(name: str, env: Mapping[str, str] | None = None) -> bool:
    """Read a boolean ``ROOST_*`` flag that is not a server setting (used by tests and CLI)."""
    raw = (os.environ if env is None else env).get(name, "")
    try:
        return _bool(raw)
    except ValueError:
        return False


__all__ = ["Settings", "environ_flag", "load_settings"]
