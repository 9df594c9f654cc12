"""Bad input of every kind gets the right status and an RFC 9457 problem, never a 500.

One table, one parametrised test. The cases only read, or try writes that must fail, so they share
one tenant seeded once per backend; where a refused write names an id, the test also checks that
nothing was stored under it. (The session fixture fails the run if the server logged a 500.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.support import Api, RoostServer, assert_problem, unique

API = "/api/v1"
MIB = 1024 * 1024
NOTHING = object()


@pytest.fixture(scope="module")
def world(server: RoostServer, admin: Api) -> Iterator[Api]:
    """An operator of a fresh tenant holding one record of each kind (shared: cases never write)."""
    tenant_id = unique("bad")
    password = f"pw-{tenant_id}"
    resp = admin.post(
        f"{API}/tenants",
        json={
            "id": tenant_id,
            "name": "Bad input",
            "admin": {"username": f"{tenant_id}-admin", "password": password},
        },
    )
    assert resp.status_code == 201, resp.text
    anon = Api(server.url)
    op = anon.as_token(anon.login(f"{tenant_id}-admin", password))
    for path, body in (
        ("customers", {"id": "cust-1", "name": "Acme"}),
        ("sites", {"id": "site-1", "name": "Paris", "customer_id": "cust-1"}),
        ("manufacturers", {"id": "mfr-1", "name": "Bosch"}),
        ("device-models", {"id": "model-1", "reference": "K1", "commercial_name": "Kiosk"}),
        ("firmware", {"id": "fw-1", "version": "1.0"}),
        ("groups", {"id": "grp-1", "name": "Static"}),
        ("groups", {"id": "grp-dyn", "name": "Dynamic", "filter": {"site_id": "site-1"}}),
        ("devices", {"id": "dev-1", "site_id": "site-1", "group_ids": ["grp-1"]}),
        ("devices/dev-1/sensors", {"id": "s1", "type": "double"}),
        ("devices/dev-1/components", {"id": "c1", "name": "Board"}),
    ):
        resp = op.post(f"{API}/{path}", json=body)
        assert resp.status_code == 201, resp.text
    yield op
    op.close()
    anon.close()


@dataclass(frozen=True)
class Case:
    """One bad request and the answer it must get."""

    name: str
    method: str
    path: str
    status: int
    json: Any = NOTHING
    content: bytes | Callable[[], Iterator[bytes]] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] | list[tuple[str, Any]] | None = None
    detail: str | None = None
    # A path that must still answer 404 afterwards (the refused write stored nothing).
    absent: str | None = None
    # Statuses accepted besides ``status``, when backends may differ (see the case).
    also: tuple[int, ...] = ()

    def send(self, client: Api) -> Any:
        kwargs: dict[str, Any] = {"headers": self.headers, "params": self.params}
        if self.json is not NOTHING:
            kwargs["json"] = self.json
        elif self.content is not None:
            kwargs["content"] = self.content() if callable(self.content) else self.content
        return client.request(self.method, API + self.path, **kwargs)


def raw(body: bytes, content_type: str = "application/json") -> dict[str, Any]:
    """Case arguments for a body sent byte for byte."""
    return {"content": body, "headers": {"content-type": content_type}}


def chunked(size: int) -> Callable[[], Iterator[bytes]]:
    """A body of ``size`` bytes sent without Content-Length (chunked transfer encoding)."""

    def chunks() -> Iterator[bytes]:
        yield b'{"name": "'
        sent = 0
        while sent < size:
            yield b"x" * 65536
            sent += 65536
        yield b'"}'

    return chunks


def post(path: str, status: int, body: Any = NOTHING, **kw: Any) -> dict[str, Any]:
    return {"method": "POST", "path": path, "status": status, "json": body, **kw}


BIG = b'{"name": "' + b"x" * (5 * MIB) + b'"}'
DEEP = 100_000

CASES = [
    # -- malformed JSON and bytes -----------------------------------------------------------
    Case("truncated json", "POST", "/devices", 400, **raw(b'{"name": '), detail="json"),
    Case("unquoted key", "POST", "/devices", 400, **raw(b'{name: "x"}'), detail="json"),
    Case("single quotes", "POST", "/customers", 400, **raw(b"{'name': 'x'}")),
    Case("trailing comma", "POST", "/customers", 400, **raw(b'{"name": "x",}')),
    Case("trailing garbage", "POST", "/customers", 400, **raw(b'{"name": "x"} {}')),
    Case("invalid utf-8", "POST", "/customers", 400, **raw(b'{"name": "\xff\xfe"}')),
    Case("invalid utf-8 in key", "POST", "/devices", 400, **raw(b'{"\xc3\x28": "x"}')),
    Case("lone surrogate escape", "POST", "/customers", 422, **raw(b'{"name": "\\ud800"}')),
    Case("deep array", "POST", "/devices", 400, **raw(b"[" * DEEP + b"]" * DEEP)),
    Case(
        "deep object in tags",
        "PATCH",
        "/devices/dev-1",
        400,
        **raw(b'{"tags": {"a": ' + b'{"b": ' * DEEP + b"1" + b"}" * DEEP + b"}}"),
    ),
    Case(
        "nested but parseable",
        "PATCH",
        "/devices/dev-1",
        422,
        **raw(b'{"tags": {"a": ' + b"[" * 200 + b"]" * 200 + b"}}"),
    ),
    Case("empty body", "POST", "/customers", 422, **raw(b"")),
    Case("json null body", "POST", "/customers", 422, **raw(b"null")),
    # -- JSON of the wrong shape or type ----------------------------------------------------
    Case(**post("/devices", 422, [{"id": "x"}]), name="array instead of object"),
    Case(**post("/customers", 422, "Acme"), name="string instead of object"),
    Case(**post("/customers", 422, 42), name="number instead of object"),
    Case(**post("/customers", 422, {"name": 42}), name="int for a string", detail="name"),
    Case(**post("/customers", 422, {"name": ["Acme"]}), name="array for a string"),
    Case(
        **post(
            "/device-models",
            422,
            {"reference": "r", "commercial_name": "c", "heartbeat_interval_s": "60"},
        ),
        name="string for an int",
    ),
    Case(
        **post(
            "/device-models",
            422,
            {"reference": "r", "commercial_name": "c", "heartbeat_interval_s": 60.5},
        ),
        name="float for an int",
    ),
    Case(
        **post(
            "/device-models",
            422,
            {"reference": "r", "commercial_name": "c", "heartbeat_interval_s": True},
        ),
        name="bool for an int",
    ),
    Case(
        **post(
            "/device-models",
            422,
            {"reference": "r", "commercial_name": "c", "auto_create_sensors": "yes"},
        ),
        name="string for a bool",
    ),
    Case(**post("/sites", 422, {"name": "s", "latitude": "48.8"}), name="string for a float"),
    Case(**post("/devices", 422, {"tags": ["env"]}), name="array for tags"),
    Case(**post("/devices", 422, {"tags": {"env": 1}}), name="int tag value"),
    Case(**post("/devices", 422, {"tags": {"env": None}}), name="null tag value on create"),
    Case(**post("/devices", 422, {"group_ids": "grp-1"}), name="string for a list"),
    Case(
        **post("/groups/grp-1/devices", 422, {"device_ids": "dev-1"}), name="string for device_ids"
    ),
    Case(**post("/groups/grp-1/devices", 422, {"device_ids": []}), name="no device_ids"),
    Case(**post("/groups", 422, {"name": "g", "filter": "site-1"}), name="string for a filter"),
    Case(**post("/groups", 422, {"name": "g", "filter": {}}), name="empty filter", detail="filter"),
    Case(
        **post("/firmware", 422, {"version": "1", "released_at": "yesterday"}), name="bad datetime"
    ),
    Case(
        **post("/firmware", 422, {"version": "1", "released_at": "2026-01-01T10:00:00"}),
        name="datetime without offset",
    ),
    Case(
        **post("/devices/dev-1/sensors", 422, {"id": "x", "type": "float"}),
        name="unknown sensor type",
    ),
    Case(**post("/devices/dev-1/sensors", 422, {"id": "x", "type": 1}), name="int sensor type"),
    Case(
        **post("/devices/dev-1/components", 422, {"name": "x", "parent_id": 5}), name="int parent"
    ),
    Case(
        **post("/devices/dev-1/components", 422, {"name": "x", "mac_address": "00:11:22:33:44"}),
        name="bad mac",
        detail="mac",
    ),
    # -- NaN, infinities and huge numbers ---------------------------------------------------
    Case("NaN for a string", "POST", "/customers", 422, **raw(b'{"name": NaN}')),
    Case("NaN latitude", "POST", "/sites", 422, **raw(b'{"name": "s", "latitude": NaN}')),
    Case("Infinity latitude", "POST", "/sites", 422, **raw(b'{"name": "s", "latitude": Infinity}')),
    Case(
        "-Infinity longitude",
        "POST",
        "/sites",
        422,
        **raw(b'{"name": "s", "longitude": -Infinity}'),
    ),
    Case("1e400 latitude", "POST", "/sites", 422, **raw(b'{"name": "s", "latitude": 1e400}')),
    Case(
        "500-digit latitude",
        "POST",
        "/sites",
        422,
        **raw(b'{"name": "s", "latitude": ' + b"9" * 500 + b"}"),
    ),
    Case(
        "NaN interval",
        "POST",
        "/device-models",
        422,
        **raw(b'{"reference": "r", "commercial_name": "c", "heartbeat_interval_s": NaN}'),
    ),
    Case(
        **post(
            "/device-models",
            422,
            {"reference": "r", "commercial_name": "c", "heartbeat_interval_s": 10**30},
        ),
        name="huge int",
    ),
    Case(
        **post(
            "/device-models",
            422,
            {"reference": "r", "commercial_name": "c", "heartbeat_interval_s": 2**31},
        ),
        name="int over 32 bits",
    ),
    Case(
        **post(
            "/device-models",
            422,
            {"reference": "r", "commercial_name": "c", "heartbeat_interval_s": 0},
        ),
        name="zero interval",
    ),
    Case(**post("/customers", 422, {"id": 10**30, "name": "x"}), name="huge int id"),
    # -- unknown fields ---------------------------------------------------------------------
    Case(
        **post("/devices", 422, {"id": "u1", "colour": "red"}),
        name="unknown device field",
        detail="colour",
        absent="/devices/u1",
    ),
    Case(
        **post("/sites", 422, {"id": "u1", "name": "s", "tenant_id": "other"}),
        name="tenant_id field",
        absent="/sites/u1",
    ),
    Case(
        **post("/devices/dev-1/sensors", 422, {"id": "u1", "type": "long", "value": 1}),
        name="unknown sensor field",
        absent="/devices/dev-1/sensors/u1",
    ),
    Case(
        **post("/groups", 422, {"id": "u1", "name": "g", "filter": {"colour": "red"}}),
        name="unknown filter key",
        absent="/groups/u1",
    ),
    Case(
        "unknown patch field",
        "PATCH",
        "/devices/dev-1",
        422,
        json={"created_at": "2020-01-01T00:00:00Z"},
    ),
    Case("patch the id", "PATCH", "/customers/cust-1", 422, json={"id": "cust-2"}),
    # -- empty, oversize and NUL strings ----------------------------------------------------
    Case(**post("/sites", 422, {"name": ""}), name="empty required name"),
    Case(**post("/sites", 422, {"name": "x" * 201}), name="oversize name"),
    Case(
        **post("/devices", 422, {"id": "u2", "notes": "x" * 100_001}),
        name="oversize notes",
        absent="/devices/u2",
    ),
    Case(**post("/devices", 422, {"id": ""}), name="empty id"),
    Case(
        **post("/devices", 422, {"id": "u3", "tags": {"k": "v" * 257}}),
        name="oversize tag value",
        absent="/devices/u3",
    ),
    Case(
        **post("/devices/dev-1/sensors", 422, {"id": "x", "type": "long", "unit": "u" * 33}),
        name="oversize unit",
    ),
    Case(
        **post("/customers", 422, {"id": "u4", "name": "a\u0000b"}),
        name="NUL in a string",
        absent="/customers/u4",
    ),
    Case(
        **post("/devices", 422, {"id": "u5", "tags": {"k": "\u0000"}}),
        name="NUL in a tag",
        absent="/devices/u5",
    ),
    Case("NUL in q", "GET", "/devices", 422, params={"q": "a\u0000"}),
    Case("NUL in a filter", "GET", "/sites", 422, params={"city": "\u0000"}),
    # SQLite can look the id up and find nothing (404); PostgreSQL cannot compare text with NUL
    # and the server refuses the value (422). Either way a problem, never a 500.
    Case("NUL in a path id", "GET", "/devices/a%00b", 404, also=(422,)),
    Case("NUL in a path id (patch)", "PATCH", "/sites/a%00b", 404, json={"name": "x"}, also=(422,)),
    Case("oversize q", "GET", "/devices", 422, params={"q": "x" * 201}),
    # -- invalid ids ------------------------------------------------------------------------
    *[
        Case(**post(path, 422, {"id": bad, **body}), name=f"bad id {label} ({kind})", detail="id")
        for label, bad in (
            ("space", "a b"),
            ("slash", "a/b"),
            ("hash", "a#b"),
            ("plus", "a+b"),
            ("percent", "a%b"),
            ("leading dash", "-ab"),
            ("accent", "café"),
            ("newline", "ab\n"),
        )
        for kind, path, body in (
            ("device", "/devices", {}),
            ("site", "/sites", {"name": "s"}),
            ("sensor", "/devices/dev-1/sensors", {"type": "long"}),
        )
    ],
    Case(**post("/devices", 422, {"id": "x" * 200}), name="200-char id"),
    Case(**post("/groups", 422, {"id": "x" * 129, "name": "g"}), name="129-char id"),
    Case(
        **post("/devices/dev-1/components", 422, {"id": "a b", "name": "x"}),
        name="bad component id",
    ),
    # -- unknown references -----------------------------------------------------------------
    Case(
        **post("/devices", 422, {"id": "u6", "site_id": "ghost"}),
        name="unknown site",
        detail="ghost",
        absent="/devices/u6",
    ),
    Case(
        **post("/devices", 422, {"id": "u7", "model_id": "site-1"}),
        name="model id of a site",
        absent="/devices/u7",
    ),
    Case(
        **post("/devices", 422, {"id": "u8", "group_ids": ["ghost"]}),
        name="unknown group",
        absent="/devices/u8",
    ),
    Case(
        **post("/sites", 422, {"id": "u9", "name": "s", "customer_id": "ghost"}),
        name="unknown customer",
        absent="/sites/u9",
    ),
    Case(
        **post(
            "/device-models",
            422,
            {"reference": "r", "commercial_name": "c", "manufacturer_id": "x"},
        ),
        name="unknown manufacturer",
    ),
    Case(**post("/firmware", 422, {"version": "1", "model_id": "ghost"}), name="unknown model"),
    Case(
        **post("/groups/grp-1/devices", 422, {"device_ids": ["dev-1", "ghost"]}),
        name="unknown member",
        detail="ghost",
    ),
    Case(
        **post("/devices/dev-1/components", 422, {"name": "x", "parent_id": "ghost"}),
        name="unknown parent",
    ),
    Case(
        "unknown reference on patch", "PATCH", "/devices/dev-1", 422, json={"firmware_id": "ghost"}
    ),
    # -- duplicates and conflicts -----------------------------------------------------------
    Case(
        **post("/devices", 409, {"id": "dev-1"}), name="duplicate device", detail="already exists"
    ),
    Case(**post("/sites", 409, {"id": "site-1", "name": "again"}), name="duplicate site"),
    Case(**post("/customers", 409, {"id": "cust-1", "name": "again"}), name="duplicate customer"),
    Case(**post("/groups", 409, {"id": "grp-1", "name": "again"}), name="duplicate group"),
    Case(
        **post("/devices/dev-1/sensors", 409, {"id": "s1", "type": "long"}), name="duplicate sensor"
    ),
    Case(
        **post("/devices/dev-1/components", 409, {"id": "c1", "name": "x"}),
        name="duplicate component",
    ),
    Case(
        **post("/groups/grp-dyn/devices", 409, {"device_ids": ["dev-1"]}),
        name="static member of dynamic",
    ),
    Case(
        "filter on a static group",
        "PATCH",
        "/groups/grp-1",
        409,
        json={"filter": {"site_id": "site-1"}},
    ),
    Case("delete a used site", "DELETE", "/sites/site-1", 409, detail="devices"),
    Case("delete a used customer", "DELETE", "/customers/cust-1", 409, detail="sites"),
    # -- unknown resources and routes, wrong methods ----------------------------------------
    Case("unknown device", "GET", "/devices/ghost", 404, detail="ghost"),
    Case("unknown device patch", "PATCH", "/devices/ghost", 404, json={"name": "x"}),
    Case("unknown device delete", "DELETE", "/devices/ghost", 404),
    Case("unknown device sensors", "GET", "/devices/ghost/sensors", 404),
    Case("unknown sensor", "GET", "/devices/dev-1/sensors/ghost", 404),
    Case("unknown component", "DELETE", "/devices/dev-1/components/ghost", 404),
    Case("unknown group members", "GET", "/groups/ghost/devices", 404),
    Case("unknown history", "GET", "/devices/ghost/history", 404),
    Case("unknown firmware", "GET", "/firmware/ghost", 404),
    Case("id with a space", "GET", "/customers/a%20b", 404),
    Case("unknown route", "GET", "/nope", 404, detail="no route"),
    Case("unknown sub-route", "GET", "/devices/dev-1/nope", 404),
    Case("too deep a route", "GET", "/devices/dev-1/sensors/s1/x", 404),
    Case("PUT on a collection", "PUT", "/devices", 405, json={}),
    Case("DELETE on a collection", "DELETE", "/sites", 405),
    Case("POST on an item", "POST", "/devices/dev-1", 405, json={}),
    Case("PUT on an item", "PUT", "/groups/grp-1", 405, json={"name": "x"}),
    # -- bodies over the 4 MiB limit --------------------------------------------------------
    Case("5 MiB with Content-Length", "POST", "/customers", 413, **raw(BIG), detail="limit"),
    Case(
        "5 MiB chunked",
        "POST",
        "/customers",
        413,
        content=chunked(5 * MIB),
        headers={"content-type": "application/json"},
        detail="limit",
    ),
    Case("5 MiB patch", "PATCH", "/devices/dev-1", 413, **raw(BIG)),
    Case(
        "3 MiB is under the limit",
        "POST",
        "/customers",
        422,
        **raw(b'{"name": "' + b"x" * (3 * MIB) + b'"}'),
    ),
    # -- site rules ---------------------------------------------------------------------------
    *[
        Case(
            **post("/sites", 422, {"name": "s", field_name: value}),
            name=f"bad {field_name} {value!r}",
            detail=field_name[:3],
        )
        for field_name, value in (
            ("timezone", "Mars/Olympus"),
            ("timezone", "Europe/Paris "),
            ("timezone", "../../etc/passwd"),
            ("timezone", ""),
            ("latitude", 90.5),
            ("latitude", -91),
            ("longitude", 180.01),
            ("longitude", -1000),
            ("country", "FRA"),
            ("country", "F1"),
            ("country", "ÉÉ"),
            ("country", ""),
        )
    ],
    Case("bad timezone on patch", "PATCH", "/sites/site-1", 422, json={"timezone": "Nowhere/Town"}),
    # -- paging and sorting -----------------------------------------------------------------
    *[
        Case(f"bad paging {params}", "GET", path, 422, params=params)
        for path in ("/devices", "/sites", "/audit", "/devices/dev-1/sensors")
        for params in (
            {"limit": 0},
            {"limit": 100_000},
            {"limit": -1},
            {"limit": "ten"},
            {"limit": 1.5},
            {"offset": -1},
            {"offset": "x"},
            {"offset": 10**30},
            {"offset": 2**63},
            {"sort": "colour"},
            {"sort": "-"},
            {"sort": "--id"},
            {"sort": "x" * 65},
            {"colour": "red"},
        )
    ],
    Case(
        "unknown history parameter",
        "GET",
        "/devices/dev-1/history",
        422,
        params={"entity_type": "x"},
    ),
    Case("bad tag filter", "GET", "/devices", 422, params=[("tag", "env:prod"), ("tag", ":x")]),
    Case("naive since", "GET", "/audit", 422, params={"since": "2026-01-01T00:00:00"}),
    # -- content types ------------------------------------------------------------------------
    Case(
        "text/plain body",
        "POST",
        "/customers",
        415,
        **raw(b'{"name": "x"}', "text/plain"),
        detail="application/json",
    ),
    Case("form body", "POST", "/devices", 415, **raw(b"id=x", "application/x-www-form-urlencoded")),
    Case("xml body", "PATCH", "/devices/dev-1", 415, **raw(b"<name>x</name>", "application/xml")),
    # Without a Content-Type the body is not taken for JSON (FastAPI's strict content type, which
    # keeps cross-site form posts out), and the answer says what to send.
    Case(
        "no content type",
        "POST",
        "/customers",
        415,
        content=b'{"name": "x"}',
        detail="Content-Type",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_gets_a_problem_never_a_500(world: Api, case: Case) -> None:
    resp = case.send(world)
    if case.also and resp.status_code in case.also:
        assert_problem(resp, resp.status_code)
    else:
        assert_problem(resp, case.status, case.detail)
    if case.absent:
        assert_problem(world.get(API + case.absent), 404)


def test_fixture_tenant_is_untouched(world: Api) -> None:
    """After the whole table the seeded records are as they were."""
    device = world.get(f"{API}/devices/dev-1").json()
    assert (device["site_id"], device["tags"], device["groups"], device["name"]) == (
        "site-1",
        {},
        ["grp-1", "grp-dyn"],
        "",
    )
    assert world.get(f"{API}/groups/grp-1").json()["filter"] is None
    assert [s["id"] for s in world.get(f"{API}/devices/dev-1/sensors").json()["items"]] == ["s1"]


def test_json_routes_accept_json_content_types(world: Api) -> None:
    """The counterpart of the 415 cases: JSON with a charset parameter or a +json type is JSON."""
    for content_type in ("application/json; charset=utf-8", "application/merge-patch+json"):
        customer_id = unique("ok")
        body = b'{"name": "x", "id": "%s"}' % customer_id.encode()
        resp = world.post(f"{API}/customers", content=body, headers={"content-type": content_type})
        assert resp.status_code == 201, (content_type, resp.text)
        assert world.delete(f"{API}/customers/{customer_id}").status_code == 204
