"""Consumers: keys limited by grants on devices, groups or sensors, on every read door."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.conftest import Tenant
from tests.support import Api, RoostServer, assert_problem, unique
from tests.telemetry.test_http import SEED, device_with_token, post

V1 = "/api/v1"


def make_consumer(tenant: Tenant, grants: list[dict[str, Any]]) -> tuple[dict[str, Any], Api]:
    """A consumer of the tenant with ``grants`` and a client holding its key."""
    resp = tenant.operator.post(
        f"{V1}/consumers", json={"id": unique("app"), "name": "Dashboard", "grants": grants}
    )
    assert resp.status_code == 201, resp.text
    body: dict[str, Any] = resp.json()
    return body, tenant.client(body["key"])


def reading(tenant: Tenant, *values: dict[str, float]) -> tuple[str, Api]:
    """A device that sent one reading per dict of values (one second apart)."""
    device_id, device = device_with_token(tenant)
    for n, vals in enumerate(values):
        assert post(device, {"ts": SEED + n, "values": vals}).status_code == 200
    return device_id, device


def latest_sensors(api: Api, device_id: str) -> set[str]:
    resp = api.get(f"{V1}/devices/{device_id}/latest")
    assert resp.status_code == 200, resp.text
    return {item["sensor"] for item in resp.json()["items"]}


def fleet(api: Api, **params: Any) -> dict[str, set[str]]:
    resp = api.get(f"{V1}/telemetry/latest", params=params)
    assert resp.status_code == 200, resp.text
    return {item["device_id"]: set(item["sensors"]) for item in resp.json()["items"]}


def test_consumer_lifecycle_key_shown_once_rotated_and_deleted(tenant: Tenant) -> None:
    granted, _ = reading(tenant, {"t": 1.0})
    created, app = make_consumer(tenant, [{"devices": [granted]}])
    assert created["key"].startswith("roostc_")
    assert created["grants"] == [{"devices": [granted]}]
    assert latest_sensors(app, granted) == {"t"}
    cid = created["id"]

    # The key is never shown again, and no answer holds its hash.
    got = tenant.viewer.get(f"{V1}/consumers/{cid}").json()
    assert "key" not in got and "secret_hash" not in got and got["key_id"] == created["key_id"]
    listed = tenant.viewer.get(f"{V1}/consumers").json()
    assert [c["id"] for c in listed["items"]] == [cid] and listed["total"] == 1
    assert "key" not in listed["items"][0]

    # Only operators and admins change consumers; other tenants do not see them.
    assert_problem(
        tenant.viewer.post(f"{V1}/consumers", json={"name": "x", "grants": []}), 403, "operator"
    )
    assert_problem(tenant.viewer.post(f"{V1}/consumers/{cid}/keys"), 403)

    # Rotation: the old key stops at once, the new one works.
    rotated = tenant.operator.post(f"{V1}/consumers/{cid}/keys")
    assert rotated.status_code == 201, rotated.text
    new_key = rotated.json()["key"]
    assert new_key != created["key"] and rotated.json()["key_id"] != created["key_id"]
    assert_problem(app.get(f"{V1}/devices/{granted}/latest"), 401, "invalid consumer key")
    app2 = tenant.client(new_key)
    assert latest_sensors(app2, granted) == {"t"}

    # Deleting the consumer ends its key; the changes are in the audit log without the key.
    assert tenant.admin.delete(f"{V1}/consumers/{cid}").status_code == 204
    assert_problem(app2.get(f"{V1}/devices/{granted}/latest"), 401)
    assert_problem(tenant.viewer.get(f"{V1}/consumers/{cid}"), 404)
    log = tenant.operator.get(
        f"{V1}/audit", params={"entity_type": "consumer", "entity_id": cid}
    ).json()["items"]
    assert [e["action"] for e in log] == ["delete", "rotate_key", "create"]
    assert new_key not in str(log) and created["key"] not in str(log)


def test_grants_are_checked_and_bad_keys_refused(tenant: Tenant, admin: Api) -> None:
    device_id, _ = reading(tenant, {"t": 1.0})
    bad_grants: list[Any] = [
        [{"devices": ["no-such-device"]}],
        [{"groups": ["no-such-group"]}],
        [{"sensors": [{"device_id": "no-such-device", "sensor_ids": ["t"]}]}],
        [{"sensors": [{"device_id": device_id}]}],
        [{"planets": ["mars"]}],
        [{"devices": [device_id], "groups": []}],
        [{"devices": "not-a-list"}],
    ]
    for grants in bad_grants:
        resp = tenant.operator.post(f"{V1}/consumers", json={"name": "x", "grants": grants})
        assert_problem(resp, 422)
    assert tenant.operator.get(f"{V1}/consumers").json()["total"] == 0

    created, app = make_consumer(tenant, [{"devices": [device_id]}])
    # Another tenant's admin neither sees the consumer nor can change it.
    other_tenant = unique("t")
    resp = admin.post(
        f"{V1}/tenants",
        json={
            "id": other_tenant,
            "name": "o",
            "admin": {"username": other_tenant, "password": "pw-" * 6},
        },
    )
    assert resp.status_code == 201, resp.text
    stranger = tenant.client(tenant.anonymous.login(other_tenant, "pw-" * 6))
    assert_problem(stranger.get(f"{V1}/consumers/{created['id']}"), 404)
    assert_problem(stranger.patch(f"{V1}/consumers/{created['id']}", json={"name": "x"}), 404)

    # Malformed, forged and unknown keys: 401, on the read doors and elsewhere.
    key_id = created["key_id"]
    for bad in ("roostc_", "roostc_x", f"roostc_{key_id}_forged", "roostc_000000000000_abc"):
        assert_problem(tenant.client(bad).get(f"{V1}/devices/{device_id}/latest"), 401)
        assert_problem(tenant.client(bad).get(f"{V1}/devices"), 401)
    assert latest_sensors(app, device_id) == {"t"}


def test_a_device_grant_shows_that_device_only_and_no_other_route(tenant: Tenant) -> None:
    granted, _ = reading(tenant, {"t": 1.0, "h": 50.0})
    hidden, _ = reading(tenant, {"t": 2.0})
    _, device = device_with_token(tenant)
    assert post(device, {"event": "boot", "ts": SEED}, door="events").status_code == 200
    _, app = make_consumer(tenant, [{"devices": [granted]}])

    assert latest_sensors(app, granted) == {"t", "h"}
    resp = app.get(f"{V1}/devices/{granted}/telemetry", params={"sensor": "t"})
    assert resp.status_code == 200 and [p["value"] for p in resp.json()["items"]] == [1.0]
    assert app.get(f"{V1}/devices/{granted}/events").status_code == 200
    # A device outside the grants is as if it did not exist.
    for path in ("latest", "events", "telemetry?sensor=t"):
        assert_problem(app.get(f"{V1}/devices/{hidden}/{path}"), 404, "no device")
    assert fleet(app) == {granted: {"t", "h"}}
    assert set(fleet(tenant.viewer)) >= {granted, hidden}

    # Every other route refuses a consumer key, reads of the inventory included.
    for method, path, body in [
        ("GET", f"{V1}/devices", None),
        ("GET", f"{V1}/devices/{granted}", None),
        ("POST", f"{V1}/devices", {"id": unique("dev")}),
        ("GET", f"{V1}/users", None),
        ("POST", f"{V1}/devices/{granted}/tokens", {}),
        ("POST", f"{V1}/devices/{granted}/commands", {"name": "reboot"}),
        ("GET", f"{V1}/devices/{granted}/state", None),
        ("GET", f"{V1}/jobs", None),
        ("GET", f"{V1}/consumers", None),
        ("POST", f"{V1}/streams", {"id": "mine"}),
    ]:
        resp = app.request(method, path, json=body)
        assert_problem(resp, 403)


def test_a_sensor_grant_shows_only_those_sensors(tenant: Tenant) -> None:
    device_id, device = reading(tenant, {"t": 1.0, "h": 50.0, "co2": 400.0})
    assert post(device, {"event": "boot", "ts": SEED}, door="events").status_code == 200
    _, app = make_consumer(
        tenant, [{"sensors": [{"device_id": device_id, "sensor_ids": ["t", "co2"]}]}]
    )
    assert latest_sensors(app, device_id) == {"t", "co2"}
    assert app.get(f"{V1}/devices/{device_id}/telemetry", params={"sensor": "t"}).status_code == 200
    assert_problem(
        app.get(f"{V1}/devices/{device_id}/telemetry", params={"sensor": "h"}), 404, "no sensor"
    )
    # Events belong to the device, not to a sensor: a sensor grant does not cover them.
    events = app.get(f"{V1}/devices/{device_id}/events")
    assert events.status_code == 200 and events.json()["items"] == []
    assert tenant.viewer.get(f"{V1}/devices/{device_id}/events").json()["items"] != []
    assert fleet(app) == {device_id: {"t", "co2"}}
    assert fleet(app, sensor="h") == {}


def test_group_grants_follow_membership_static_and_dynamic(tenant: Tenant) -> None:
    op = tenant.operator
    assert op.post(f"{V1}/sites", json={"id": "lyon", "name": "Lyon"}).status_code == 201
    assert op.post(f"{V1}/groups", json={"id": "front", "name": "Front"}).status_code == 201
    resp = op.post(
        f"{V1}/groups", json={"id": "at-lyon", "name": "L", "filter": {"site_id": "lyon"}}
    )
    assert resp.status_code == 201, resp.text
    member, _ = reading(tenant, {"t": 1.0})
    joiner, _ = reading(tenant, {"t": 2.0})
    mover, _ = reading(tenant, {"t": 3.0})
    assert op.post(f"{V1}/groups/front/devices", json={"device_ids": [member]}).status_code == 200
    _, app = make_consumer(tenant, [{"groups": ["front", "at-lyon"]}])
    assert set(fleet(app)) == {member}
    assert_problem(app.get(f"{V1}/devices/{joiner}/latest"), 404)

    # Joining the static group, or moving to the dynamic group's site, grants at once.
    assert op.post(f"{V1}/groups/front/devices", json={"device_ids": [joiner]}).status_code == 200
    assert op.patch(f"{V1}/devices/{mover}", json={"site_id": "lyon"}).status_code == 200
    assert set(fleet(app)) == {member, joiner, mover}
    assert latest_sensors(app, joiner) == {"t"}
    # Leaving the group takes the grant away.
    assert op.delete(f"{V1}/groups/front/devices/{member}").status_code == 204
    assert_problem(app.get(f"{V1}/devices/{member}/latest"), 404)
    assert set(fleet(app)) == {joiner, mover}


def test_changed_grants_apply_on_the_next_read(tenant: Tenant) -> None:
    first, _ = reading(tenant, {"t": 1.0})
    second, _ = reading(tenant, {"t": 2.0})
    created, app = make_consumer(tenant, [{"devices": [first]}])
    assert set(fleet(app)) == {first}
    resp = tenant.operator.patch(
        f"{V1}/consumers/{created['id']}", json={"grants": [{"devices": [second]}]}
    )
    assert resp.status_code == 200 and resp.json()["grants"] == [{"devices": [second]}]
    assert set(fleet(app)) == {second}
    assert_problem(app.get(f"{V1}/devices/{first}/latest"), 404)


def test_consumer_group_pulls_are_filtered_per_item(tenant: Tenant) -> None:
    granted, granted_device = device_with_token(tenant)
    partial, partial_device = device_with_token(tenant)
    hidden, hidden_device = device_with_token(tenant)
    group = unique("g")
    assert (
        tenant.operator.post(f"{V1}/streams", json={"id": group, "start": "latest"}).status_code
        == 201
    )
    _, app = make_consumer(
        tenant,
        [{"devices": [granted]}, {"sensors": [{"device_id": partial, "sensor_ids": ["t"]}]}],
    )
    for device in (granted_device, partial_device, hidden_device):
        assert post(device, {"ts": SEED, "values": {"t": 1.0, "h": 2.0}}).status_code == 200
        assert post(device, {"event": "boot", "ts": SEED}, door="events").status_code == 200

    resp = app.get(f"{V1}/streams/{group}/messages", params={"limit": 100})
    assert resp.status_code == 200, resp.text
    seen = sorted(
        (i["device_id"], i["type"], i.get("sensor") or i.get("event")) for i in resp.json()["items"]
    )
    assert seen == sorted(
        [
            (granted, "telemetry", "t"),
            (granted, "telemetry", "h"),
            (granted, "event", "boot"),
            (partial, "telemetry", "t"),
        ]
    )
    everything = tenant.viewer.get(f"{V1}/streams/{group}/messages", params={"limit": 100}).json()
    assert len(everything["items"]) == 9
    # A consumer may commit its offset, but not create or delete groups.
    commit = app.post(f"{V1}/streams/{group}/offset", json={"offset": resp.json()["next_offset"]})
    assert commit.status_code == 200, commit.text
    assert_problem(app.delete(f"{V1}/streams/{group}"), 403)


def _ws_url(server: RoostServer, path: str) -> str:
    return server.url.replace("http://", "ws://") + path


def test_live_stream_is_filtered_per_item_and_ends_with_the_consumer(
    tenant: Tenant, server: RoostServer
) -> None:
    granted, granted_device = device_with_token(tenant)
    _, hidden_device = device_with_token(tenant)
    created, _ = make_consumer(tenant, [{"sensors": [{"device_id": granted, "sensor_ids": ["t"]}]}])
    key = created["key"]

    async def scenario() -> tuple[list[dict[str, Any]], bool]:
        async with websockets.connect(
            _ws_url(server, f"{V1}/ws/stream"),
            additional_headers={"Authorization": f"Bearer {key}"},
        ) as ws:
            items: list[dict[str, Any]] = []
            # The subscription is live once accepted: send until a granted item arrives (items
            # of the hidden device and sensor are sent before it in each round).
            for n in range(50):
                await asyncio.to_thread(post, hidden_device, {"ts": SEED + n, "values": {"t": 9.0}})
                await asyncio.to_thread(
                    post, granted_device, {"ts": SEED + n, "values": {"h": 1.0}}
                )
                await asyncio.to_thread(
                    post, granted_device, {"ts": SEED + n, "values": {"t": float(n)}}
                )
                try:
                    frame = orjson.loads(await asyncio.wait_for(ws.recv(), 0.5))
                except TimeoutError:
                    continue
                items += frame.get("items", [])
                if items:
                    break
            # Deleting the consumer ends its stream (its key is re-checked periodically).
            deleted = await asyncio.to_thread(
                tenant.operator.delete, f"{V1}/consumers/{created['id']}"
            )
            assert deleted.status_code == 204
            try:
                while True:
                    await asyncio.wait_for(ws.recv(), 20)
            except ConnectionClosed:
                return items, True
            except TimeoutError:
                return items, False

    items, closed = asyncio.run(scenario())
    assert items, "no granted item arrived on the live stream"
    assert {(i["device_id"], i["sensor"]) for i in items} == {(granted, "t")}
    assert closed, "the stream of a deleted consumer stayed open"

    async def refused(token: str) -> int:
        try:
            async with websockets.connect(_ws_url(server, f"{V1}/ws/stream?token={token}")) as ws:
                await ws.recv()
        except InvalidStatus as exc:
            return exc.response.status_code
        return 0

    assert asyncio.run(refused("roostc_0_forged")) == 401
    assert asyncio.run(refused(key)) == 401


def test_a_consumer_key_is_not_a_device_credential(tenant: Tenant) -> None:
    device_id, _ = device_with_token(tenant)
    _, app = make_consumer(tenant, [{"devices": [device_id]}])
    assert_problem(post(app, {"ts": SEED, "values": {"t": 1.0}}), 401)
    assert app.get(f"{V1}/devices/{device_id}/latest").json()["items"] == []
