"""Running a real ``roost-agent`` beside a real ``roost serve`` in tests."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support import RoostServer, free_port

# Seconds a (re)starting server may take: generous, the suite shares the machine.
SERVER_START_S = 120.0


def write_config(
    path: Path,
    server: RoostServer,
    device_id: str,
    token: str,
    *,
    local_port: int | None = None,
    sections: dict[str, dict[str, Any]] | None = None,
) -> Path:
    """An agent config for ``device_id`` on ``server`` (its MQTT port must be on)."""
    assert server.mqtt_port, "the agent needs the server's MQTT listener (mqtt_port=free_port())"
    doc: dict[str, dict[str, Any]] = {
        "device": {"id": device_id, "token": token, "api_url": server.url},
        "mqtt": {"host": "127.0.0.1", "port": server.mqtt_port, "tls": False},
        "agent": {"data_dir": str(path.parent / f"agent-{device_id}")},
        "local_api": {"port": local_port if local_port is not None else free_port()},
        "health": {"interval_s": 0},
    }
    for name, values in (sections or {}).items():
        doc.setdefault(name, {}).update(values)
    lines: list[str] = []
    for name, values in doc.items():
        lines.append(f"[{name}]")
        for key, value in values.items():
            lines.append(f"{key} = {_toml(value)}")
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    raise TypeError(value)


@dataclass
class AgentProcess:
    """A ``roost-agent run --config FILE`` subprocess; its local API at :attr:`url`."""

    config: Path
    local_port: int
    log_path: Path = field(init=False)
    process: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.log_path = self.config.with_suffix(".log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.local_port}"

    def start(self, timeout: float = 20) -> AgentProcess:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "roost_agent", "run", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"roost-agent exited early:\n{self.log_path.read_text()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop(signal.SIGKILL)
        raise RuntimeError(f"roost-agent did not come up:\n{self.log_path.read_text()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def write_join_config(
    path: Path,
    server: RoostServer,
    name: str,
    join: dict[str, Any],
    *,
    local_port: int | None = None,
    sections: dict[str, dict[str, Any]] | None = None,
) -> Path:
    """An agent config that has no device credentials yet: it joins with ``[join]``.

    ``name`` names the data directory (``agent-{name}`` beside ``path``)."""
    assert server.mqtt_port, "the agent needs the server's MQTT listener (mqtt_port=free_port())"
    doc: dict[str, dict[str, Any]] = {
        "device": {"api_url": server.url},
        "join": join,
        "mqtt": {"host": "127.0.0.1", "port": server.mqtt_port, "tls": False},
        "agent": {"data_dir": str(path.parent / f"agent-{name}")},
        "local_api": {"port": local_port if local_port is not None else free_port()},
        "health": {"interval_s": 0},
    }
    for section, values in (sections or {}).items():
        doc.setdefault(section, {}).update(values)
    lines: list[str] = []
    for section, values in doc.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            lines.append(f"{key} = {_toml(value)}")
        lines.append("")
    path.write_text("\n".join(lines))
    return path
