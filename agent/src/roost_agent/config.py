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

Every key has a default except the device's credentials. A bad file raises :class:`ConfigError`
naming the key, so ``roost-agent run`` stops at once with that message.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.9/3.10 on the device
    import tomli as tomllib

WHEN_FULL = ("drop_oldest", "refuse")


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
    hooks_dir: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # sections the agent does not know

    @property
    def queue_path(self) -> Path:
        return self.data_dir / "queue.db"


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
    required = (
        ("device_id", "[device] id"),
        ("token", "[device] token"),
        ("api_url", "[device] api_url"),
        ("mqtt_host", "[mqtt] host"),
    )
    for key, where in required:
        if not values.get(key) and not (key == "token" and values.get("client_cert")):
            raise ConfigError(f"{where} is missing (or name an offline bundle: [device] bundle)")
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
    if "dir" in hooks:
        values["hooks_dir"] = path(hooks["dir"])
    known = {"device", "mqtt", "agent", "queue", "local_api", "health", "hooks"}
    values["extra"] = {k: v for k, v in doc.items() if k not in known}
    return Config(**values)


def load_config(file: Path) -> Config:
    """Read and check ``file``."""
    try:
        doc = tomllib.loads(Path(file).read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read {file}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file} is not valid TOML: {exc}") from exc
    return parse_config(doc, Path(file).resolve().parent)
