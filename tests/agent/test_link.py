"""The agent's connection: an offline bundle from ``roost provision bundle`` joins over MQTT/TLS
with the bundle's CA; a server certificate of another CA is refused and logged; a refused token
is logged with a hint; a client certificate joins without a token."""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.agent.support import AgentProcess, write_config
from tests.support import Api, RoostServer, admin_client, eventually, free_port, make_device

SERVER_START_S = 120.0


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoostServer]:
    """A Roost with MQTT and MQTT over TLS (the platform CA's certificate) on free ports."""
    server = RoostServer(
        tmp_path_factory.mktemp("roost-tls"),
        mqtt_port=free_port(),
        env_overrides={"ROOST_MQTTS_PORT": str(free_port())},
    ).start(timeout=SERVER_START_S)
    try:
        yield server
    finally:
        server.stop()
    log = server.log_path.read_text(errors="replace")
    assert "Traceback" not in log, log[-5000:]


@pytest.fixture(scope="module")
def admin(tls_server: RoostServer) -> Iterator[Api]:
    with admin_client(tls_server) as api:
        yield api


@pytest.fixture(scope="module")
def bundle(tls_server: RoostServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An offline bundle of two devices, written by the server's own CLI."""
    path = tmp_path_factory.mktemp("usb-stick") / "tills.json"
    done = subprocess.run(
        [sys.executable, "-m", "roost", "provision", "bundle", "--count", "2", "--prefix",
         "till-", "--output", str(path)],
        env=tls_server.env(), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return path


def foreign_ca_pem() -> str:
    """A CA certificate of our own making: the server's certificate does not chain to it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Not Roost's CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def bundle_config(folder: Path, bundle: Path, device_id: str, **mqtt: Any) -> tuple[Path, int]:
    """A config that takes everything from the bundle but the local things."""
    port = free_port()
    lines = [
        "[device]",
        f'bundle = "{bundle}"',
        f'id = "{device_id}"',
        "[agent]",
        f'data_dir = "{folder / ("agent-" + device_id)}"',
        "[local_api]",
        f"port = {port}",
        "[health]",
        "interval_s = 0",
        "[mqtt]",
        "reconnect_max_s = 2",
    ]
    lines += [f"{key} = {json.dumps(value)}" for key, value in mqtt.items()]
    path = folder / f"{device_id}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path, port


def status(agent: AgentProcess) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{agent.url}/v1/status", timeout=10).json()
    return body


def stored(admin: Api, device_id: str) -> list[Any]:
    resp = admin.get(
        f"/api/v1/devices/{device_id}/telemetry", params={"sensor": "temperature", "from": "-1d"}
    )
    if resp.status_code == 404:
        return []
    assert resp.status_code == 200, resp.text
    return [item["value"] for item in resp.json()["items"]]


def test_an_offline_bundle_joins_over_tls_with_the_bundles_ca(
    tls_server: RoostServer, admin: Api, bundle: Path, tmp_path: Path
) -> None:
    document = json.loads(bundle.read_text())
    assert document["mqtt"]["tls_port"] == int(tls_server.env()["ROOST_MQTTS_PORT"])
    config, port = bundle_config(tmp_path, bundle, "till-001")
    agent = AgentProcess(config, port).start()
    try:
        eventually(lambda: status(agent)["connected"], timeout=30)
        assert status(agent)["server"].startswith("mqtts://")
        resp = httpx.post(f"{agent.url}/v1/telemetry", json={"temperature": 21.5}, timeout=10)
        assert resp.status_code == 200, resp.text
        assert eventually(lambda: stored(admin, "till-001"), timeout=30) == [21.5]
    finally:
        agent.stop()
    assert "TLS refused" not in agent.log()


def test_a_server_certificate_of_another_ca_is_refused_and_logged(
    tls_server: RoostServer, admin: Api, bundle: Path, tmp_path: Path
) -> None:
    foreign = tmp_path / "foreign-ca.pem"
    foreign.write_text(foreign_ca_pem())
    config, port = bundle_config(tmp_path, bundle, "till-002", ca_file=str(foreign))
    agent = AgentProcess(config, port).start()
    try:
        resp = httpx.post(f"{agent.url}/v1/telemetry", json={"temperature": 99.0}, timeout=10)
        assert resp.status_code == 200, resp.text  # queued locally all the same
        eventually(lambda: "TLS refused" in agent.log(), timeout=30)
        line = next(line for line in agent.log().splitlines() if "TLS refused" in line)
        assert "does not match the bundle's CA" in line and "certificate verify failed" in line
        assert "next attempt in" in line  # it keeps trying, one log line per attempt
        now = status(agent)
        assert not now["connected"] and now["queue"]["queued_points"] == 1
    finally:
        agent.stop()
    assert stored(admin, "till-002") == []


def test_a_refused_token_is_logged_with_a_hint(
    tls_server: RoostServer, admin: Api, tmp_path: Path
) -> None:
    device = make_device(admin)
    port = free_port()
    config = write_config(
        tmp_path / "agent.toml", tls_server, device.id, "not-the-token", local_port=port
    )
    agent = AgentProcess(config, port).start()
    try:
        eventually(lambda: "refused the connection" in agent.log(), timeout=30)
        line = next(x for x in agent.log().splitlines() if "refused the connection" in x)
        assert " ERROR " in line and "check the device token" in line
        assert not status(agent)["connected"]
    finally:
        agent.stop()


def test_a_client_certificate_joins_without_a_token(
    tls_server: RoostServer, admin: Api, tmp_path: Path
) -> None:
    device = make_device(admin)
    issued = admin.post(f"/api/v1/devices/{device.id}/certificates", json={})
    assert issued.status_code == 201, issued.text
    (tmp_path / "device.pem").write_text(issued.json()["certificate"])
    (tmp_path / "device.key").write_text(issued.json()["private_key"])
    (tmp_path / "ca.pem").write_text(admin.get("/api/v1/ca").json()["certificate"])
    port = free_port()
    config = tmp_path / "agent.toml"
    config.write_text(
        f'[device]\nid = "{device.id}"\napi_url = "{tls_server.url}"\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {tls_server.env()["ROOST_MQTTS_PORT"]}\n'
        'tls = true\nca_file = "ca.pem"\nclient_cert = "device.pem"\nclient_key = "device.key"\n'
        f'[agent]\ndata_dir = "{tmp_path / "data"}"\n'
        f"[local_api]\nport = {port}\n[health]\ninterval_s = 0\n"
    )
    agent = AgentProcess(config, port).start()
    try:
        resp = httpx.post(f"{agent.url}/v1/telemetry", json={"temperature": 7.5}, timeout=10)
        assert resp.status_code == 200, resp.text
        assert eventually(lambda: stored(admin, device.id), timeout=30) == [7.5]
    finally:
        agent.stop()
