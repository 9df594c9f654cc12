"""The OpenAPI document tells the truth: a bounded schemathesis run against a real server finds
no 5xx and no answer the document does not declare; every error is declared as problem+json."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import Api, RoostServer, admin_client

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
PROBLEM = "application/problem+json"
PROBLEM_REF = "#/components/schemas/Problem"
METHODS = {"get", "put", "post", "patch", "delete"}

# The run's bounds: a few minutes at most on a two-core machine. Every phase runs (examples,
# coverage, fuzzing, stateful); fuzzing and stateful repeat until MAX_TIME_S is spent.
MAX_EXAMPLES = 10
MAX_TIME_S = 120
# A long poll (?wait=) answers within 60 s; nothing else should come near this.
REQUEST_TIMEOUT_S = 70
SEED = 20261207


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoostServer]:
    with RoostServer(tmp_path_factory.mktemp("roost-conformance")).running() as running:
        yield running


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The document as the app serves it, built in-process (no server needed)."""
    from roost.app import create_app
    from roost.config import load_settings
    from roost.runtime import Roost

    data_dir = tmp_path_factory.mktemp("roost-openapi")
    app = create_app(Roost.build(load_settings({}, data_dir=data_dir)), manage_lifecycle=False)
    return app.openapi()


def test_the_server_serves_the_completed_document(
    server: RoostServer, document: dict[str, Any]
) -> None:
    served = httpx.get(f"{server.url}/openapi.json", timeout=30).json()
    assert served == document


def operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield path, method, operation


def test_every_error_is_declared_as_problem_json(document: dict[str, Any]) -> None:
    assert "Problem" in document["components"]["schemas"]
    assert "HTTPValidationError" not in document["components"]["schemas"]
    for path, method, operation in operations(document):
        label = f"{method.upper()} {path}"
        errors = {int(code): r for code, r in operation["responses"].items() if int(code) >= 400}
        for status, response in errors.items():
            assert set(response.get("content", {})) == {PROBLEM}, (label, status)
            assert response["content"][PROBLEM]["schema"] == {"$ref": PROBLEM_REF}, label
        if not path.startswith("/api/"):
            continue
        parameters = operation.get("parameters", [])
        assert 503 in errors, label
        if parameters or "requestBody" in operation:
            assert 422 in errors, label
        if "requestBody" in operation:
            assert {400, 413, 415} <= set(errors), label
        if "security" in operation:
            assert {401, 403} <= set(errors), label
        if any(p["in"] == "path" for p in parameters):
            assert 404 in errors, label


def test_paging_and_path_ids_carry_the_rules_the_server_enforces(
    document: dict[str, Any],
) -> None:
    sortable = 0
    for path, method, operation in operations(document):
        for parameter in operation.get("parameters", []):
            schema = parameter["schema"]
            if parameter["in"] == "query" and parameter["name"] == "offset":
                assert schema["maximum"] == 1_000_000_000, (method, path)
            if parameter["in"] == "query" and parameter["name"] == "sort" and "enum" in schema:
                sortable += 1
                fields = [f for f in schema["enum"] if not f.startswith("-")]
                assert schema["enum"] == fields + [f"-{f}" for f in fields], path
            if parameter["in"] == "path" and schema.get("type") == "string":
                assert re.fullmatch(schema["pattern"][1:-1], "dev-1"), (path, parameter)
                assert not re.fullmatch(schema["pattern"][1:-1], "a/b"), (path, parameter)
    assert sortable >= 25
    certificates = document["paths"]["/api/v1/devices/{device_id}/certificates"]
    sort = next(p for p in certificates["get"]["parameters"] if p["name"] == "sort")
    assert "-not_after" in sort["schema"]["enum"] and "serial" not in sort["schema"]["enum"]


def test_a_new_certificate_answers_what_its_schema_requires(server: RoostServer) -> None:
    with admin_client(server) as api:
        device = api.post("/api/v1/devices", json={"id": "conformance-cert"})
        assert device.status_code == 201, device.text
        created = api.post("/api/v1/devices/conformance-cert/certificates", json={})
        assert created.status_code == 201, created.text
        rotated = api.post(
            f"/api/v1/devices/conformance-cert/certificates/{created.json()['id']}/rotate",
            json={},
        )
        assert rotated.status_code == 201, rotated.text
        schema = document_schema(api, "CertificateCreated")
    for body in (created.json(), rotated.json()):
        assert set(schema["required"]) <= set(body), set(schema["required"]) - set(body)
        assert body["revoked_at"] is None and body["private_key"].startswith("-----BEGIN")


def document_schema(api: Api, name: str) -> dict[str, Any]:
    schema: dict[str, Any] = api.get("/openapi.json").json()["components"]["schemas"][name]
    return schema


def test_a_405_lists_every_method_of_the_path(server: RoostServer) -> None:
    with admin_client(server) as api:
        resp = api.request("PUT", "/api/v1/devices/any-device")
    assert resp.status_code == 405
    assert resp.headers["content-type"] == PROBLEM
    assert resp.headers["allow"] == "DELETE, GET, PATCH"


@pytest.mark.slow
def test_schemathesis_finds_no_fault(server: RoostServer, tmp_path: Path) -> None:
    """Every check (as ``--checks all``), authenticated as the admin, bounded in time."""
    with admin_client(server) as api:
        created = api.post("/api/v1/api-keys", json={"name": "schemathesis"})
        assert created.status_code == 201, created.text
    key = created.json()
    env = {
        **os.environ,
        # tests/http/schemathesis_hooks.py: never revoke the key the run authenticates with.
        "SCHEMATHESIS_HOOKS": "tests.http.schemathesis_hooks",
        "CONFORMANCE_API_KEY_ID": key["id"],
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    command = [
        str(SCHEMATHESIS),
        "--config-file",
        str(HERE / "schemathesis.toml"),
        "run",
        f"{server.url}/openapi.json",
        "--header",
        f"Authorization: Bearer {key['key']}",
        # No --checks here: schemathesis.toml turns every check on (what --checks all does), and
        # a check named on the command line would override the per-operation exceptions there.
        "--max-examples",
        str(MAX_EXAMPLES),
        "--max-time",
        str(MAX_TIME_S),
        "--request-timeout",
        str(REQUEST_TIMEOUT_S),
        "--seed",
        str(SEED),
        # One worker: with two, Hypothesis (describing a strategy's lambda in a thread) can hit
        # CPython 3.11's "AST constructor recursion depth mismatch", an error of the tool's own
        # that says nothing about the API. MAX_TIME_S bounds the run either way.
        "--workers",
        "1",
        "--no-color",
        "--generation-database",
        "none",
    ]
    result = subprocess.run(
        command,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=MAX_TIME_S + 120,
        check=False,
    )
    report = result.stdout + result.stderr
    assert result.returncode == 0, report
    assert not server.unhandled_errors(), server.unhandled_errors()
