"""Telemetry and events through the HTTP and WebSocket doors, read back through the query API."""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import httpx
import orjson
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from roost.telemetry.schemas import (
    EventOut,
    EventsOut,
    FleetLatestOut,
    LatestItem,
    LatestOut,
    SeriesOut,
    StreamPullOut,
)
from tests.conftest import Tenant
from tests.support import Api, RoostServer, assert_problem, unique

V1 = "/api/v1"
SEED = 1526717967  # 2018-05-19T08:19:27Z


def device_with_token(
    tenant: Tenant, device_id: str | None = None, **fields: Any
) -> tuple[str, Api]:
    """A new device of the tenant and a client holding its token."""
    device_id = device_id or unique("dev")
    resp = tenant.operator.post(f"{V1}/devices", json={"id": device_id, **fields})
    assert resp.status_code == 201, resp.text
    resp = tenant.operator.post(f"{V1}/devices/{device_id}/tokens", json={"name": "test"})
    assert resp.status_code == 201, resp.text
    return device_id, tenant.client(resp.json()["token"])


def history(api: Api, device_id: str, sensor: str, **params: Any) -> list[dict[str, Any]]:
    resp = api.get(f"{V1}/devices/{device_id}/telemetry", params={"sensor": sensor, **params})
    assert resp.status_code == 200, resp.text
    items: list[dict[str, Any]] = resp.json()["items"]
    return items


def post(device: Api, body: Any, door: str = "telemetry", **headers: str) -> httpx.Response:
    return device.post(
        f"{V1}/{door}",
        content=orjson.dumps(body),
        headers={"Content-Type": "application/json", **headers},
    )


def test_every_form_and_timestamp_unit_is_stored_and_read_back(tenant: Tenant) -> None:
    device_id, device = device_with_token(tenant)
    body = [
        {"sensor_id": "4", "timestamp": SEED, "value": 21.5},  # seconds
        {"sensor_id": "4", "timestamp": (SEED + 1) * 1000, "value": 21.6},  # ms
        {"sensor_id": "4", "timestamp": (SEED + 2) * 1_000_000, "value": 21.7},  # µs
        {"sensor_id": "4", "timestamp": (SEED + 3) * 1_000_000_000, "value": 21.8},  # ns
        {"sensor_id": "4", "timestamp": "2018-05-19T08:19:31.5Z", "value": 21.9},  # RFC 3339
        {"ts": (SEED + 10) * 1000, "values": {"temperature": 20, "door": True, "mode": "eco"}},
    ]
    resp = post(device, body)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"accepted": 8, "events": 0}
    assert post(device, {"humidity": 40.5}).json()["accepted"] == 1  # plain, no timestamp
    got = history(tenant.viewer, device_id, "4", **{"from": SEED, "to": SEED + 60})
    assert [(p["ts"], p["value"]) for p in got] == [
        ("2018-05-19T08:19:27.000000Z", 21.5),
        ("2018-05-19T08:19:28.000000Z", 21.6),
        ("2018-05-19T08:19:29.000000Z", 21.7),
        ("2018-05-19T08:19:30.000000Z", 21.8),
        ("2018-05-19T08:19:31.500000Z", 21.9),
    ]
    latest = {
        i["sensor"]: i
        for i in tenant.viewer.get(f"{V1}/devices/{device_id}/latest").json()["items"]
    }
    assert {k: (v["type"], v["value"]) for k, v in latest.items()} == {
        "4": ("double", 21.9),
        "temperature": ("double", 20.0),
        "door": ("boolean", True),
        "mode": ("string", "eco"),
        "humidity": ("double", 40.5),
    }
    sensors = tenant.viewer.get(f"{V1}/devices/{device_id}/sensors", params={"sort": "id"}).json()
    assert [(s["id"], s["type"]) for s in sensors["items"]] == [
        ("4", "double"),
        ("door", "boolean"),
        ("humidity", "double"),
        ("mode", "string"),
        ("temperature", "double"),
    ]
    created = tenant.operator.get(
        f"{V1}/audit", params={"device_id": device_id, "entity_type": "sensor"}
    ).json()["items"]
    assert len(created) == 5
    assert {e["actor"] for e in created} == {f"device:{device_id}"}  # auto-created by the device


