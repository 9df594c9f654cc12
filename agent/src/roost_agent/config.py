"""The agent's configuration: one TOML file, credentials from an offline bundle or written inline.

```toml
[device]
bundle = "/boot/roost/till-07.json"   # written by `roost provision bundle` (a USB stick)
id = "till-07"                         # which device of the bundle (not needed for one device)

[agent]
data_dir = "/var/lib/roost-agent"      # the queue, cached identity/config, downloads

[queue]
max_bytes = 100_000_000                # disk the queue may use
when_full = "drop_oldest"              # or "refuse" (the local API answers 507)
```

Every key has a default except the device's credentials: from the bundle, written inline, or
obtained by the agent itself (a ``[join]`` section: an enrollment group or an attestation hash,
see :mod:`roost_agent.joining`). What the agent obtained (joining, rotation) is kept in
``data_dir/credentials.json`` and wins over the file: it is newer. A bad file raises
:class:`ConfigError` naming the key, so ``roost-agent run`` stops at once with that message.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.9/3.10 on the device
    import tomli as tomllib

WHEN_FULL = ("drop_oldest", "refuse")
#: What the agent obtained itself (joining, rotation), in ``data_dir``; see roost_agent.credentials.
CREDENTIALS_FILE = "credentials.json"


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key and the fix."""


@dataclass(frozen=True)
class Config:
    device_id: str
    tenant_id: str
    token: str  # the device token (MQTT password, HTTP Bearer)
    api_url: str  # e.g. https://roost.example.com (no /api/v1)
    mqtt_host: str
    mqtt_port: int
    data_dir: Path
    tls: bool = False
    ca_certificate: str | None = None  # PEM: the server's certificate must chain to it
    client_cert: Path | None = None  # X.509 instead of the token (both files, PEM)
    client_key: Path | None = None
    key: str | None = None  # the device's symmetric key (Base64): SAS tokens for local apps
    sas_resource: str | None = None
    keepalive_s: int = 30
    reconnect_max_s: float = 60.0  # the longest wait between two connection attempts
    queue_max_bytes: int = 100_000_000
    queue_when_full: str = "drop_oldest"
    batch_points: int = 500
    local_host: str = "127.0.0.1"
    local_port: int = 7090  # 0: any free port (written to data_dir/local-api.port)
    token_ttl_s: int = 900
    health_interval_s: float = 60.0  # 0: no system metrics
    ota_signing_key: str | None = None  # Roost's OTA public key (PEM) from the offline bundle
    status_refresh_s: float = 600.0  # the agent's unchanged status is reported again this often
    hooks_dir: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # sections the agent does not know

    @property
    def queue_path(self) -> Path:
        return self.data_dir / "queue.db"

    @property
    def credentials_path(self) -> Path:
        return self.data_dir / CREDENTIALS_FILE

    @property
    def join(self) -> dict[str, Any] | None:
        """The ``[join]`` section (checked by :func:`parse_config`), or None."""
        value = self.extra.get("join")
        return value if isinstance(value, dict) else None

    @property
    def joined(self) -> bool:
        """Whether the agent has its device's credentials (else it must join first)."""
        return bool(self.device_id) and bool(self.token or self.client_cert)


def _section(doc: dict[str, Any], name: str) -> dict[str, Any]:
    value = doc.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"[{name}] must be a table")
    return value


def _int(section: dict[str, Any], name: str, key: str, default: int, low: int = 0) -> int:
    value = section.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ConfigError(f"[{name}] {key} must be an integer >= {low}, not {value!r}")
    return value


