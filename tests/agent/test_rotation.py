"""Credential rotation through a real ``roost-agent`` and a real ``roost serve``: an operator asks
(``POST /devices/{id}/credentials/rotate-request``), the agent's ``roost.rotate_credentials``
handler gets a new token (and a certificate when asked), switches to it, retires the old one;
the command SUCCEEDED, the old token is refused, points still arrive, credentials.json holds the
new credential (0600) and a restart keeps using it.
"""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.agent.support import SERVER_START_S, AgentProcess, write_config
from tests.support import Api, RoostServer, admin_client, eventually, free_port, make_device

V1 = "/api/v1"
RECONNECT_MAX_S = 2


def values(admin: Api, device_id: str) -> list[Any]:
    resp = admin.get(
        f"{V1}/devices/{device_id}/telemetry",
        params={"sensor": "temperature", "from": "2000-01-01", "limit": 1000, "order": "asc"},
    )
    if resp.status_code == 404:
        return []
    assert resp.status_code == 200, resp.text
    return [item["value"] for item in resp.json()["items"]]


def send(agent: AgentProcess, value: float) -> None:
    point = {"sensor_id": "temperature", "ts": int(time.time() * 1000) - 1000, "value": value}
    resp = httpx.post(f"{agent.url}/v1/telemetry", json=point, timeout=30)
    assert resp.status_code == 200, resp.text


def connected(agent: AgentProcess) -> bool:
    return bool(httpx.get(f"{agent.url}/v1/status", timeout=10).json()["connected"])


def whoami(server: RoostServer, token: str) -> int:
    resp = httpx.get(f"{server.url}{V1}/device", headers={"Authorization": f"Bearer {token}"})
    return resp.status_code