def test_a_bad_item_refuses_the_whole_message_and_names_it(tenant: Tenant) -> None:
    device_id, device = device_with_token(tenant)
    assert post(device, {"sensor_id": "t", "timestamp": SEED, "value": 1.5}).status_code == 200
    body = [
        {"sensor_id": "t", "timestamp": SEED + 1, "value": 2.5},
        {"sensor_id": "t", "timestamp": SEED + 2, "value": "warm"},
        {"sensor_id": "t", "timestamp": "yesterday", "value": 3.5},
        ["not", "an", "object"],
    ]
    problem = assert_problem(post(device, body), 400, "3 item(s) refused")
    assert [(e["index"], e["field"]) for e in problem["errors"]] == [
        (1, "value"),
        (2, "ts"),
        (3, ""),
    ]
    assert "expected a number" in problem["errors"][0]["message"]
    assert [p["value"] for p in history(tenant.viewer, device_id, "t")] == [1.5]
    for raw, phrase in (
        (b"{not json", "malformed JSON"),
        (b"[]", "no items"),
        (b'{"event": "x"}', "this is an event"),
    ):
        resp = device.post(f"{V1}/telemetry", content=raw)
        assert_problem(resp, 400, phrase)


def test_a_model_that_forbids_auto_creation_refuses_unknown_sensors(tenant: Tenant) -> None:
    op = tenant.operator
    model = {
        "id": unique("m"),
        "reference": "R1",
        "commercial_name": "Strict",
        "auto_create_sensors": False,
    }
    assert op.post(f"{V1}/device-models", json=model).status_code == 201
    device_id, device = device_with_token(tenant, model_id=model["id"])
    assert (
        op.post(
            f"{V1}/devices/{device_id}/sensors", json={"id": "known", "type": "long"}
        ).status_code
        == 201
    )
    problem = assert_problem(post(device, {"known": 3, "stranger": 1.0}), 400, "unknown sensor")
    assert problem["errors"][0]["field"] == "stranger"
    assert post(device, {"known": 4}).status_code == 200
    assert [p["value"] for p in history(tenant.viewer, device_id, "known")] == [4]
    assert_problem(post(device, {"known": 4.5}), 400, "expected an integer")


def test_resends_are_stored_once(tenant: Tenant) -> None:
    device_id, device = device_with_token(tenant)
    point = {"sensor_id": "t", "timestamp": SEED, "value": 1.0}
    for _ in range(3):  # a device resending the same reading (no message id)
        assert post(device, point).status_code == 200
    first = post(
        device,
        [{"sensor_id": "t", "timestamp": SEED + 5, "value": 2.0}],
        **{"Idempotency-Key": "msg-1"},
    )
    assert first.json() == {"accepted": 1, "events": 0}
    again = post(
        device,
        [{"sensor_id": "t", "timestamp": SEED + 6, "value": 3.0}],
        **{"Idempotency-Key": "msg-1"},
    )
    assert again.status_code == 200 and again.json()["duplicate"] is True
    wrapped = {
        "msg_id": "msg-2",
        "items": [{"sensor_id": "t", "timestamp": SEED + 7, "value": 4.0}],
    }
    assert post(device, wrapped).json()["accepted"] == 1
    assert post(device, wrapped).json()["duplicate"] is True
    assert [(p["value"]) for p in history(tenant.viewer, device_id, "t", order="asc")] == [
        1.0,
        2.0,
        4.0,
    ]


def test_late_and_out_of_order_points_read_back_in_order(tenant: Tenant) -> None:
    device_id, device = device_with_token(tenant)
    for offset in (5, 1, 9, 3, 7):
        assert (
            post(
                device, {"sensor_id": "t", "timestamp": SEED + offset, "value": float(offset)}
            ).status_code
            == 200
        )
    assert (
        post(
            device, [{"sensor_id": "t", "timestamp": SEED + o, "value": float(o)} for o in (8, 2)]
        ).status_code
        == 200
    )
    asc = [p["value"] for p in history(tenant.viewer, device_id, "t", order="asc")]
    assert asc == [1.0, 2.0, 3.0, 5.0, 7.0, 8.0, 9.0]
    newest = [p["value"] for p in history(tenant.viewer, device_id, "t", limit=3)]
    assert newest == [9.0, 8.0, 7.0]
    latest = tenant.viewer.get(f"{V1}/devices/{device_id}/latest").json()["items"][0]
    assert latest["value"] == 9.0  # the late points did not replace the newest


