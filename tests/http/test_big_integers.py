"""One rule for JSON integers on every HTTP and WebSocket door (:mod:`roost.core.json`), against a
running ``roost serve`` on each backend: an integer outside -2**63 .. 2**64-1 is refused with 422
naming its field, on one keep-alive connection that goes on serving; the edges are stored and
read back exactly; a float of any magnitude is still a float."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import websockets

from tests.conftest import Tenant
from tests.support import RoostServer, eventually, unique

V1 = "/api/v1"
SEED = 1526717967  # 2018-05-19T08:19:27Z
BIG = 2**64  # one past the greatest unsigned 64-bit integer
SMALL = -(2**63) - 1  # one below the least signed 64-bit integer
EDGES = {"max_signed": 2**63 - 1, "min_signed": -(2**63), "max_unsigned": 2**64 - 1}


@dataclass
class World:
    """One tenant's device with a pending command, a released job and a schedule; one connection."""

    http: httpx.Client  # no credential of its own: every request names its caller
    operator: str  # bearer tokens
    device: str
    device_id: str
    command_id: str
    job_id: str
    schedule_id: str
    ports: list[int]

    def call(self, method: str, path: str, token: str, body: Any = None) -> httpx.Response:
        """A request on the shared connection; its local port is kept (to prove it is one)."""
        resp = self.http.request(
            method,
            f"{V1}{path}",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            # The standard library writes integers of any size (orjson would refuse).
            content=None if body is None else json.dumps(body),
        )
        self.ports.append(resp.extensions["network_stream"].get_extra_info("client_addr")[1])
        return resp


@pytest.fixture
def world(tenant: Tenant, server: RoostServer) -> Iterator[World]:
    device_id = unique("dev")
    op = tenant.operator
    assert op.post(f"{V1}/devices", json={"id": device_id}).status_code == 201
    resp = op.post(f"{V1}/devices/{device_id}/tokens", json={})
    assert resp.status_code == 201, resp.text
    device_token = resp.json()["token"]
    resp = op.post(f"{V1}/devices/{device_id}/commands", json={"name": "reboot"})
    assert resp.status_code == 201, resp.text
    command_id = resp.json()["id"]
    resp = op.post(
        f"{V1}/jobs", json={"document": {"op": "noop"}, "targets": {"devices": [device_id]}}
    )
    assert resp.status_code == 201, resp.text
    job_id = resp.json()["id"]
    resp = op.post(
        f"{V1}/devices/{device_id}/command-schedules", json={"name": "light", "cron": "0 18 * * *"}
    )
    assert resp.status_code == 201, resp.text
    operator_token = op.headers["Authorization"].split()[1]
    with httpx.Client(base_url=server.url, timeout=30) as http:
        yield World(
            http, operator_token, device_token, device_id, command_id, job_id,
            resp.json()["id"], [],
        )  # fmt: skip


