"""Joining through a real ``roost-agent`` and a real ``roost serve``: a device with no credentials
joins through an enrollment group or with an attestation hash, its points arrive, a restart
reuses ``credentials.json`` without joining again, and a wrong group key stops the agent with
the server's reason.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.agent.support import AgentProcess, write_join_config
from tests.support import Api, RoostServer, eventually, unique

V1 = "/api/v1"


def created(api: Api, path: str, body: dict[str, Any]) -> dict[str, Any]:
    resp = api.post(f"{V1}{path}", json=body)
    assert resp.status_code == 201, resp.text
    answer: dict[str, Any] = resp.json()
    return answer


def check(config: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "roost_agent", "check", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    shown: dict[str, Any] = json.loads(done.stdout)
    return shown


def values(admin: Api, device_id: str, sensor: str) -> list[Any]:
    resp = admin.get(
        f"{V1}/devices/{device_id}/telemetry",
        params={"sensor": sensor, "from": "2000-01-01", "limit": 1000, "order": "asc"},
    )
    if resp.status_code == 404:
        return []
    assert resp.status_code == 200, resp.text
    return [item["value"] for item in resp.json()["items"]]


def send(agent: AgentProcess, value: float) -> None:
    point = {"sensor_id": "temperature", "ts": int(time.time() * 1000) - 1000, "value": value}
    resp = httpx.post(f"{agent.url}/v1/telemetry", json=point, timeout=30)
    assert resp.status_code == 200, resp.text


def credentials_of(config: Path, name: str) -> tuple[dict[str, Any], int]:
    path = config.parent / f"agent-{name}" / "credentials.json"
    return json.loads(path.read_text()), stat.S_IMODE(path.stat().st_mode)


def joins_in(agent: AgentProcess) -> int:
    return agent.log().count("joined as device")


def run_and_restart(
    admin: Api, config: Path, name: str, device_id: str, source: str
) -> dict[str, Any]:
    """Start the agent (it joins), see a point arrive, restart it (no second join), see another."""
    agent = AgentProcess(config, _local_port(config))
    agent.start(timeout=60)
    try:
        send(agent, 1.5)
        eventually(lambda: values(admin, device_id, "temperature") == [1.5], timeout=30)
    finally:
        agent.stop()
    stored, mode = credentials_of(config, name)
    assert mode == 0o600
    assert stored["device_id"] == device_id and stored["source"] == source
    assert stored["token"] and stored["token_id"] and stored["obtained_at"]
    assert joins_in(agent) == 1
    assert check(config)["credentials"].startswith("has credentials (obtained by the agent")

    agent.start(timeout=60)
    try:
        send(agent, 2.5)
        eventually(lambda: values(admin, device_id, "temperature") == [1.5, 2.5], timeout=30)
    finally:
        agent.stop()
    assert joins_in(agent) == 1, agent.log()[-3000:]
    assert credentials_of(config, name)[0] == stored
    return stored


def _local_port(config: Path) -> int:
    section = config.read_text().split("[local_api]", 1)[1]
    return int(section.split("port = ", 1)[1].split()[0])


def test_a_device_joins_through_an_enrollment_group_once(
    tmp_path: Path, server: RoostServer, admin: Api
) -> None:
    enrollment = created(admin, "/enrollments", {"id": unique("enr")})
    registration_id = unique("till")
    config = write_join_config(
        tmp_path / "agent.toml",
        server,
        registration_id,
        {
            "enrollment_id": enrollment["id"],
            "registration_id": registration_id,
            "group_key": enrollment["key"],
        },
    )
    planned = check(config)
    assert planned["credentials"].startswith("would join enrollment group")
    assert planned["extra"]["join"]["group_key"] == "***"
    assert enrollment["key"] not in json.dumps(planned)

    run_and_restart(admin, config, registration_id, registration_id, "enrollment")
    device = admin.get(f"{V1}/devices/{registration_id}")
    assert device.status_code == 200, device.text


def test_a_device_joins_with_an_attestation_hash_once(
    tmp_path: Path, server: RoostServer, admin: Api
) -> None:
    value = hashlib.sha256(secrets.token_bytes(16)).hexdigest()
    created(admin, "/attestation-hashes", {"hashes": [value]})
    hash_file = tmp_path / "hardware.hash"
    hash_file.write_text(value + "\n")
    hostname = unique("kiosk")
    config = write_join_config(
        tmp_path / "agent.toml",
        server,
        hostname,
        {"attestation_hash_file": str(hash_file), "hostname": hostname},
    )
    assert check(config)["credentials"].startswith("would join with an attestation hash")
    # The hash is good once: the restart must not join again (it would be refused).
    run_and_restart(admin, config, hostname, hostname, "attestation")


def test_a_wrong_group_key_stops_the_agent_with_the_servers_reason(
    tmp_path: Path, server: RoostServer, admin: Api
) -> None:
    enrollment = created(admin, "/enrollments", {"id": unique("enr")})
    registration_id = unique("till")
    wrong_key = base64.b64encode(secrets.token_bytes(32)).decode()
    config = write_join_config(
        tmp_path / "agent.toml",
        server,
        registration_id,
        {
            "enrollment_id": enrollment["id"],
            "registration_id": registration_id,
            "group_key": wrong_key,
        },
    )
    done = subprocess.run(
        [sys.executable, "-m", "roost_agent", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "refused to let this device join (401)" in done.stderr, done.stderr
    # The server's own words, as it answers the same request.
    from roost_agent.joining import derive_device_key, registration_sas

    sas = registration_sas(
        enrollment["id"], registration_id, derive_device_key(wrong_key, registration_id)
    )
    resp = httpx.post(
        f"{server.url}{V1}/provisioning/register",
        json={"registration_id": registration_id},
        headers={"Authorization": sas},
    )
    assert resp.status_code == 401
    assert resp.json()["detail"] in done.stderr
    assert not (tmp_path / f"agent-{registration_id}" / "credentials.json").exists()
    assert admin.get(f"{V1}/devices/{registration_id}").status_code == 404
