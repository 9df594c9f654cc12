"""The console's software delivery pages in a real Chromium: a file uploaded through the artifacts
page (raw body, progress) is listed with its SHA-256 and signed by Roost; a deployment made with
the wizard (a canary group, then the rest) follows its devices' steps, reported over the HTTP
device door, live up to SUCCEEDED; the device's Software tab shows what was installed; a wrong
checksum shows the API's message; cancel works from the page; a viewer sees no write action."""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.console.conftest import Console
from tests.ota.apt.conftest import upload_deb
from tests.ota.apt.debs import build_deb
from tests.support import Api, Device, RoostServer, eventually, free_port, make_device, unique

VIEWER_PASSWORD = "viewer-password-123"
# Quick timers: the jobs pass and the deployment pass (phase after phase) run every 0.2 s.
QUICK_TIMERS = {"ROOST_TIMER_CHECK_S": "0.2"}


@pytest.fixture(scope="module")
def console_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoostServer]:
    """The module's Roost, with quick timers so phases follow each other at once."""
    server = RoostServer(
        tmp_path_factory.mktemp("console-ota"), mqtt_port=free_port(), env_overrides=QUICK_TIMERS
    )
    with server.running():
        yield server


@pytest.fixture(scope="module")
def viewer(console_api: Api) -> str:
    name = unique("viewer")
    resp = console_api.post(
        "/api/v1/users", json={"username": name, "password": VIEWER_PASSWORD, "role": "viewer"}
    )
    assert resp.status_code == 201, resp.text
    return name


def report(client: Api, job_id: str, status: str, **details: Any) -> None:
    """The device's update of its execution over the HTTP device door."""
    body: dict[str, Any] = {"status": status}
    if details:
        body["status_details"] = details
    resp = client.post(f"/api/v1/device/jobs/{job_id}/update", json=body)
    assert resp.status_code == 200, resp.text


def wait_job(client: Api, job_id: str) -> None:
    """Until the device's pending executions include ``job_id`` (released to it)."""

    def released() -> bool:
        resp = client.get("/api/v1/device/jobs")
        assert resp.status_code == 200, resp.text
        return job_id in [j["job_id"] for j in resp.json()["jobs"]]

    eventually(released, timeout=20)