def test_aggregates_match_the_points(tenant: Tenant) -> None:
    device_id, device = device_with_token(tenant)
    values = {SEED + i * 600: float((i * 7) % 13) for i in range(36)}  # 6 hours, every 10 min
    assert (
        post(
            device, [{"sensor_id": "t", "timestamp": ts, "value": v} for ts, v in values.items()]
        ).status_code
        == 200
    )
    start = SEED - SEED % 3600
    resp = tenant.viewer.get(
        f"{V1}/devices/{device_id}/telemetry",
        params={
            "sensor": "t",
            "from": start,
            "to": start + 7 * 3600,
            "agg": "avg,min,max,sum,count,first,last",
            "interval": "1h",
        },
    )
    assert resp.status_code == 200, resp.text
    buckets = resp.json()["items"]
    assert resp.json()["interval_s"] == 3600
    expected = []
    for hour in range(7):
        lo, hi = start + hour * 3600, start + (hour + 1) * 3600
        chosen = [(ts, v) for ts, v in sorted(values.items()) if lo <= ts < hi]
        if chosen:
            vs = [v for _, v in chosen]
            expected.append(
                {
                    "avg": pytest.approx(statistics.fmean(vs)),
                    "min": min(vs),
                    "max": max(vs),
                    "sum": pytest.approx(sum(vs)),
                    "count": len(vs),
                    "first": vs[0],
                    "last": vs[-1],
                }
            )
    assert [
        {k: b[k] for k in ("avg", "min", "max", "sum", "count", "first", "last")} for b in buckets
    ] == expected
    assert_problem(
        tenant.viewer.get(
            f"{V1}/devices/{device_id}/telemetry",
            params={"sensor": "t", "agg": "median", "interval": "1h"},
        ),
        422,
        "agg",
    )
    assert_problem(
        tenant.viewer.get(
            f"{V1}/devices/{device_id}/telemetry",
            params={"sensor": "t", "agg": "avg", "interval": "soon"},
        ),
        422,
        "interval",
    )
    assert_problem(
        tenant.viewer.get(f"{V1}/devices/{device_id}/telemetry", params={"sensor": "nope"}), 404
    )


def test_events_are_stored_filtered_and_deduplicated(tenant: Tenant) -> None:
    device_id, device = device_with_token(tenant)
    pickup = {"event": "product_pickup", "product_id": 162, "ts": SEED}
    other = {
        "event": "product_pickup",
        "product_id": 171,
        "ts": SEED,
    }  # same instant, other product
    sale = {"event": "sale", "product_id": 162, "ts": SEED + 30}
    resp = post(device, [pickup, other, sale], door="events")
    assert resp.json() == {"accepted": 0, "events": 3}
    assert post(device, pickup, door="events").status_code == 200  # an identical resend
    listed = tenant.viewer.get(f"{V1}/devices/{device_id}/events", params={"order": "asc"}).json()[
        "items"
    ]
    assert [(e["event"], e["body"]["product_id"]) for e in listed] == [
        ("product_pickup", 162),
        ("product_pickup", 171),
        ("sale", 162),
    ]
    sales = tenant.viewer.get(f"{V1}/devices/{device_id}/events", params={"type": "sale"}).json()[
        "items"
    ]
    assert [e["ts"] for e in sales] == ["2018-05-19T08:19:57.000000Z"]
    assert_problem(post(device, {"product_id": 1}, door="events"), 400, "event")


def test_device_auth_on_the_ingest_doors(tenant: Tenant, server: RoostServer) -> None:
    device_id, device = device_with_token(tenant)
    with Api(server.url) as anonymous:
        assert_problem(anonymous.post(f"{V1}/telemetry", content=b'{"t": 1}'), 401)
        assert_problem(
            anonymous.post(
                f"{V1}/telemetry", content=b'{"t": 1}', headers={"Authorization": "Bearer junk"}
            ),
            401,
        )
    # A user's token is not a device token.
    user_token = tenant.operator.headers["Authorization"]
    assert_problem(
        tenant.anonymous.post(
            f"{V1}/telemetry", content=b'{"t": 1}', headers={"Authorization": user_token}
        ),
        403,
    )
    token_id = tenant.operator.get(f"{V1}/devices/{device_id}/tokens").json()["items"][0]["id"]
    assert post(device, {"t": 1}).status_code == 200
    assert tenant.operator.delete(f"{V1}/devices/{device_id}/tokens/{token_id}").status_code == 204
    assert_problem(post(device, {"t": 2}), 403, "revoked")
    assert [p["value"] for p in history(tenant.viewer, device_id, "t")] == [1.0]


