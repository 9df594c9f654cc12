"""OTA through the agent against a real ``roost serve``: an artifact uploaded and deployed to a
device is downloaded, verified, installed by the agent and reported step by step; a failing
install or health check rolls back; a tampered artifact or an untrusted key is refused before
any hook runs; a download cut by a killed agent resumes with Range."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from roost_agent.config import ConfigError, parse_config
from roost_agent.ota_install import canonical, load_public_key, signature_verifies

from roost.ota.artifacts import signing
from tests.agent.support import AgentProcess, write_config
from tests.support import (
    Api,
    Device,
    RoostServer,
    admin_client,
    eventually,
    free_port,
    make_device,
    unique,
)

# Timer passes every 0.2 s: deployment phases start and are judged at once.
ENV = {"ROOST_TIMER_CHECK_S": "0.2"}
TIMEOUT = 30


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoostServer]:
    tmp = tmp_path_factory.mktemp("roost-ota-agent")
    server = RoostServer(tmp, mqtt_port=free_port(), env_overrides=ENV)
    # A loaded machine (the suite runs in parallel) can take longer than the default to start.
    server.start(timeout=90)
    try:
        yield server
    finally:
        server.stop()
    log = server.log_path.read_text(errors="replace")
    assert "Traceback" not in log, log
    assert not server.unhandled_errors(), server.unhandled_errors()


@pytest.fixture(scope="module")
def admin(server: RoostServer) -> Iterator[Api]:
    with admin_client(server) as api:
        yield api


@pytest.fixture
def device(admin: Api) -> Device:
    return make_device(admin)


@pytest.fixture
def agents() -> Iterator[list[AgentProcess]]:
    started: list[AgentProcess] = []
    yield started
    for agent in started:
        agent.stop(signal.SIGKILL)


# -- helpers ------------------------------------------------------------------------------------


def hook(hooks: Path, name: str, body: str) -> Path:
    """An executable shell hook ``hooks/ota/<name>``."""
    path = hooks / "ota" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def upload(admin: Api, data: bytes, name: str, version: str, type: str = "file") -> str:
    artifact_id = unique(name)
    resp = admin.post(
        "/api/v1/artifacts",
        params={"type": type, "id": artifact_id, "name": name, "version": version},
        content=data,
    )
    assert resp.status_code == 201, resp.text
    return artifact_id


def deploy(admin: Api, artifact_id: str, device: Device) -> str:
    deployment_id = unique("dep")
    resp = admin.post(
        "/api/v1/deployments",
        json={
            "id": deployment_id,
            "artifact_ids": [artifact_id],
            "targets": {"devices": [device.id]},
        },
    )
    assert resp.status_code == 201, resp.text
    return deployment_id


def action(admin: Api, deployment_id: str) -> dict[str, Any]:
    resp = admin.get(f"/api/v1/deployments/{deployment_id}/devices")
    assert resp.status_code == 200, resp.text
    items: list[dict[str, Any]] = resp.json()["items"]
    assert len(items) == 1, items
    return items[0]


def wait_step(admin: Api, deployment_id: str, *steps: str, agent: AgentProcess) -> dict[str, Any]:
    """The device's action once its step is one of ``steps`` (the agent's log on failure)."""
    try:
        found: dict[str, Any] = eventually(
            lambda: (a := action(admin, deployment_id))["step"] in steps and a, timeout=TIMEOUT
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{action(admin, deployment_id)}\n{agent.log()}") from exc
    return found


def start_agent(
    tmp: Path,
    server: RoostServer,
    device: Device,
    agents: list[AgentProcess],
    sections: dict[str, dict[str, Any]],
) -> AgentProcess:
    port = free_port()
    config = write_config(
        tmp / f"{device.id}.toml",
        server,
        device.id,
        device.token,
        local_port=port,
        sections={"hooks": {"dir": str(tmp / "hooks")}, **sections},
    )
    agent = AgentProcess(config, port)
    agents.append(agent)
    return agent.start()


def data_dir(tmp: Path, device: Device) -> Path:
    return tmp / f"agent-{device.id}"


# -- the happy path ------------------------------------------------------------------------------


def test_a_file_artifact_is_installed_and_reported(
    tmp_path: Path, server: RoostServer, admin: Api, device: Device, agents: list[AgentProcess]
) -> None:
    target = tmp_path / "etc" / "menu.json"
    target.parent.mkdir()
    target.write_text('{"menu": 1}')
    data = json.dumps({"menu": 2, "items": ["soup"] * 1000}).encode()
    artifact_id = upload(admin, data, "menu", "2.0")
    agent = start_agent(tmp_path, server, device, agents, {"ota.files": {"menu": str(target)}})
    deployment_id = deploy(admin, artifact_id, device)

    done = wait_step(admin, deployment_id, "SUCCEEDED", "FAILED", "ROLLED_BACK", agent=agent)
    assert done["step"] == "SUCCEEDED", done
    assert done["execution_status"] == "SUCCEEDED"
    assert done["version_reported"] == "2.0"
    assert target.read_bytes() == data
    deployment = eventually(
        lambda: (
            (d := admin.get(f"/api/v1/deployments/{deployment_id}").json())["status"] == "SUCCEEDED"
            and d
        ),
        timeout=TIMEOUT,
    )
    assert deployment["steps"]["SUCCEEDED"] == 1
    software = admin.get(f"/api/v1/devices/{device.id}/software").json()
    assert [(s["name"], s["version"]) for s in software] == [("menu", "2.0")]
    # The reported state carries what is installed; the key was pinned on first use.
    eventually(
        lambda: (
            admin.get(f"/api/v1/devices/{device.id}/state").json()["reported"].get("software")
            == {"menu": "2.0"}
        ),
        timeout=TIMEOUT,
    )
    pin = json.loads((data_dir(tmp_path, device) / "ota" / "signing-key.json").read_text())
    assert pin["key_id"] == admin.get("/api/v1/ota/signing-key").json()["key_id"]


# -- rollbacks -----------------------------------------------------------------------------------


def test_a_failing_install_rolls_back(
    tmp_path: Path, server: RoostServer, admin: Api, device: Device, agents: list[AgentProcess]
) -> None:
    hooks = tmp_path / "hooks"
    log = tmp_path / "hook.log"
    hook(
        hooks,
        "install-firmware",
        f'echo "install $1" >> {log}\necho "flash write error" >&2\nexit 3\n',
    )
    hook(hooks, "rollback", f'echo "rollback $ROOST_OTA_VERSION" >> {log}\n')
    artifact_id = upload(admin, os.urandom(50_000), "fw", "1.1", type="firmware")
    agent = start_agent(tmp_path, server, device, agents, {})
    deployment_id = deploy(admin, artifact_id, device)

    done = wait_step(admin, deployment_id, "SUCCEEDED", "FAILED", "ROLLED_BACK", agent=agent)
    assert done["step"] == "ROLLED_BACK", done
    assert done["execution_status"] == "FAILED"
    assert "flash write error" in done["step_details"]["reason"]
    assert "exited with status 3" in done["step_details"]["reason"]
    lines = log.read_text().splitlines()
    assert lines[0].startswith("install ") and lines[0].endswith(".bin")
    assert lines[1:] == ["rollback 1.1"]


def _reboot_hooks(hooks: Path, app: Path, healthy: bool) -> None:
    """An A/B-style install: the new version is written beside the old and "activated" at the
    reboot; health reads it; rollback puts the old one back."""
    hook(hooks, "install", f'cp {app} {app}.old\ncp "$1" {app}\nexit 10\n')
    hook(
        hooks,
        "health",
        "exit 0\n" if healthy else 'echo "service app is not running" >&2\nexit 1\n',
    )
    hook(hooks, "rollback", f"mv {app}.old {app}\n")
    hook(hooks, "reboot", f"echo $ROOST_OTA_JOB_ID > {app}.rebooted\n")


@pytest.mark.parametrize("healthy", [True, False], ids=["healthy", "unhealthy"])
def test_an_update_survives_the_reboot_and_is_checked_after_it(
    tmp_path: Path,
    server: RoostServer,
    admin: Api,
    device: Device,
    agents: list[AgentProcess],
    healthy: bool,
) -> None:
    app = tmp_path / "app.bin"
    app.write_bytes(b"version 1")
    _reboot_hooks(tmp_path / "hooks", app, healthy)
    artifact_id = upload(admin, b"version 2", "app", "2.0", type="application")
    agent = start_agent(tmp_path, server, device, agents, {})
    deployment_id = deploy(admin, artifact_id, device)

    rebooting = wait_step(admin, deployment_id, "REBOOTING", "FAILED", agent=agent)
    assert rebooting["step"] == "REBOOTING", rebooting
    assert app.read_bytes() == b"version 2"
    # The reboot hook ran (after the server confirmed REBOOTING).
    rebooted = eventually(lambda: app.with_name("app.bin.rebooted").exists(), timeout=TIMEOUT)
    assert rebooted and app.with_name("app.bin.rebooted").read_text().strip() == rebooting["job_id"]
    state = json.loads((data_dir(tmp_path, device) / "ota" / "state.json").read_text())
    assert state["step"] == "REBOOTING"
    assert state["job_id"] == rebooting["job_id"]
    # The "reboot": the agent process stops and starts again.
    agent.stop()
    assert agent.process is not None and agent.process.returncode == 0, agent.log()
    agent.start()

    done = wait_step(admin, deployment_id, "SUCCEEDED", "FAILED", "ROLLED_BACK", agent=agent)
    if healthy:
        assert done["step"] == "SUCCEEDED", done
        assert done["version_reported"] == "2.0"
        assert app.read_bytes() == b"version 2"
        installed = json.loads((data_dir(tmp_path, device) / "ota" / "installed.json").read_text())
        assert installed == {"app": "2.0"}
    else:
        assert done["step"] == "ROLLED_BACK", done
        assert "service app is not running" in done["step_details"]["reason"]
        assert "after the reboot" in done["step_details"]["reason"]
        assert app.read_bytes() == b"version 1"
        assert not (data_dir(tmp_path, device) / "ota" / "installed.json").exists()


def test_an_install_interrupted_by_a_dead_agent_rolls_back_at_its_start(
    tmp_path: Path, server: RoostServer, admin: Api, device: Device, agents: list[AgentProcess]
) -> None:
    hooks = tmp_path / "hooks"
    pid_file = tmp_path / "install.pid"
    rolled = tmp_path / "rolled-back"
    # An install that is still running when the agent dies (it would take a minute).
    slow = f"echo $$ > {pid_file}.tmp && mv {pid_file}.tmp {pid_file}\nexec sleep 60\n"
    hook(hooks, "install", slow)
    hook(hooks, "rollback", f"echo $ROOST_OTA_VERSION > {rolled}\n")
    artifact_id = upload(admin, b"firmware 7", "fw", "7.0", type="firmware")
    agent = start_agent(tmp_path, server, device, agents, {})
    deployment_id = deploy(admin, artifact_id, device)

    assert wait_step(admin, deployment_id, "INSTALLING", "FAILED", agent=agent)["step"] == (
        "INSTALLING"
    )
    eventually(pid_file.exists, timeout=TIMEOUT)
    agent.stop(signal.SIGKILL)
    os.kill(int(pid_file.read_text()), signal.SIGKILL)  # the hook outlives its agent
    agent.start()

    done = wait_step(admin, deployment_id, "SUCCEEDED", "FAILED", "ROLLED_BACK", agent=agent)
    assert done["step"] == "ROLLED_BACK", done
    assert (
        "the agent stopped while the update was being installed" in done["step_details"]["reason"]
    )
    assert rolled.read_text().strip() == "7.0"


# -- refusals ------------------------------------------------------------------------------------


def _blob_of(server: RoostServer, artifact_id: str) -> Path:
    (blob,) = (server.data_dir / "blobs" / "default" / artifact_id).iterdir()
    return blob


def test_a_tampered_artifact_is_refused_and_never_installed(
    tmp_path: Path, server: RoostServer, admin: Api, device: Device, agents: list[AgentProcess]
) -> None:
    ran = tmp_path / "installed"
    hook(tmp_path / "hooks", "install-file", f"touch {ran}\n")
    data = os.urandom(100_000)
    artifact_id = upload(admin, data, "payload", "1.0")
    blob = _blob_of(server, artifact_id)
    assert blob.read_bytes() == data
    blob.write_bytes(data[:500] + bytes(b ^ 0xFF for b in data[500:600]) + data[600:])
    agent = start_agent(tmp_path, server, device, agents, {})
    deployment_id = deploy(admin, artifact_id, device)

    done = wait_step(admin, deployment_id, "SUCCEEDED", "FAILED", "ROLLED_BACK", agent=agent)
    assert done["step"] == "FAILED", done
    reason = done["step_details"]["reason"]
    assert "SHA-256" in reason and hashlib.sha256(data).hexdigest() in reason, reason
    assert not ran.exists()
    leftovers = [p.name for p in (data_dir(tmp_path, device) / "ota").iterdir()]
    assert not [n for n in leftovers if n.endswith(".bin")], leftovers


def test_an_artifact_signed_with_an_untrusted_key_is_refused(
    tmp_path: Path, server: RoostServer, admin: Api, device: Device, agents: list[AgentProcess]
) -> None:
    ran = tmp_path / "installed"
    hook(tmp_path / "hooks", "install-file", f"touch {ran}\n")
    # This device pinned another key (as if Roost's key had been replaced since).
    other = Ed25519PrivateKey.generate().public_key()
    raw = other.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    pin = data_dir(tmp_path, device) / "ota" / "signing-key.json"
    pin.parent.mkdir(parents=True)
    other_id = hashlib.sha256(raw).hexdigest()[:16]
    pin.write_text(
        json.dumps({"key_id": other_id, "public_key_raw": base64.b64encode(raw).decode()})
    )
    artifact_id = upload(admin, b"data", "payload", "1.0")
    agent = start_agent(tmp_path, server, device, agents, {})
    deployment_id = deploy(admin, artifact_id, device)

    done = wait_step(admin, deployment_id, "SUCCEEDED", "FAILED", "ROLLED_BACK", agent=agent)
    assert done["step"] == "FAILED", done
    roost_key = admin.get("/api/v1/ota/signing-key").json()["key_id"]
    reason = done["step_details"]["reason"]
    assert f"signed with key {roost_key}" in reason and other_id in reason, reason
    assert not ran.exists()


def test_an_operator_signature_verifies_only_with_a_configured_key(
    tmp_path: Path, server: RoostServer, admin: Api, device: Device, agents: list[AgentProcess]
) -> None:
    target = tmp_path / "menu.json"
    operator = Ed25519PrivateKey.generate()
    data = b'{"menu": 3}'
    artifact_id = unique("menu")
    manifest = {
        "id": artifact_id,
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "type": "file",
        "version": "3.0",
    }
    forged = dict(manifest, version="3.1")  # a signature over other bytes
    resp = admin.post(
        "/api/v1/artifacts",
        params={
            "type": "file",
            "id": artifact_id,
            "name": "menu",
            "version": "3.0",
            "signature": base64.b64encode(operator.sign(signing.canonical(forged))).decode(),
        },
        content=data,
    )
    assert resp.status_code == 201, resp.text
    raw = operator.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    agent = start_agent(
        tmp_path,
        server,
        device,
        agents,
        {
            "ota": {"signing_keys": [base64.b64encode(raw).decode()]},
            "ota.files": {"menu": str(target)},
        },
    )
    deployment_id = deploy(admin, artifact_id, device)

    done = wait_step(admin, deployment_id, "SUCCEEDED", "FAILED", "ROLLED_BACK", agent=agent)
    assert done["step"] == "FAILED", done
    assert "does not verify" in done["step_details"]["reason"], done
    assert not target.exists()


# -- a cut download -------------------------------------------------------------------------------


def _downloads(admin: Api, artifact_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = admin.get(f"/api/v1/artifacts/{artifact_id}/downloads").json()[
        "items"
    ]
    return items


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_download_cut_by_a_stopped_agent_resumes_with_range(
    tmp_path: Path,
    server: RoostServer,
    admin: Api,
    device: Device,
    agents: list[AgentProcess],
    sig: signal.Signals,
) -> None:
    # Larger than what socket buffers hold, so the server cannot have sent it all.
    size = 16_000_000
    data = os.urandom(size)
    target = tmp_path / "big.bin"
    artifact_id = upload(admin, data, "big", "1.0")
    # Paced at 2 MB/s so that the test can stop the agent in the middle of the download.
    slow: dict[str, dict[str, Any]] = {
        "ota": {"max_download_bytes_s": 2_000_000},
        "ota.files": {"big": str(target)},
    }
    agent = start_agent(tmp_path, server, device, agents, slow)
    deployment_id = deploy(admin, artifact_id, device)
    ota_dir = data_dir(tmp_path, device) / "ota"

    def partial() -> Path | None:
        found = list(ota_dir.glob(f"{artifact_id}-*.bin")) if ota_dir.exists() else []
        return found[0] if found and 0 < found[0].stat().st_size < size // 2 else None

    part = eventually(partial, timeout=TIMEOUT)
    agent.stop(sig)
    assert agent.process is not None
    if sig == signal.SIGTERM:  # a stop request ends the download at once, cleanly
        assert agent.process.returncode == 0, agent.log()
    have = part.stat().st_size
    assert 0 < have < size
    # The server counted the cut download (the bytes it sent before the agent died).
    (first,) = eventually(lambda: _downloads(admin, artifact_id), timeout=TIMEOUT)
    assert first["count"] == 0, first  # not complete
    sent_before = first["bytes"]

    write_config(
        agent.config,
        server,
        device.id,
        device.token,
        local_port=agent.local_port,
        sections={"hooks": {"dir": str(tmp_path / "hooks")}, "ota.files": {"big": str(target)}},
    )
    agent.start()
    done = wait_step(admin, deployment_id, "SUCCEEDED", "FAILED", "ROLLED_BACK", agent=agent)
    assert done["step"] == "SUCCEEDED", done
    assert target.read_bytes() == data
    # The second request asked for the rest only: the server sent exactly the missing bytes.
    (after,) = eventually(
        lambda: [d for d in _downloads(admin, artifact_id) if d["count"] == 1], timeout=TIMEOUT
    )
    assert after["bytes"] - sent_before == size - have, (after, sent_before, have)
    assert (
        f"resuming the download of /api/v1/ota/artifacts/{artifact_id}/download at byte {have}"
        in agent.log()
    )


# -- units ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "manifest",
    [
        {"id": "fw-1", "sha256": "ab" * 32, "size": 12, "type": "firmware", "version": "2.4.0"},
        {"id": "x", "sha256": "00" * 32, "size": 0, "type": "file", "version": 'é-1 "q" \\ \n'},
        {"version": None, "type": "container", "size": 0, "sha256": None, "id": "c"},
    ],
)
def test_the_agent_signs_off_the_same_bytes_as_the_server(manifest: dict[str, Any]) -> None:
    assert canonical(manifest) == signing.canonical(manifest)
    key = signing.SigningKey(Ed25519PrivateKey.generate(), "generated")
    public = load_public_key(key.public_document()["public_key"])
    assert signature_verifies(public, manifest, key.sign(manifest))
    assert not signature_verifies(public, {**manifest, "size": 13}, key.sign(manifest))
    raw = load_public_key(key.public_document()["public_key_raw"])
    assert signature_verifies(raw, manifest, key.sign(manifest))


@pytest.mark.parametrize(
    ("ota", "message"),
    [
        ({"signing_keys": "abc"}, "signing_keys"),
        ({"signing_keys": ["not a key"]}, "signing_keys"),
        ({"max_download_bytes_s": -1}, "max_download_bytes_s"),
        ({"reboot_command": "reboot"}, "reboot_command"),
        ({"files": {"menu": 3}}, "ota.files"),
        ({"keep_downloads": "yes"}, "keep_downloads"),
    ],
)
def test_a_bad_ota_section_is_refused_naming_the_key(
    tmp_path: Path, ota: dict[str, Any], message: str
) -> None:
    from roost_agent.ota import OtaHandler

    doc = {
        "device": {"id": "d", "token": "t", "api_url": "http://127.0.0.1:1"},
        "mqtt": {"host": "127.0.0.1"},
        "agent": {"data_dir": str(tmp_path)},
        "ota": ota,
    }
    config = parse_config(doc, tmp_path)

    class Stub:
        pass

    stub: Any = Stub()
    stub.config = config
    with pytest.raises(ConfigError, match=message):
        OtaHandler(stub)


def test_register_ota_handles_the_deployments_operation_once(tmp_path: Path) -> None:
    from roost_agent.agent import Agent
    from roost_agent.ota import OPERATION, register_ota

    doc = {
        "device": {"id": "d", "token": "t", "api_url": "http://127.0.0.1:1"},
        "mqtt": {"host": "127.0.0.1"},
        "agent": {"data_dir": str(tmp_path)},
    }
    agent = Agent(parse_config(doc, tmp_path))
    first = register_ota(agent)
    assert register_ota(agent) is first
    assert agent.handlers.has_job(OPERATION)
    assert OPERATION == server_operation()
    agent.outbox.close()


def server_operation() -> str:
    """The operation the server's deployments put in their job documents."""
    from roost.ota.deployments.phases import OPERATION

    return str(OPERATION)
