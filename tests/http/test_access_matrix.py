"""The access matrix: every route of the OpenAPI document and a few MQTT topics × every caller.

Expectations come from one small policy table (:data:`POLICY`: route pattern → who may); each
route is called for real by each caller on one server, and the answer's class (allowed, 401, 403,
404) is compared with the table. A route missing from the table fails the test: classify it.

"Allowed" means not refused for who the caller is: 2xx, or a 4xx about the request itself (409,
422, …). A request body is made from the route's OpenAPI schema (required fields, unique ids),
so an allowed caller usually gets 2xx, and a refused one gets its refusal before any validation
of the content. Destructive routes (deletes, revocations, logout) run last, once per refused
caller and then once for the least privileged allowed caller, so every other route still finds
its records.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest

from tests.mqtt.test_gateway import Client
from tests.ota.apt.debs import build_deb
from tests.support import (
    ADMIN_PASSWORD,
    Api,
    RoostServer,
    eventually,
    free_port,
    make_device,
    unique,
)

V1 = "/api/v1"
CALLERS = (
    "superuser",
    "admin",
    "operator",
    "viewer",
    "other_admin",  # the admin of another tenant
    "consumer",  # a consumer key granted the target device
    "consumer_without",  # a consumer key granted another device only
    "device",  # the target device's own token
    "other_device",  # another device's token (same tenant)
    "anonymous",
)
RANK = {"viewer": 1, "operator": 2, "admin": 3, "superuser": 4}
ALLOWED = "allowed"
# Another tenant naming a record by a per-tenant name reaches its own record of that name, or none.
OWN_OR_404 = "own record or 404"

# Levels of the policy table:
#   public      anyone, even without credentials
#   open        a door that decides by what is sent (login, provisioning): same answer for all
#   user        any user of a tenant (user token or API key), acting on itself
#   viewer | operator | admin | superuser   that role or higher in the target's tenant
#   read        a viewer, or a consumer key limited to its grants (404 for a device not granted)
#   device      a device door: any device, acting on itself (a user token there: 403)
#   device_own  a device door naming a record of the target device (another device: 404)
# A third element is the answer to a user whose role is too low when it is not 403: 404 where a
# record is hidden from those who may not act on it (another user's API key, another tenant).
POLICY: list[tuple[str, str] | tuple[str, str, int]] = [
    (r"GET /(healthz|readyz|metrics)", "public"),
    (r"GET /api/v1/ca", "public"),
    (r"POST /api/v1/auth/login", "open"),
    (r"POST /api/v1/provisioning/(register|bootstrap)", "open"),
    (r"POST /api/v1/auth/logout", "user"),
    (r"GET /api/v1/me", "user"),
    (r"GET /api/v1/tenants/\{tenant_id\}", "superuser", 404),
    (r"\w+ /api/v1/tenants.*", "superuser"),
    (r"\w+ /api/v1/users.*", "admin"),
    (r"GET /api/v1/api-keys", "user"),
    (r"POST /api/v1/api-keys", "user"),
    (r"DELETE /api/v1/api-keys/\{key_id\}", "admin", 404),  # another user's key: for admins
    # The inventory: viewers read, operators change.
    (r"GET /api/v1/(customers|sites|manufacturers|device-models|firmware|groups)(/.*)?", "viewer"),
    (
        r"\w+ /api/v1/(customers|sites|manufacturers|device-models|firmware|groups)(/.*)?",
        "operator",
    ),
    (r"GET /api/v1/devices/export", "viewer"),
    (r"POST /api/v1/devices/import", "operator"),
    # Telemetry reads: the doors a consumer key may use.
    (r"GET /api/v1/devices/\{device_id\}/(telemetry|latest|events)", "read"),
    (r"GET /api/v1/telemetry/latest", "read"),
    (r"(POST|DELETE) /api/v1/streams(/\{group\})?", "operator"),
    (r"(GET|POST) /api/v1/streams/\{group\}(/messages|/offset)?", "read"),
    # Device credentials and provisioning records.
    (r"GET /api/v1/devices/\{device_id\}/(tokens|certificates|keys)(/.*)?", "viewer"),
    (r"\w+ /api/v1/devices/\{device_id\}/(tokens|certificates|keys)(/.*)?", "operator"),
    (r"GET /api/v1/(enrollments|attestation-hashes)(/.*)?", "viewer"),
    (r"\w+ /api/v1/(enrollments|attestation-hashes)(/.*)?", "operator"),
    (r"POST /api/v1/provisioning/bundles", "operator"),
    # Commands, schedules, jobs, state, presence: viewers read, operators act.
    (r"GET /api/v1/(devices/\{device_id\}/)?(commands|command-schedules|jobs)(/.*)?", "viewer"),
    (r"\w+ /api/v1/(devices/\{device_id\}/)?(commands|command-schedules|jobs)(/.*)?", "operator"),
    (r"GET /api/v1/devices/\{device_id\}/(state|states|presence)(/.*)?", "viewer"),
    (r"\w+ /api/v1/devices/\{device_id\}/(state|states)(/.*)?", "operator"),
    (r"GET /api/v1/fleet/summary", "viewer"),
    (r"GET /api/v1/agents", "viewer"),  # the devices whose roost-agent reports (issue 15)
    (r"GET /api/v1/audit", "operator"),
    # Consumers: viewers read, operators change.
    (r"GET /api/v1/consumers(/.*)?", "viewer"),
    (r"\w+ /api/v1/consumers(/.*)?", "operator"),
    # Notifications: viewers read channels, silences and the delivery log; operators change.
    (r"GET /api/v1/(notification-channels|silences|notifications)(/.*)?", "viewer"),
    (r"\w+ /api/v1/(notification-channels|silences)(/.*)?", "operator"),
    # Rules and alarms: viewers read, operators change rules and acknowledge or clear alarms.
    (r"GET /api/v1/(rules|alarms)(/.*)?", "viewer"),
    (r"\w+ /api/v1/(rules|alarms)(/.*)?", "operator"),
    # Reference tables (lookup data of rules): viewers read, operators replace and delete.
    (r"GET /api/v1/reference-tables(/.*)?", "viewer"),
    (r"\w+ /api/v1/reference-tables(/.*)?", "operator"),
    # Artifacts (issue 14): viewers read and download, operators upload, change and delete;
    # devices read and download their tenant's; the signing key is public; a signed URL decides
    # by itself (a bad one: 401 for all).
    (r"GET /api/v1/artifacts(/.*)?", "viewer"),
    (r"\w+ /api/v1/artifacts(/.*)?", "operator"),
    (r"GET /api/v1/ota/signing-key", "public"),
    # a device reaches only the artifacts a deployment sent it
    (r"GET /api/v1/ota/artifacts/\{artifact_id\}(/download)?", "device_own"),
    (r"GET /api/v1/ota/dl/\{token\}", "open"),
    # Deployments (issue 14): viewers read, operators deploy, cancel and resume.
    (r"GET /api/v1/deployments(/.*)?", "viewer"),
    (r"\w+ /api/v1/deployments(/.*)?", "operator"),
    (r"GET /api/v1/ota/actions/\{action_id\}", "device_own"),
    (r"GET /api/v1/ota/actions", "device"),
    # APT repositories (issue 14): viewers read channels, operators publish; apt's doors take a
    # device of the tenant (Basic from auth.conf, or Bearer); the signing key is public.
    (r"GET /api/v1/apt/key\.asc", "public"),
    (r"GET /api/v1/apt/channels(/.*)?", "viewer"),
    (r"\w+ /api/v1/apt/channels(/.*)?", "operator"),
    (r"GET /api/v1/apt/\{tenant\}/.*", "device"),
    # Diagnostics (issue 15): a device uploads its own archives; viewers list and download,
    # operators delete.
    (r"POST /api/v1/device/diagnostics", "device"),
    (r"GET /api/v1/devices/\{device_id\}/diagnostics(/.*)?", "viewer"),
    (r"DELETE /api/v1/devices/\{device_id\}/diagnostics/\{diag_id\}", "operator"),
    # Credential rotation (issue 15): operators ask a device to rotate; the device rotates and
    # retires its own credentials (another device's ids: 404, checked in tests/credentials).
    (r"POST /api/v1/devices/\{device_id\}/credentials/rotate-request", "operator"),
    (r"POST /api/v1/device/credentials/(rotate|retire)", "device"),
    # The devices themselves (inventory).
    (r"GET /api/v1/devices(/.*)?", "viewer"),
    (r"\w+ /api/v1/devices(/.*)?", "operator"),
    # Device doors.
    (r"POST /api/v1/(telemetry|events)", "device"),
    (r"GET /api/v1/device", "device"),  # who am I: the caller's own identity
    (r"POST /api/v1/device/commands/\{command_id\}/response", "device_own"),
    (r"GET /api/v1/device/command-schedules", "device"),  # the caller's own schedules
    (r"\w+ /api/v1/device/jobs/\{job_id\}(/.*)?", "device_own"),
    (r"GET /api/v1/device/states/\{name\}", "device_own"),  # reporting one creates it
    (r"\w+ /api/v1/device/.*", "device"),
    # hawkBit DDI (issue 14): a device's token on its own controller; another's: 404.
    (r"\w+ /\{tenant\}/controller/v1/\{controller_id\}(/.*)?", "device_own"),
]
LEVELS = {"public", "open", "user", "read", "device", "device_own", *RANK}


# Path parameters naming a record by a per-tenant name: another tenant's admin acts on a record
# of its own tenant with that name (a consumer group is even created by a first pull).
TENANT_LOCAL_NAMES = ("{group}", "{table}")


def level_of(method: str, path: str) -> tuple[str, int]:
    """The policy level of a route and its refusal for a low role; fails for unclassified routes."""
    for pattern, level, *refusal in POLICY:
        if re.fullmatch(pattern, f"{method} {path}"):
            assert level in LEVELS, level
            return level, refusal[0] if refusal else 403
    pytest.fail(
        f"{method} {path} is not in the access policy: classify it in POLICY "
        "(tests/http/test_access_matrix.py) so its callers are checked"
    )


def destructive(method: str, path: str) -> bool:
    """Routes that remove what later calls need (records, sessions): they run last."""
    return method == "DELETE" or path.endswith("/logout")


def expected(rule: tuple[str, int], caller: str, path: str) -> str | int | None:
    """The answer's class for a caller: "allowed", 401, 403 or 404 (None: same for all)."""
    level, refusal = rule
    if level == "public":
        return ALLOWED
    if level == "open":
        return None
    if level in ("device", "device_own"):
        if caller == "device":
            return ALLOWED
        if caller == "other_device":
            return 404 if level == "device_own" else ALLOWED
        return 403 if caller in RANK or caller == "other_admin" else 401
    if caller in ("anonymous", "device", "other_device"):
        return 401
    scoped = "{" in path
    if caller in ("consumer", "consumer_without"):
        if level != "read":
            return 403
        if caller == "consumer_without" and "{device_id}" in path:
            return 404
        return ALLOWED
    need = RANK["viewer"] if level in ("user", "read") else RANK[level]
    if caller == "superuser":
        return ALLOWED
    if caller == "other_admin":
        if need > RANK["admin"]:
            return refusal
        if any(name in path for name in TENANT_LOCAL_NAMES):
            return OWN_OR_404
        return 404 if scoped and level != "user" else ALLOWED
    return ALLOWED if RANK[caller] >= need else refusal


