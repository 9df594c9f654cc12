"""The audit log and device history: every inventory change kept, who, when, before → after."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from tests.conftest import Tenant
from tests.support import Api, assert_problem, unique

API = "/api/v1"
AUDIT = f"{API}/audit"


def created(client: Api, path: str, body: dict[str, Any]) -> dict[str, Any]:
    resp = client.post(path, json=body)
    assert resp.status_code == 201, resp.text
    record: dict[str, Any] = resp.json()
    return record


def ok(resp: Any, status: int = 200) -> Any:
    assert resp.status_code == status, resp.text
    return resp.json() if resp.content else None


def entries(client: Api, url: str = AUDIT, **params: Any) -> list[dict[str, Any]]:
    """Every entry a log answers for ``params`` (one large page), checking ``total``."""
    body = ok(client.get(url, params={"limit": 1000, **params}))
    assert body["total"] == len(body["items"])
    items: list[dict[str, Any]] = body["items"]
    return items


def when(entry: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(entry["at"].replace("Z", "+00:00"))


# (collection, entity_type, create body, a change) — the id is added per tenant.
LIFECYCLES = [
    ("customers", "customer", {"name": "Acme"}, {"notes": "vip"}),
    ("sites", "site", {"name": "Paris", "city": "paris"}, {"city": "lyon"}),
    ("manufacturers", "manufacturer", {"name": "Bosch"}, {"website": "https://bosch.example"}),
    (
        "device-models",
        "device_model",
        {"reference": "K1", "commercial_name": "Kiosk"},
        {"family": "kiosk"},
    ),
    ("firmware", "firmware", {"version": "1.0"}, {"release_notes": "first"}),
    ("groups", "group", {"name": "Lobby"}, {"description": "ground floor"}),
    ("devices", "device", {"name": "Kiosk"}, {"name": "Kiosk 2"}),
]


def test_every_change_is_audited_and_filterable(tenant: Tenant, admin: Api) -> None:
    op = tenant.operator
    operator_name = tenant.usernames["operator"]
    started = datetime.now(UTC) - timedelta(seconds=5)

    for collection, entity_type, body, change in LIFECYCLES:
        record_id = unique(entity_type.replace("_", "-"))
        record = created(op, f"{API}/{collection}", {"id": record_id, **body})
        changed = ok(op.patch(f"{API}/{collection}/{record_id}", json=change))
        ok(op.delete(f"{API}/{collection}/{record_id}"), 204)

        log = entries(op, entity_type=entity_type, entity_id=record_id)
        assert [e["action"] for e in log] == ["delete", "update", "create"], log
        delete, update, create = log
        for entry in log:
            assert entry["actor"] == operator_name
            assert (entry["entity_type"], entry["entity_id"]) == (entity_type, record_id)
            assert started <= when(entry) <= datetime.now(UTC) + timedelta(seconds=5)
            assert entry["device_id"] == (record_id if entity_type == "device" else None)
        assert create["before"] is None and create["after"]["id"] == record_id
        for name, value in body.items():
            assert create["after"][name] == value
        assert create["after"]["created_at"] == record["created_at"]
        ((field, value),) = change.items()
        assert update["before"][field] == record[field] and update["after"][field] == value
        assert update["after"] == {
            **update["before"],
            field: value,
            "updated_at": changed["updated_at"],
        }
        assert delete["before"] == update["after"] and delete["after"] is None
        assert when(create) <= when(update) <= when(delete)
        assert create["id"] < update["id"] < delete["id"]

    # Sensors, components and group membership are kept too, under their device.
    created(op, f"{API}/devices", {"id": "d1"})
    created(op, f"{API}/groups", {"id": "g1", "name": "G"})
    created(op, f"{API}/devices/d1/sensors", {"id": "temp", "type": "double"})
    ok(op.patch(f"{API}/devices/d1/sensors/temp", json={"unit": "K"}))
    created(op, f"{API}/devices/d1/components", {"id": "board", "name": "Board"})
    ok(op.post(f"{API}/groups/g1/devices", json={"device_ids": ["d1"]}))
    ok(tenant.admin.delete(f"{API}/groups/g1/devices/d1"), 204)
    ok(op.delete(f"{API}/devices/d1/components/board"), 204)
    sensor_log = entries(op, entity_type="sensor", entity_id="d1/temp")
    assert [e["action"] for e in sensor_log] == ["update", "create"]
    assert (sensor_log[0]["before"]["unit"], sensor_log[0]["after"]["unit"]) == ("", "K")
    membership = entries(op, entity_type="group_member")
    assert [(e["action"], e["entity_id"], e["device_id"]) for e in membership] == [
        ("remove", "g1/d1", "d1"),
        ("add", "g1/d1", "d1"),
    ]
    assert membership[0]["actor"] == tenant.usernames["admin"]
    component_log = entries(op, device_id="d1", entity_type="component")
    assert [e["action"] for e in component_log] == ["delete", "create"]
    assert component_log[0]["before"]["name"] == "Board" and component_log[0]["after"] is None

    # Newest first by default; sort=at and -id both ways; pages partition the log. (The log
    # also holds the tenant's set-up: its users. ``since`` the first change here leaves them out.)
    first = entries(op, entity_type="customer", action="create")[-1]
    everything = entries(op, since=first["at"])
    assert len(everything) == 3 * len(LIFECYCLES) + 8
    assert len(entries(op)) > len(everything)
    assert {e["entity_type"] for e in entries(op, until=first["at"])} <= {"tenant", "user"}
    ids = [e["id"] for e in everything]
    assert ids == sorted(ids, reverse=True)
    assert [when(e) for e in everything] == sorted((when(e) for e in everything), reverse=True)
    assert [e["id"] for e in entries(op, since=first["at"], sort="at")] == ids[::-1]
    assert [e["id"] for e in entries(op, since=first["at"], sort="-at")] == ids
    assert [e["id"] for e in entries(op, since=first["at"], sort="id")] == ids[::-1]
    paged = []
    for offset in range(0, len(ids), 7):
        page = ok(op.get(AUDIT, params={"limit": 7, "offset": offset, "since": first["at"]}))
        assert page["total"] == len(ids) and page["limit"] == 7
        paged += [e["id"] for e in page["items"]]
    assert paged == ids

    # Filters: each narrows to what it names, and they combine.
    def mine(**params: Any) -> list[dict[str, Any]]:
        return entries(op, since=first["at"], **params)

    assert {e["action"] for e in mine(action="delete")} == {"delete"}
    assert len(mine(action="delete")) == len(LIFECYCLES) + 1
    assert len(mine(action="create")) == len(LIFECYCLES) + 4
    assert len(mine(entity_type="device")) == 4
    assert [e["actor"] for e in mine(actor=tenant.usernames["admin"])] == [
        tenant.usernames["admin"]
    ]
    assert len(mine(actor=operator_name)) == len(everything) - 1
    assert mine(actor="nobody") == []
    d1 = mine(device_id="d1")
    assert {e["entity_type"] for e in d1} == {"device", "sensor", "component", "group_member"}
    assert len(d1) == 7
    assert len(mine(device_id="d1", action="create")) == 3
    assert mine(entity_id="d1", entity_type="site") == []
    middle = everything[len(everything) // 2]
    since = entries(op, since=middle["at"])
    until = entries(op, since=first["at"], until=middle["at"])
    assert since[-1]["id"] == middle["id"] and all(when(e) >= when(middle) for e in since)
    assert all(when(e) < when(middle) for e in until)
    assert [e["id"] for e in since + until] == ids
    assert entries(op, since=middle["at"], until=middle["at"]) == []
    window = entries(
        op, since=everything[-2]["at"], until=everything[-5]["at"].replace("Z", "+00:00")
    )
    assert window == everything[-4:-1]
    offset_form = when(middle).astimezone(timezone(timedelta(hours=-5))).isoformat()
    assert offset_form.endswith("-05:00")
    assert [e["id"] for e in entries(op, since=offset_form)] == [e["id"] for e in since]
    assert entries(op, since=(datetime.now(UTC) + timedelta(hours=1)).isoformat()) == []

    # Refusals: bad times, unknown parameters and sort fields; viewers; other tenants.
    for params in (
        {"since": "yesterday"},
        {"until": "2026-13-01T00:00:00Z"},
        {"since": "2026-01-01T00:00:00"},
        {"until": "2026-01-01"},
        {"entity": "device"},
        {"sort": "actor"},
        {"limit": 0},
        {"offset": -1},
    ):
        assert_problem(op.get(AUDIT, params=params), 422)
    assert_problem(tenant.viewer.get(AUDIT), 403)
    assert_problem(tenant.anonymous.get(AUDIT), 401)
    assert entries(admin, entity_id=record_id) == []


def test_device_history_gathers_everything_under_the_device(tenant: Tenant) -> None:
    op = tenant.operator
    history_url = f"{API}/devices/kiosk/history"
    created(op, f"{API}/sites", {"id": "paris", "name": "Paris"})
    created(op, f"{API}/groups", {"id": "lobby", "name": "Lobby"})
    created(op, f"{API}/devices", {"id": "kiosk", "tags": {"env": "dev"}})
    created(op, f"{API}/devices", {"id": "other"})
    ok(op.patch(f"{API}/devices/kiosk", json={"site_id": "paris"}))
    ok(op.patch(f"{API}/devices/kiosk", json={"tags": {"env": "prod", "zone": "n"}}))
    created(op, f"{API}/devices/kiosk/sensors", {"id": "4", "type": "long"})
    ok(op.delete(f"{API}/devices/kiosk/sensors/4"), 204)
    created(op, f"{API}/devices/kiosk/components", {"id": "psu", "name": "PSU"})
    ok(op.patch(f"{API}/devices/kiosk/components/psu", json={"serial_number": "SN-9"}))
    ok(op.post(f"{API}/groups/lobby/devices", json={"device_ids": ["kiosk", "other"]}))
    ok(op.patch(f"{API}/devices/other", json={"name": "not mine"}))
    created(op, f"{API}/devices/other/sensors", {"id": "4", "type": "long"})

    # A viewer may read a device's history (but not the whole log).
    history = entries(tenant.viewer, history_url)
    assert_problem(tenant.viewer.get(AUDIT), 403)
    assert [(e["action"], e["entity_type"], e["entity_id"]) for e in history] == [
        ("add", "group_member", "lobby/kiosk"),
        ("update", "component", "kiosk/psu"),
        ("create", "component", "kiosk/psu"),
        ("delete", "sensor", "kiosk/4"),
        ("create", "sensor", "kiosk/4"),
        ("update", "device", "kiosk"),
        ("update", "device", "kiosk"),
        ("create", "device", "kiosk"),
    ]
    assert all(e["device_id"] == "kiosk" for e in history)
    tags_change = history[5]
    assert tags_change["before"]["tags"] == {"env": "dev"}
    assert tags_change["after"]["tags"] == {"env": "prod", "zone": "n"}
    site_change = history[6]
    assert (site_change["before"]["site_id"], site_change["after"]["site_id"]) == (None, "paris")
    assert (
        history[1]["after"]["serial_number"] == "SN-9"
        and history[1]["before"]["serial_number"] is None
    )
    assert history == entries(op, device_id="kiosk")

    # Paging and sorting like every collection.
    page = ok(tenant.viewer.get(history_url, params={"limit": 3, "offset": 3}))
    assert page["total"] == len(history) and page["items"] == history[3:6]
    assert entries(tenant.viewer, history_url, sort="at") == history[::-1]
    assert_problem(tenant.viewer.get(history_url, params={"sort": "actor"}), 422)
    assert_problem(tenant.viewer.get(history_url, params={"limit": 0}), 422)
    assert_problem(tenant.viewer.get(history_url, params={"device_id": "other"}), 422)
    assert_problem(tenant.viewer.get(f"{API}/devices/ghost/history"), 404)

    # Once the device is gone its history is in the audit log, ending with the delete.
    ok(op.delete(f"{API}/devices/kiosk"), 204)
    assert_problem(op.get(history_url), 404)
    after_delete = entries(op, device_id="kiosk")
    assert after_delete[0]["action"] == "delete" and after_delete[0]["after"] is None
    assert after_delete[0]["before"]["groups"] == ["lobby"]
    assert after_delete[1:] == history