def _from_bundle(path: Path, device_id: str | None) -> dict[str, Any]:
    try:
        bundle = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"[device] bundle {path}: {exc}") from exc
    if not isinstance(bundle, dict) or bundle.get("format") != "roost-bundle/1":
        raise ConfigError(f"[device] bundle {path} is not a roost-bundle/1 file")
    entries = bundle.get("devices") or []
    if device_id is None:
        if len(entries) != 1:
            ids = ", ".join(e.get("device_id", "?") for e in entries[:5])
            raise ConfigError(f"[device] id must name one of the bundle's devices ({ids} …)")
        entry = entries[0]
    else:
        found = [e for e in entries if e.get("device_id") == device_id]
        if not found:
            raise ConfigError(f"[device] the bundle {path} has no device {device_id!r}")
        entry = found[0]
    mqtt = bundle.get("mqtt") or {}
    api_url = bundle.get("https_url") or bundle.get("api_url")
    tls = bool(mqtt.get("tls_port"))
    return {
        "device_id": entry["device_id"],
        "tenant_id": bundle.get("tenant_id", "default"),
        "token": entry["token"],
        "key": entry.get("key"),
        "sas_resource": entry.get("sas_resource"),
        "api_url": api_url,
        "mqtt_host": mqtt.get("host") or urlsplit(api_url or "").hostname,
        "mqtt_port": mqtt.get("tls_port") if tls else mqtt.get("port"),
        "tls": tls,
        "ca_certificate": bundle.get("ca_certificate"),
        "ota_signing_key": (bundle.get("ota_signing_key") or {}).get("public_key"),
    }


def parse_config(doc: dict[str, Any], base: Path) -> Config:
    """A :class:`Config` from a parsed TOML document (relative paths are taken from ``base``)."""
    device = _section(doc, "device")
    mqtt = _section(doc, "mqtt")
    agent = _section(doc, "agent")
    queue = _section(doc, "queue")
    local = _section(doc, "local_api")
    health = _section(doc, "health")
    hooks = _section(doc, "hooks")

    def path(value: Any) -> Path:
        return (base / str(value)).resolve()

    values: dict[str, Any] = {}
    if "bundle" in device:
        values.update(_from_bundle(path(device["bundle"]), device.get("id")))
    if "id" in device:
        values["device_id"] = device["id"]
    for key in ("tenant_id", "token", "key", "sas_resource", "api_url"):
        if key in device:
            values[key] = device[key]
    if "host" in mqtt:
        values["mqtt_host"] = mqtt["host"]
    if "tls" in mqtt:
        values["tls"] = bool(mqtt["tls"])
    if "port" in mqtt:
        values["mqtt_port"] = _int(mqtt, "mqtt", "port", 1883, 1)
    if "ca_file" in mqtt:
        try:
            values["ca_certificate"] = path(mqtt["ca_file"]).read_text()
        except OSError as exc:
            raise ConfigError(f"[mqtt] ca_file: {exc}") from exc
    for key in ("client_cert", "client_key"):
        if key in mqtt:
            values[key] = path(mqtt[key])
    values.setdefault("tenant_id", "default")
    join = _section(doc, "join") if "join" in doc else None
    if join is not None:
        _check_join(join)
    required = (
        ("device_id", "[device] id"),
        ("token", "[device] token"),
        ("api_url", "[device] api_url"),
        ("mqtt_host", "[mqtt] host"),
    )
    for key, where in required:
        if join is not None and key in ("device_id", "token"):
            continue  # obtained by joining
        if join is not None and key == "api_url" and join.get("api_url"):
            values.setdefault("api_url", join["api_url"])
            continue
        if not values.get(key) and not (key == "token" and values.get("client_cert")):
            raise ConfigError(f"{where} is missing (or name an offline bundle: [device] bundle)")
    values.setdefault("device_id", "")
    values.setdefault("token", "")
    values.setdefault("mqtt_port", 8883 if values.get("tls") else 1883)
    values["keepalive_s"] = _int(mqtt, "mqtt", "keepalive_s", 30, 5)
    reconnect = mqtt.get("reconnect_max_s", 60)
    if isinstance(reconnect, bool) or not isinstance(reconnect, (int, float)) or reconnect < 1:
        raise ConfigError(f"[mqtt] reconnect_max_s must be a number >= 1, not {reconnect!r}")
    values["reconnect_max_s"] = float(reconnect)
    values["data_dir"] = path(agent.get("data_dir", "roost-agent-data"))
    values["queue_max_bytes"] = _int(queue, "queue", "max_bytes", 100_000_000, 1_000_000)
    when_full = queue.get("when_full", "drop_oldest")
    if when_full not in WHEN_FULL:
        raise ConfigError(f"[queue] when_full must be one of {', '.join(WHEN_FULL)}")
    values["queue_when_full"] = when_full
    values["batch_points"] = _int(queue, "queue", "batch_points", 500, 1)
    values["local_host"] = str(local.get("host", "127.0.0.1"))
    values["local_port"] = _int(local, "local_api", "port", 7090, 0)
    values["token_ttl_s"] = _int(local, "local_api", "token_ttl_s", 900, 5)
    interval = health.get("interval_s", 60)
    if not isinstance(interval, (int, float)) or interval < 0:
        raise ConfigError("[health] interval_s must be a number >= 0 (0 turns it off)")
    values["health_interval_s"] = float(interval)
    refresh = health.get("status_refresh_s", 600)
    if isinstance(refresh, bool) or not isinstance(refresh, (int, float)) or refresh < 5:
        raise ConfigError(f"[health] status_refresh_s must be a number >= 5, not {refresh!r}")
    values["status_refresh_s"] = float(refresh)
    if "dir" in hooks:
        values["hooks_dir"] = path(hooks["dir"])
    known = {"device", "mqtt", "agent", "queue", "local_api", "health", "hooks"}
    values["extra"] = {k: v for k, v in doc.items() if k not in known}
    if join is not None and "attestation_hash_file" in join:
        values["extra"]["join"] = {
            **join,
            "attestation_hash_file": str(path(join["attestation_hash_file"])),
        }
    return Config(**values)