# -- request bodies from the OpenAPI schemas -----------------------------------------------------


def _resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = doc["components"]["schemas"][name]
    return schema


def sample(doc: dict[str, Any], schema: dict[str, Any], name: str = "") -> Any:
    """A minimal valid value of ``schema``: required fields only, unique strings."""
    schema = _resolve(doc, schema)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            options = [o for o in schema[key] if _resolve(doc, o).get("type") != "null"]
            return sample(doc, options[0], name)
    if "allOf" in schema:
        return sample(doc, schema["allOf"][0], name)
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        return {k: sample(doc, props[k], k) for k in schema.get("required", [])}
    if kind == "array":
        if schema.get("minItems"):
            return [sample(doc, schema.get("items", {}), name)]
        return []
    if kind == "integer":
        return max(int(schema.get("minimum", 1)), 1)
    if kind == "number":
        return float(schema.get("minimum", 1))
    if kind == "boolean":
        return True
    if schema.get("format") == "date-time":
        return "2031-01-01T00:00:00Z"
    if name == "role":
        return "viewer"
    text = f"m{secrets.token_hex(6)}-password"
    return text[: schema.get("maxLength", 64)]


# -- the world the calls act on ------------------------------------------------------------------


@dataclass
class World:
    """One server, a target tenant with one record of each kind, and a client per caller."""

    server: RoostServer
    doc: dict[str, Any]
    clients: dict[str, Api]
    tokens: dict[str, str | None]
    device_id: str
    other_device_id: str
    params: dict[str, str] = field(default_factory=dict)


