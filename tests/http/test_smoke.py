"""The server starts on each backend, serves OpenAPI and health, and lets the admin in."""

from __future__ import annotations

from tests.conftest import Tenant
from tests.support import Api, RoostServer, assert_problem


def test_health_and_readiness(server: RoostServer) -> None:
    with Api(server.url) as api:
        assert api.get("/healthz").json()["status"] == "ok"
        ready = api.get("/readyz").json()
        assert ready["status"] == "ready"
        assert ready["store"] == ("postgresql" if server.database_url else "sqlite")


def test_openapi_lists_every_route(server: RoostServer) -> None:
    with Api(server.url) as api:
        doc = api.get("/openapi.json").json()
    paths = doc["paths"]
    for path in ("/api/v1/devices", "/api/v1/sites", "/api/v1/audit", "/api/v1/auth/login",
                 "/api/v1/tenants", "/api/v1/users", "/api/v1/api-keys"):
        assert path in paths, path


def test_admin_creates_and_reads_a_device(tenant: Tenant) -> None:
    resp = tenant.operator.post("/api/v1/devices", json={"id": "kiosk-1", "name": "Kiosk"})
    assert resp.status_code == 201, resp.text
    assert tenant.viewer.get("/api/v1/devices/kiosk-1").json()["name"] == "Kiosk"
    assert_problem(tenant.anonymous.get("/api/v1/devices/kiosk-1"), 401)
