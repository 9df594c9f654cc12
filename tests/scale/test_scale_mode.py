"""Scale mode end to end: ``roost serve`` on PostgreSQL + NATS JetStream, every ingest door.

In scale mode a device is acknowledged once JetStream holds its data, and a worker commits it to
PostgreSQL just behind: reads here wait (with a deadline) until what was acknowledged is
queryable, then check it exactly.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import httpx
import orjson
import paho.mqtt.client as paho
import pytest
import websockets

from tests.support import (
    ADMIN_PASSWORD,
    Api,
    RoostServer,
    free_port,
    fresh_postgres_database,
    postgres_reachable,
    private_nats,
    skip_or_fail,
    unique,
)

V1 = "/api/v1"
SEED = 1_700_000_000  # seconds
WAIT_S = 30.0
T = TypeVar("T")


@pytest.fixture(scope="module")
def scale_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoostServer]:
    reason = postgres_reachable()
    if reason:
        skip_or_fail(reason)
    with (
        fresh_postgres_database() as database_url,
        private_nats(tmp_path_factory.mktemp("nats")) as nats_url,
    ):
        server = RoostServer(
            tmp_path_factory.mktemp("roost-scale"),
            database_url=database_url,
            mqtt_port=free_port(),
            env_overrides={"ROOST_BUS_URL": nats_url},
        ).start()
        try:
            yield server
        finally:
            server.stop()
        log = server.log_path.read_text(errors="replace")
        assert "Traceback" not in log, log
        assert not server.unhandled_errors()


@pytest.fixture(scope="module")
def admin(scale_server: RoostServer) -> Iterator[Api]:
    with Api(scale_server.url) as anon:
        token = anon.login("admin", ADMIN_PASSWORD)
    with Api(scale_server.url, token) as api:
        yield api


def new_device(admin: Api, **fields: Any) -> tuple[str, str]:
    device_id = unique("dev")
    assert admin.post(f"{V1}/devices", json={"id": device_id, **fields}).status_code == 201
    resp = admin.post(f"{V1}/devices/{device_id}/tokens", json={"name": "t"})
    assert resp.status_code == 201, resp.text
    return device_id, resp.json()["token"]


def eventually(read: Callable[[], T], done: Callable[[T], bool]) -> T:
    """``read()`` again until ``done`` holds (the worker commits just after the ack)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        got = read()
        if done(got) or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def values(admin: Api, device_id: str, sensor: str) -> list[Any]:
    resp = admin.get(
        f"{V1}/devices/{device_id}/telemetry",
        params={"sensor": sensor, "order": "asc", "limit": 10_000},
    )
    if resp.status_code == 404:  # the sensor is created by the worker's commit... or not yet
        return []
    assert resp.status_code == 200, resp.text
    return [p["value"] for p in resp.json()["items"]]