def _created(resp: httpx.Response) -> dict[str, Any]:
    assert resp.status_code in (200, 201), resp.text
    body: dict[str, Any] = resp.json()
    return body


def _build(server: RoostServer) -> World:
    anon = Api(server.url)
    root = Api(server.url, anon.login("admin", ADMIN_PASSWORD))
    tenants: dict[str, str] = {}
    for label in ("target", "other", "spare"):
        tenants[label] = unique("acl")
        _created(
            root.post(
                f"{V1}/tenants",
                json={
                    "id": tenants[label],
                    "name": label,
                    "admin": {"username": f"{tenants[label]}-admin", "password": "pw-" * 6},
                },
            )
        )
    t = tenants["target"]
    admin = Api(server.url, anon.login(f"{t}-admin", "pw-" * 6))
    tokens: dict[str, str | None] = {
        "superuser": root.headers["Authorization"].split()[1],
        "admin": admin.headers["Authorization"].split()[1],
        "other_admin": anon.login(f"{tenants['other']}-admin", "pw-" * 6),
        "anonymous": None,
    }
    users: dict[str, int] = {}
    for role in ("operator", "viewer", "bystander"):
        body = _created(
            admin.post(
                f"{V1}/users",
                json={
                    "username": f"{t}-{role}",
                    "password": "pw-" * 6,
                    "role": "viewer" if role == "bystander" else role,
                },
            )
        )
        users[role] = body["id"]
        if role != "bystander":
            tokens[role] = anon.login(f"{t}-{role}", "pw-" * 6)
    params: dict[str, str] = {"tenant_id": tenants["spare"], "user_id": str(users["bystander"])}
    params["api_key_id"] = _created(admin.post(f"{V1}/api-keys", json={"name": "spare"}))["id"]

    device_id, other_device_id = unique("dev"), unique("dev")
    doc = anon.get("/openapi.json").json()
    for collection in ("customers", "sites", "manufacturers", "device-models", "firmware"):
        ident = unique(collection[:4])
        schema = doc["paths"][f"{V1}/{collection}"]["post"]["requestBody"]["content"]
        body: dict[str, Any] = sample(doc, schema["application/json"]["schema"])
        body["id"] = ident
        for reference, source in (
            ("manufacturer_id", "manufacturers"),
            ("model_id", "device-models"),
        ):
            if reference in body:
                body[reference] = params[source]
        resp = admin.post(f"{V1}/{collection}", json=body)
        assert resp.status_code == 201, (collection, resp.text)
        params[collection] = ident
    group = unique("grp")
    _created(admin.post(f"{V1}/groups", json={"id": group, "name": group}))
    params["groups"] = params["group_id"] = group
    for ident in (device_id, other_device_id):
        _created(admin.post(f"{V1}/devices", json={"id": ident, "group_ids": [group]}))
    params["device_id"] = device_id
    device_token = _created(admin.post(f"{V1}/devices/{device_id}/tokens", json={}))["token"]
    tokens["device"] = device_token
    tokens["other_device"] = _created(
        admin.post(f"{V1}/devices/{other_device_id}/tokens", json={})
    )["token"]
    params["token_id"] = _created(admin.post(f"{V1}/devices/{device_id}/tokens", json={}))["id"]
    device = Api(server.url, device_token)
    _created(device.post(f"{V1}/telemetry", json={"ts": 1_700_000_000, "values": {"t": 1.0}}))
    params["sensor_id"] = "t"
    params["component_id"] = _created(
        admin.post(f"{V1}/devices/{device_id}/components", json={"name": "board"})
    )["id"]
    resp = admin.patch(f"{V1}/devices/{device_id}/states/cfg", json={"desired": {"on": True}})
    assert resp.status_code == 200, resp.text
    params["name"] = "cfg"
    params["command_id"] = _created(
        admin.post(f"{V1}/devices/{device_id}/commands", json={"name": "reboot"})
    )["id"]
    params["schedule_id"] = _created(
        admin.post(
            f"{V1}/devices/{device_id}/command-schedules",
            json={"name": "light", "schedule_at": "2031-01-01T00:00:00Z"},
        )
    )["id"]
    params["job_id"] = _created(
        admin.post(
            f"{V1}/jobs", json={"document": {"op": "noop"}, "targets": {"devices": [device_id]}}
        )
    )["id"]
    params["group"] = unique("stream")
    _created(admin.post(f"{V1}/streams", json={"id": params["group"]}))
    params["consumer_id"] = _created(
        admin.post(f"{V1}/consumers", json={"name": "spare", "grants": []})
    )["id"]
    table = admin.put(f"{V1}/reference-tables/cfg", json={"key": "k", "rows": [{"k": "row-1"}]})
    params["table"], params["key"] = _created(table)["name"], "row-1"
    for label, grant in (("consumer", device_id), ("consumer_without", other_device_id)):
        tokens[label] = _created(
            admin.post(f"{V1}/consumers", json={"name": label, "grants": [{"devices": [grant]}]})
        )["key"]
    # Records of other engineers' routes (issue 5): placeholders when they cannot be made yet.
    resp = admin.post(f"{V1}/devices/{device_id}/certificates", json={})
    params["cert_id"] = resp.json().get("id", "missing") if resp.status_code < 300 else "missing"
    resp = admin.post(f"{V1}/devices/{device_id}/keys", json={})
    params["device_key_id"] = (
        resp.json().get("id", "missing") if resp.status_code < 300 else "missing"
    )
    resp = admin.post(f"{V1}/enrollments", json={"id": unique("enr")})
    params["enrollment_id"] = (
        resp.json().get("id", "missing") if resp.status_code < 300 else "missing"
    )
    resp = admin.post(f"{V1}/attestation-hashes", json={"hashes": ["ab" * 32]})
    hashes = admin.get(f"{V1}/attestation-hashes").json().get("items", [{}])
    params["hash_id"] = hashes[0].get("id", "missing") if hashes else "missing"

    # Notifications (issue 13): a channel nobody listens on, its test message, a silence.
    params["channel_id"] = _created(
        admin.post(
            f"{V1}/notification-channels",
            json={"name": "acl", "kind": "webhook", "config": {"url": "http://127.0.0.1:9/"}},
        )
    )["id"]
    params["notification_id"] = admin.post(
        f"{V1}/notification-channels/{params['channel_id']}/test"
    ).json()["notification_id"]
    params["silence_id"] = _created(
        admin.post(
            f"{V1}/silences",
            json={"matchers": {"type": "acl"}, "ends_at": "2031-01-01T00:00:00Z"},
        )
    )["id"]
    # Rules and alarms (issue 13): a rule on the device's sensor, and the alarm it raised.
    params["rule_id"] = _created(
        admin.post(
            f"{V1}/rules",
            json={
                "source": {"kind": "telemetry", "sensor": "t"},
                "condition": {"type": "threshold", "op": ">", "value": 100},
                "actions": [{"type": "alarm", "severity": "minor"}],
            },
        )
    )["id"]
    _created(device.post(f"{V1}/telemetry", json={"values": {"t": 500.0}}))
    params["alarm_id"] = str(eventually(lambda: admin.get(f"{V1}/alarms").json()["items"])[0]["id"])
    # hawkBit DDI (issue 14): the device's controller, an artifact deployed to it, its action.
    artifact = _created(
        admin.post(
            f"{V1}/artifacts",
            params={"type": "firmware", "version": "1.0", "filename": "acl.swu"},
            content=b"acl image",
            headers={"Content-Type": "application/octet-stream"},
        )
    )
    deployment = _created(
        admin.post(
            f"{V1}/deployments",
            json={"artifact_ids": [artifact["id"]], "targets": {"devices": [device_id]}},
        )
    )
    actions = admin.get(f"{V1}/deployments/{deployment['id']}/devices").json()["items"]
    params.update(
        tenant=t,
        controller_id=device_id,
        action_id=str(actions[0]["action_id"]),
        module_id=str(artifact["module_id"]),
        filename=artifact["filename"],
        artifact_id=artifact["id"],
        deployment_id=deployment["id"],
        token="not-a-signed-url",
    )
    # APT (issue 14): a channel for all devices (named as the state, {name}), a package in it.
    deb = _created(
        admin.post(
            f"{V1}/artifacts",
            params={"type": "deb", "filename": "acl_1.0_all.deb"},
            content=build_deb(server.data_dir, "acl", "1.0").read_bytes(),
            headers={"Content-Type": "application/octet-stream"},
        )
    )
    _created(admin.post(f"{V1}/apt/channels", json={"name": params["name"]}))
    _created(
        admin.post(f"{V1}/apt/channels/{params['name']}/packages", json={"artifact_id": deb["id"]})
    )
    params.update(
        channel=params["name"], path="InRelease", package_id=deb["id"], package_file=deb["filename"]
    )

    # Diagnostics (issue 15): an archive the device uploaded.
    resp = device.post(
        f"{V1}/device/diagnostics", content=b"acl", headers={"Content-Type": "application/gzip"}
    )
    params["diag_id"] = _created(resp)["id"]

    clients = {
        caller: Api(
            server.url,
            tokens[caller],
            headers={"X-Roost-Tenant": t} if caller == "superuser" else {},
        )
        for caller in CALLERS
    }
    clients["superuser_home"] = Api(server.url, tokens["superuser"])
    for client in (anon, root, admin, device):
        client.close()
    return World(server, doc, clients, tokens, device_id, other_device_id, params)


