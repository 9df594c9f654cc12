"""Devices over HTTP: CRUD, listing, tags, static and dynamic groups, components, sensors."""

from __future__ import annotations

from typing import Any

from tests.conftest import Tenant
from tests.support import Api, assert_problem

API = "/api/v1"
DEVICES = f"{API}/devices"
GROUPS = f"{API}/groups"


def created(client: Api, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST a record and answer it, asserting 201."""
    resp = client.post(path, json=body)
    assert resp.status_code == 201, resp.text
    record: dict[str, Any] = resp.json()
    return record


def ids_of(client: Api, url: str, **params: Any) -> list[str]:
    """The ids a list answers for ``params`` (one large page), checking ``total``."""
    resp = client.get(url, params={"limit": 1000, **params})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["total"] == len(body["items"])
    return [item["id"] for item in body["items"]]


def patched(client: Api, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """PATCH a record and answer it, asserting 200."""
    resp = client.patch(path, json=body)
    assert resp.status_code == 200, resp.text
    record: dict[str, Any] = resp.json()
    return record


def seed_inventory(op: Api) -> None:
    """Two sites, two models, a firmware and a customer."""
    for sid in ("paris", "lyon"):
        created(op, f"{API}/sites", {"id": sid, "name": sid})
    for mid in ("k1", "k2"):
        created(op, f"{API}/device-models", {"id": mid, "reference": mid, "commercial_name": mid})
    created(op, f"{API}/firmware", {"id": "fw1", "version": "1.0", "model_id": "k1"})
    created(op, f"{API}/customers", {"id": "acme", "name": "Acme"})


def test_device_crud_listing_and_cascading_delete(tenant: Tenant) -> None:
    op = tenant.operator
    seed_inventory(op)
    body = {
        "id": "kiosk-1",
        "name": "Kiosk 1",
        "description": "by the door",
        "model_id": "k1",
        "site_id": "paris",
        "firmware_id": "fw1",
        "customer_id": "acme",
        "notes": "fragile",
        "tags": {"env": "prod", "floor": "2"},
    }
    device = created(op, DEVICES, body)
    for name, value in body.items():
        assert device[name] == value, name
    assert device["groups"] == [] and device["status"] == "never_seen"
    assert device["last_seen_at"] is None and device["created_at"] == device["updated_at"]
    assert op.get(f"{DEVICES}/kiosk-1").json() == device
    assert tenant.viewer.get(f"{DEVICES}/kiosk-1").json() == device

    assert_problem(op.post(DEVICES, json={"id": "kiosk-1"}), 409, "already exists")
    bare = created(op, DEVICES, {})
    assert bare["id"] and bare["name"] == "" and bare["tags"] == {} and bare["site_id"] is None
    assert op.get(f"{DEVICES}/{bare['id']}").json() == bare
    assert_problem(tenant.viewer.post(DEVICES, json={}), 403)

    # PATCH changes only what it names; null clears text to "" and references to null.
    after = patched(op, f"{DEVICES}/kiosk-1", {"name": "Kiosk one", "site_id": "lyon"})
    assert (after["name"], after["site_id"]) == ("Kiosk one", "lyon")
    assert {k: after[k] for k in ("description", "model_id", "notes", "tags", "created_at")} == {
        k: device[k] for k in ("description", "model_id", "notes", "tags", "created_at")
    }
    assert after["updated_at"] >= device["updated_at"]
    cleared = patched(
        op,
        f"{DEVICES}/kiosk-1",
        {
            "name": None,
            "description": None,
            "notes": None,
            "site_id": None,
            "model_id": None,
            "firmware_id": None,
            "customer_id": None,
        },
    )
    assert (cleared["name"], cleared["description"], cleared["notes"]) == ("", "", "")
    assert [cleared[k] for k in ("site_id", "model_id", "firmware_id", "customer_id")] == [None] * 4
    assert cleared["tags"] == device["tags"]
    assert_problem(op.patch(f"{DEVICES}/kiosk-1", json={"id": "other"}), 422)
    assert_problem(op.patch(f"{DEVICES}/kiosk-1", json={"colour": "red"}), 422)
    assert_problem(op.patch(f"{DEVICES}/ghost", json={"name": "x"}), 404)
    assert_problem(tenant.viewer.patch(f"{DEVICES}/kiosk-1", json={"name": "x"}), 403)

    # Listing: pages partition the set when sorted by a shared value; every filter filters.
    op.delete(f"{DEVICES}/{bare['id']}")
    fleet = [
        ("d0", "alpha", "paris", "k1", "fw1", "acme"),
        ("d1", "bravo", "paris", "k2", None, None),
        ("d2", "alpha", "lyon", "k1", "fw1", None),
        ("d3", "bravo", "lyon", None, None, "acme"),
        ("d4", "alpha", None, "k2", None, None),
        ("d5", "charlie", "paris", "k1", None, "acme"),
    ]
    records = [
        created(
            op,
            DEVICES,
            {"id": i, "name": n, "site_id": s, "model_id": m, "firmware_id": f, "customer_id": c},
        )
        for i, n, s, m, f, c in fleet
    ]
    records.append(op.get(f"{DEVICES}/kiosk-1").json())
    all_ids = sorted(r["id"] for r in records)
    assert ids_of(op, DEVICES) == all_ids
    by_name = [r["id"] for r in sorted(records, key=lambda r: (r["name"], r["id"]))]
    assert ids_of(op, DEVICES, sort="name") == by_name
    assert ids_of(op, DEVICES, sort="-name") == by_name[::-1]
    for sort, expected in (("name", by_name), ("-name", by_name[::-1])):
        seen = []
        for offset in range(0, len(records), 2):
            page = op.get(DEVICES, params={"sort": sort, "limit": 2, "offset": offset}).json()
            assert (page["total"], page["limit"], page["offset"]) == (len(records), 2, offset)
            seen += [item["id"] for item in page["items"]]
        assert seen == expected
    for sort in (
        "site_id",
        "-model_id",
        "created_at",
        "-updated_at",
        "last_seen_at",
        "firmware_id",
    ):
        assert sorted(ids_of(op, DEVICES, sort=sort)) == all_ids
    for name in ("site_id", "model_id", "firmware_id", "customer_id"):
        for value in {r[name] for r in records if r[name]}:
            expected = [r["id"] for r in sorted(records, key=lambda r: r["id"]) if r[name] == value]
            assert ids_of(op, DEVICES, **{name: value}) == expected, (name, value)
    assert ids_of(op, DEVICES, site_id="paris", model_id="k1") == ["d0", "d5"]
    assert ids_of(
        op, DEVICES, site_id="paris", model_id="k1", customer_id="acme", firmware_id="fw1"
    ) == ["d0"]
    assert ids_of(op, DEVICES, site_id="nowhere") == []
    page = op.get(DEVICES, params={"site_id": "paris", "limit": 1}).json()
    assert page["total"] == 3 and len(page["items"]) == 1

    # q searches id, name, description and notes, case-insensitively and literally.
    patched(op, f"{DEVICES}/d1", {"description": "Top 10% sellers", "notes": "see_also"})
    patched(op, f"{DEVICES}/d2", {"description": "top 10 sellers", "notes": "seeXalso"})
    assert ids_of(op, DEVICES, q="10%") == ["d1"]
    assert ids_of(op, DEVICES, q="TOP 10") == ["d1", "d2"]
    assert ids_of(op, DEVICES, q="see_") == ["d1"]
    assert ids_of(op, DEVICES, q="KIOSK-") == ["kiosk-1"]
    assert ids_of(op, DEVICES, q="CHARL") == ["d5"]

    assert_problem(op.get(DEVICES, params={"sort": "colour"}), 422, "sort")
    assert_problem(op.get(DEVICES, params={"sort": "tenant_id"}), 422, "sort")
    assert_problem(op.get(DEVICES, params={"site": "paris"}), 422, "site")
    assert_problem(op.get(DEVICES, params={"limit": 1001}), 422, "limit")

    # Deleting a device takes its sensors, components, tags and memberships with it.
    created(op, GROUPS, {"id": "g", "name": "g"})
    created(op, GROUPS, {"id": "dyn", "name": "dyn", "filter": {"tags": {"env": "prod"}}})
    assert op.post(f"{GROUPS}/g/devices", json={"device_ids": ["kiosk-1", "d0"]}).status_code == 200
    created(op, f"{DEVICES}/kiosk-1/sensors", {"id": "temp", "type": "double"})
    created(op, f"{DEVICES}/kiosk-1/components", {"id": "board", "name": "Board"})
    created(
        op, f"{DEVICES}/kiosk-1/components", {"id": "chip", "name": "Chip", "parent_id": "board"}
    )
    assert op.get(f"{DEVICES}/kiosk-1").json()["groups"] == ["dyn", "g"]
    assert_problem(tenant.viewer.delete(f"{DEVICES}/kiosk-1"), 403)
    resp = op.delete(f"{DEVICES}/kiosk-1")
    assert resp.status_code == 204 and resp.content == b""
    assert_problem(op.get(f"{DEVICES}/kiosk-1"), 404)
    assert_problem(op.delete(f"{DEVICES}/kiosk-1"), 404)
    assert_problem(op.get(f"{DEVICES}/kiosk-1/sensors"), 404)
    assert_problem(op.get(f"{DEVICES}/kiosk-1/components/board"), 404)
    assert ids_of(op, f"{GROUPS}/g/devices") == ["d0"]
    assert ids_of(op, DEVICES, tag="env") == []
    # The same id registered again starts empty.
    again = created(op, DEVICES, {"id": "kiosk-1"})
    assert again["tags"] == {} and again["groups"] == []
    assert ids_of(op, f"{DEVICES}/kiosk-1/sensors") == []
    assert ids_of(op, f"{DEVICES}/kiosk-1/components") == []
    assert ids_of(op, f"{GROUPS}/g/devices") == ["d0"]


def test_tags_merge_and_filter(tenant: Tenant) -> None:
    op = tenant.operator
    created(
        op, DEVICES, {"id": "a", "tags": {"env": "prod", "zone": "north", "url": "http://x:80"}}
    )
    created(op, DEVICES, {"id": "b", "tags": {"env": "prod", "zone": "south"}})
    created(op, DEVICES, {"id": "c", "tags": {"env": "dev"}})
    created(op, DEVICES, {"id": "d"})

    assert ids_of(op, DEVICES, tag="env:prod") == ["a", "b"]
    assert ids_of(op, DEVICES, tag="env") == ["a", "b", "c"]
    assert ids_of(op, DEVICES, tag="zone") == ["a", "b"]
    assert ids_of(op, DEVICES, tag=["env:prod", "zone:south"]) == ["b"]
    assert ids_of(op, DEVICES, tag=["env", "zone:north"]) == ["a"]
    assert ids_of(op, DEVICES, tag=["env:dev", "zone"]) == []
    assert ids_of(op, DEVICES, tag="url:http://x:80") == ["a"]
    assert ids_of(op, DEVICES, tag="env:") == []
    assert ids_of(op, DEVICES, tag="missing") == []
    assert_problem(op.get(DEVICES, params={"tag": ""}), 422, "tag")
    assert_problem(op.get(DEVICES, params={"tag": ":prod"}), 422, "tag")

    # PATCH merges: new keys are added, given keys replaced, null removes; others stay.
    after = patched(op, f"{DEVICES}/a", {"tags": {"zone": "east", "rack": "7", "url": None}})
    assert after["tags"] == {"env": "prod", "zone": "east", "rack": "7"}
    assert op.get(f"{DEVICES}/a").json()["tags"] == after["tags"]
    assert patched(op, f"{DEVICES}/a", {"name": "renamed"})["tags"] == after["tags"]
    assert patched(op, f"{DEVICES}/a", {"tags": {}})["tags"] == after["tags"]
    assert patched(op, f"{DEVICES}/a", {"tags": {"nope": None}})["tags"] == after["tags"]
    assert ids_of(op, DEVICES, tag="zone:east") == ["a"]
    assert ids_of(op, DEVICES, tag="url") == []
    assert patched(op, f"{DEVICES}/c", {"tags": {"env": None}})["tags"] == {}
    assert ids_of(op, DEVICES, tag="env") == ["a", "b"]

    # Bad tags are refused and change nothing.
    for tags in (
        {"a:b": "x"},
        {"": "x"},
        {"k" * 129: "x"},
        {"k": "v" * 257},
        {f"t{i}": "x" for i in range(65)},
        {"k": 1},
        {"k": ["x"]},
        ["k"],
    ):
        assert_problem(op.post(DEVICES, json={"id": "bad", "tags": tags}), 422)
        assert_problem(op.patch(f"{DEVICES}/b", json={"tags": tags}), 422)
    assert_problem(op.get(f"{DEVICES}/bad"), 404)
    assert op.get(f"{DEVICES}/b").json()["tags"] == {"env": "prod", "zone": "south"}
    # The limit of 64 tags also holds for the merged result.
    patched(op, f"{DEVICES}/d", {"tags": {f"t{i}": "x" for i in range(60)}})
    assert_problem(
        op.patch(f"{DEVICES}/d", json={"tags": {f"u{i}": "x" for i in range(5)}}), 422, "64"
    )
    assert len(op.get(f"{DEVICES}/d").json()["tags"]) == 60


def test_static_groups(tenant: Tenant) -> None:
    op = tenant.operator
    for device_id in ("d1", "d2", "d3"):
        created(op, DEVICES, {"id": device_id})
    created(op, GROUPS, {"id": "lobby", "name": "Lobby"})
    created(op, GROUPS, {"id": "east", "name": "East"})

    resp = op.post(f"{GROUPS}/lobby/devices", json={"device_ids": ["d1", "d2", "d1"]})
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"added": ["d1", "d2"]}
    # Adding again is harmless and reports only what is new.
    assert op.post(f"{GROUPS}/lobby/devices", json={"device_ids": ["d2", "d3"]}).json() == {
        "added": ["d3"]
    }
    assert ids_of(op, f"{GROUPS}/lobby/devices") == ["d1", "d2", "d3"]
    assert op.post(f"{GROUPS}/east/devices", json={"device_ids": ["d1"]}).json() == {
        "added": ["d1"]
    }
    assert op.get(f"{DEVICES}/d1").json()["groups"] == ["east", "lobby"]
    assert op.get(f"{DEVICES}/d2").json()["groups"] == ["lobby"]
    assert ids_of(op, DEVICES, group="east") == ["d1"]
    assert ids_of(op, DEVICES, group="lobby") == ["d1", "d2", "d3"]
    # The group listing takes the device filters and paging too.
    created(op, DEVICES, {"id": "d4", "tags": {"x": "1"}})
    op.patch(f"{DEVICES}/d2", json={"tags": {"x": "1"}})
    assert ids_of(op, f"{GROUPS}/lobby/devices", tag="x") == ["d2"]
    assert ids_of(op, DEVICES, group="lobby", tag="x:1") == ["d2"]
    page = op.get(f"{GROUPS}/lobby/devices", params={"limit": 2, "offset": 2, "sort": "-id"}).json()
    assert page["total"] == 3 and [d["id"] for d in page["items"]] == ["d1"]
    assert_problem(op.get(f"{GROUPS}/lobby/devices", params={"colour": "x"}), 422)

    # Unknown devices: 422 listing each of them, and nobody is added.
    problem = assert_problem(
        op.post(f"{GROUPS}/east/devices", json={"device_ids": ["d2", "ghost", "phantom"]}),
        422,
        "ghost",
    )
    assert "phantom" in problem["detail"]
    assert sorted(e["value"] for e in problem["errors"]) == ["ghost", "phantom"]
    assert ids_of(op, f"{GROUPS}/east/devices") == ["d1"]
    assert_problem(op.post(f"{GROUPS}/east/devices", json={"device_ids": []}), 422)
    assert_problem(op.post(f"{GROUPS}/east/devices", json={"device_ids": "d1"}), 422)
    assert_problem(op.post(f"{GROUPS}/nope/devices", json={"device_ids": ["d1"]}), 404)
    assert_problem(op.get(f"{GROUPS}/nope/devices"), 404)
    assert_problem(tenant.viewer.post(f"{GROUPS}/east/devices", json={"device_ids": ["d2"]}), 403)

    # Removing a member; removing a non-member or from an unknown group is 404.
    assert op.delete(f"{GROUPS}/lobby/devices/d1").status_code == 204
    assert ids_of(op, f"{GROUPS}/lobby/devices") == ["d2", "d3"]
    assert op.get(f"{DEVICES}/d1").json()["groups"] == ["east"]
    assert_problem(op.delete(f"{GROUPS}/lobby/devices/d1"), 404)
    assert_problem(op.delete(f"{GROUPS}/nope/devices/d2"), 404)
    assert_problem(op.delete(f"{GROUPS}/lobby/devices/ghost"), 404)
    assert_problem(tenant.viewer.delete(f"{GROUPS}/lobby/devices/d2"), 403)

    # A device may join static groups when it is created; unknown groups are refused (422).
    assert created(op, DEVICES, {"id": "d5", "group_ids": ["east", "lobby"]})["groups"] == [
        "east",
        "lobby",
    ]
    problem = assert_problem(
        op.post(DEVICES, json={"id": "d6", "group_ids": ["east", "ghost"]}), 422, "ghost"
    )
    assert problem["errors"][0]["field"] == "group_ids"
    assert_problem(op.get(f"{DEVICES}/d6"), 404)

    # A group with static members cannot take a filter until they are gone.
    assert_problem(op.patch(f"{GROUPS}/east", json={"filter": {"tags": {"x": "1"}}}), 409, "static")
    assert op.get(f"{GROUPS}/east").json()["filter"] is None
    for device_id in ("d1", "d5"):
        assert op.delete(f"{GROUPS}/east/devices/{device_id}").status_code == 204
    assert patched(op, f"{GROUPS}/east", {"filter": {"tags": {"x": "1"}}})["filter"] == {
        "tags": {"x": "1"}
    }
    assert ids_of(op, f"{GROUPS}/east/devices") == ["d2", "d4"]

    # Deleting a group ends its memberships.
    assert op.delete(f"{GROUPS}/lobby").status_code == 204
    assert op.get(f"{DEVICES}/d2").json()["groups"] == ["east"]
    assert_problem(op.get(DEVICES, params={"group": "lobby"}), 404)


def test_dynamic_groups_follow_the_devices(tenant: Tenant) -> None:
    op = tenant.operator
    seed_inventory(op)
    group = created(
        op,
        GROUPS,
        {
            "id": "paris-prod",
            "name": "Paris prod",
            "filter": {"site_id": "paris", "tags": {"env": "prod"}},
        },
    )
    assert group["filter"] == {"site_id": "paris", "tags": {"env": "prod"}}
    created(op, GROUPS, {"id": "k1s", "name": "K1", "filter": {"model_id": "k1"}})
    created(op, DEVICES, {"id": "a", "site_id": "paris", "model_id": "k1", "tags": {"env": "prod"}})
    created(op, DEVICES, {"id": "b", "site_id": "paris", "tags": {"env": "dev"}})
    created(op, DEVICES, {"id": "c", "site_id": "lyon", "model_id": "k1", "tags": {"env": "prod"}})

    def members(group_id: str) -> list[str]:
        via_group = ids_of(op, f"{GROUPS}/{group_id}/devices")
        assert ids_of(op, DEVICES, group=group_id) == via_group
        for device in op.get(DEVICES, params={"limit": 1000}).json()["items"]:
            assert (group_id in device["groups"]) == (device["id"] in via_group), device
        return via_group

    assert members("paris-prod") == ["a"]
    assert members("k1s") == ["a", "c"]
    # Membership follows changes to tags and fields, both ways.
    patched(op, f"{DEVICES}/b", {"tags": {"env": "prod"}})
    assert members("paris-prod") == ["a", "b"]
    patched(op, f"{DEVICES}/a", {"site_id": "lyon"})
    assert members("paris-prod") == ["b"]
    patched(op, f"{DEVICES}/b", {"tags": {"env": None}})
    assert members("paris-prod") == []
    patched(op, f"{DEVICES}/c", {"model_id": None})
    assert members("k1s") == ["a"]
    created(op, DEVICES, {"id": "d", "site_id": "paris", "model_id": "k1", "tags": {"env": "prod"}})
    assert members("paris-prod") == ["d"]
    assert members("k1s") == ["a", "d"]
    assert ids_of(op, DEVICES, group="k1s", site_id="paris") == ["d"]
    assert op.get(f"{DEVICES}/d").json()["groups"] == ["k1s", "paris-prod"]

    # Changing the filter changes the members; a dynamic group takes no static members.
    patched(op, f"{GROUPS}/paris-prod", {"filter": {"site_id": "lyon"}})
    assert members("paris-prod") == ["a", "c"]
    assert_problem(op.post(f"{GROUPS}/k1s/devices", json={"device_ids": ["b"]}), 409, "dynamic")
    assert_problem(op.post(DEVICES, json={"id": "e", "group_ids": ["k1s"]}), 409, "dynamic")
    assert_problem(op.get(f"{DEVICES}/e"), 404)
    assert_problem(op.delete(f"{GROUPS}/k1s/devices/a"), 404)
    # Dropping the filter makes it an empty static group.
    assert patched(op, f"{GROUPS}/k1s", {"filter": None})["filter"] is None
    assert members("k1s") == []
    assert op.post(f"{GROUPS}/k1s/devices", json={"device_ids": ["b"]}).json() == {"added": ["b"]}
    assert members("k1s") == ["b"]

    # Filters are checked: at least one known key, string values.
    for bad in (
        {},
        {"colour": "red"},
        {"site_id": 3},
        {"tags": {"env": 1}},
        {"tags": ["env"]},
        {"site_id": None},
        "paris",
    ):
        assert_problem(op.post(GROUPS, json={"name": "bad", "filter": bad}), 422)
        assert_problem(op.patch(f"{GROUPS}/paris-prod", json={"filter": bad}), 422)
    assert op.get(f"{GROUPS}/paris-prod").json()["filter"] == {"site_id": "lyon"}


def test_components_and_sensors(tenant: Tenant) -> None:
    created(tenant.operator, DEVICES, {"id": "dev"})
    created(tenant.operator, DEVICES, {"id": "other"})
    check_components_form_a_tree(tenant.operator, tenant.viewer)
    check_sensors_with_types_and_paths(tenant.operator, tenant.viewer)


def check_components_form_a_tree(op: Api, viewer: Api) -> None:
    path = f"{DEVICES}/dev/components"
    board = created(
        op,
        path,
        {
            "id": "board",
            "name": "Main board",
            "kind": "pcb",
            "serial_number": "SN-1",
            "mac_address": "AA-BB-CC-DD-EE-0F",
            "manufacturer": "Acme",
            "notes": "rev B",
        },
    )
    assert board["mac_address"] == "aa:bb:cc:dd:ee:0f"
    assert board["device_id"] == "dev" and board["parent_id"] is None
    assert op.get(f"{path}/board").json() == board
    wifi = created(
        op,
        path,
        {
            "id": "wifi",
            "name": "WiFi",
            "kind": "radio",
            "parent_id": "board",
            "mac_address": "0011223344AB",
        },
    )
    assert wifi["mac_address"] == "00:11:22:33:44:ab" and wifi["parent_id"] == "board"
    created(op, path, {"id": "antenna", "name": "Antenna", "kind": "radio", "parent_id": "wifi"})
    created(op, path, {"id": "psu", "name": "PSU", "kind": "power", "serial_number": "SN-2"})
    generated = created(op, path, {"name": "Fan"})
    assert generated["id"] and op.get(f"{path}/{generated['id']}").json() == generated

    assert ids_of(op, path) == sorted(["antenna", "board", generated["id"], "psu", "wifi"])
    assert ids_of(op, path, parent_id="") == sorted(["board", generated["id"], "psu"])
    assert ids_of(op, path, parent_id="board") == ["wifi"]
    assert ids_of(op, path, parent_id="wifi") == ["antenna"]
    assert ids_of(op, path, kind="radio") == ["antenna", "wifi"]
    assert ids_of(op, path, q="sn-") == ["board", "psu"]
    assert ids_of(op, path, q="00:11:22") == ["wifi"]
    assert ids_of(op, path, sort="-kind") == ["wifi", "antenna", "psu", "board", generated["id"]]
    assert_problem(op.get(path, params={"sort": "mac_address"}), 422)
    assert_problem(op.get(path, params={"serial": "x"}), 422)

    # Ids are per device: the same id on another device is fine, twice on one is 409.
    created(op, f"{DEVICES}/other/components", {"id": "board", "name": "Board"})
    assert_problem(op.post(path, json={"id": "board", "name": "Again"}), 409, "already exists")
    # A parent must exist on the same device; a component cannot sit below itself.
    problem = assert_problem(op.post(path, json={"name": "x", "parent_id": "ghost"}), 422, "ghost")
    assert problem["errors"][0]["field"] == "parent_id"
    assert_problem(
        op.post(f"{DEVICES}/other/components", json={"name": "x", "parent_id": "wifi"}), 422
    )
    assert_problem(op.post(path, json={"id": "loop", "name": "x", "parent_id": "loop"}), 422)
    assert_problem(op.patch(f"{path}/board", json={"parent_id": "antenna"}), 422, "ancestor")
    assert_problem(op.patch(f"{path}/board", json={"parent_id": "board"}), 422, "ancestor")
    assert_problem(op.patch(f"{path}/wifi", json={"parent_id": "antenna"}), 422, "ancestor")
    assert op.get(f"{path}/board").json()["parent_id"] is None

    # Moving, and clearing optional fields.
    moved = patched(
        op, f"{path}/antenna", {"parent_id": "board", "mac_address": "a0:b1:c2:d3:e4:f5"}
    )
    assert moved["parent_id"] == "board" and moved["mac_address"] == "a0:b1:c2:d3:e4:f5"
    assert ids_of(op, path, parent_id="board") == ["antenna", "wifi"]
    cleared = patched(
        op,
        f"{path}/board",
        {
            "mac_address": None,
            "serial_number": None,
            "kind": None,
            "notes": None,
            "manufacturer": None,
        },
    )
    assert (cleared["mac_address"], cleared["serial_number"]) == (None, None)
    assert (cleared["kind"], cleared["notes"], cleared["manufacturer"]) == ("", "", "")
    assert cleared["name"] == "Main board"
    assert_problem(op.patch(f"{path}/board", json={"name": None}), 422)
    assert_problem(op.patch(f"{path}/board", json={"colour": "red"}), 422)
    assert patched(op, f"{path}/psu", {"parent_id": "board"})["parent_id"] == "board"
    assert patched(op, f"{path}/psu", {"parent_id": None})["parent_id"] is None

    # MAC addresses: six pairs with one consistent separator (or none), else 422.
    for mac in (
        "zz:bb:cc:dd:ee:ff",
        "aa:bb:cc:dd:ee",
        "aa:bb:cc:dd:ee:ff:00",
        "aa:bb-cc:dd:ee:ff",
        "aabb.ccdd.eeff",
        "aa:bb:cc:dd:ee:f",
        " aa:bb:cc:dd:ee:ff",
        "",
        "aa:bb:cc:dd:ee:ff:aa:bb",
    ):
        assert_problem(op.post(path, json={"name": "x", "mac_address": mac}), 422)
        assert_problem(op.patch(f"{path}/psu", json={"mac_address": mac}), 422)
    assert_problem(op.post(path, json={"name": "x", "mac_address": 42}), 422)
    assert_problem(op.post(path, json={"kind": "x"}), 422)
    assert_problem(op.post(f"{DEVICES}/ghost/components", json={"name": "x"}), 404)
    assert_problem(viewer.post(path, json={"name": "x"}), 403)

    # Deleting a component deletes everything below it, and nothing else.
    assert op.delete(f"{path}/board").status_code == 204
    assert ids_of(op, path) == sorted([generated["id"], "psu"])
    for gone in ("board", "wifi", "antenna"):
        assert_problem(op.get(f"{path}/{gone}"), 404)
    assert_problem(op.delete(f"{path}/board"), 404)
    assert ids_of(op, f"{DEVICES}/other/components") == ["board"]


def check_sensors_with_types_and_paths(op: Api, viewer: Api) -> None:
    created(op, DEVICES, {"id": "rover"})
    path = f"{DEVICES}/rover/sensors"
    first = created(
        op,
        path,
        {
            "id": "4",
            "type": "double",
            "path": "wheels/front/left",
            "name": "FL",
            "unit": "°C",
            "description": "tyre temperature",
        },
    )
    assert first["device_id"] == "rover" and first["path"] == "wheels/front/left"
    assert first["unit"] == "°C" and first["created_at"] == first["updated_at"]
    assert op.get(f"{path}/4").json() == first
    for sid, type_, spath in (
        ("fr", "long", "/wheels/front/right/"),
        ("rear", "boolean", "wheels/rear"),
        ("wx", "string", "wheelsx"),
        ("cfg", "json", ""),
        ("temp", "double", "body"),
        ("up", "long", "wheels_spare/a"),
    ):
        created(op, path, {"id": sid, "type": type_, "path": spath})
    assert op.get(f"{path}/fr").json()["path"] == "wheels/front/right"
    assert op.get(f"{path}/cfg").json()["path"] == ""

    # The path filter selects a subtree, never a mere prefix of a segment.
    assert ids_of(op, path, path="wheels") == ["4", "fr", "rear"]
    assert ids_of(op, path, path="wheels/") == ["4", "fr", "rear"]
    assert ids_of(op, path, path="wheels/front") == ["4", "fr"]
    assert ids_of(op, path, path="wheels/front/left") == ["4"]
    assert ids_of(op, path, path="wheel") == []
    assert ids_of(op, path, path="wheels_spare") == ["up"]
    assert ids_of(op, path, type="long") == ["fr", "up"]
    assert ids_of(op, path, type="double", path="wheels") == ["4"]
    assert ids_of(op, path, q="fL") == ["4"]
    assert ids_of(op, path, q="s_") == ["up"]
    by_type = ids_of(op, path, sort="type")
    assert by_type == ["rear", "4", "temp", "cfg", "fr", "up", "wx"]
    seen = []
    for offset in range(0, 7, 3):
        seen += [
            s["id"]
            for s in op.get(path, params={"sort": "-type", "limit": 3, "offset": offset}).json()[
                "items"
            ]
        ]
    assert seen == by_type[::-1]
    assert_problem(op.get(path, params={"sort": "unit"}), 422)
    assert_problem(op.get(path, params={"unit": "x"}), 422)

    # Only the five types; a valid path; a valid id; unique per device.
    for bad in (
        {"id": "x", "type": "float"},
        {"id": "x", "type": None},
        {"id": "x"},
        {"id": "x", "type": "double", "path": "a//b"},
        {"id": "x", "type": "double", "path": "a b"},
        {"id": "x", "type": "double", "path": "été"},
        {"id": "x", "type": "double", "path": "a/#"},
        {"id": "a b", "type": "double"},
        {"id": "a/b", "type": "double"},
        {"type": "double"},
        {"id": "x", "type": "double", "unit": "u" * 33},
        {"id": "x", "type": "double", "colour": 1},
    ):
        assert_problem(op.post(path, json=bad), 422)
    assert_problem(op.post(path, json={"id": "4", "type": "long"}), 409, "already exists")
    assert op.get(f"{path}/4").json() == first
    created(op, f"{DEVICES}/other/sensors", {"id": "4", "type": "boolean"})
    assert op.get(f"{DEVICES}/other/sensors/4").json()["type"] == "boolean"
    assert_problem(op.post(f"{DEVICES}/ghost/sensors", json={"id": "4", "type": "long"}), 404)
    assert_problem(viewer.post(path, json={"id": "v", "type": "long"}), 403)

    # PATCH: partial; null clears text but not the type.
    changed = patched(op, f"{path}/4", {"type": "long", "unit": "K"})
    assert (changed["type"], changed["unit"], changed["path"]) == ("long", "K", "wheels/front/left")
    cleared = patched(
        op, f"{path}/4", {"path": None, "unit": None, "name": None, "description": None}
    )
    assert [cleared[k] for k in ("path", "unit", "name", "description")] == ["", "", "", ""]
    assert_problem(op.patch(f"{path}/4", json={"type": None}), 422)
    assert_problem(op.patch(f"{path}/4", json={"type": "int"}), 422)
    assert_problem(op.patch(f"{path}/4", json={"path": "a//b"}), 422)
    assert_problem(op.patch(f"{path}/4", json={"id": "5"}), 422)
    assert_problem(op.patch(f"{path}/nope", json={"unit": "K"}), 404)
    assert op.get(f"{path}/4").json() == cleared

    assert op.delete(f"{path}/4").status_code == 204
    assert_problem(op.get(f"{path}/4"), 404)
    assert_problem(op.delete(f"{path}/4"), 404)
    assert op.get(f"{DEVICES}/other/sensors/4").status_code == 200


def test_tags_null_clears_every_tag(tenant: Tenant) -> None:
    op = tenant.operator
    created(op, "/api/v1/devices", {"id": "tagged", "tags": {"floor": "2", "zone": "A"}})
    resp = op.patch("/api/v1/devices/tagged", json={"tags": None})
    assert resp.status_code == 200, resp.text
    assert resp.json()["tags"] == {}
    assert op.get("/api/v1/devices/tagged").json()["tags"] == {}
    history = op.get("/api/v1/devices/tagged/history").json()["items"]
    assert history[0]["before"]["tags"] == {"floor": "2", "zone": "A"}
    assert history[0]["after"]["tags"] == {}


def test_text_search_folds_case_beyond_ascii(tenant: Tenant) -> None:
    op = tenant.operator
    created(op, "/api/v1/devices", {"id": "ecole-1", "name": "ÉCOLE Rivoli"})
    created(op, "/api/v1/devices", {"id": "other-1", "name": "Gare du Nord"})
    for query in ("école", "ÉCOLE", "éCoLe"):
        assert ids_of(op, "/api/v1/devices", q=query) == ["ecole-1"], query