JOIN_STRINGS = (
    "api_url",
    "enrollment_id",
    "registration_id",
    "group_key",
    "device_key",
    "attestation_hash",
    "attestation_hash_file",
    "hostname",
)


def _check_join(join: dict[str, Any]) -> None:
    """Refuse a ``[join]`` section that cannot work (the keys are read by roost_agent.joining)."""
    for key, value in join.items():
        if key == "certificate":
            if not isinstance(value, bool):
                raise ConfigError("[join] certificate must be true or false")
        elif key not in JOIN_STRINGS:
            raise ConfigError(f"[join] {key} is not a known key ({', '.join(JOIN_STRINGS)})")
        elif not isinstance(value, str) or not value:
            raise ConfigError(f"[join] {key} must be a non-empty string")
    enrollment = "enrollment_id" in join
    attestation = "attestation_hash" in join or "attestation_hash_file" in join
    if enrollment == attestation:
        raise ConfigError(
            "[join] needs enrollment_id (an enrollment group) or attestation_hash / "
            "attestation_hash_file (an attestation hash), not both"
        )
    if enrollment and ("group_key" in join) == ("device_key" in join):
        raise ConfigError("[join] enrollment_id needs group_key or device_key (one of them)")
    if "attestation_hash" in join and "attestation_hash_file" in join:
        raise ConfigError("[join] name attestation_hash or attestation_hash_file, not both")


def read_credentials(data_dir: Path) -> dict[str, Any] | None:
    """``data_dir/credentials.json`` (what the agent obtained itself), or None when absent."""
    path = Path(data_dir) / CREDENTIALS_FILE
    try:
        stored = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} is unreadable ({exc}): remove it to join again") from exc
    if (
        not isinstance(stored, dict)
        or not isinstance(stored.get("device_id"), str)
        or not isinstance(stored.get("token"), str)
        or not (stored["token"] or stored.get("client_cert"))
    ):
        raise ConfigError(f"{path} holds no device credential: remove it to join again")
    return stored


def with_credentials(config: Config) -> Config:
    """``config`` with what the agent obtained itself (credentials.json) in place of its own."""
    stored = read_credentials(config.data_dir)
    if stored is None:
        return config
    if config.device_id and stored["device_id"] != config.device_id:
        raise ConfigError(
            f"{config.credentials_path} holds credentials of device {stored['device_id']!r}, "
            f"not of [device] id {config.device_id!r}: remove it, or use another data_dir"
        )
    changes: dict[str, Any] = {
        "device_id": stored["device_id"],
        "tenant_id": stored.get("tenant_id") or config.tenant_id,
        "token": stored["token"],
    }
    if stored.get("client_cert") and stored.get("client_key"):
        changes["client_cert"] = Path(stored["client_cert"])
        changes["client_key"] = Path(stored["client_key"])
    return replace(config, **changes)


def load_config(file: Path) -> Config:
    """Read and check ``file`` (and the credentials the agent obtained, when there are some)."""
    try:
        doc = tomllib.loads(Path(file).read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read {file}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file} is not valid TOML: {exc}") from exc
    return with_credentials(parse_config(doc, Path(file).resolve().parent))