def path_for(world: World, path: str) -> str:
    """The route's path with the target tenant's records in it."""
    collection = path.split("/")[3] if path.startswith(V1) else ""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == "item_id":
            return world.params[collection]
        if name == "key_id":
            return world.params["device_key_id" if "/devices/" in path else "api_key_id"]
        return world.params[name]

    return re.sub(r"\{(\w+)\}", value, path)


def classify(resp: httpx.Response, concrete: str) -> str | int:
    """The class of an answer: 401, 403, 404 naming a record of the path, or "allowed"."""
    if resp.status_code in (401, 403):
        return resp.status_code
    if resp.status_code == 404:
        detail = resp.json().get("detail", "") if resp.content else ""
        named = [part for part in concrete.split("/")[4:] if part and part in detail]
        if named or concrete in ("/api/v1/device/commands", "/api/v1/device/jobs"):
            return 404
    assert resp.status_code < 500, f"{concrete}: {resp.status_code} {resp.text}"
    return ALLOWED


# Bodies the schema alone cannot make valid (rules across fields), so that a refusal for the
# record (404) is not hidden behind a refusal of the body.
BODIES: dict[tuple[str, str], Any] = {
    ("POST", f"{V1}/devices/{{device_id}}/command-schedules"): {
        "name": "light",
        "schedule_at": "2031-01-01T00:00:00Z",
    },
    ("POST", f"{V1}/device/jobs/{{job_id}}/update"): {"status": "IN_PROGRESS"},
}


