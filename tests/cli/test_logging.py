"""How ``roost serve`` logs, run as a real subprocess: JSON lines with an access log when asked,
no line per device connection at the default level, and a bad setting as one ``error:`` line."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import pytest

from tests.support import (
    RoostServer,
    admin_client,
    eventually,
    free_port,
    make_device,
)

TIMEOUT = 10


@contextmanager
def serving(server: RoostServer, stderr_path: Path) -> Iterator[RoostServer]:
    """``roost serve`` with its stdout (the banner) and stderr (the log) kept apart."""
    server.data_dir.mkdir(parents=True, exist_ok=True)
    with stderr_path.open("wb") as err, server.log_path.open("wb") as out:
        server.process = subprocess.Popen(
            [sys.executable, "-m", "roost", "serve"], env=server.env(), stdout=out, stderr=err
        )
    try:
        eventually(lambda: _healthy(server), timeout=60)
        yield server
    finally:
        server.stop()


def _healthy(server: RoostServer) -> bool:
    assert server.process is not None and server.process.poll() is None, "roost serve exited"
    try:
        return httpx.get(f"{server.url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_json_log_with_access_lines(tmp_path: Path) -> None:
    server = RoostServer(
        tmp_path / "data",
        env_overrides={"ROOST_LOG_FORMAT": "json", "ROOST_ACCESS_LOG": "true"},
    )
    stderr_path = tmp_path / "stderr.log"
    with serving(server, stderr_path):
        resp = httpx.get(f"{server.url}/api/v1/devices", params={"token": "eyJa.b.c"})
        assert resp.status_code == 401
    lines = stderr_path.read_text().splitlines()
    assert lines, "nothing was logged"
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    for record in records:
        assert {"time", "level", "logger", "message"} <= record.keys(), record
    access = [r for r in records if r["logger"] == "roost.access"]
    denied = [r for r in access if r["path"] == "/api/v1/devices"]
    assert len(denied) == 1, access
    line = denied[0]
    assert line["method"] == "GET" and line["status"] == 401 and line["level"] == "info"
    assert line["client"].startswith("127.0.0.1:")
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
    assert "eyJa" not in stderr_path.read_text()  # the query (and its token) is not logged
    # uvicorn's own lines come through the same format.
    assert any(r["logger"].startswith("uvicorn") for r in records), records


def test_text_log_has_no_access_lines_by_default(tmp_path: Path) -> None:
    server = RoostServer(tmp_path / "data")
    stderr_path = tmp_path / "stderr.log"
    with serving(server, stderr_path):
        assert httpx.get(f"{server.url}/api/v1/devices").status_code == 401
    text = stderr_path.read_text()
    assert "/api/v1/devices" not in text, text
    assert not any(line.startswith("{") for line in text.splitlines()), text


def test_device_connections_are_not_logged_at_info(tmp_path: Path) -> None:
    server = RoostServer(tmp_path / "data", mqtt_port=free_port())
    stderr_path = tmp_path / "stderr.log"
    with serving(server, stderr_path), admin_client(server) as admin:
        device = make_device(admin)
        url = f"/api/v1/devices/{device.id}/presence"

        def presence() -> str:
            return str(admin.get(url).json()["status"])

        for protocol in (mqtt.MQTTv311, mqtt.MQTTv5):
            client = mqtt.Client(
                mqtt.CallbackAPIVersion.VERSION2, client_id=f"c{protocol}", protocol=protocol
            )
            client.username_pw_set("JWT", device.token)
            connected = threading.Event()
            client.on_connect = lambda *args, event=connected: event.set()  # type: ignore[misc]
            client.connect("127.0.0.1", server.mqtt_port, keepalive=30)
            client.loop_start()
            assert connected.wait(TIMEOUT), "no CONNACK"
            eventually(lambda: presence() == "online")
            client.disconnect()
            client.loop_stop()
            eventually(lambda: presence() == "offline")
    text = stderr_path.read_text()
    assert device.id not in text, text
    assert "MQTTSession" not in text, text


def _serve_fails(tmp_path: Path, **env: str) -> list[str]:
    """Run ``roost serve`` with ``env``; it must exit with status 2; answers its stderr lines."""
    server = RoostServer(tmp_path / "data", env_overrides=env)
    result = subprocess.run(
        [sys.executable, "-m", "roost", "serve"],
        env=server.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines: list[str] = result.stderr.splitlines()
    assert lines and lines[-1].startswith("error: "), lines
    return lines


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"ROOST_HTTP_PORT": "notaport"}, "ROOST_HTTP_PORT: expected an integer, got 'notaport'"),
        ({"ROOST_PRESENCE_CHECK_S": "soon"}, "ROOST_PRESENCE_CHECK_S: expected a number"),
        ({"ROOST_ACCESS_LOG": "maybe"}, "ROOST_ACCESS_LOG: not a boolean: 'maybe'"),
        ({"ROOST_LOG_FORMAT": "xml"}, "ROOST_LOG_FORMAT: 'xml' is not one of text, json"),
        ({"ROOST_LOG_LEVEL": "loud"}, "ROOST_LOG_LEVEL: 'loud' is not one of"),
        ({"ROOST_DATABASE_URL": "mysql://db/roost"}, "unsupported database URL scheme 'mysql'"),
        ({"ROOST_BUS_URL": "kafka://broker"}, "unsupported bus URL scheme 'kafka'"),
    ],
    ids=["port", "float", "bool", "log-format", "log-level", "database", "bus"],
)
def test_a_bad_setting_is_one_line(tmp_path: Path, env: dict[str, str], expected: str) -> None:
    lines = _serve_fails(tmp_path, **env)
    assert len(lines) == 1, lines
    assert expected in lines[0], lines


def test_a_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        lines = _serve_fails(tmp_path, ROOST_HTTP_PORT=str(port))
    assert lines == [
        f"error: cannot listen for HTTP on 127.0.0.1:{port} (Address already in use): choose "
        "another address or port with --host / --port (ROOST_HTTP_HOST, ROOST_HTTP_PORT)"
    ]


def test_an_mqtt_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        lines = _serve_fails(tmp_path, ROOST_MQTT_PORT=str(port))
    assert f"cannot listen for MQTT on 127.0.0.1:{port}" in lines[-1], lines


def test_an_unreadable_ca_file_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-ca.pem"
    lines = _serve_fails(
        tmp_path,
        ROOST_CA_CERT_FILE=str(missing),
        ROOST_CA_KEY_FILE=str(missing),
        ROOST_MQTTS_PORT=str(free_port()),
    )
    assert "ROOST_CA_CERT_FILE / ROOST_CA_KEY_FILE" in lines[-1], lines
    assert str(missing) in lines[-1], lines
