"""Fixtures of the DDI tests: one Roost (SQLite) for the module, polled every second."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support import Api, Device, RoostServer, admin_client, eventually, make_device, unique

# DDI clients are told to poll every second (hawkBit's default is minutes), and timers (job
# rollouts, deployment passes) look for work five times a second.
ENV = {"ROOST_DDI_POLLING_S": "1", "ROOST_TIMER_CHECK_S": "0.2"}


@pytest.fixture(scope="module")
def ddi_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoostServer]:
    """A Roost for the module's tests; fails on any traceback or 500 it logged."""
    with RoostServer(tmp_path_factory.mktemp("roost-ddi"), env_overrides=ENV).running() as srv:
        yield srv


@pytest.fixture(scope="module")
def admin(ddi_server: RoostServer) -> Iterator[Api]:
    """The superuser, acting in the default tenant."""
    with admin_client(ddi_server) as api:
        yield api


@pytest.fixture
def device(admin: Api) -> Device:
    """A device of the default tenant with a token."""
    return make_device(admin)


def ddi(server: RoostServer, token: str | None, scheme: str = "TargetToken") -> httpx.Client:
    """A client speaking to the DDI routes with a device's TargetToken."""
    headers = {"Authorization": f"{scheme} {token}"} if token else {}
    return httpx.Client(base_url=server.url, headers=headers, timeout=30)


def root(device: Device, tenant: str = "default") -> str:
    """The controller's DDI path."""
    return f"/{tenant}/controller/v1/{device.id}"


def upload_artifact(
    api: Api, content: bytes, *, version: str, filename: str, type_: str = "firmware"
) -> dict[str, Any]:
    """Upload an artifact through the API; answers its record."""
    resp = api.post(
        "/api/v1/artifacts",
        params={
            "id": unique("art"),
            "name": f"image {version}",
            "version": version,
            "type": type_,
            "filename": filename,
        },
        content=content,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert resp.status_code == 201, resp.text
    body: dict[str, Any] = resp.json()
    return body


def deploy(api: Api, artifact_id: str, device_ids: list[str]) -> dict[str, Any]:
    """Create a deployment of one artifact to devices through the API."""
    resp = api.post(
        "/api/v1/deployments",
        json={
            "id": unique("dep"),
            "name": "ddi test",
            "artifact_ids": [artifact_id],
            "targets": {"devices": device_ids},
        },
    )
    assert resp.status_code == 201, resp.text
    body: dict[str, Any] = resp.json()
    return body


def action_of(api: Api, deployment_id: str, device_id: str) -> dict[str, Any]:
    """The deployment's action for a device, as the deployment overview lists it."""
    resp = api.get(f"/api/v1/deployments/{deployment_id}/devices")
    assert resp.status_code == 200, resp.text
    found = [a for a in resp.json()["items"] if a["device_id"] == device_id]
    assert found, resp.json()
    action: dict[str, Any] = found[0]
    return action


def deployment_link(client: httpx.Client, path: str, timeout: float = 15) -> str:
    """The deploymentBase href of the controller's base, once there is one."""

    def link() -> str | None:
        resp = client.get(path)
        assert resp.status_code == 200, resp.text
        href: str | None = resp.json()["_links"].get("deploymentBase", {}).get("href")
        return href

    found: str = eventually(link, timeout=timeout)
    return found