def test_http_mqtt_and_websocket_ingest_land_in_postgresql(
    scale_server: RoostServer, admin: Api
) -> None:
    device_id, token = new_device(admin)
    device = Api(scale_server.url, token)
    # HTTP: a single point, a batch of 2,000, events.
    resp = device.post(f"{V1}/telemetry", json={"sensor_id": "h", "timestamp": SEED, "value": 0})
    assert resp.status_code == 200, resp.text
    batch = [{"sensor_id": "h", "timestamp": SEED + n, "value": n} for n in range(1, 2000)]
    assert device.post(f"{V1}/telemetry", content=orjson.dumps(batch)).json() == {
        "accepted": 1999,
        "events": 0,
    }
    events = [{"event": "pickup", "ts": SEED + n, "product": f"p{n}"} for n in range(3)]
    assert device.post(f"{V1}/events", content=orjson.dumps(events)).status_code == 200
    device.close()
    # MQTT 5.0 at QoS 1: PUBACK after JetStream took it.
    client = paho.Client(
        paho.CallbackAPIVersion.VERSION2, client_id=device_id, protocol=paho.MQTTv5
    )
    client.username_pw_set(device_id, token)
    client.connect("127.0.0.1", scale_server.mqtt_port)
    client.loop_start()
    infos = [
        client.publish(
            f"devices/{device_id}/telemetry",
            orjson.dumps({"sensor_id": "m", "timestamp": SEED + n, "value": n}),
            qos=1,
        )
        for n in range(200)
    ]
    for info in infos:
        info.wait_for_publish(timeout=10)
    assert all(info.is_published() for info in infos)
    client.loop_stop()
    client.disconnect()

    # WebSocket ingest: an ack per frame.
    async def ws_ingest() -> list[dict[str, Any]]:
        url = scale_server.url.replace("http://", "ws://") + f"{V1}/ws/ingest"
        async with websockets.connect(
            url, additional_headers={"Authorization": f"Bearer {token}"}
        ) as ws:
            for n in range(5):
                await ws.send(orjson.dumps({"sensor_id": "w", "timestamp": SEED + n, "value": n}))
            return [orjson.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in range(5)]

    acks = asyncio.run(ws_ingest())
    assert [(a["ack"], a["accepted"]) for a in acks] == [(n, 1) for n in range(1, 6)]

    for sensor, count in (("h", 2000), ("m", 200), ("w", 5)):
        got = eventually(
            lambda s=sensor: values(admin, device_id, s), lambda v, c=count: len(v) >= c
        )
        assert got == [float(n) for n in range(count)], sensor
    stored_events = admin.get(
        f"{V1}/devices/{device_id}/events", params={"type": "pickup", "order": "asc"}
    ).json()["items"]
    assert [e["body"]["product"] for e in stored_events] == ["p0", "p1", "p2"]
    latest = {
        i["sensor"]: i["value"]
        for i in admin.get(f"{V1}/devices/{device_id}/latest").json()["items"]
    }
    assert latest == {"h": 1999.0, "m": 199.0, "w": 4.0}
    fleet = admin.get(f"{V1}/telemetry/latest", params={"sensor": "m"}).json()["items"]
    assert {
        "device_id": device_id,
        "sensors": {"m": {"ts": "2023-11-14T22:16:39.000000Z", "value": 199.0}},
    } in fleet


def test_consumer_groups_and_the_live_stream_in_scale_mode(
    scale_server: RoostServer, admin: Api
) -> None:
    device_id, token = new_device(admin)
    group = unique("g")
    assert admin.post(f"{V1}/streams", json={"id": group, "start": "latest"}).status_code == 201
    admin_token = admin.headers["Authorization"].split()[1]

    async def scenario() -> list[dict[str, Any]]:
        url = scale_server.url.replace("http://", "ws://")
        url += f"{V1}/ws/stream?device={device_id}&token={admin_token}"
        async with websockets.connect(url) as ws:
            await asyncio.sleep(0.2)
            async with httpx.AsyncClient(
                base_url=scale_server.url, headers={"Authorization": f"Bearer {token}"}
            ) as device:
                body = [{"sensor_id": "t", "timestamp": SEED + n, "value": n} for n in range(10)]
                assert (await device.post(f"{V1}/telemetry", json=body)).status_code == 200
            items: list[dict[str, Any]] = []
            while len(items) < 10:
                items += orjson.loads(await asyncio.wait_for(ws.recv(), WAIT_S))["items"]
            return items

    live = asyncio.run(scenario())
    assert [(i["device_id"], i["sensor"], i["value"]) for i in live] == [
        (device_id, "t", float(n)) for n in range(10)
    ]

    def pull() -> list[dict[str, Any]]:
        page = admin.get(f"{V1}/streams/{group}/messages", params={"limit": 1000}).json()
        return [i for i in page["items"] if i["device_id"] == device_id]

    mine = eventually(pull, lambda items: len(items) >= 10)
    assert [i["value"] for i in mine] == [float(n) for n in range(10)]


def test_a_burst_larger_than_the_bus_payload_is_stored_whole(
    scale_server: RoostServer, admin: Api
) -> None:
    """Group commits and worker batches of several MB cross NATS in parts of ≤ max_payload."""
    devices = [new_device(admin) for _ in range(4)]
    requests, per_request = 24, 5000

    async def burst() -> list[int]:
        async def send(token: str, r: int) -> int:
            async with httpx.AsyncClient(
                base_url=scale_server.url, headers={"Authorization": f"Bearer {token}"}, timeout=60
            ) as client:
                body = [
                    {"sensor_id": f"s{r}", "timestamp": SEED + n, "value": n}
                    for n in range(per_request)
                ]
                resp = await client.post(f"{V1}/telemetry", content=orjson.dumps(body))
                assert resp.status_code == 200, resp.text
                return resp.status_code

        return await asyncio.gather(*(send(devices[r % 4][1], r) for r in range(requests)))

    assert asyncio.run(burst()) == [200] * requests

    def total() -> int:
        count = 0
        for r in range(requests):
            resp = admin.get(
                f"{V1}/devices/{devices[r % 4][0]}/telemetry",
                params={
                    "sensor": f"s{r}",
                    "agg": "count",
                    "interval": "1d",
                    "from": SEED,
                    "to": SEED + per_request,
                },
            )
            if resp.status_code == 200:
                count += sum(int(b["count"] or 0) for b in resp.json()["items"])
        return count

    assert eventually(total, lambda n: n >= requests * per_request) == requests * per_request


