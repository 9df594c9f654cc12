"""The server starts on each backend, serves OpenAPI and health, and lets the admin in."""

from __future__ import annotations

import re
from pathlib import Path

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
    for path in (
        "/api/v1/devices",
        "/api/v1/sites",
        "/api/v1/audit",
        "/api/v1/auth/login",
        "/api/v1/tenants",
        "/api/v1/users",
        "/api/v1/api-keys",
    ):
        assert path in paths, path


def test_admin_creates_and_reads_a_device(tenant: Tenant) -> None:
    resp = tenant.operator.post("/api/v1/devices", json={"id": "kiosk-1", "name": "Kiosk"})
    assert resp.status_code == 201, resp.text
    assert tenant.viewer.get("/api/v1/devices/kiosk-1").json()["name"] == "Kiosk"
    assert_problem(tenant.anonymous.get("/api/v1/devices/kiosk-1"), 401)


def test_every_route_is_in_the_openapi_document_with_a_summary(tmp_path: Path) -> None:
    from fastapi.routing import APIRoute

    from roost.app import create_app, mounted_routers
    from roost.config import load_settings
    from roost.runtime import Roost

    app = create_app(Roost.build(load_settings({}, data_dir=tmp_path)), manage_lifecycle=False)
    document = app.openapi()
    operations = {
        (path, method.upper()): op
        for path, item in document["paths"].items()
        for method, op in item.items()
    }
    routes = [
        # A path converter ({path:path}) is written as a plain parameter in the document.
        (re.sub(r"\{(\w+):\w+\}", r"{\1}", prefix + route.path), route)
        for router, prefix in mounted_routers()
        for route in router.routes
        if isinstance(route, APIRoute)
    ]
    assert len(routes) >= 40
    for path, route in routes:
        for method in route.methods:
            op = operations.get((path, method))
            assert op is not None, f"{method} {path} is missing from /openapi.json"
            assert op.get("summary"), f"{method} {path} has no summary"
            assert op.get("operationId"), f"{method} {path} has no operationId"
    assert len(operations) == sum(len(route.methods) for _, route in routes)
    ids = [op["operationId"] for op in operations.values()]
    assert len(ids) == len(set(ids)), "operation ids must be unique"
