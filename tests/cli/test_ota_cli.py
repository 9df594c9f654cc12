"""``roost artifact``, ``roost deploy`` and ``roost deployments``, run as real subprocesses on the
store of a running ``roost serve``: a file uploaded by the command is served and signed by the
server; a deployment made by the command (a canary group) is released by the server to devices
that report over the HTTP device door, and the command shows it SUCCEEDED; a failing canary
halts and the command resumes it; cancel; a wrong checksum stores nothing."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli.test_cli import Cli
from tests.support import (
    ADMIN_PASSWORD,
    SECRET_KEY,
    Api,
    Device,
    RoostServer,
    admin_client,
    eventually,
    make_device,
    unique,
)

# Quick timers: the server's jobs pass and deployment pass run every 0.2 s.
QUICK_TIMERS = {"ROOST_TIMER_CHECK_S": "0.2"}


class ServerCli(Cli):
    """The command on a running server's store (the same secret key: the same signing key)."""

    def env(self) -> dict[str, str]:
        env = super().env()
        env.update(ROOST_SECRET_KEY=SECRET_KEY, ROOST_ADMIN_PASSWORD=ADMIN_PASSWORD)
        return env


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RoostServer, ServerCli]]:
    data = tmp_path_factory.mktemp("ota-cli") / "data"
    server = RoostServer(data, env_overrides=QUICK_TIMERS)
    with server.running():
        yield server, ServerCli(data)


@pytest.fixture
def api(served: tuple[RoostServer, ServerCli]) -> Iterator[Api]:
    with admin_client(served[0]) as client:
        yield client


def report(client: Api, job_id: str, status: str, **details: Any) -> None:
    """A device's update of its execution over the HTTP device door."""
    body: dict[str, Any] = {"status": status, **({"status_details": details} if details else {})}
    resp = client.post(f"/api/v1/device/jobs/{job_id}/update", json=body)
    assert resp.status_code == 200, resp.text


def wait_job(client: Api, job_id: str) -> None:
    def released() -> bool:
        resp = client.get("/api/v1/device/jobs")
        assert resp.status_code == 200, resp.text
        return job_id in [j["job_id"] for j in resp.json()["jobs"]]

    eventually(released, timeout=20)


def group_of(api: Api, members: list[Device]) -> str:
    group_id = unique("canary")
    assert api.post("/api/v1/groups", json={"id": group_id, "name": group_id}).status_code == 201
    resp = api.post(
        f"/api/v1/groups/{group_id}/devices", json={"device_ids": [d.id for d in members]}
    )
    assert resp.status_code in (200, 201), resp.text
    return group_id


def upload(cli: ServerCli, tmp_path: Path, version: str, size: int = 3_000_000) -> dict[str, Any]:
    """A random file uploaded by the command (--json)."""
    path = tmp_path / f"fw-{version}.bin"
    path.write_bytes(secrets.token_bytes(size))
    made: dict[str, Any] = cli.json(
        "artifact", "upload", str(path), "--type", "firmware", "--name", "kiosk",
        "--version", version, "--id", unique("fw"),
    )  # fmt: skip
    return made


def test_upload_list_show_and_a_wrong_checksum(
    served: tuple[RoostServer, ServerCli], api: Api, tmp_path: Path
) -> None:
    _, cli = served
    content = secrets.token_bytes(3_000_000)  # three chunks of the command's reads
    path = tmp_path / "kiosk 2.1.swu"
    path.write_bytes(content)
    digest = hashlib.sha256(content).hexdigest()
    artifact_id, model = unique("kiosk"), unique("display")
    resp = api.post(
        "/api/v1/device-models", json={"id": model, "reference": model, "commercial_name": model}
    )
    assert resp.status_code == 201, resp.text
    printed = cli.ok(
        "artifact", "upload", str(path), "--type", "firmware", "--name", "kiosk",
        "--version", "2.1.0", "--model", model, "--id", artifact_id,
        "--notes", "faster boot", "--sha256", digest,
    )  # fmt: skip
    assert printed.splitlines() == [
        f"uploaded artifact {artifact_id}: kiosk 2.1.0 (firmware, 3000000 bytes, signed by roost)",
        f"sha256 {digest}",
    ]
    # The server serves the bytes the command stored, with the manifest signed by its key.
    stored = api.get(f"/api/v1/artifacts/{artifact_id}").json()
    assert (stored["sha256"], stored["filename"], stored["model_ids"]) == (
        digest,
        "kiosk_2.1.swu",
        [model],
    )
    key = api.get("/api/v1/ota/signing-key").json()
    assert stored["signature_by"] == "roost" and stored["signing_key_id"] == key["key_id"]
    content_resp = api.get(f"/api/v1/artifacts/{artifact_id}/content")
    assert hashlib.sha256(content_resp.content).hexdigest() == digest

    listed = cli.json("artifact", "list", "--type", "firmware")
    assert artifact_id in [a["id"] for a in listed]
    table = cli.ok("artifact", "list", "--q", artifact_id)
    assert artifact_id in table and digest in table and model in table
    shown = json.loads(cli.ok("artifact", "show", artifact_id))
    assert shown["manifest"] == {
        "id": artifact_id,
        "sha256": digest,
        "size": 3_000_000,
        "type": "firmware",
        "version": "2.1.0",
    }
    assert shown["downloads"] == [] and shown["release_notes"] == "faster boot"

    wrong = cli(
        "artifact", "upload", str(path), "--type", "firmware", "--version", "9",
        "--id", "never-stored", "--sha256", "0" * 64,
    )  # fmt: skip
    assert wrong.returncode == 1 and "nothing was stored" in wrong.stderr, wrong.stderr
    assert api.get("/api/v1/artifacts/never-stored").status_code == 404
    missing = cli("artifact", "upload", "--type", "firmware", "--version", "1")
    assert missing.returncode == 2 and "FILE" in missing.stderr
    assert cli("artifact", "show", "no-such-artifact").returncode == 1


