"""Device state documents over HTTP, on both backends: users' reads and changes, devices' reads
and reports with their token, named states, history, and every refusal."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from tests.conftest import Tenant
from tests.support import Api, assert_problem, unique


def make_device(tenant: Tenant) -> tuple[str, Api]:
    """A new device of the tenant and an HTTP client holding its token."""
    device_id = unique("dev")
    resp = tenant.operator.post("/api/v1/devices", json={"id": device_id, "name": device_id})
    assert resp.status_code == 201, resp.text
    resp = tenant.operator.post(f"/api/v1/devices/{device_id}/tokens", json={})
    assert resp.status_code in (200, 201), resp.text
    return device_id, tenant.client(resp.json()["token"])


def state(api: Api, device_id: str, name: str | None = None) -> dict[str, Any]:
    path = f"/api/v1/devices/{device_id}/" + ("state" if name is None else f"states/{name}")
    resp = api.get(path)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def patch(api: Api, device_id: str, body: Any, name: str | None = None) -> httpx.Response:
    path = f"/api/v1/devices/{device_id}/" + ("state" if name is None else f"states/{name}")
    return api.patch(path, json=body)


def test_a_device_never_updated_has_an_empty_document_at_version_0(tenant: Tenant) -> None:
    device_id, device = make_device(tenant)
    empty = {"desired": {}, "reported": {}, "delta": {}, "version": 0, "updated_at": None}
    for body in (state(tenant.viewer, device_id), device.get("/api/v1/device/state").json()):
        assert {k: body[k] for k in empty} == empty
        assert body["name"] == "default"
        assert body["metadata"] == {"desired": {}, "reported": {}}


def test_desired_change_gives_a_delta_that_the_device_report_clears(tenant: Tenant) -> None:
    device_id, device = make_device(tenant)
    resp = patch(tenant.operator, device_id, {"desired": {"light": "on", "fan": {"speed": 2}}})
    assert resp.status_code == 200, resp.text
    doc = resp.json()
    assert doc["version"] == 1
    assert doc["delta"] == {"light": "on", "fan": {"speed": 2}}
    assert doc["updated_at"].endswith("Z")
    assert isinstance(doc["metadata"]["desired"]["light"]["timestamp"], int)

    # The device sees it with its own token, and reports (in the MQTT payload form).
    own = device.get("/api/v1/device/state")
    assert own.status_code == 200, own.text
    assert own.json()["delta"] == {"light": "on", "fan": {"speed": 2}}
    resp = device.post("/api/v1/device/state/reported", json={"light": "on", "fw": "1.2"})
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"name": "default", "version": 2, "delta": {"fan": {"speed": 2}}}
    resp = device.post("/api/v1/device/state/reported", json={"fan": {"speed": 2.0}})
    assert resp.json()["delta"] == {}

    doc = state(tenant.viewer, device_id)
    assert doc["version"] == 3
    assert doc["delta"] == {}
    assert doc["reported"] == {"light": "on", "fw": "1.2", "fan": {"speed": 2.0}}

    # A second change: only the new difference is outstanding.
    resp = patch(tenant.operator, device_id, {"desired": {"fan": {"speed": 3}}, "version": 3})
    assert resp.status_code == 200, resp.text
    assert resp.json()["delta"] == {"fan": {"speed": 3}}
    assert resp.json()["desired"] == {"light": "on", "fan": {"speed": 3}}


def test_a_stale_version_is_refused_with_409_and_the_document_is_unchanged(
    tenant: Tenant,
) -> None:
    device_id, _ = make_device(tenant)
    assert patch(tenant.operator, device_id, {"desired": {"a": 1}}).status_code == 200
    assert patch(tenant.operator, device_id, {"desired": {"a": 2}, "version": 1}).status_code == 200
    resp = patch(tenant.operator, device_id, {"desired": {"a": 3}, "version": 1})
    assert_problem(resp, 409, "stale")
    doc = state(tenant.viewer, device_id)
    assert (doc["desired"], doc["version"]) == ({"a": 2}, 2)


def test_null_deletes_a_field_a_nested_field_and_a_whole_section(tenant: Tenant) -> None:
    device_id, device = make_device(tenant)
    body = {"desired": {"a": 1, "b": {"c": 1, "d": 2}, "e": 5}, "reported": {"x": 1, "y": 2}}
    assert patch(tenant.operator, device_id, body).status_code == 200
    resp = patch(tenant.operator, device_id, {"desired": {"a": None, "b": {"c": None}}})
    assert resp.json()["desired"] == {"b": {"d": 2}, "e": 5}
    assert "a" not in resp.json()["metadata"]["desired"]
    resp = device.post("/api/v1/device/state/reported", json={"x": None})
    assert state(tenant.viewer, device_id)["reported"] == {"y": 2}
    resp = patch(tenant.operator, device_id, {"desired": None})
    assert resp.status_code == 200, resp.text
    assert (resp.json()["desired"], resp.json()["delta"]) == ({}, {})


def test_bad_documents_get_clear_errors(tenant: Tenant) -> None:
    device_id, device = make_device(tenant)
    op = tenant.operator
    assert_problem(patch(op, device_id, {"desired": {"big": "x" * 9000}}), 413, "limit")
    assert_problem(
        device.post("/api/v1/device/state/reported", json={"big": "x" * 9000}), 413, "limit"
    )
    deep: dict[str, Any] = {"v": 1}
    for _ in range(8):
        deep = {"n": deep}
    assert_problem(patch(op, device_id, {"desired": deep}), 422, "deeper")
    assert_problem(device.post("/api/v1/device/state/reported", json=deep), 422, "deeper")
    assert_problem(patch(op, device_id, {"desired": "on"}), 422)
    assert_problem(patch(op, device_id, {"desired": {"a": 1}, "version": "1"}), 422)
    assert_problem(patch(op, device_id, {"desired": {"a": 1}, "version": -1}), 422)
    assert_problem(patch(op, device_id, {"wanted": {"a": 1}}), 422)
    assert_problem(patch(op, device_id, {}), 422, "desired or reported")
    assert_problem(patch(op, device_id, {"desired": {"a": "x\u0000"}}), 422, "NUL")
    assert_problem(patch(op, device_id, {"desired": {"a": 10**30}}), 422)
    resp = op.patch(
        f"/api/v1/devices/{device_id}/state",
        content=b'{"desired": {',
        headers={"Content-Type": "application/json"},
    )
    assert_problem(resp, 400, "JSON")
    assert_problem(device.post("/api/v1/device/state/reported", content=b"{not json"), 400, "JSON")
    assert_problem(device.post("/api/v1/device/state/reported", json=[1, 2]), 422, "object")
    assert_problem(device.post("/api/v1/device/state/reported", json="on"), 422, "object")
    # Nothing of it was stored.
    doc = state(tenant.viewer, device_id)
    assert (doc["version"], doc["desired"], doc["reported"]) == (0, {}, {})


def test_unknown_device_other_tenant_roles_and_credentials(tenant: Tenant, admin: Api) -> None:
    device_id, _ = make_device(tenant)
    assert_problem(tenant.viewer.get("/api/v1/devices/no-such-device/state"), 404)
    assert_problem(patch(tenant.operator, "no-such-device", {"desired": {"a": 1}}), 404)
    # The superuser acts in its own tenant: another tenant's device does not exist there.
    assert_problem(admin.get(f"/api/v1/devices/{device_id}/state"), 404)
    assert_problem(patch(admin, device_id, {"desired": {"a": 1}}), 404)
    assert_problem(admin.get(f"/api/v1/devices/{device_id}/state/history"), 404)
    assert_problem(patch(tenant.viewer, device_id, {"desired": {"a": 1}}), 403, "operator")
    assert_problem(
        tenant.viewer.delete(f"/api/v1/devices/{device_id}/states/default"), 403, "operator"
    )
    assert_problem(tenant.anonymous.get(f"/api/v1/devices/{device_id}/state"), 401)
    assert_problem(tenant.anonymous.get("/api/v1/device/state"), 401)
    assert_problem(tenant.anonymous.post("/api/v1/device/state/reported", json={"a": 1}), 401)
    # A user's token is not a device token.
    assert tenant.operator.get("/api/v1/device/state").status_code in (401, 403)
    assert state(tenant.viewer, device_id)["version"] == 0


def test_operators_may_write_reported_and_both_sections_at_once(tenant: Tenant) -> None:
    device_id, _ = make_device(tenant)
    resp = patch(tenant.operator, device_id, {"desired": {"a": 1}, "reported": {"a": 0}})
    assert resp.status_code == 200, resp.text
    assert (resp.json()["version"], resp.json()["delta"]) == (1, {"a": 1})
    resp = patch(tenant.operator, device_id, {"reported": {"a": 1}})
    assert resp.json()["delta"] == {}


def test_named_states_are_listed_read_changed_and_deleted(tenant: Tenant) -> None:
    device_id, device = make_device(tenant)
    op = tenant.operator
    assert_problem(tenant.viewer.get(f"/api/v1/devices/{device_id}/states/lights"), 404)
    assert patch(op, device_id, {"desired": {"mode": "eco"}}).status_code == 200
    resp = patch(op, device_id, {"desired": {"level": 40}}, name="lights")
    assert resp.status_code == 200, resp.text
    assert (resp.json()["name"], resp.json()["version"]) == ("lights", 1)
    resp = device.post("/api/v1/device/states/lights/reported", json={"level": 40})
    assert resp.json() == {"name": "lights", "version": 2, "delta": {}}
    assert device.get("/api/v1/device/states/lights").json()["reported"] == {"level": 40}
    # Named states are separate documents; "default" names the default one.
    assert state(tenant.viewer, device_id)["desired"] == {"mode": "eco"}
    assert state(tenant.viewer, device_id, "default")["desired"] == {"mode": "eco"}
    listing = tenant.viewer.get(f"/api/v1/devices/{device_id}/states").json()
    assert [(i["name"], i["version"]) for i in listing["items"]] == [
        ("default", 1),
        ("lights", 2),
    ]
    assert (listing["total"], listing["offset"]) == (2, 0)

    assert_problem(op.delete(f"/api/v1/devices/{device_id}/states/lights?version=1"), 409)
    assert op.delete(f"/api/v1/devices/{device_id}/states/lights?version=2").status_code == 204
    assert_problem(tenant.viewer.get(f"/api/v1/devices/{device_id}/states/lights"), 404)
    assert_problem(op.delete(f"/api/v1/devices/{device_id}/states/lights"), 404)
    listing = tenant.viewer.get(f"/api/v1/devices/{device_id}/states").json()
    assert [i["name"] for i in listing["items"]] == ["default"]
    # Written again, it starts empty and its version keeps rising (3 was the delete).
    resp = patch(op, device_id, {"desired": {"level": 10}}, name="lights")
    assert (resp.json()["version"], resp.json()["reported"]) == (4, {})

    assert_problem(patch(op, device_id, {"desired": {"a": 1}}, name="bad name"), 422)
    assert_problem(patch(op, device_id, {"desired": {"a": 1}}, name="x" * 65), 422)


def test_history_keeps_every_version_with_who_and_what(tenant: Tenant) -> None:
    device_id, device = make_device(tenant)
    op = tenant.operator
    before = state(tenant.viewer, device_id)
    assert before["version"] == 0
    assert patch(op, device_id, {"desired": {"a": 1}}).status_code == 200
    assert device.post("/api/v1/device/state/reported", json={"a": 1}).status_code == 200
    assert patch(op, device_id, {"desired": {"b": 1}}, name="other").status_code == 200
    url = f"/api/v1/devices/{device_id}/state/history"

    resp = tenant.viewer.get(url)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["total"] == 3
    items = body["items"]
    assert [(i["name"], i["version"]) for i in items] == [
        ("other", 1),
        ("default", 2),
        ("default", 1),
    ]
    assert (items[2]["actor_type"], items[2]["actor"]) == ("user", tenant.usernames["operator"])
    assert (items[1]["actor_type"], items[1]["actor"]) == ("device", device_id)
    assert items[1]["update"] == {"reported": {"a": 1}}
    assert (items[1]["desired"], items[1]["reported"]) == ({"a": 1}, {"a": 1})
    assert all(i["at"].endswith("Z") and i["action"] == "update" for i in items)

    default = tenant.viewer.get(url, params={"name": "default", "limit": 1, "offset": 1}).json()
    assert (default["total"], [i["version"] for i in default["items"]]) == (2, [1])
    first_at = items[2]["at"]
    assert tenant.viewer.get(url, params={"to": first_at}).json()["total"] == 0
    assert tenant.viewer.get(url, params={"from": first_at}).json()["total"] == 3
    assert tenant.viewer.get(url, params={"from": "2000-01-01T00:00:00Z"}).json()["total"] == 3
    assert_problem(tenant.viewer.get(url, params={"from": "yesterday"}), 422)
    assert_problem(tenant.viewer.get(url, params={"bogus": "1"}), 422)

    # Users' changes are in the audit log too.
    audit = tenant.operator.get(
        "/api/v1/audit", params={"entity_type": "device_state", "entity_id": f"{device_id}/default"}
    )
    assert audit.status_code == 200, audit.text
    assert [e["after"]["version"] for e in audit.json()["items"]] == [1]


def test_concurrent_updates_never_lose_each_other(tenant: Tenant) -> None:
    device_id, device = make_device(tenant)
    writers = 8

    def write(n: int) -> httpx.Response:
        if n % 2:
            return device.post("/api/v1/device/state/reported", json={f"r{n}": n})
        return patch(tenant.operator, device_id, {"desired": {f"d{n}": n}})

    with ThreadPoolExecutor(writers) as pool:
        answers = list(pool.map(write, range(writers)))
    assert [r.status_code for r in answers] == [200] * writers
    assert sorted(r.json()["version"] for r in answers) == list(range(1, writers + 1))
    doc = state(tenant.viewer, device_id)
    assert doc["version"] == writers
    assert doc["desired"] == {f"d{n}": n for n in range(0, writers, 2)}
    assert doc["reported"] == {f"r{n}": n for n in range(1, writers, 2)}


def test_a_device_long_poll_answers_when_desired_changes(tenant: Tenant) -> None:
    device_id, device = make_device(tenant)
    answers: list[httpx.Response] = []
    polling = threading.Thread(
        target=lambda: answers.append(
            device.get("/api/v1/device/state", params={"wait": 30, "after_version": 0})
        )
    )
    polling.start()
    assert patch(tenant.operator, device_id, {"desired": {"light": "on"}}).status_code == 200
    polling.join(40)
    assert answers and answers[0].status_code == 200, answers
    assert (answers[0].json()["version"], answers[0].json()["delta"]) == (1, {"light": "on"})
    # Without a newer version the wait ends with the current document.
    resp = device.get("/api/v1/device/state", params={"wait": 1, "after_version": 1})
    assert resp.json()["version"] == 1
    assert_problem(device.get("/api/v1/device/state", params={"wait": 3600}), 422)


def test_deleting_the_device_deletes_its_states(tenant: Tenant) -> None:
    device_id, _ = make_device(tenant)
    assert patch(tenant.operator, device_id, {"desired": {"a": 1}}).status_code == 200
    assert tenant.operator.delete(f"/api/v1/devices/{device_id}").status_code == 204
    assert_problem(tenant.viewer.get(f"/api/v1/devices/{device_id}/state"), 404)
    resp = tenant.operator.post("/api/v1/devices", json={"id": device_id, "name": device_id})
    assert resp.status_code == 201, resp.text
    doc = state(tenant.viewer, device_id)
    assert (doc["version"], doc["desired"]) == (0, {})
    assert tenant.viewer.get(f"/api/v1/devices/{device_id}/state/history").json()["total"] == 0
