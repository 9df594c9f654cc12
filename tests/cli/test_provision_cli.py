"""``roost provision bundle``, run as a real subprocess on a SQLite data dir; the credentials it
writes then open a ``roost serve`` of the same store."""

from __future__ import annotations

import base64
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

from roost.credentials.keys import sas
from tests.support import ADMIN_PASSWORD, SECRET_KEY, RoostServer, admin_client, free_port

# ``roost provision`` as ``roost.cli.main`` registers it (app.add_typer(provision.app)).
ROOST = (
    "import typer; from roost.cli.provision import app; "
    "root = typer.Typer(); root.add_typer(app); root()"
)


def provision(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOST_")}
    env.update(
        ROOST_DATA_DIR=str(data_dir),
        ROOST_ADMIN_PASSWORD=ADMIN_PASSWORD,
        ROOST_SECRET_KEY=SECRET_KEY,
        COLUMNS="250",
    )
    proc = subprocess.run(
        [sys.executable, "-c", ROOST, "provision", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def read_bundle(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = orjson.loads(path.read_bytes())
    return document


def test_bundle_help_explains_the_command(tmp_path: Path) -> None:
    proc = provision(tmp_path, "bundle", "--help")
    assert proc.returncode == 0
    for word in ("--output", "--count", "--prefix", "--site", "--group", "offline bundle"):
        assert word in proc.stdout


def test_bundles_hold_credentials_that_open_the_server(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    single = tmp_path / "single.json"
    proc = provision(
        data_dir, "bundle", "till-07", "--output", str(single), "--api-url", "http://store:8000"
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert stat.S_IMODE(single.stat().st_mode) == 0o600
    document = read_bundle(single)
    assert document["format"] == "roost-bundle/1" and document["api_url"] == "http://store:8000"
    assert document["mqtt"]["host"] == "store" and document["tenant_id"] == "default"
    [device] = document["devices"]
    assert device["device_id"] == "till-07" and device["created"] is True
    assert device["sas_resource"] == "default/devices/till-07"
    assert document["ca_certificate"].startswith("-----BEGIN CERTIFICATE-----")

    batch = tmp_path / "batch.json"
    proc = provision(data_dir, "bundle", "--count", "3", "--prefix", "pos-", "--output", str(batch))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ids = [d["device_id"] for d in read_bundle(batch)["devices"]]
    assert ids == ["pos-001", "pos-002", "pos-003"]
    # The file is not overwritten by accident; bad combinations are refused.
    assert provision(data_dir, "bundle", "x", "--output", str(batch)).returncode != 0
    assert (
        provision(data_dir, "bundle", "--count", "2", "--output", str(tmp_path / "n")).returncode
        != 0
    )
    refused = provision(
        data_dir, "bundle", "x", "--site", "nowhere", "--output", str(tmp_path / "s")
    )
    assert refused.returncode == 1 and not (tmp_path / "s").exists()

    server = RoostServer(data_dir).start()
    try:

        def post(authorization: str, value: float) -> int:
            return httpx.post(
                f"{server.url}/api/v1/telemetry",
                content=orjson.dumps({"sensor_id": "t", "value": value}),
                headers={"Authorization": authorization, "Content-Type": "application/json"},
            ).status_code

        assert post(f"Bearer {device['token']}", 1.0) == 200
        key = base64.b64decode(device["key"])
        token = sas.sign(key, device["sas_resource"], int(time.time()) + 600, device["key_id"])
        assert post(token, 2.0) == 200
        with admin_client(server) as admin:
            resp = admin.get("/api/v1/devices/till-07/telemetry", params={"sensor": "t"})
            assert sorted(i["value"] for i in resp.json()["items"]) == [1.0, 2.0]
            assert admin.get("/api/v1/devices/pos-003").status_code == 200
    finally:
        server.stop()


def test_bundles_carry_the_endpoints_of_the_server_they_are_for(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    # No server has run on this data dir yet: the settings' endpoints.
    first = tmp_path / "first.json"
    assert provision(data_dir, "bundle", "a", "--output", str(first)).returncode == 0
    document = read_bundle(first)
    assert document["api_url"] == "http://127.0.0.1:8000"
    assert document["mqtt"] == {"host": "127.0.0.1", "port": 1883, "tls_port": 8883}

    # A server started with other ports (flags or its own environment, not the CLI's) records
    # where it listens; bundles made next to it carry that, and its devices connect there.
    mqtt_port, mqtts_port = free_port(), free_port()
    server = RoostServer(
        data_dir, mqtt_port=mqtt_port, env_overrides={"ROOST_MQTTS_PORT": str(mqtts_port)}
    ).start()
    try:
        second = tmp_path / "second.json"
        proc = provision(data_dir, "bundle", "b", "--output", str(second))
        assert proc.returncode == 0, proc.stderr
        assert f"MQTT 127.0.0.1:{mqtt_port} (TLS {mqtts_port})" in proc.stdout
        document = read_bundle(second)
        assert document["api_url"] == server.url
        assert document["mqtt"] == {"host": "127.0.0.1", "port": mqtt_port, "tls_port": mqtts_port}
        [device] = document["devices"]
        published = subprocess.run(
            ["mosquitto_pub", "-h", document["mqtt"]["host"], "-p", str(document["mqtt"]["port"])]
            + ["-u", "b", "-P", device["token"], "-q", "1", "-t", "devices/b/telemetry"]
            + ["-m", '{"t": 1}'],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert published.returncode == 0, published.stderr
        # Flags still win over what the server recorded.
        third = tmp_path / "third.json"
        proc = provision(
            data_dir, "bundle", "c", "--output", str(third), "--api-url", "http://gw.example:80",
            "--mqtt-port", "1999", "--mqtts-port", "0",
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        document = read_bundle(third)
        assert document["api_url"] == "http://gw.example:80"
        assert document["mqtt"] == {"host": "gw.example", "port": 1999, "tls_port": None}
    finally:
        server.stop()

    # A server listening on every interface is written as this machine's name.
    server = RoostServer(data_dir, env_overrides={"ROOST_HTTP_HOST": "0.0.0.0"}).start()
    try:
        fourth = tmp_path / "fourth.json"
        assert provision(data_dir, "bundle", "d", "--output", str(fourth)).returncode == 0
        document = read_bundle(fourth)
        assert document["api_url"] == f"http://{socket.getfqdn()}:{server.port}"
        assert document["mqtt"] == {"host": socket.getfqdn(), "port": None, "tls_port": None}
    finally:
        server.stop()
