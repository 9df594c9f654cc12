"""Bulk import and export of devices through the running server, on every backend."""

from __future__ import annotations

import csv
import io
from typing import Any

import orjson

from roost.core.ids import SLUG_RULE
from tests.conftest import Tenant
from tests.support import Api, assert_problem, unique

IMPORT = "/api/v1/devices/import"
EXPORT = "/api/v1/devices/export"
CSV = {"Content-Type": "text/csv"}
JSON = {"Content-Type": "application/json"}


def _inventory(api: Api) -> None:
    """A site, a model, a static group and a dynamic group to refer to."""
    for path, body in (
        ("/api/v1/sites", {"id": "paris", "name": "Paris"}),
        ("/api/v1/device-models", {"id": "c2", "reference": "C2", "commercial_name": "Counter"}),
        ("/api/v1/groups", {"id": "kiosks", "name": "Kiosks"}),
        ("/api/v1/groups", {"id": "in-paris", "name": "Paris", "filter": {"site_id": "paris"}}),
    ):
        resp = api.post(path, json=body)
        assert resp.status_code == 201, resp.text


def _device_ids(api: Api, **params: Any) -> list[str]:
    resp = api.get("/api/v1/devices", params={"limit": 1000, "sort": "id", **params})
    assert resp.status_code == 200, resp.text
    return [d["id"] for d in resp.json()["items"]]


BATCH = (
    "id,name,site_id,model_id,group_ids,tag.color,tag.floor\n"
    "k-1,Kiosk 1,paris,c2,kiosks,blue,1\n"
    "k-2,Kiosk 2,paris,c2,,red,\n"
    "k-3,Kiosk 3,nowhere,c2,kiosks,green,2\n"
    "k 4,Kiosk 4,paris,,,,\n"
    "k-5,Kiosk 5,,,in-paris;kiosks,,\n"
)


def test_a_bad_row_refuses_the_whole_csv_file(tenant: Tenant) -> None:
    _inventory(tenant.operator)
    resp = tenant.operator.post(IMPORT, content=BATCH, headers=CSV)
    body = assert_problem(resp, 422, "3 of 5 row(s) are invalid, so nothing was imported")
    assert body["errors"] == [
        {"row": 3, "id": "k-3", "field": "site_id", "message": "no site 'nowhere'"},
        {
            "row": 4,
            "id": "k 4",
            "field": "id",
            "message": f"device id 'k 4' is not valid: {SLUG_RULE}",
        },
        {
            "row": 5,
            "id": "k-5",
            "field": "group_ids",
            "message": "group 'in-paris' is dynamic: its members are chosen by its filter",
        },
    ]
    assert _device_ids(tenant.viewer) == []
    audit = tenant.admin.get("/api/v1/audit", params={"entity_type": "device"}).json()
    assert audit["total"] == 0


def test_atomic_false_imports_the_good_rows_and_reports_the_bad(tenant: Tenant) -> None:
    _inventory(tenant.operator)
    resp = tenant.operator.post(IMPORT, params={"atomic": "false"}, content=BATCH, headers=CSV)
    assert resp.status_code == 200, resp.text
    report = resp.json()
    assert (report["created"], report["updated"], report["skipped"]) == (2, 0, 0)
    assert report["dry_run"] is False
    assert [(e["row"], e["field"]) for e in report["errors"]] == [
        (3, "site_id"),
        (4, "id"),
        (5, "group_ids"),
    ]
    assert _device_ids(tenant.viewer) == ["k-1", "k-2"]
    k1 = tenant.viewer.get("/api/v1/devices/k-1").json()
    assert (k1["name"], k1["site_id"], k1["model_id"]) == ("Kiosk 1", "paris", "c2")
    assert k1["tags"] == {"color": "blue", "floor": "1"}
    assert k1["groups"] == ["in-paris", "kiosks"]  # static member, and matched by the filter
    k2 = tenant.viewer.get("/api/v1/devices/k-2").json()
    assert k2["tags"] == {"color": "red"}  # an empty cell is no tag
    history = tenant.operator.get("/api/v1/devices/k-1/history").json()
    assert [e["action"] for e in history["items"]] == ["create"]