def test_state_commands_jobs_and_presence_work_the_same_in_scale_mode(
    scale_server: RoostServer, admin: Api
) -> None:
    device_id, token = new_device(admin)
    got: list[tuple[str, Any]] = []
    client = paho.Client(
        paho.CallbackAPIVersion.VERSION2, client_id=device_id, protocol=paho.MQTTv5
    )
    client.username_pw_set(device_id, token)
    client.on_message = lambda c, u, m: got.append((m.topic, orjson.loads(m.payload)))
    client.connect("127.0.0.1", scale_server.mqtt_port)
    client.loop_start()

    def first(suffix: str, check: Callable[[Any], bool] = bool) -> Any:
        topic = f"devices/{device_id}/{suffix}"
        found = eventually(
            lambda: [body for t, body in list(got) if t == topic and check(body)], bool
        )
        assert found, f"nothing on {topic}: {got}"
        return found[0]

    try:
        for subtree in ("state", "commands", "jobs"):
            client.subscribe(f"devices/{device_id}/{subtree}/#", 1)
        presence = eventually(
            lambda: admin.get(f"{V1}/devices/{device_id}/presence").json(),
            lambda body: body["status"] == "online",
        )
        assert presence["connected"] is True

        # State: the desired change arrives as a delta, the report clears it.
        resp = admin.patch(f"{V1}/devices/{device_id}/state", json={"desired": {"light": "on"}})
        assert resp.status_code == 200, resp.text
        assert first("state/delta")["delta"] == {"light": "on"}
        client.publish(f"devices/{device_id}/state/reported", b'{"light": "on"}', 1)
        state = eventually(
            lambda: admin.get(f"{V1}/devices/{device_id}/state").json(),
            lambda body: body["reported"] == {"light": "on"},
        )
        assert state["delta"] == {}

        # A command and its answer.
        resp = admin.post(f"{V1}/devices/{device_id}/commands", json={"name": "blink"})
        assert resp.status_code == 201, resp.text
        command_id = resp.json()["id"]
        assert first(f"commands/{command_id}")["name"] == "blink"
        answer = orjson.dumps({"status": "SUCCEEDED", "result": {"blinked": 3}})
        client.publish(f"devices/{device_id}/commands/{command_id}/response", answer, 1)
        done = eventually(
            lambda: admin.get(f"{V1}/devices/{device_id}/commands/{command_id}").json(),
            lambda body: body["status"] == "SUCCEEDED",
        )
        assert done["result"] == {"blinked": 3}

        # A job over the device: notified, started, finished, the job completes.
        resp = admin.post(
            f"{V1}/jobs", json={"document": {"do": "x"}, "targets": {"devices": [device_id]}}
        )
        assert resp.status_code == 201, resp.text
        job_id = resp.json()["id"]
        notified = first("jobs/notify", lambda body: bool(body["jobs"]))
        assert notified["jobs"][0]["job_id"] == job_id
        for status in ("IN_PROGRESS", "SUCCEEDED"):
            client.publish(
                f"devices/{device_id}/jobs/{job_id}/update", orjson.dumps({"status": status}), 1
            )
            assert first(f"jobs/{job_id}/update/accepted", lambda b, s=status: b["status"] == s)
        job = eventually(
            lambda: admin.get(f"{V1}/jobs/{job_id}").json(),
            lambda body: body["status"] == "COMPLETED",
        )
        assert job["counts"]["SUCCEEDED"] == 1
    finally:
        client.loop_stop()
        client.disconnect()
    offline = eventually(
        lambda: admin.get(f"{V1}/devices/{device_id}/presence").json(),
        lambda body: body["status"] == "offline",
    )
    assert offline["connected"] is False
