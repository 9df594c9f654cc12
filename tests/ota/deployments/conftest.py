"""Fixtures of deployments: one Roost (MQTT on, quick timers) per module and backend, and
helpers that make models, sites, groups, devices, artifacts and deployments through the API."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.support import (
    Api,
    Device,
    RoostServer,
    admin_client,
    eventually,
    free_port,
    fresh_postgres_database,
    make_device,
    postgres_reachable,
    skip_or_fail,
    unique,
)

# Quick timers: the jobs pass and the deployment pass run every 0.2 s.
ENV = {"ROOST_TIMER_CHECK_S": "0.2"}


def _run(server: RoostServer) -> Iterator[RoostServer]:
    server.start()
    try:
        yield server
    finally:
        server.stop()
    assert not server.unhandled_errors(), server.unhandled_errors()
    log = server.log_path.read_text(errors="replace")
    assert "Traceback" not in log, log


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def ota_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RoostServer]:
    """A Roost with its MQTT listener on and quick timers, per backend, shared by a module
    (the deployment pass and the jobs pass lock rows on PostgreSQL: both backends run them)."""
    tmp = tmp_path_factory.mktemp(f"roost-ota-deployments-{request.param}")
    if request.param == "postgresql":
        reason = postgres_reachable()
        if reason:
            skip_or_fail(reason)
        with fresh_postgres_database() as url:
            yield from _run(
                RoostServer(tmp, database_url=url, mqtt_port=free_port(), env_overrides=ENV)
            )
    else:
        yield from _run(RoostServer(tmp, mqtt_port=free_port(), env_overrides=ENV))


@pytest.fixture
def api(ota_server: RoostServer) -> Iterator[Api]:
    """The superuser's client (acting in the default tenant)."""
    with admin_client(ota_server) as client:
        yield client


@dataclass
class Fleet:
    """What a test made, with the clients to act as each device over HTTP."""

    api: Api
    server: RoostServer
    devices: dict[str, Device] = field(default_factory=dict)
    clients: list[Api] = field(default_factory=list)

    def model(self) -> str:
        model = unique("model")
        resp = self.api.post(
            "/api/v1/device-models",
            json={"id": model, "reference": model, "commercial_name": model},
        )
        assert resp.status_code == 201, resp.text
        return model

    def site(self, timezone: str) -> str:
        site = unique("site")
        resp = self.api.post("/api/v1/sites", json={"id": site, "name": site, "timezone": timezone})
        assert resp.status_code == 201, resp.text
        return site

    def device(self, **fields: Any) -> Device:
        made = make_device(self.api, **fields)
        self.devices[made.id] = made
        return made

    def group(self, members: list[Device]) -> str:
        group_id = unique("grp")
        resp = self.api.post("/api/v1/groups", json={"id": group_id, "name": group_id})
        assert resp.status_code == 201, resp.text
        resp = self.api.post(
            f"/api/v1/groups/{group_id}/devices", json={"device_ids": [d.id for d in members]}
        )
        assert resp.status_code in (200, 201), resp.text
        return group_id

    def as_device(self, device: Device) -> Api:
        client = self.api.as_token(device.token)
        self.clients.append(client)
        return client

    def artifact(self, version: str, models: list[str] | None = None) -> dict[str, Any]:
        body = secrets.token_bytes(2048)
        artifact_id = unique("fw")
        resp = self.api.post(
            "/api/v1/artifacts",
            params={
                "id": artifact_id,
                "name": "firmware",
                "type": "firmware",
                "version": version,
                "filename": f"{artifact_id}.swu",
                "model_id": models or [],
                "sha256": hashlib.sha256(body).hexdigest(),
            },
            content=body,
            headers={"Content-Type": "application/octet-stream"},
        )
        assert resp.status_code == 201, resp.text
        made: dict[str, Any] = resp.json()
        return made

    def deploy(self, **body: Any) -> dict[str, Any]:
        body.setdefault("id", unique("dep"))
        resp = self.api.post("/api/v1/deployments", json=body)
        assert resp.status_code == 201, resp.text
        made: dict[str, Any] = resp.json()
        return made

    def overview(self, deployment_id: str) -> dict[str, Any]:
        resp = self.api.get(f"/api/v1/deployments/{deployment_id}")
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        return body

    def wait_status(self, deployment_id: str, status: str) -> dict[str, Any]:
        found = eventually(
            lambda: (o := self.overview(deployment_id))["status"] == status and o, timeout=20
        )
        assert found, self.overview(deployment_id)
        made: dict[str, Any] = found
        return made


@pytest.fixture
def fleet(ota_server: RoostServer, api: Api) -> Iterator[Fleet]:
    """Helpers bound to the module's server."""
    made = Fleet(api, ota_server)
    yield made
    for client in made.clients:
        client.close()


def pending(client: Api) -> list[dict[str, Any]]:
    """The device's pending job executions (HTTP device door)."""
    resp = client.get("/api/v1/device/jobs")
    assert resp.status_code == 200, resp.text
    jobs: list[dict[str, Any]] = resp.json()["jobs"]
    return jobs


def report(client: Api, job_id: str, status: str, **details: Any) -> Any:
    """A device's update of its execution over HTTP."""
    body: dict[str, Any] = {"status": status}
    if details:
        body["status_details"] = details
    return client.post(f"/api/v1/device/jobs/{job_id}/update", json=body)