def test_oversize_bodies_get_413(tenant: Tenant) -> None:
    _device_id, device = device_with_token(tenant)
    assert_problem(
        device.post(f"{V1}/telemetry", content=b"[" + b" " * (5 * 1024 * 1024) + b"]"), 413
    )


def test_another_tenant_sees_nothing(tenant: Tenant, admin: Api) -> None:
    device_id, device = device_with_token(tenant)
    assert post(device, {"t": 1.0}).status_code == 200
    outsider = admin  # the superuser without X-Roost-Tenant acts in its own tenant, 'default'
    for path in (
        f"{V1}/devices/{device_id}/latest",
        f"{V1}/devices/{device_id}/events",
        f"{V1}/devices/{device_id}/telemetry?sensor=t",
    ):
        assert_problem(outsider.get(path), 404)
    fleet = outsider.get(f"{V1}/telemetry/latest").json()
    assert device_id not in {item["device_id"] for item in fleet["items"]}


def test_fleet_latest_by_group_and_site(tenant: Tenant) -> None:
    op = tenant.operator
    assert op.post(f"{V1}/sites", json={"id": "paris", "name": "Paris"}).status_code == 201
    assert op.post(f"{V1}/groups", json={"id": "front", "name": "Front"}).status_code == 201
    a, device_a = device_with_token(tenant, site_id="paris", group_ids=["front"])
    b, device_b = device_with_token(tenant, site_id="paris")
    c, device_c = device_with_token(tenant)
    for n, device in enumerate((device_a, device_b, device_c)):
        assert (
            post(
                device, {"ts": SEED + n, "values": {"temperature": 20.0 + n, "cpu": 1.0}}
            ).status_code
            == 200
        )
    by_site = tenant.viewer.get(f"{V1}/telemetry/latest", params={"site_id": "paris"}).json()
    assert sorted(item["device_id"] for item in by_site["items"]) == sorted([a, b])
    by_group = tenant.viewer.get(
        f"{V1}/telemetry/latest", params={"group": "front", "sensor": "temperature"}
    ).json()
    assert by_group["items"] == [
        {
            "device_id": a,
            "sensors": {"temperature": {"ts": "2018-05-19T08:19:27.000000Z", "value": 20.0}},
        }
    ]
    everyone = tenant.viewer.get(f"{V1}/telemetry/latest").json()
    assert everyone["total"] == 3 and c in {item["device_id"] for item in everyone["items"]}
    # A dynamic group (a filter), and a static group narrowed by site.
    resp = op.post(
        f"{V1}/groups", json={"id": "in-paris", "name": "P", "filter": {"site_id": "paris"}}
    )
    assert resp.status_code == 201, resp.text
    dynamic = tenant.viewer.get(f"{V1}/telemetry/latest", params={"group": "in-paris"}).json()
    assert sorted(item["device_id"] for item in dynamic["items"]) == sorted([a, b])
    narrowed = tenant.viewer.get(
        f"{V1}/telemetry/latest", params={"group": "front", "site_id": "lyon"}
    ).json()
    assert narrowed == {"items": [], "total": 0}


def test_consumer_groups_pull_by_offset_independently(tenant: Tenant) -> None:
    device_id, device = device_with_token(tenant)
    op = tenant.operator
    assert op.post(f"{V1}/streams", json={"id": "late", "start": "latest"}).status_code == 201
    assert op.post(f"{V1}/streams", json={"id": "early", "start": "earliest"}).status_code == 201
    for n in range(5):
        assert (
            post(device, {"sensor_id": "t", "timestamp": SEED + n, "value": float(n)}).status_code
            == 200
        )
    assert post(device, {"event": "boot", "ts": SEED + 9}, door="events").status_code == 200
    first = op.get(f"{V1}/streams/early/messages", params={"limit": 4}).json()
    mine = [i for i in first["items"] if i["device_id"] == device_id]
    assert [i["value"] for i in mine] == [0.0, 1.0, 2.0, 3.0]
    assert (
        op.post(f"{V1}/streams/early/offset", json={"offset": first["next_offset"]}).status_code
        == 200
    )
    rest = op.get(f"{V1}/streams/early/messages", params={"limit": 100}).json()
    assert [(i["type"], i.get("value"), i.get("event")) for i in rest["items"]] == [
        ("telemetry", 4.0, None),
        ("event", None, "boot"),
    ]
    offsets = [i["offset"] for i in first["items"] + rest["items"]]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
    # The group made before the data, reading from the end, sees all six as new.
    late = op.get(f"{V1}/streams/late/messages", params={"limit": 100}).json()
    assert len(late["items"]) == 6
    status = tenant.viewer.get(f"{V1}/streams/early").json()
    assert status["committed_offset"] == first["next_offset"]
    assert_problem(tenant.viewer.get(f"{V1}/streams/unknown/messages"), 404)
    # A read never creates a group, whoever reads: a mistyped name is a 404, not a new group.
    assert_problem(op.get(f"{V1}/streams/mistyped/messages"), 404)
    assert_problem(op.get(f"{V1}/streams/mistyped"), 404)
    assert_problem(op.post(f"{V1}/streams", json={"id": "late"}), 409)


