"""``/metrics`` against a running ``roost serve``: MQTT connections by protocol, messages and points
by door and outcome, acknowledgement latency and commit sizes, and the fleet gauges read from the
database — after real MQTT 3.1.1 and 5 clients (paho), HTTP ingest and a command."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families

from tests.support import (
    Api,
    Device,
    RoostServer,
    admin_client,
    eventually,
    free_port,
    make_device,
    unique,
)

TIMEOUT = 10
DOCS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
NOT_AUTHORIZED = 0x87


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoostServer]:
    """A fresh Roost with MQTT on: every count below starts from zero."""
    with RoostServer(
        tmp_path_factory.mktemp("roost-metrics"), mqtt_port=free_port()
    ).running() as s:
        yield s


@pytest.fixture(scope="module")
def admin(server: RoostServer) -> Iterator[Api]:
    with admin_client(server) as api:
        yield api


class Client:
    """A paho device that publishes at QoS 1 and answers each PUBACK's reason code."""

    def __init__(
        self, server: RoostServer, device: Device, protocol: int, transport: str = "tcp"
    ) -> None:
        self.paho = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=unique("c"),
            protocol=protocol,
            transport=transport,  # type: ignore[arg-type]
        )
        if transport == "websockets":
            self.paho.ws_set_options(path="/mqtt")
        self.paho.username_pw_set("JWT", device.token)
        self.connected = threading.Event()
        self.acks: dict[int, Any] = {}
        self.paho.on_connect = lambda c, u, f, reason, p: self.connected.set()
        self.paho.on_publish = lambda c, u, mid, reason, props: self.acks.__setitem__(mid, reason)
        port = server.port if transport == "websockets" else server.mqtt_port
        self.paho.connect("127.0.0.1", port, keepalive=30)
        self.paho.loop_start()
        assert self.connected.wait(TIMEOUT), "no CONNACK"

    def publish(self, topic: str, payload: str) -> int:
        info = self.paho.publish(topic, payload, 1)
        info.wait_for_publish(TIMEOUT)
        assert eventually(lambda: info.mid in self.acks), "no PUBACK"
        return int(getattr(self.acks[info.mid], "value", 0))

    def close(self) -> None:
        self.paho.disconnect()
        self.paho.loop_stop()


