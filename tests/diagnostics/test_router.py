"""Diagnostics archives through the real doors: a device uploads, operators list and download."""

from __future__ import annotations

import hashlib
import http.client
import io
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support import (
    Api,
    Device,
    RoostServer,
    admin_client,
    assert_problem,
    make_device,
    unique,
)

V1 = "/api/v1"
MAX_BYTES = 50 * 1024 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoostServer]:
    with RoostServer(Path(tmp_path_factory.mktemp("diag"))).running() as running:
        yield running


@dataclass
class Org:
    """A tenant with its admin, an operator, a viewer and a device (and the device's client)."""

    id: str
    admin: Api
    operator: Api
    viewer: Api
    device: Device
    device_api: Api

    def close(self) -> None:
        for client in (self.admin, self.operator, self.viewer, self.device_api):
            client.close()


def make_org(server: RoostServer, superuser: Api) -> Org:
    """A fresh tenant with an operator, a viewer and one device."""
    tenant_id = unique("t")
    password = f"pw-{tenant_id}"
    admin_user = {"username": f"{tenant_id}-admin", "password": password}
    resp = superuser.post(
        f"{V1}/tenants", json={"id": tenant_id, "name": tenant_id, "admin": admin_user}
    )
    assert resp.status_code == 201, resp.text
    with Api(server.url) as anon:
        admin = anon.as_token(anon.login(f"{tenant_id}-admin", password))
        users = {}
        for role in ("operator", "viewer"):
            resp = admin.post(
                f"{V1}/users",
                json={"username": f"{tenant_id}-{role}", "password": password, "role": role},
            )
            assert resp.status_code == 201, resp.text
            users[role] = anon.as_token(anon.login(f"{tenant_id}-{role}", password))
    device = make_device(admin)
    return Org(
        tenant_id, admin, users["operator"], users["viewer"], device, admin.as_token(device.token)
    )


@pytest.fixture(scope="module")
def superuser(server: RoostServer) -> Iterator[Api]:
    with admin_client(server) as client:
        yield client


@pytest.fixture
def org(server: RoostServer, superuser: Api) -> Iterator[Org]:
    made = make_org(server, superuser)
    yield made
    made.close()