def _ws_url(server: RoostServer, path: str) -> str:
    return server.url.replace("http://", "ws://") + path


async def _ws_ingest(server: RoostServer, token: str, frames: list[bytes]) -> list[dict[str, Any]]:
    async with websockets.connect(
        _ws_url(server, f"{V1}/ws/ingest"), additional_headers={"Authorization": f"Bearer {token}"}
    ) as ws:
        for frame in frames:
            await ws.send(frame.decode())
        return [orjson.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in frames]


def test_websocket_ingest_acknowledges_each_frame_in_order(
    tenant: Tenant, server: RoostServer
) -> None:
    device_id, device = device_with_token(tenant)
    token = device.headers["Authorization"].split()[1]
    frames = [
        orjson.dumps({"sensor_id": "t", "timestamp": SEED + n, "value": float(n)}) for n in range(5)
    ]
    frames.insert(2, b'{"sensor_id": "t", "value": "hot"}')
    frames.append(orjson.dumps([{"event": "door_open", "ts": SEED}]))
    acks = asyncio.run(_ws_ingest(server, token, frames))
    assert [a["ack"] for a in acks] == list(range(1, 8))
    assert acks[2]["error"]["status"] == 400 and acks[2]["error"]["errors"][0]["field"] == "value"
    assert [a.get("accepted") for a in acks] == [1, 1, None, 1, 1, 1, 0]
    assert acks[6]["events"] == 1
    assert [p["value"] for p in history(tenant.viewer, device_id, "t", order="asc")] == [
        0.0,
        1.0,
        2.0,
        3.0,
        4.0,
    ]


def test_websocket_upgrade_refused_without_a_valid_token(server: RoostServer) -> None:
    async def attempt(headers: dict[str, str]) -> int:
        try:
            async with websockets.connect(
                _ws_url(server, f"{V1}/ws/ingest"), additional_headers=headers
            ):
                return 101
        except InvalidStatus as exc:
            return exc.response.status_code

    assert asyncio.run(attempt({})) == 401
    assert asyncio.run(attempt({"Authorization": "Bearer junk"})) == 401


def test_live_stream_delivers_what_is_committed(tenant: Tenant, server: RoostServer) -> None:
    device_id, device = device_with_token(tenant)
    other_id, other = device_with_token(tenant)
    user_token = tenant.viewer.headers["Authorization"].split()[1]

    async def scenario() -> list[dict[str, Any]]:
        url = _ws_url(server, f"{V1}/ws/stream?device={device_id}&sensor=t&token={user_token}")
        async with websockets.connect(url) as ws:
            await asyncio.sleep(0.2)  # the subscription is live once accepted; give the hub a beat
            await asyncio.to_thread(
                post, other, {"sensor_id": "t", "timestamp": SEED, "value": 9.0}
            )
            await asyncio.to_thread(
                post, device, {"sensor_id": "x", "timestamp": SEED, "value": 5.0}
            )
            await asyncio.to_thread(
                post,
                device,
                [{"sensor_id": "t", "timestamp": SEED + n, "value": float(n)} for n in range(3)],
            )
            frame = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
            items: list[dict[str, Any]] = frame["items"]
            return items

    items = asyncio.run(scenario())
    assert [(i["device_id"], i["sensor"], i["value"]) for i in items] == [
        (device_id, "t", 0.0),
        (device_id, "t", 1.0),
        (device_id, "t", 2.0),
    ]
    assert other_id != device_id