def call(world: World, caller: str, method: str, path: str) -> tuple[str, httpx.Response]:
    """Make the request of ``caller`` on a route, with a body made from its schema."""
    concrete = path_for(world, path)
    operation = world.doc["paths"][path][method.lower()]
    body = None
    content = operation.get("requestBody", {}).get("content", {})
    if "application/json" in content:
        body = sample(world.doc, content["application/json"].get("schema", {}))
    params = {}
    for param in operation.get("parameters", []):
        if param.get("in") == "query" and param.get("required"):
            params[param["name"]] = sample(world.doc, param.get("schema", {}), param["name"])
    if path.endswith("/telemetry") and method == "GET":
        params["sensor"] = "t"
    if method == "GET" and path.endswith("/commands") and path.startswith(f"{V1}/device/"):
        params["wait"] = 0
    body = BODIES.get((method, path), body)
    client = world.clients[caller]
    if caller == "superuser" and level_of(method, path)[0] == "user":
        client = world.clients["superuser_home"]  # acting on itself, not inside the tenant
    resp = client.request(method, concrete, json=body, params=params)
    return concrete, resp


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    server = RoostServer(Path(tmp_path_factory.mktemp("acl")), mqtt_port=free_port()).start()
    try:
        built = _build(server)
        yield built
        for client in built.clients.values():
            client.close()
        assert not server.unhandled_errors(), server.unhandled_errors()
    finally:
        server.stop()