def test_deploy_with_a_canary_to_success_halt_resume_and_cancel(
    served: tuple[RoostServer, ServerCli], api: Api, tmp_path: Path
) -> None:
    _, cli = served
    artifact = upload(cli, tmp_path, "3.0.0", size=4096)
    canary, rest = make_device(api), make_device(api)
    group = group_of(api, [canary])
    dep = unique("dep")
    printed = cli.ok(
        "deploy", artifact["id"], "--device", canary.id, "--device", rest.id,
        "--canary-group", group, "--threshold", "90", "--id", dep,
    )  # fmt: skip
    assert printed.strip() == (
        f"created deployment {dep}: 2 devices, phases canary (1), then rest (1); IN_PROGRESS"
    )
    made = api.get(f"/api/v1/deployments/{dep}").json()
    assert [(p["name"], p["success_threshold_pct"]) for p in made["phases"]] == [
        ("canary", 90),
        ("rest", 100),
    ]

    # The server releases the command's deployment; the devices report over HTTP.
    for device, job in ((canary, f"ota-{dep}-0"), (rest, f"ota-{dep}-1")):
        with api.as_token(device.token) as client:
            wait_job(client, job)
            report(client, job, "IN_PROGRESS", step="DOWNLOADING")
            report(client, job, "SUCCEEDED", version="3.0.0")
    eventually(lambda: api.get(f"/api/v1/deployments/{dep}").json()["status"] == "SUCCEEDED")
    shown = cli.ok("deployments", "show", dep)
    assert shown.splitlines()[:4] == [
        f"deployment {dep}: SUCCEEDED",
        "  2 devices: SUCCEEDED 2",
        "  phase 0 canary: 1 devices, success 100% (threshold 90%)",
        "  phase 1 rest: 1 devices, success 100% (threshold 100%)",
    ]
    assert cli.json("deployments", "show", dep)["steps"]["SUCCEEDED"] == 2
    succeeded = cli.json("deployments", "list", "--status", "SUCCEEDED")
    assert dep in [d["id"] for d in succeeded["items"]]
    assert dep in cli.ok("deployments", "list")

    # A failing canary halts the deployment; resume starts the rest anyway.
    halting = unique("dep")
    cli.ok(
        "deploy", artifact["id"], "--device", canary.id, "--device", rest.id,
        "--canary-group", group, "--id", halting,
    )  # fmt: skip
    with api.as_token(canary.token) as client:
        wait_job(client, f"ota-{halting}-0")
        report(client, f"ota-{halting}-0", "IN_PROGRESS", step="INSTALLING")
        report(client, f"ota-{halting}-0", "FAILED", step="ROLLED_BACK", error="disk full")
    eventually(lambda: api.get(f"/api/v1/deployments/{halting}").json()["status"] == "HALTED")
    shown = cli.ok("deployments", "show", halting)
    assert f"deployment {halting}: HALTED" in shown and "disk full" in shown
    assert f"failed: {canary.id} ROLLED_BACK disk full" in shown
    cli.ok("deployments", "resume", halting)
    with api.as_token(rest.token) as client:
        wait_job(client, f"ota-{halting}-1")

    # A window and a rate reach the deployment; cancel ends it.
    windowed = unique("dep")
    cli.ok(
        "deploy", artifact["id"], "--device", rest.id, "--id", windowed, "--rate", "10",
        "--window", "2:00-05:00", "--days", "sat,sun",
    )  # fmt: skip
    body = api.get(f"/api/v1/deployments/{windowed}").json()
    assert body["maintenance"] == [{"days": ["sat", "sun"], "start": "02:00", "end": "05:00"}]
    assert body["rollout"]["max_per_minute"] == 10
    assert "CANCELED" in cli.ok("deployments", "cancel", windowed, "--reason", "wrong build")
    after = api.get(f"/api/v1/deployments/{windowed}").json()
    assert after["status"] == "CANCELED"

    # Bad input: one clear line, no traceback.
    nothing = cli("deploy", artifact["id"])
    assert nothing.returncode == 2 and "--device" in nothing.stderr
    bad_window = cli("deploy", artifact["id"], "--device", rest.id, "--window", "late")
    assert bad_window.returncode == 2 and "HH:MM-HH:MM" in bad_window.stderr
    unknown = cli("deploy", "no-such-artifact", "--device", rest.id)
    assert unknown.returncode == 1 and unknown.stderr.startswith("error: ")