def refused(resp: httpx.Response, field: str, status: int = 422) -> dict[str, Any]:
    """The answer is a problem+json refusal naming ``field`` as holding the integer."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = resp.json()
    fields = [e["field"] for e in body["errors"]]
    assert field in fields, body
    error = body["errors"][fields.index(field)]
    assert error["code"] == "integer_out_of_range", body
    assert "18446744073709551615" in error["message"], body
    return body


def test_every_http_door_refuses_an_integer_beyond_64_bits(world: World) -> None:
    w, op, dev = world, world.operator, world.device
    doors: list[tuple[str, str, str, Any, str]] = [
        ("POST", f"/devices/{w.device_id}/commands", op,
         {"name": "set", "params": {"n": BIG}}, "params.n"),
        ("POST", f"/devices/{w.device_id}/command-schedules", op,
         {"name": "set", "cron": "0 6 * * *", "params": {"deep": [1, {"n": SMALL}]}},
         "params.deep.1.n"),
        ("PATCH", f"/command-schedules/{w.schedule_id}", op, {"params": {"n": BIG}}, "params.n"),
        ("POST", "/jobs", op, {"document": {"firmware": {"size": BIG}},
                               "targets": {"devices": [w.device_id]}}, "document.firmware.size"),
        ("PATCH", f"/devices/{w.device_id}/state", op, {"desired": {"n": BIG}}, "desired.n"),
        ("PATCH", f"/devices/{w.device_id}/states/extra", op,
         {"reported": {"list": [SMALL]}}, "reported.list.0"),
        ("POST", f"/device/commands/{w.command_id}/response", dev,
         {"status": "SUCCEEDED", "result": {"counter": BIG}}, "result.counter"),
        ("POST", f"/device/commands/{w.command_id}/response", dev,
         {"status": "SUCCEEDED", "result": BIG}, "result"),
        ("POST", "/device/jobs/start-next", dev, {"status_details": {"n": BIG}},
         "status_details.n"),
        ("POST", f"/device/jobs/{w.job_id}/update", dev,
         {"status": "IN_PROGRESS", "status_details": {"bytes": BIG}}, "status_details.bytes"),
        ("POST", f"/device/jobs/{w.job_id}/update", dev,
         {"status": "IN_PROGRESS", "expected_version": BIG}, "expected_version"),
        ("POST", "/device/state/reported", dev, {"uptime": {"s": BIG}}, "uptime.s"),
        ("POST", "/device/states/extra/reported", dev, {"n": SMALL}, "n"),
        ("POST", "/devices/import", op, [{"id": unique("imp"), "tags": {"k": "v"}, "n": BIG}],
         "0.n"),
    ]  # fmt: skip
    for method, path, token, body, field in doors:
        refused(w.call(method, path, token, body), field)
        # The same connection serves the next request.
        assert w.call("GET", f"/devices/{w.device_id}", op).status_code == 200

    # Ingest names the item and the field inside it.
    cases: list[tuple[str, Any, int, str]] = [
        ("telemetry", {"sensor_id": "t", "timestamp": SEED, "value": BIG}, 0, "value"),
        ("telemetry", [{"ts": SEED, "values": {"a": 1}}, {"ts": SEED, "values": {"b": SMALL}}],
         1, "values.b"),
        ("telemetry", {"msg_id": "m1", "items": [{"t": 1}, {"t": BIG}]}, 1, "t"),
        ("telemetry", {"sensor_id": "t", "timestamp": BIG * 10**9, "value": 1.5}, 0, "timestamp"),
        ("events", [{"event": "ok"}, {"event": "sale", "cart": {"id": BIG}}], 1, "cart.id"),
    ]  # fmt: skip
    for door, body, index, field in cases:
        answer = refused(w.call("POST", f"/{door}", dev, body), field)
        assert answer["errors"][0]["index"] == index, answer
        assert w.call("GET", f"/devices/{w.device_id}", op).status_code == 200

    assert len(set(w.ports)) == 1, "a refusal cost the keep-alive connection"
    # Nothing of it was stored.
    record = w.call("GET", f"/devices/{w.device_id}/commands/{w.command_id}", op).json()
    assert record["result"] is None and record["status"] != "SUCCEEDED"
    state = w.call("GET", f"/devices/{w.device_id}/state", op).json()
    assert state["desired"] == {} and state["reported"] == {}
    events = w.call("GET", f"/devices/{w.device_id}/events", op).json()["items"]
    assert events == []
    assert len(w.call("GET", f"/devices/{w.device_id}/command-schedules", op).json()["items"]) == 1


def test_integers_at_the_edges_are_stored_and_read_back_exactly(world: World) -> None:
    w, op, dev = world, world.operator, world.device
    resp = w.call("POST", f"/devices/{w.device_id}/commands", op, {"name": "set", "params": EDGES})
    assert resp.status_code == 201, resp.text
    command_id = resp.json()["id"]
    got = w.call("GET", f"/devices/{w.device_id}/commands/{command_id}", op).json()
    assert got["params"] == EDGES
    polled = w.call("GET", "/device/commands", dev).json()["items"]
    assert [c["params"] for c in polled if c["id"] == command_id] == [EDGES]
    resp = w.call(
        "POST", f"/device/commands/{command_id}/response", dev,
        {"status": "SUCCEEDED", "result": EDGES, "status_details": EDGES},
    )  # fmt: skip
    assert resp.status_code == 200, resp.text
    got = w.call("GET", f"/devices/{w.device_id}/commands/{command_id}", op).json()
    assert (got["result"], got["status_details"]) == (EDGES, EDGES)

    resp = w.call(
        "POST", f"/devices/{w.device_id}/command-schedules", op,
        {"name": "edges", "cron": "0 6 * * *", "params": EDGES},
    )  # fmt: skip
    assert resp.status_code == 201, resp.text
    got = w.call("GET", f"/command-schedules/{resp.json()['id']}", op).json()
    assert got["params"] == EDGES

    resp = w.call("POST", "/jobs", op, {"document": EDGES, "targets": {"devices": [w.device_id]}})
    assert resp.status_code == 201, resp.text
    job_id = resp.json()["id"]
    assert w.call("GET", f"/jobs/{job_id}", op).json()["document"] == EDGES

    def released() -> list[Any]:
        jobs = w.call("GET", "/device/jobs", dev).json()["jobs"]
        return [j["document"] for j in jobs if j["job_id"] == job_id]

    assert eventually(released) == [EDGES]
    resp = w.call("POST", f"/device/jobs/{job_id}/update", dev, {
        "status": "IN_PROGRESS", "status_details": EDGES})  # fmt: skip
    assert resp.status_code == 200, resp.text
    execution = w.call("GET", f"/jobs/{job_id}/executions/{w.device_id}", op).json()
    assert execution["status_details"] == EDGES

    resp = w.call("PATCH", f"/devices/{w.device_id}/state", op, {"desired": EDGES})
    assert resp.status_code == 200, resp.text
    resp = w.call("POST", "/device/state/reported", dev, {"counters": EDGES})
    assert resp.status_code == 200, resp.text
    state = w.call("GET", f"/devices/{w.device_id}/state", op).json()
    assert state["desired"] == EDGES and state["reported"] == {"counters": EDGES}

    resp = w.call("POST", "/events", dev, {"event": "edges", "ts": SEED, **EDGES})
    assert resp.status_code == 200, resp.text
    events = w.call("GET", f"/devices/{w.device_id}/events", op).json()["items"]
    assert [{k: e["body"][k] for k in EDGES} for e in events] == [EDGES]

    # A long sensor takes the signed edges; a double sensor takes any float, however large.
    assert w.call("POST", f"/devices/{w.device_id}/sensors", op,
                  {"id": "count", "type": "long"}).status_code == 201  # fmt: skip
    for n, value in enumerate((2**63 - 1, -(2**63))):
        body = {"sensor_id": "count", "timestamp": SEED + n, "value": value}
        assert w.call("POST", "/telemetry", dev, body).status_code == 200
    body = {"sensor_id": "huge", "timestamp": SEED, "value": 1e20}
    assert w.call("POST", "/telemetry", dev, body).json() == {"accepted": 1, "events": 0}
    body = {"sensor_id": "huge", "timestamp": SEED + 1, "value": -1.8446744073709552e19}
    assert w.call("POST", "/telemetry", dev, body).json() == {"accepted": 1, "events": 0}

    def history(sensor: str) -> list[Any]:
        resp = w.call("GET", f"/devices/{w.device_id}/telemetry?sensor={sensor}&order=asc", op)
        assert resp.status_code == 200, resp.text
        return [p["value"] for p in resp.json()["items"]]

    assert history("count") == [2**63 - 1, -(2**63)]
    values = history("huge")
    assert values == [1e20, -1.8446744073709552e19] and all(type(v) is float for v in values)
    assert len(set(w.ports)) == 1


async def _ws_ingest(server: RoostServer, token: str, frames: list[str]) -> list[dict[str, Any]]:
    async with websockets.connect(
        server.url.replace("http://", "ws://") + f"{V1}/ws/ingest",
        additional_headers={"Authorization": f"Bearer {token}"},
    ) as ws:
        for frame in frames:
            await ws.send(frame)
        return [json.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in frames]


def test_websocket_ingest_refuses_the_frame_and_goes_on(world: World, server: RoostServer) -> None:
    frames = [
        json.dumps({"sensor_id": "t", "timestamp": SEED, "value": 1.5}),
        json.dumps(
            [{"ts": SEED + 1, "values": {"t": 2.5}}, {"ts": SEED + 2, "values": {"t": BIG}}]
        ),
        json.dumps({"event": "sale", "ts": SEED, "total": SMALL}),
        json.dumps({"event": "sale", "ts": SEED, "total": 2**64 - 1}),
        json.dumps({"sensor_id": "t", "timestamp": SEED + 3, "value": 3.5}),
    ]
    acks = asyncio.run(_ws_ingest(server, world.device, frames))
    assert [a["ack"] for a in acks] == [1, 2, 3, 4, 5]
    for refused_ack, index, field in ((acks[1], 1, "values.t"), (acks[2], 0, "total")):
        error = refused_ack["error"]
        assert error["status"] == 422, refused_ack
        assert (error["errors"][0]["index"], error["errors"][0]["field"]) == (index, field)
    assert [a.get("accepted") for a in acks] == [1, None, None, 0, 1]
    assert acks[3]["events"] == 1
    points = world.call("GET", f"/devices/{world.device_id}/telemetry?sensor=t&order=asc",
                        world.operator).json()["items"]  # fmt: skip
    assert [p["value"] for p in points] == [1.5, 3.5]
    events = world.call("GET", f"/devices/{world.device_id}/events", world.operator).json()
    assert [e["body"]["total"] for e in events["items"]] == [2**64 - 1]