def _routes(world: World) -> list[tuple[str, str]]:
    return [
        (method.upper(), path)
        for path, operations in world.doc["paths"].items()
        for method in operations
        if method in ("get", "post", "put", "patch", "delete")
    ]


def test_every_route_answers_each_caller_as_the_policy_says(world: World) -> None:
    routes = _routes(world)
    assert len(routes) > 100  # the document really lists the API
    rules = {route: level_of(*route) for route in routes}  # unclassified routes fail here
    mismatches: list[str] = []

    def check(caller: str, method: str, path: str) -> None:
        want = expected(rules[(method, path)], caller, path)
        concrete, resp = call(world, caller, method, path)
        got = classify(resp, concrete)
        if want == OWN_OR_404 and got in (ALLOWED, 404):
            return
        if want is not None and got != want:
            mismatches.append(
                f"{caller:>16} {method} {concrete}: expected {want}, got {resp.status_code} "
                f"{resp.text[:160]}"
            )

    safe = [r for r in routes if not destructive(*r)]
    for method, path in safe:
        if rules[(method, path)][0] == "open":
            answers = {
                caller: call(world, caller, method, path)[1].status_code for caller in CALLERS
            }
            assert len(set(answers.values())) == 1, (
                f"{method} {path} depends on the caller: {answers}"
            )
            continue
        for caller in CALLERS:
            check(caller, method, path)

    # Destructive routes: children before parents, the device itself at the very end.
    ordered = sorted(
        (r for r in routes if destructive(*r)),
        key=lambda r: (r[1].endswith("/logout"), r[1] == f"{V1}/devices/{{device_id}}", -len(r[1])),
    )
    for method, path in ordered:
        wants = {c: expected(rules[(method, path)], c, path) for c in CALLERS}
        refused = [c for c in CALLERS if wants[c] != ALLOWED]
        allowed = [c for c in CALLERS if wants[c] == ALLOWED]
        for caller in refused:
            check(caller, method, path)
        if allowed:
            least = min(allowed, key=lambda c: RANK.get(c, 0))
            check(least, method, path)

    assert not mismatches, "answers that differ from the policy:\n" + "\n".join(mismatches)