def api_artifact(api: Api, version: str) -> dict[str, Any]:
    """An artifact uploaded through the API (for tests that are not about the upload)."""
    body = secrets.token_bytes(512)
    artifact_id = unique("fw")
    resp = api.post(
        "/api/v1/artifacts",
        params={"id": artifact_id, "name": "firmware", "type": "firmware", "version": version},
        content=body,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert resp.status_code == 201, resp.text
    made: dict[str, Any] = resp.json()
    return made


def group_of(api: Api, members: list[Device]) -> str:
    group_id = unique("canary")
    resp = api.post("/api/v1/groups", json={"id": group_id, "name": group_id})
    assert resp.status_code == 201, resp.text
    resp = api.post(
        f"/api/v1/groups/{group_id}/devices", json={"device_ids": [d.id for d in members]}
    )
    assert resp.status_code in (200, 201), resp.text
    return group_id


def test_upload_deploy_with_the_wizard_and_watch_it_succeed(
    console: Console, console_server: RoostServer, console_api: Api, tmp_path: Path
) -> None:
    console.sign_in()
    page = console.page
    content = secrets.token_bytes(300_000)
    digest = hashlib.sha256(content).hexdigest()
    artifact_id, version = unique("app"), "4.2.0"

    # Upload through the page: the file is the raw body of an XHR, its progress shown.
    console.goto("/artifacts")
    form = page.locator("#upload-form")
    form.get_by_label("File", exact=True).set_input_files(
        {"name": "kiosk app.bin", "mimeType": "application/octet-stream", "buffer": content}
    )
    form.locator("select[name=type]").select_option("application")
    form.get_by_label("Artifact id").fill(artifact_id)
    form.get_by_label("Name", exact=True).fill("kiosk-app")
    form.get_by_label("Version").fill(version)
    form.get_by_label("Release notes").fill("faster start")
    form.get_by_role("button", name="Upload").click()
    row = page.locator(f'tr[data-artifact-id="{artifact_id}"]')
    expect(row).to_be_visible()
    expect(row.locator("[data-sha256]")).to_have_attribute("data-sha256", digest)
    expect(row).to_contain_text("roost")  # signed by Roost's key
    expect(row).to_contain_text("300,000")
    stored = console_api.get(f"/api/v1/artifacts/{artifact_id}").json()
    assert (stored["sha256"], stored["size"], stored["type"]) == (digest, 300_000, "application")
    assert (stored["filename"], stored["release_notes"]) == ("kiosk_app.bin", "faster start")
    assert stored["signature_by"] == "roost" and stored["signature"]

    # Its page: the signed manifest, the key id, no downloads yet.
    row.get_by_role("link", name=artifact_id).click()
    expect(page.get_by_test_id("sha256")).to_have_text(digest)
    expect(page.get_by_test_id("signature-by")).to_have_text("roost")
    expect(page.get_by_test_id("manifest")).to_contain_text(f'"id": "{artifact_id}"')
    expect(page.locator("main")).to_contain_text(stored["signing_key_id"])
    expect(page.locator("main")).to_contain_text("No device has downloaded it yet")

    # The wizard: the artifact, two devices, a canary group of one at 90 %, review, create.
    canary, rest = make_device(console_api), make_device(console_api)
    group = group_of(console_api, [canary])
    page.get_by_role("link", name="Deploy", exact=True).click()
    page.wait_for_url("**/deployments/new?artifact=*")
    wizard = page.locator("#wizard")
    expect(wizard.get_by_role("checkbox", name=artifact_id)).to_be_checked()
    wizard.get_by_label("Deployment id").fill(deployment_id := unique("dep"))
    wizard.get_by_role("button", name="Next").click()
    # A step that is not ready says so and stays.
    wizard.get_by_role("button", name="Next").click()
    expect(wizard.locator("[data-problem]")).to_contain_text("at least one device or group")
    wizard.get_by_label("Target devices").fill(f"{canary.id}\n{rest.id}")
    wizard.get_by_role("button", name="Next").click()
    wizard.get_by_label("Canary group").select_option(group)
    wizard.get_by_label("Canary success threshold, %").fill("90")
    wizard.get_by_role("button", name="Next").click()
    wizard.get_by_role("button", name="Next").click()
    expect(wizard.locator('[data-review="Phases"]')).to_contain_text(
        f"canary (group {group}) ≥ 90%"
    )
    expect(wizard.locator('[data-review="Devices"]')).to_have_text(f"{canary.id}, {rest.id}")
    wizard.get_by_role("button", name="Create deployment").click()
    page.wait_for_url(f"**/deployments/{deployment_id}")
    made = console_api.get(f"/api/v1/deployments/{deployment_id}").json()
    assert made["artifact_ids"] == [artifact_id] and made["devices"] == 2
    assert [(p["name"], p["success_threshold_pct"]) for p in made["phases"]] == [
        ("canary", 90),
        ("rest", 100),
    ]
    expect(page.get_by_test_id("deployment-status")).to_contain_text("IN_PROGRESS")

    # The devices report their steps over HTTP; the page follows without a reload.
    job0, job1 = f"ota-{deployment_id}-0", f"ota-{deployment_id}-1"
    with console_api.as_token(canary.token) as device:
        wait_job(device, job0)
        report(device, job0, "IN_PROGRESS", step="DOWNLOADING", progress=30)
        expect(page.locator('td[data-step="DOWNLOADING"]')).to_have_text("1")
        report(device, job0, "IN_PROGRESS", step="INSTALLING")
        expect(page.locator('td[data-step="INSTALLING"]')).to_have_text("1")
        expect(page.locator('td[data-step="DOWNLOADING"]')).to_have_text("0")
        report(device, job0, "SUCCEEDED", version=version)
    expect(page.locator('tr[data-phase="0"]')).to_contain_text("100%")
    with console_api.as_token(rest.token) as device:
        wait_job(device, job1)
        report(device, job1, "IN_PROGRESS", step="INSTALLING")
        report(device, job1, "SUCCEEDED", version=version)
    expect(page.get_by_test_id("deployment-status")).to_contain_text("SUCCEEDED", timeout=20_000)
    expect(page.get_by_test_id("deployment-done")).to_contain_text("2 of 2 devices done")
    expect(page.locator('td[data-step="SUCCEEDED"]')).to_have_text("2")
    expect(page.locator("#deployment-live")).not_to_have_attribute("hx-get", re.compile(".*"))
    expect(page.get_by_role("button", name="Cancel deployment")).to_have_count(0)
    assert console_api.get(f"/api/v1/deployments/{deployment_id}").json()["status"] == "SUCCEEDED"

    # The device's Software tab; the deployments list.
    page.locator(f'tr[data-device-id="{canary.id}"]').get_by_role("link").click()
    software = page.locator("table.software")
    expect(software).to_contain_text(version)
    expect(software).to_contain_text(artifact_id)
    console.goto("/deployments")
    listed = page.locator(f'tr[data-deployment-id="{deployment_id}"]')
    expect(listed).to_contain_text("SUCCEEDED")
    expect(listed).to_contain_text("2 / 2")
    assert console.foreign_requests() == []


def test_a_wrong_checksum_is_refused_and_cancel_works_from_the_page(
    console: Console, console_api: Api
) -> None:
    console.sign_in()
    page = console.page
    console.goto("/artifacts")
    form = page.locator("#upload-form")
    form.get_by_label("File", exact=True).set_input_files(
        {"name": "bad.bin", "mimeType": "application/octet-stream", "buffer": b"x" * 1000}
    )
    artifact_id = unique("bad")
    form.get_by_label("Artifact id").fill(artifact_id)
    form.get_by_label("Version").fill("1.0.0")
    form.get_by_label("Expected SHA-256").fill("0" * 64)
    form.get_by_role("button", name="Upload").click()
    expect(form.locator("[data-problem]")).to_contain_text("nothing was stored")
    assert console_api.get(f"/api/v1/artifacts/{artifact_id}").status_code == 404

    artifact = api_artifact(console_api, "5.0.0")
    device = make_device(console_api)
    deployment_id = unique("dep")
    resp = console_api.post(
        "/api/v1/deployments",
        json={
            "id": deployment_id,
            "artifact_ids": [artifact["id"]],
            "targets": {"devices": [device.id]},
        },
    )
    assert resp.status_code == 201, resp.text
    console.goto(f"/deployments/{deployment_id}")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Cancel deployment").click()
    expect(page.get_by_test_id("deployment-status")).to_contain_text("CANCELED")
    after = console_api.get(f"/api/v1/deployments/{deployment_id}").json()
    assert after["status"] == "CANCELED"


def test_a_viewer_reads_but_sees_no_write_action(
    console: Console, console_api: Api, viewer: str
) -> None:
    artifact = api_artifact(console_api, "6.0.0")
    device = make_device(console_api)
    deployment_id = unique("dep")
    resp = console_api.post(
        "/api/v1/deployments",
        json={
            "id": deployment_id,
            "artifact_ids": [artifact["id"]],
            "targets": {"devices": [device.id]},
        },
    )
    assert resp.status_code == 201, resp.text

    console.sign_in(viewer, VIEWER_PASSWORD)
    page = console.page
    console.goto("/artifacts")
    expect(page.locator(f'tr[data-artifact-id="{artifact["id"]}"]')).to_be_visible()
    expect(page.locator("#upload-form")).to_have_count(0)
    console.goto(f"/artifacts/{artifact['id']}")
    expect(page.get_by_test_id("sha256")).to_have_text(artifact["sha256"])
    expect(page.get_by_role("button", name="Delete")).to_have_count(0)
    console.goto("/deployments")
    expect(page.locator(f'tr[data-deployment-id="{deployment_id}"]')).to_contain_text("IN_PROGRESS")
    expect(page.get_by_role("link", name="New deployment")).to_have_count(0)
    console.goto(f"/deployments/{deployment_id}")
    expect(page.get_by_test_id("deployment-status")).to_contain_text("IN_PROGRESS")
    expect(page.get_by_role("button", name="Cancel deployment")).to_have_count(0)
    denied = page.goto(console.server.url + "/deployments/new")
    assert denied is not None and denied.status == 403
    # The API refuses the viewer's write as well (the page only hides it).
    with console_api.as_token(console_api.login(viewer, VIEWER_PASSWORD)) as as_viewer:
        resp = as_viewer.post(f"/api/v1/deployments/{deployment_id}/cancel")
        assert resp.status_code == 403, resp.text


def test_apt_channels_are_listed_with_their_packages_and_the_device_lines(
    console: Console, console_api: Api, tmp_path: Path
) -> None:
    channel = unique("chan")
    resp = console_api.post(
        "/api/v1/apt/channels",
        json={"name": channel, "audience": "all", "description": "the stores' menu"},
    )
    assert resp.status_code == 201, resp.text
    deb = upload_deb(console_api, build_deb(tmp_path, "store-menu", "1.2-1"))
    resp = console_api.post(
        f"/api/v1/apt/channels/{channel}/packages", json={"artifact_id": deb["id"]}
    )
    assert resp.status_code == 201, resp.text

    console.sign_in()
    page = console.page
    console.goto("/apt")
    row = page.locator(f'tr[data-channel="{channel}"]')
    expect(row).to_contain_text("all")
    expect(row).to_contain_text("the stores' menu")
    expect(row.locator("td.num")).to_have_text("1")
    row.get_by_role("link", name=channel).click()
    package = page.locator('tr[data-package="store-menu"]')
    expect(package).to_contain_text("1.2-1")
    expect(package.get_by_role("link", name=deb["id"])).to_be_visible()
    expect(page.locator("#apt-sources")).to_contain_text(
        f"{console.server.url}/api/v1/apt/default {channel} main"
    )
    missing = page.goto(console.server.url + "/apt/no-such-channel")
    assert missing is not None and missing.status == 404