def test_dry_run_reports_and_writes_nothing(tenant: Tenant) -> None:
    _inventory(tenant.operator)
    good = "id,name,site_id\nd-1,One,paris\nd-2,Two,paris\n"
    resp = tenant.operator.post(IMPORT, params={"dry_run": "true"}, content=good, headers=CSV)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {
        "created": 2,
        "updated": 0,
        "unchanged": 0,
        "skipped": 0,
        "errors": [],
        "dry_run": True,
    }
    assert _device_ids(tenant.viewer) == []

    resp = tenant.operator.post(IMPORT, params={"dry_run": "true"}, content=BATCH, headers=CSV)
    body = assert_problem(resp, 422, "dry run")
    assert [e["row"] for e in body["errors"]] == [3, 4, 5]
    resp = tenant.operator.post(
        IMPORT, params={"dry_run": "true", "atomic": "false"}, content=BATCH, headers=CSV
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["created"] == 2 and len(resp.json()["errors"]) == 3
    assert _device_ids(tenant.viewer) == []


def test_json_import_with_sensors_and_components(tenant: Tenant) -> None:
    _inventory(tenant.operator)
    devices = [
        {
            "id": "robot-1",
            "name": "Robot",
            "site_id": "paris",
            "tags": {"line": "A"},
            "group_ids": ["kiosks"],
            "sensors": [
                {"id": "temperature", "type": "double", "unit": "°C", "path": "body"},
                {"id": "4", "type": "long", "path": "wheels/front/left"},
            ],
            # A child before its parent: the import orders them.
            "components": [
                {
                    "id": "wheel-fl",
                    "name": "Front left wheel",
                    "parent_id": "chassis",
                    "serial_number": "W-1",
                    "mac_address": "AA-BB-CC-DD-EE-01",
                },
                {"id": "chassis", "name": "Chassis", "kind": "frame"},
            ],
        },
        {"id": "robot-2", "name": "Robot 2"},
    ]
    resp = tenant.operator.post(IMPORT, content=orjson.dumps(devices), headers=JSON)
    assert resp.status_code == 200, resp.text
    assert resp.json()["created"] == 2
    sensors = tenant.viewer.get("/api/v1/devices/robot-1/sensors", params={"sort": "id"}).json()
    assert [(s["id"], s["type"], s["path"], s["unit"]) for s in sensors["items"]] == [
        ("4", "long", "wheels/front/left", ""),
        ("temperature", "double", "body", "°C"),
    ]
    parts = tenant.viewer.get("/api/v1/devices/robot-1/components", params={"sort": "id"}).json()
    assert [(c["id"], c["parent_id"], c["mac_address"]) for c in parts["items"]] == [
        ("chassis", None, None),
        ("wheel-fl", "chassis", "aa:bb:cc:dd:ee:01"),
    ]
    device = tenant.viewer.get("/api/v1/devices/robot-1").json()
    assert device["groups"] == ["in-paris", "kiosks"]
    # The batch writes the same history as one-by-one creation: the device and each part.
    history = tenant.operator.get("/api/v1/devices/robot-1/history", params={"sort": "id"})
    entries = [(e["action"], e["entity_type"], e["entity_id"]) for e in history.json()["items"]]
    assert entries == [
        ("create", "device", "robot-1"),
        ("create", "sensor", "robot-1/temperature"),
        ("create", "sensor", "robot-1/4"),
        ("create", "component", "robot-1/chassis"),
        ("create", "component", "robot-1/wheel-fl"),
    ]
    snapshot = history.json()["items"][0]["after"]
    for name in ("name", "site_id", "tags", "groups", "status"):
        assert snapshot[name] == device[name], name
    assert history.json()["items"][0]["actor"] == tenant.usernames["operator"]


def test_json_rows_with_bad_sensors_or_components_are_named(tenant: Tenant) -> None:
    devices = [
        {"id": "ok-1"},
        {"id": "bad-1", "sensors": [{"id": "t", "type": "float"}]},
        {
            "id": "bad-2",
            "components": [
                {"id": "c", "name": "C", "mac_address": "nope"},
                {"id": "d", "name": "D", "parent_id": "missing"},
            ],
        },
        {"id": "bad-3", "colour": "red", "tags": {"a:b": "x"}},
    ]
    resp = tenant.operator.post(IMPORT, content=orjson.dumps(devices), headers=JSON)
    body = assert_problem(resp, 422)
    faults = [(e["row"], e["id"], e.get("field")) for e in body["errors"]]
    assert faults == [
        (2, "bad-1", "sensors[0].type"),
        (3, "bad-2", "components[0].mac_address"),
        (3, "bad-2", "components[1].parent_id"),
        (4, "bad-3", None),
        (4, "bad-3", "tags"),
    ]
    assert "colour" in body["errors"][3]["message"]
    assert "no parent component 'missing'" in body["errors"][2]["message"]
    assert _device_ids(tenant.viewer) == []


def test_nul_characters_are_refused_on_every_backend(tenant: Tenant) -> None:
    devices = [{"id": "ok-1"}, {"id": "nul-1", "name": "bad\u0000name"}, {"id": "nul-2\u0000"}]
    body = assert_problem(
        tenant.operator.post(IMPORT, content=orjson.dumps(devices), headers=JSON), 422
    )
    assert [(e["row"], e["id"], e["message"]) for e in body["errors"]] == [
        (2, "nul-1", "text must not contain NUL (\\u0000) characters"),
        (3, "nul-2\\u0000", "text must not contain NUL (\\u0000) characters"),
    ]
    assert _device_ids(tenant.viewer) == []
    assert_problem(tenant.viewer.get(EXPORT, params={"q": "a\x00"}), 422)


def test_on_existing_error_skip_and_update(tenant: Tenant) -> None:
    _inventory(tenant.operator)
    resp = tenant.operator.post(
        "/api/v1/devices",
        json={
            "id": "k-1",
            "name": "Old name",
            "site_id": "paris",
            "notes": "keep me",
            "tags": {"color": "blue", "floor": "1"},
        },
    )
    assert resp.status_code == 201, resp.text
    before = tenant.viewer.get("/api/v1/devices/k-1").json()
    file = (
        "id,name,model_id,group_ids,tag.color,tag.floor\n"
        "k-1,New name,c2,kiosks,green,\n"
        "k-9,Nine,,,,\n"
    )

    body = assert_problem(tenant.operator.post(IMPORT, content=file, headers=CSV), 422)
    assert body["errors"] == [{
        "row": 1, "id": "k-1", "field": "id",
        "message": "device 'k-1' already exists "
        "(import with on_existing=skip or update to keep or change it)",
    }]  # fmt: skip
    assert _device_ids(tenant.viewer) == ["k-1"]  # k-9 was not imported either

    resp = tenant.operator.post(IMPORT, params={"on_existing": "skip"}, content=file, headers=CSV)
    assert resp.status_code == 200, resp.text
    assert (resp.json()["created"], resp.json()["skipped"]) == (1, 1)
    assert tenant.viewer.get("/api/v1/devices/k-1").json() == before

    resp = tenant.operator.post(IMPORT, params={"on_existing": "update"}, content=file, headers=CSV)
    assert resp.status_code == 200, resp.text
    report = resp.json()
    assert (report["created"], report["updated"], report["unchanged"]) == (0, 1, 1)
    after = tenant.viewer.get("/api/v1/devices/k-1").json()
    assert (after["name"], after["model_id"], after["site_id"]) == ("New name", "c2", "paris")
    assert after["notes"] == "keep me"  # not a column of the file: untouched
    assert after["tags"] == {"color": "green"}  # an empty cell removes the tag
    assert after["groups"] == ["in-paris", "kiosks"]

    # The same file again changes nothing, and writes no history.
    resp = tenant.operator.post(IMPORT, params={"on_existing": "update"}, content=file, headers=CSV)
    assert resp.json()["unchanged"] == 2 and resp.json()["updated"] == 0
    history = tenant.operator.get("/api/v1/devices/k-1/history", params={"sort": "id"}).json()
    assert [e["action"] for e in history["items"]] == ["create", "update", "add"]


def test_unsupported_and_undecodable_files(tenant: Tenant) -> None:
    op = tenant.operator
    assert_problem(op.post(IMPORT, content="id\nx\n", headers={"Content-Type": "text/plain"}), 415)
    assert_problem(op.post(IMPORT, content=b"id\nx\n"), 415)
    assert_problem(op.post(IMPORT, content=b"\xff\xfeid\n", headers=CSV), 400, "UTF-8")
    assert_problem(op.post(IMPORT, content="{not json", headers=JSON), 400, "not valid JSON")
    assert_problem(op.post(IMPORT, content='{"id": "x"}', headers=JSON), 400, "array")
    body = assert_problem(op.post(IMPORT, content='[{"id": "x"}, 5]', headers=JSON), 400)
    assert body["errors"] == [{"row": 2, "message": "expected a device object, got a number"}]
    assert_problem(op.post(IMPORT, content="name\nx\n", headers=CSV), 400, "no id column")
    assert_problem(op.post(IMPORT, content="id,colour\nx,red\n", headers=CSV), 400, "colour")
    body = assert_problem(op.post(IMPORT, content="id,name\nx,X,extra\n", headers=CSV), 400)
    assert body["errors"][0]["row"] == 1
    # ?format= overrides a generic content type.
    resp = op.post(
        IMPORT,
        params={"format": "csv"},
        content="id\nplain-1\n",
        headers={"Content-Type": "text/plain"},
    )
    assert resp.status_code == 200, resp.text
    assert _device_ids(tenant.viewer) == ["plain-1"]
    assert_problem(
        op.post(IMPORT, params={"on_existing": "merge"}, content="id\nx\n", headers=CSV), 422
    )


def _fleet(api: Api) -> list[dict[str, Any]]:
    fleet = [
        {
            "id": f"d-{i:02d}",
            "name": f"Device {i}",
            "site_id": "paris" if i % 2 else None,
            "model_id": "c2",
            "notes": "line 1\nline 2, with a comma" if i == 3 else "",
            "tags": {"color": ["red", "blue"][i % 2], **({"odd": "yes"} if i % 2 else {})},
            "group_ids": ["kiosks"] if i < 3 else [],
            "sensors": [{"id": "t", "type": "double", "unit": "°C"}] if i == 1 else [],
            "components": [
                {"id": "board", "name": "Board", "serial_number": "SN-1"},
                {
                    "id": "radio",
                    "name": "Radio",
                    "parent_id": "board",
                    "mac_address": "00:1a:2b:3c:4d:5e",
                },
            ]
            if i == 1
            else [],
        }
        for i in range(1, 8)
    ]
    resp = api.post(IMPORT, content=orjson.dumps(fleet), headers=JSON)
    assert resp.status_code == 200 and resp.json()["created"] == 7, resp.text
    return fleet


def test_export_csv(tenant: Tenant) -> None:
    _inventory(tenant.operator)
    _fleet(tenant.operator)
    resp = tenant.viewer.get(EXPORT, params={"format": "csv"})
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/csv")
    assert resp.headers["content-disposition"] == "attachment; filename=devices.csv"
    rows = list(csv.DictReader(io.StringIO(resp.text)))
    assert list(rows[0]) == [
        "id",
        "name",
        "description",
        "model_id",
        "site_id",
        "firmware_id",
        "customer_id",
        "notes",
        "group_ids",
        "tag.color",
        "tag.odd",
    ]
    assert [r["id"] for r in rows] == [f"d-{i:02d}" for i in range(1, 8)]
    assert rows[0]["group_ids"] == "kiosks"  # the dynamic group is not exported
    assert (rows[1]["site_id"], rows[1]["tag.odd"], rows[1]["tag.color"]) == ("", "", "red")
    assert rows[2]["notes"] == "line 1\nline 2, with a comma"

    paris = tenant.viewer.get(EXPORT, params={"site_id": "paris", "tag": "color:blue"})
    assert [r["id"] for r in csv.DictReader(io.StringIO(paris.text))] == [
        "d-01",
        "d-03",
        "d-05",
        "d-07",
    ]
    assert_problem(tenant.viewer.get(EXPORT, params={"group": "nope"}), 404)
    assert_problem(tenant.viewer.get(EXPORT, params={"format": "xml"}), 422)

    # The CSV export imports back, as an unchanged update.
    resp = tenant.operator.post(
        IMPORT, params={"on_existing": "update"}, content=resp.text, headers=CSV
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["unchanged"] == 7 and not resp.json()["errors"]


def test_json_export_reimports_into_another_tenant(tenant: Tenant, admin: Api) -> None:
    _inventory(tenant.operator)
    _fleet(tenant.operator)
    resp = tenant.viewer.get(EXPORT, params={"format": "json"})
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-disposition"] == "attachment; filename=devices.json"
    exported = resp.json()
    assert [d["id"] for d in exported] == [f"d-{i:02d}" for i in range(1, 8)]
    assert exported[0]["sensors"] == [
        {"id": "t", "type": "double", "path": "", "name": "", "unit": "°C", "description": ""}
    ]
    assert [c["id"] for c in exported[0]["components"]] == ["board", "radio"]

    other = unique("t2")
    resp = admin.post("/api/v1/tenants", json={"id": other, "name": "Other"})
    assert resp.status_code == 201, resp.text
    with Api(
        str(admin.base_url),
        headers={"Authorization": admin.headers["Authorization"], "X-Roost-Tenant": other},
    ) as there:
        _inventory(there)
        resp = there.post(IMPORT, content=orjson.dumps(exported), headers=JSON)
        assert resp.status_code == 200, resp.text
        assert resp.json()["created"] == 7
        assert there.get(EXPORT, params={"format": "json"}).json() == exported
        radio = there.get("/api/v1/devices/d-01/components/radio").json()
        assert (radio["parent_id"], radio["mac_address"]) == ("board", "00:1a:2b:3c:4d:5e")
    # Nothing leaked into the first tenant.
    assert len(_device_ids(tenant.viewer)) == 7


def test_roles(tenant: Tenant) -> None:
    assert_problem(tenant.viewer.post(IMPORT, content="id\nv-1\n", headers=CSV), 403)
    assert_problem(tenant.anonymous.post(IMPORT, content="id\nv-1\n", headers=CSV), 401)
    assert_problem(tenant.anonymous.get(EXPORT), 401)
    resp = tenant.viewer.get(EXPORT)
    assert resp.status_code == 200 and resp.text.startswith("id,name,"), resp.text
    assert tenant.admin.post(IMPORT, content="id\na-1\n", headers=CSV).status_code == 200
    assert _device_ids(tenant.viewer) == ["a-1"]


def test_openapi_declares_the_import_body(tenant: Tenant) -> None:
    doc = tenant.anonymous.get("/openapi.json").json()
    post = doc["paths"][IMPORT]["post"]
    content = post["requestBody"]["content"]
    assert set(content) == {"text/csv", "application/json"}
    item = content["application/json"]["schema"]["items"]
    assert {"id", "tags", "group_ids", "sensors", "components"} <= set(item["properties"])
    refs = orjson.dumps(item).decode()
    for name in ("SensorIn", "ComponentIn"):
        assert f"#/components/schemas/{name}" in refs and name in doc["components"]["schemas"]
    assert {"400", "415", "422"} <= set(post["responses"])
    assert set(doc["paths"][EXPORT]["get"]["responses"]["200"]["content"]) == {
        "text/csv",
        "application/json",
    }