def scrape(api: Api) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of ``/metrics`` by (sample name, labels), parsed by prometheus-client."""
    resp = api.get("/metrics")
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(resp.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def ws_ingest(server: RoostServer, device: Device, frames: list[str]) -> list[Any]:
    """Send frames on the WebSocket ingest door; answers each ack (or the refusal's status)."""
    url = server.url.replace("http://", "ws://") + "/api/v1/ws/ingest"
    answers: list[Any] = []
    async with websockets.connect(
        url, additional_headers={"Authorization": f"Bearer {device.token}"}
    ) as ws:
        for frame in frames:
            await ws.send(frame)
            reply = json.loads(await ws.recv())
            answers.append(reply["error"]["status"] if "error" in reply else reply)
    return answers


def points(n: int, start: float = 1.0) -> str:
    return "[" + ",".join(f'{{"level": {start + i}}}' for i in range(n)) + "]"


def test_metrics_count_what_the_doors_did(server: RoostServer, admin: Api) -> None:
    mqtt_device, http_device, idle_device = (make_device(admin) for _ in range(3))
    for made in (mqtt_device, http_device):
        resp = admin.post(
            f"/api/v1/devices/{made.id}/sensors", json={"id": "level", "type": "double"}
        )
        assert resp.status_code == 201, resp.text
    # A command for a device that never connected stays queued.
    resp = admin.post(f"/api/v1/devices/{idle_device.id}/commands", json={"name": "reboot"})
    assert resp.status_code in (200, 201, 202), resp.text
    assert resp.json()["status"] == "QUEUED"

    v311 = Client(server, mqtt_device, mqtt.MQTTv311)
    v5 = Client(server, mqtt_device, mqtt.MQTTv5)
    over_ws = Client(server, mqtt_device, mqtt.MQTTv311, "websockets")
    topic = f"devices/{mqtt_device.id}/telemetry"
    try:
        assert v311.publish(topic, points(3)) == 0
        assert v311.publish(topic, points(3, 10)) == 0
        assert v311.publish(topic, "{not json") == 0  # 3.1.1 acknowledges a refusal
        assert v5.publish(topic, points(2, 20)) == 0
        forbidden = f"devices/{http_device.id}/telemetry"
        assert v5.publish(forbidden, points(1)) == NOT_AUTHORIZED
        assert over_ws.publish(topic, points(1, 40)) == 0
        assert asyncio.run(ws_ingest(server, http_device, [points(2, 50), "[]"])) == [
            {"ack": 1, "accepted": 2, "events": 0},
            400,
        ]

        with Api(server.url, http_device.token) as device_api:
            resp = device_api.post("/api/v1/telemetry", content=points(4, 30))
            assert resp.status_code == 200, resp.text
            resp = device_api.post("/api/v1/telemetry", json={"level": "warm"})
            assert resp.status_code == 400, resp.text

        samples = scrape(admin)
        assert value(samples, "roost_mqtt_connections", protocol="3.1.1", transport="tcp") == 1
        assert value(samples, "roost_mqtt_connections", protocol="5", transport="tcp") == 1
        assert value(samples, "roost_mqtt_connects_total", protocol="3.1.1", transport="tcp") == 1
        assert value(samples, "roost_mqtt_connects_total", protocol="5", transport="tcp") == 1
        over = value(samples, "roost_mqtt_connections", protocol="3.1.1", transport="websocket")
        assert over == 1
    finally:
        v311.close()
        v5.close()
        over_ws.close()

    def messages(door: str, outcome: str, reason: str = "") -> float | None:
        return value(
            samples, "roost_ingest_messages_total", door=door, outcome=outcome, reason=reason
        )

    assert messages("mqtt", "accepted") == 4
    assert messages("mqtt", "refused", "invalid") == 1
    assert messages("mqtt", "refused", "not_authorized") == 1
    assert messages("http", "accepted") == 1
    assert messages("http", "refused", "invalid") == 1
    assert messages("websocket", "accepted") == 1
    assert messages("websocket", "refused", "invalid") == 1
    assert value(samples, "roost_ingest_points_total", door="mqtt") == 9
    assert value(samples, "roost_ingest_points_total", door="websocket") == 2
    assert value(samples, "roost_ingest_points_total", door="http") == 4
    assert value(samples, "roost_ingest_commit_failures_total") == 0

    # Every committed item has its latency counted: the 15 points, and the event that records
    # the refused MQTT message (HTTP and WebSocket refusals are answered, not recorded).
    committed = 15 + 1
    assert value(samples, "roost_ingest_ack_latency_seconds_count") == committed
    assert value(samples, "roost_ingest_ack_latency_seconds_bucket", le="+Inf") == committed
    assert 0 < value(samples, "roost_ingest_ack_latency_seconds_sum")  # type: ignore[operator]
    assert value(samples, "roost_ingest_commit_batch_size_sum") == committed
    batches = value(samples, "roost_ingest_commit_batch_size_count")
    assert batches is not None and 1 <= batches <= committed
    assert value(samples, "roost_ingest_backlog") == 0
    assert value(samples, "roost_live_subscribers") == 0
    lag = value(samples, "roost_compaction_lag_seconds")
    assert lag is not None and lag >= 0

    # Once the clients are gone no connection is counted, the totals stay, and the gauges read
    # from the database (cached a few seconds; presence is saved by its sweeper) show the queued
    # command and the two devices heard from.
    def settled() -> dict[Any, float] | None:
        now = scrape(admin)
        gone = all(
            value(now, "roost_mqtt_connections", protocol=p, transport=t) in (None, 0)
            for p in ("3.1.1", "5")
            for t in ("tcp", "websocket")
        )
        heard = (value(now, "roost_devices", presence="online") or 0) + (
            value(now, "roost_devices", presence="offline") or 0
        )
        never = value(now, "roost_devices", presence="never_seen")
        return now if gone and heard == 2 and never == 1 else None

    later = eventually(settled)
    assert value(later, "roost_mqtt_connects_total", protocol="5", transport="tcp") == 1
    assert value(later, "roost_commands", status="QUEUED") == 1
    assert value(later, "roost_http_requests_total", method="GET", route="/metrics", status="200")


def test_http_requests_are_named_by_their_whole_route_template(admin: Api) -> None:
    """An API route is counted under its template with the /api/v1 prefix (the console's
    /devices page and the API's /api/v1/devices are different routes), never under the URL."""
    device_id = unique("tmpl")
    assert admin.get(f"/api/v1/devices/{device_id}").status_code == 404
    assert admin.get("/api/v1/devices").status_code == 200
    samples = scrape(admin)
    routes = {
        dict(labels)["route"] for (name, labels) in samples if name == "roost_http_requests_total"
    }
    assert {"/api/v1/devices", "/api/v1/devices/{device_id}"} <= routes
    assert not any(device_id in route for route in routes)
    assert value(
        samples,
        "roost_http_requests_total",
        method="GET",
        route="/api/v1/devices/{device_id}",
        status="404",
    )


def test_every_documented_metric_is_exported(admin: Api) -> None:
    """docs/operations.md lists each metric; each is a family of ``/metrics`` (with or without
    samples yet), and nothing named ``roost_*`` is left undocumented."""
    documented = set(re.findall(r"^\| `(roost_[a-z_]+)`", DOCS.read_text(), re.MULTILINE))
    resp = admin.get("/metrics")
    exported = {
        family.name
        for family in text_string_to_metric_families(resp.text)
        if family.name.startswith("roost_") and not family.name.endswith("_created")
    }
    # prometheus-client names a counter family without its _total suffix.
    documented_families = {name.removesuffix("_total") for name in documented}
    assert documented_families == exported, documented_families ^ exported