def test_mqtt_topics_are_the_device_s_own(world: World) -> None:
    """Publish and subscribe: a device on its own topics is allowed; on another's, refused."""
    # Devices of their own: the matrix deletes its target device at its end.
    with Api(world.server.url) as anon, anon.as_token(anon.login("admin", ADMIN_PASSWORD)) as root:
        device, other_device = make_device(root), make_device(root)
    mine, theirs = device.id, other_device.id
    client = Client(world.server, mqtt.MQTTv5)
    try:
        assert client.connect("JWT", device.token) == 0
        for topic, want in [
            (f"devices/{mine}/telemetry", 0),
            (f"devices/{mine}/events", 0),
            (f"devices/{theirs}/telemetry", 0x87),
            (f"devices/{theirs}/events", 0x87),
            (f"devices/{theirs}/state/reported", 0x87),
        ]:
            payload = '{"t": 2.0}' if topic.endswith("telemetry") else '{"event": "boot"}'
            if topic.endswith("reported"):
                payload = '{"on": true}'
            reason = client.publish(topic, payload, 1)
            assert int(reason.value if hasattr(reason, "value") else reason) == want, topic
        subscriptions = [
            (f"devices/{mine}/commands/#", 1),
            (f"devices/{mine}/state/delta", 1),
            (f"devices/{theirs}/commands/#", 1),
            (f"devices/{theirs}/state/delta", 1),
            ("devices/+/commands/#", 1),
        ]
        _, mid = client.paho.subscribe(subscriptions)
        assert eventually(lambda: mid in client.subacks)
        codes = [int(code.value) for code in client.subacks[mid]]
        assert codes == [1, 1, 0x87, 0x87, 0x87], codes
        assert not client.disconnected.is_set()
    finally:
        client.close()
    # A consumer key, a user token and another device's token are not this device's credentials.
    for password in (world.tokens["consumer"], world.tokens["admin"], other_device.token):
        other = Client(world.server, mqtt.MQTTv5)
        try:
            reason = other.connect(mine, str(password))
            assert reason != 0 and reason.is_failure, password
        finally:
            other.close()