def archive(text: str = "hello") -> bytes:
    """A small tar.gz with one member."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        data = text.encode()
        info = tarfile.TarInfo("status.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def upload(client: httpx.Client, body: bytes, **params: str) -> httpx.Response:
    return client.post(
        f"{V1}/device/diagnostics",
        content=body,
        params=params,
        headers={"Content-Type": "application/gzip"},
    )


def blob_files(server: RoostServer) -> list[Path]:
    root = server.data_dir / "blobs" / "_diagnostics"
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def test_a_device_uploads_and_an_operator_downloads_the_same_bytes(
    server: RoostServer, org: Org
) -> None:
    body = archive("uptime 12 days")
    resp = upload(org.device_api, body, note="crashed at boot", command_id="cmd-1")
    assert resp.status_code == 201, resp.text
    made = resp.json()
    assert made["size"] == len(body)
    assert made["sha256"] == hashlib.sha256(body).hexdigest()
    assert made["device_id"] == org.device.id
    assert (made["note"], made["command_id"]) == ("crashed at boot", "cmd-1")

    listed = org.viewer.get(f"{V1}/devices/{org.device.id}/diagnostics").json()
    assert listed["total"] == 1
    assert [item["id"] for item in listed["items"]] == [made["id"]]
    assert listed["items"][0]["sha256"] == made["sha256"]

    got = org.operator.get(f"{V1}/devices/{org.device.id}/diagnostics/{made['id']}/content")
    assert got.status_code == 200, got.text
    assert got.content == body
    assert got.headers["content-type"] == "application/gzip"
    disposition = got.headers["content-disposition"]
    assert disposition.startswith("attachment;") and ".tar.gz" in disposition
    with tarfile.open(fileobj=io.BytesIO(got.content), mode="r:gz") as tar:
        assert tar.getnames() == ["status.json"]

    # The console's Diagnostics tab lists it with its download link.
    with httpx.Client(base_url=server.url) as browser:
        form = {"username": f"{org.id}-viewer", "password": f"pw-{org.id}"}
        assert browser.post("/login", data=form).status_code == 303
        page = browser.get(f"/devices/{org.device.id}/diagnostics")
    assert page.status_code == 200, page.text
    assert f"/diagnostics/{made['id']}/content" in page.text


def test_a_device_uploads_only_its_own_and_other_tenants_see_nothing(
    server: RoostServer, superuser: Api, org: Org
) -> None:
    other_device = make_device(org.admin)
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {other_device.token}"}
    ) as other:
        assert upload(other, archive("mine")).status_code == 201
        # A device's token does not open the operators' routes.
        resp = other.get(f"{V1}/devices/{org.device.id}/diagnostics")
        assert resp.status_code in (401, 403), resp.text
    assert org.viewer.get(f"{V1}/devices/{org.device.id}/diagnostics").json()["total"] == 0
    theirs = org.viewer.get(f"{V1}/devices/{other_device.id}/diagnostics").json()
    assert theirs["total"] == 1

    diag_id = theirs["items"][0]["id"]
    # Naming another device's archive under this device's path finds nothing.
    assert_problem(
        org.viewer.get(f"{V1}/devices/{org.device.id}/diagnostics/{diag_id}/content"), 404
    )
    stranger = make_org(server, superuser)
    try:
        assert_problem(stranger.viewer.get(f"{V1}/devices/{other_device.id}/diagnostics"), 404)
        assert_problem(
            stranger.viewer.get(f"{V1}/devices/{other_device.id}/diagnostics/{diag_id}/content"),
            404,
        )
    finally:
        stranger.close()
    # Without a credential the upload is refused.
    with httpx.Client(base_url=server.url) as anonymous:
        assert upload(anonymous, archive()).status_code == 401


def test_an_archive_over_50_mib_is_refused_and_nothing_stays(server: RoostServer, org: Org) -> None:
    before = len(blob_files(server))
    # Announced too large: refused before the body is sent.
    host = httpx.URL(server.url)
    conn = http.client.HTTPConnection(host.host, host.port, timeout=30)
    try:
        conn.putrequest("POST", f"{V1}/device/diagnostics")
        conn.putheader("Authorization", f"Bearer {org.device.token}")
        conn.putheader("Content-Type", "application/gzip")
        conn.putheader("Content-Length", str(MAX_BYTES + 1))
        conn.endheaders()
        assert conn.getresponse().status == 413
    finally:
        conn.close()
    # Streamed without a length: refused once the 50 MiB are passed.
    piece = os.urandom(1024 * 1024)

    def chunks() -> Iterator[bytes]:
        for _ in range(50):
            yield piece
        yield b"over"

    resp = org.device_api.post(
        f"{V1}/device/diagnostics",
        content=chunks(),
        headers={"Content-Type": "application/gzip"},
    )
    assert_problem(resp, 413)
    assert org.viewer.get(f"{V1}/devices/{org.device.id}/diagnostics").json()["total"] == 0
    assert len(blob_files(server)) == before
    assert_problem(upload(org.device_api, b""), 422, "empty")


def test_each_device_keeps_its_newest_20_and_deletes_free_the_bytes(
    server: RoostServer, org: Org
) -> None:
    made = [upload(org.device_api, archive(f"n{i}")).json()["id"] for i in range(22)]
    listed = org.viewer.get(f"{V1}/devices/{org.device.id}/diagnostics?limit=100").json()
    assert listed["total"] == 20
    assert [item["id"] for item in listed["items"]] == made[:1:-1]  # newest first, 2 pruned
    for gone in made[:2]:
        path = f"{V1}/devices/{org.device.id}/diagnostics/{gone}/content"
        assert_problem(org.operator.get(path), 404)
    device_blobs = [p for p in blob_files(server) if p.parent.parent.name == org.id]
    assert len(device_blobs) == 20

    # Viewers may not delete; operators may.
    path = f"{V1}/devices/{org.device.id}/diagnostics/{made[-1]}"
    assert_problem(org.viewer.delete(path), 403)
    assert org.operator.delete(path).status_code == 204
    assert_problem(org.operator.get(path), 404)
    assert len([p for p in blob_files(server) if p.parent.parent.name == org.id]) == 19

    # Deleting the device deletes its archives' bytes.
    assert org.admin.delete(f"{V1}/devices/{org.device.id}").status_code == 204
    assert [p for p in blob_files(server) if p.parent.parent.name == org.id] == []

    metrics = httpx.get(f"{server.url}/metrics").text
    count = [
        line for line in metrics.splitlines() if line.startswith("roost_diagnostics_uploads_total")
    ]
    assert count and float(count[0].split()[-1]) >= 22
