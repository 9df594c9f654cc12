"""The OpenAPI document as the API really answers, completed in one place rather than per route.

FastAPI documents what a route's signature and decorator say. What the HTTP shell adds on every
route is completed here: the problem+json errors (:mod:`roost.http.problems`) each operation can
answer, the id rules of path parameters (:mod:`roost.core.ids`), and the sortable fields a
collection declared with :func:`roost.http.params.sortable`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from roost.core.ids import SLUG_PATTERN, TENANT_PATTERN
from roost.http.params import SORT_FIELDS_KEY
from roost.http.problems import PROBLEM_TYPE, TITLES
from roost.http.schemas import Problem

PROBLEM_REF = "#/components/schemas/Problem"
WRITES = {"post", "put", "patch", "delete"}
_BOUNDS = {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}
TENANT_HEADER = "x-roost-tenant"
# FastAPI's default 422 body; every error here is a Problem instead.
_FASTAPI_ERROR_SCHEMAS = ("HTTPValidationError", "ValidationError")
# Path parameters are ids (core.ids slugs); these names follow a narrower rule.
_PATH_RULES: dict[str, dict[str, Any]] = {
    "tenant_id": {"pattern": TENANT_PATTERN, "maxLength": 64},
    # A state's name (state.rules.check_name): a slug of at most 64 characters.
    "name": {"pattern": SLUG_PATTERN, "maxLength": 64},
}
_ID_RULE: dict[str, Any] = {"pattern": SLUG_PATTERN, "maxLength": 128}


def install(app: FastAPI) -> None:
    """Serve the completed document at the app's ``openapi_url`` (built once, on first use)."""
    build: Callable[[], dict[str, Any]] = app.openapi

    def documented() -> dict[str, Any]:
        first = app.openapi_schema is None
        schema = build()
        if first:
            complete(schema)
        return schema

    app.openapi = documented  # type: ignore[method-assign]


def complete(schema: dict[str, Any]) -> dict[str, Any]:
    """Add what every operation really answers to a document FastAPI generated (in place)."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    for path, item in schema.get("paths", {}).items():
        for method, operation in item.items():
            if method not in {"get", "put", "post", "patch", "delete", "head", "options"}:
                continue
            for parameter in operation.get("parameters", []):
                _constrain(parameter, operation)
            operation.pop(SORT_FIELDS_KEY, None)
            responses = operation.setdefault("responses", {})
            for status in error_statuses(path, method, operation):
                responses[str(status)] = problem_response(status, responses.get(str(status)))
    for name in _FASTAPI_ERROR_SCHEMAS:
        components.pop(name, None)
    _integral_bounds(schema)
    return schema


def _integral_bounds(node: Any) -> None:
    """Bounds FastAPI wrote as floats (1000.0) back to integers: an integer field offered
    2147483647.0 would be sent a float, which a strict integer refuses."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _BOUNDS and isinstance(value, float) and value.is_integer():
                node[key] = int(value)
            else:
                _integral_bounds(value)
    elif isinstance(node, list):
        for item in node:
            _integral_bounds(item)


def error_statuses(path: str, method: str, operation: dict[str, Any]) -> set[int]:
    """The problem+json statuses an operation can answer, beside those its route declared.

    Every ``/api`` operation may find its store busy (503); one taking parameters or a body may
    refuse them (422); a body may be malformed (400), too large (413) or not JSON (415); a
    credential may be missing (401), lack the right (403) or be tried too often (429); an id in
    the path or a tenant named in ``X-Roost-Tenant`` may not exist (404); a write may conflict
    with what is stored (409).
    """
    statuses = {int(code) for code in operation.get("responses", {}) if _is_error(code)}
    if not path.startswith("/api/"):
        return statuses
    parameters = operation.get("parameters", [])
    body = "requestBody" in operation
    statuses.add(503)
    if parameters or body:
        statuses.add(422)
    if body:
        statuses |= {400, 413, 415}
    if "security" in operation or any(_named(p, "authorization", "header") for p in parameters):
        statuses |= {401, 403, 429}
    if any(p.get("in") == "path" or _named(p, TENANT_HEADER, "header") for p in parameters):
        statuses.add(404)
    if method in WRITES:
        statuses.add(409)
    return statuses


def problem_response(status: int, declared: dict[str, Any] | None = None) -> dict[str, Any]:
    """A response object answering a Problem as ``application/problem+json``."""
    description = (declared or {}).get("description") or TITLES.get(status, "Error")
    if description in {"Successful Response", "Validation Error"}:
        description = TITLES.get(status, "Error")
    response: dict[str, Any] = {
        "description": description,
        "content": {PROBLEM_TYPE: {"schema": {"$ref": PROBLEM_REF}}},
    }
    if status == 401:
        response["headers"] = {
            "WWW-Authenticate": {
                "description": "The authentication scheme to use",
                "required": True,
                "schema": {"type": "string"},
            }
        }
    return response


def _constrain(parameter: dict[str, Any], operation: dict[str, Any]) -> None:
    schema = parameter.setdefault("schema", {})
    forms = schema.get("anyOf", [])
    if parameter.get("in") != "path" and {"type": "null"} in forms:
        # A query string or header cannot carry null: an optional one is just left out.
        rest = [form for form in forms if form != {"type": "null"}]
        if len(rest) == 1:
            del schema["anyOf"]
            schema.update(rest[0])
    if parameter.get("in") == "path" and schema.get("type") == "string":
        for key, value in _PATH_RULES.get(parameter["name"], _ID_RULE).items():
            schema.setdefault(key, value)
    elif _named(parameter, TENANT_HEADER, "header"):
        # anyOf [string, null] for an optional header: the rule goes on its string form.
        # An empty header is no header (the caller's own tenant).
        for form in schema.get("anyOf", [schema]):
            if form.get("type") == "string":
                form.setdefault("pattern", f"^({TENANT_PATTERN[1:-1]})?$")
                form.setdefault("maxLength", 64)
    elif _named(parameter, "sort", "query") and SORT_FIELDS_KEY in operation:
        fields = operation[SORT_FIELDS_KEY]
        for form in schema.get("anyOf", [schema]):
            if form.get("type") == "string":
                form.pop("maxLength", None)
                form["enum"] = [*fields, *(f"-{field}" for field in fields)]


def _named(parameter: dict[str, Any], name: str, where: str) -> bool:
    return bool(parameter.get("in") == where and parameter.get("name", "").lower() == name)


def _is_error(code: str) -> bool:
    return code.isdigit() and int(code) >= 400