def rotate(admin: Api, device_id: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """Ask for a rotation; the finished command."""
    resp = admin.post(f"{V1}/devices/{device_id}/credentials/rotate-request", json=body)
    assert resp.status_code == 202, resp.text
    command_id = resp.json()["id"]

    def done() -> dict[str, Any] | None:
        got = admin.get(f"{V1}/devices/{device_id}/commands/{command_id}").json()
        return got if got["status"] not in ("PENDING", "SENT", "DELIVERED", "QUEUED") else None

    command: dict[str, Any] = eventually(done, timeout=60, interval=0.2)
    return command


def stored_credentials(data_dir: Path) -> tuple[dict[str, Any], int]:
    path = data_dir / "credentials.json"
    return json.loads(path.read_text()), stat.S_IMODE(path.stat().st_mode)


def start(tmp_path: Path, server: RoostServer, device_id: str, token: str) -> AgentProcess:
    port = free_port()
    config = write_config(
        tmp_path / "agent.toml",
        server,
        device_id,
        token,
        local_port=port,
        sections={"mqtt": {"reconnect_max_s": RECONNECT_MAX_S}},
    )
    return AgentProcess(config, port).start(timeout=60)


def test_an_operator_rotates_a_devices_token(
    tmp_path: Path, server: RoostServer, admin: Api
) -> None:
    device = make_device(admin)
    data_dir = tmp_path / f"agent-{device.id}"
    agent = start(tmp_path, server, device.id, device.token)
    try:
        eventually(lambda: connected(agent), timeout=30)
        send(agent, 1.0)
        eventually(lambda: values(admin, device.id) == [1.0], timeout=30)

        command = rotate(admin, device.id)
        assert command["status"] == "SUCCEEDED", (command, agent.log()[-3000:])
        result = command["result"]
        assert result["token_id"] != device.token_id and result["certificate_id"] is None
        assert result["retired"] == {"token_ids": [device.token_id], "certificate_ids": []}
        assert "token" not in result  # never the secret

        stored, mode = stored_credentials(data_dir)
        assert mode == 0o600
        assert stored["token_id"] == result["token_id"] and stored["source"] == "rotation"
        assert stored["device_id"] == device.id and "retire" not in stored
        assert stored["token"] != device.token
        assert whoami(server, device.token) in (401, 403)  # the old token is retired
        assert whoami(server, stored["token"]) == 200

        eventually(lambda: connected(agent), timeout=30)
        send(agent, 2.0)  # forwarded over MQTT with the new token
        eventually(lambda: values(admin, device.id) == [1.0, 2.0], timeout=30)
    finally:
        agent.stop()

    # A restart uses credentials.json (the token in agent.toml is revoked).
    agent.start(timeout=60)
    try:
        eventually(lambda: connected(agent), timeout=30)
        send(agent, 3.0)
        eventually(lambda: values(admin, device.id) == [1.0, 2.0, 3.0], timeout=30)
    finally:
        agent.stop()


def test_a_rotation_asked_with_a_certificate_stores_a_key_pair(
    tmp_path: Path, server: RoostServer, admin: Api
) -> None:
    device = make_device(admin)
    data_dir = tmp_path / f"agent-{device.id}"
    agent = start(tmp_path, server, device.id, device.token)
    try:
        eventually(lambda: connected(agent), timeout=30)
        command = rotate(admin, device.id, {"certificate": True})
        assert command["status"] == "SUCCEEDED", (command, agent.log()[-3000:])
        result = command["result"]
        assert result["certificate_id"] and result["token_id"] != device.token_id
        assert result["retired"]["token_ids"] == [device.token_id]

        stored, mode = stored_credentials(data_dir)
        assert mode == 0o600 and stored["certificate_id"] == result["certificate_id"]
        for name in ("client_cert", "client_key"):
            path = Path(stored[name])
            assert path.parent == data_dir / "credentials"
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert "BEGIN CERTIFICATE" in Path(stored["client_cert"]).read_text()
        assert "PRIVATE KEY" in Path(stored["client_key"]).read_text()
        certificates = admin.get(f"{V1}/devices/{device.id}/certificates").json()["items"]
        assert result["certificate_id"] in [c["id"] for c in certificates]

        send(agent, 4.0)
        eventually(lambda: values(admin, device.id) == [4.0], timeout=30)
    finally:
        agent.stop()


def test_an_agent_on_a_client_certificate_rotates_it_over_tls(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    server = RoostServer(
        tmp_path_factory.mktemp("roost-tls"),
        mqtt_port=free_port(),
        env_overrides={"ROOST_MQTTS_PORT": str(free_port())},
    ).start(timeout=SERVER_START_S)
    try:
        with admin_client(server) as admin:
            rotate_a_client_certificate(server, admin, tmp_path)
    finally:
        server.stop()
    log = server.log_path.read_text(errors="replace")
    assert "Traceback" not in log, log[-5000:]


def rotate_a_client_certificate(server: RoostServer, admin: Api, tmp_path: Path) -> None:
    device = make_device(admin)
    issued = admin.post(f"{V1}/devices/{device.id}/certificates", json={})
    assert issued.status_code == 201, issued.text
    first_cert = issued.json()["id"]
    (tmp_path / "device.pem").write_text(issued.json()["certificate"])
    (tmp_path / "device.key").write_text(issued.json()["private_key"])
    (tmp_path / "ca.pem").write_text(admin.get(f"{V1}/ca").json()["certificate"])
    port = free_port()
    config = write_config(
        tmp_path / "agent.toml",
        server,
        device.id,
        device.token,
        local_port=port,
        sections={
            "mqtt": {
                "port": int(server.env()["ROOST_MQTTS_PORT"]),
                "tls": True,
                "ca_file": "ca.pem",
                "client_cert": "device.pem",
                "client_key": "device.key",
                "reconnect_max_s": RECONNECT_MAX_S,
            }
        },
    )
    data_dir = tmp_path / f"agent-{device.id}"
    agent = AgentProcess(config, port).start(timeout=60)
    try:
        eventually(lambda: connected(agent), timeout=30)
        # The device holds an active certificate: the request asks for a new one by default.
        command = rotate(admin, device.id)
        assert command["params"] == {"certificate": True}
        assert command["status"] == "SUCCEEDED", (command, agent.log()[-3000:])
        second_cert = command["result"]["certificate_id"]
        assert second_cert and second_cert != first_cert
        # The token was the credential presented over HTTP; the configured certificate's id is
        # not known to the agent, so it stays (the operator may revoke it).
        assert command["result"]["retired"] == {
            "token_ids": [device.token_id],
            "certificate_ids": [],
        }
        stored, _ = stored_credentials(data_dir)
        assert stored["client_cert"] == str(data_dir / "credentials" / "client.pem")

        # MQTT runs on the new certificate: revoking the first one does not stop it.
        assert (
            admin.delete(f"{V1}/devices/{device.id}/certificates/{first_cert}").status_code == 204
        )
        eventually(lambda: connected(agent), timeout=30)
        send(agent, 5.0)
        eventually(lambda: values(admin, device.id) == [5.0], timeout=30)

        # A second rotation knows what it obtained: both the token and the certificate go.
        again = rotate(admin, device.id)
        assert again["status"] == "SUCCEEDED", (again, agent.log()[-3000:])
        assert again["result"]["retired"] == {
            "token_ids": [command["result"]["token_id"]],
            "certificate_ids": [second_cert],
        }
        eventually(lambda: connected(agent), timeout=30)
        send(agent, 6.0)
        eventually(lambda: values(admin, device.id) == [5.0, 6.0], timeout=30)
    finally:
        agent.stop()