def test_concurrent_messages_creating_sensors_of_one_device_all_land(
    tenant: Tenant, server: RoostServer
) -> None:
    """Each request makes a sensor of the same device at once: no one chases a moving state."""
    device_id, device = device_with_token(tenant)
    token = device.headers["Authorization"]

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(
            base_url=server.url, headers={"Authorization": token}, timeout=30
        ) as client:
            return await asyncio.gather(
                *(
                    client.post(
                        f"{V1}/telemetry",
                        json=[{"sensor_id": f"s{n}", "timestamp": SEED + k, "value": k}
                              for k in range(50)],
                    )
                    for n in range(16)
                )
            )  # fmt: skip

    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [200] * 16, [r.text for r in responses]
    for n in range(16):
        assert [p["value"] for p in history(tenant.viewer, device_id, f"s{n}", order="asc")] == [
            float(k) for k in range(50)
        ]


def test_tenant_retention_drops_old_telemetry_and_events(tenant: Tenant, admin: Api) -> None:
    """PATCH a tenant's retention_days: its older data goes (whole blocks), the rest stays."""
    device_id, device = device_with_token(tenant)
    now = int(time.time())
    old, recent = now - 40 * 86_400, now - 10 * 86_400
    body = [{"sensor_id": "old", "timestamp": old + n, "value": n} for n in range(20)]
    body += [{"sensor_id": "new", "timestamp": recent + n, "value": n} for n in range(20)]
    assert post(device, body).status_code == 200
    events = [{"event": "tap", "ts": old}, {"event": "tap", "ts": recent}]
    assert post(device, events, door="events").status_code == 200
    # Another tenant's (the superuser's own, 'default') equally old data is not touched.
    other_id = unique("keep")
    assert admin.post(f"{V1}/devices", json={"id": other_id}).status_code == 201
    other_token = admin.post(f"{V1}/devices/{other_id}/tokens", json={}).json()["token"]
    other = tenant.client(other_token)
    assert (
        post(
            other, [{"sensor_id": "old", "timestamp": old + n, "value": n} for n in range(20)]
        ).status_code
        == 200
    )
    resp = admin.patch(f"{V1}/tenants/{tenant.id}", json={"retention_days": 30})
    assert resp.status_code == 200 and resp.json()["retention_days"] == 30
    span = {"from": old - 1, "to": now + 1}
    deadline = time.monotonic() + 20
    while history(tenant.viewer, device_id, "old", **span) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert history(tenant.viewer, device_id, "old", **span) == []
    assert [p["value"] for p in history(tenant.viewer, device_id, "new", **span)] == [
        float(n) for n in range(20)
    ]
    kept = tenant.viewer.get(
        f"{V1}/devices/{device_id}/events", params={"type": "tap", **span}
    ).json()["items"]
    assert [e["ts"][:10] for e in kept] == [time.strftime("%Y-%m-%d", time.gmtime(recent))]
    assert len(history(admin, other_id, "old", **span)) == 20
    assert_problem(admin.patch(f"{V1}/tenants/{tenant.id}", json={"retention_days": 0}), 422)
    assert admin.delete(f"{V1}/devices/{other_id}").status_code == 204


def test_query_answers_have_the_documented_shapes(tenant: Tenant) -> None:
    """The query routes send pre-serialised JSON; it must match their OpenAPI models exactly."""

    device_id, device = device_with_token(tenant)
    points = [{"sensor_id": "t", "timestamp": SEED + n, "value": n} for n in range(3)]
    assert post(device, points).status_code == 200
    assert post(device, {"event": "tap", "ts": SEED}, door="events").status_code == 200
    op = tenant.operator
    assert op.post(f"{V1}/streams", json={"id": "shape", "start": "earliest"}).status_code == 201
    base = f"{V1}/devices/{device_id}"
    span = {"sensor": "t", "from": SEED, "to": SEED + 10}
    for path, params, model in (
        (f"{base}/telemetry", span, SeriesOut),
        (f"{base}/telemetry", {**span, "agg": "avg,count", "interval": "1m"}, SeriesOut),
        (f"{base}/latest", {}, LatestOut),
        (f"{base}/events", {}, EventsOut),
        (f"{V1}/telemetry/latest", {}, FleetLatestOut),
        (f"{V1}/streams/shape/messages", {}, StreamPullOut),
    ):
        resp = op.get(path, params=params)
        assert resp.status_code == 200 and resp.headers["content-type"] == "application/json"
        body = resp.json()
        assert body["items"], path
        model.model_validate(body)
        assert set(body) <= set(model.model_fields), (path, set(body) - set(model.model_fields))
        for item in body["items"]:
            if model is LatestOut:
                assert set(item) <= set(LatestItem.model_fields)
            if model is EventsOut:
                assert set(item) <= set(EventOut.model_fields)
