"""Acknowledged means durable: the server is killed (SIGKILL) mid-stream at QoS 1.

A device streams telemetry and events at QoS 1 with many messages in flight. The server is
killed without warning; when it is back, the device resends whatever was not acknowledged (as
MQTT devices do). Every message the server had acknowledged must be stored, and nothing twice.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import paho.mqtt.client as paho
import pytest

from tests.support import (
    ADMIN_PASSWORD,
    Api,
    RoostServer,
    free_port,
    fresh_postgres_database,
    postgres_reachable,
    private_nats,
    skip_or_fail,
)

BASE_TS = 1_700_000_000_000  # ms
MESSAGES = 6000
KILL_AFTER_ACKS = 1500


@pytest.fixture(params=["sqlite", "postgresql", "postgresql+nats"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    """Where the server keeps its data: ROOST_* settings."""
    if request.param == "sqlite":
        yield {}
        return
    reason = postgres_reachable()
    if reason:
        skip_or_fail(reason)
    with fresh_postgres_database() as url:
        if request.param == "postgresql":
            yield {"ROOST_DATABASE_URL": url}
            return
        # Scale mode: PUBACK once JetStream has the batch; a worker commits it to PostgreSQL.
        with private_nats(tmp_path / "nats") as nats_url:
            yield {"ROOST_DATABASE_URL": url, "ROOST_BUS_URL": nats_url}


class Streamer:
    """A paho device client that records which messages were acknowledged (PUBACK received)."""

    def __init__(self, port: int, device_id: str, token: str, name: str) -> None:
        self.sent: list[tuple[int, paho.MQTTMessageInfo]] = []
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2, client_id=name, protocol=paho.MQTTv311
        )
        self.client.username_pw_set(device_id, token)
        self.client.max_inflight_messages_set(200)
        self.client.max_queued_messages_set(0)
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        self.device_id = device_id

    def acked(self) -> set[int]:
        return {n for n, info in self.sent if info.is_published()}

    def send(self, n: int) -> None:
        """Message n: even numbers are telemetry points, odd ones events; all unique."""
        if n % 2 == 0:
            topic = f"devices/{self.device_id}/telemetry"
            body = {"sensor_id": "count", "timestamp": BASE_TS + n, "value": n}
        else:
            topic = f"devices/{self.device_id}/events"
            body = {"event": "tick", "n": n, "ts": BASE_TS + n}
        self.sent.append((n, self.client.publish(topic, orjson.dumps(body), qos=1)))

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_every_acknowledged_message_survives_sigkill(
    tmp_path: Path, backend: dict[str, str]
) -> None:
    server = RoostServer(tmp_path / "data", env_overrides=backend, mqtt_port=free_port()).start()
    try:
        with Api(server.url) as anon:
            admin = anon.as_token(anon.login("admin", ADMIN_PASSWORD))
        assert admin.post("/api/v1/devices", json={"id": "crashy"}).status_code == 201
        token = admin.post("/api/v1/devices/crashy/tokens", json={}).json()["token"]
        admin.close()

        streamer = Streamer(server.mqtt_port, "crashy", token, "crashy-1")
        sent = 0
        deadline = time.monotonic() + 60
        acked_count = 0
        while acked_count < KILL_AFTER_ACKS and time.monotonic() < deadline:
            if sent < MESSAGES and sent - acked_count < 400:
                streamer.send(sent)
                sent += 1
                if sent % 50:
                    continue
            else:
                time.sleep(0.001)
            acked_count = len(streamer.acked())
        assert acked_count >= KILL_AFTER_ACKS, "the server acknowledged too little"
        server.stop(signal.SIGKILL)  # mid-stream: hundreds of messages in flight
        acked = streamer.acked()
        streamer.stop()
        assert sent > len(acked), "the kill should have caught messages in flight"
    finally:
        server.stop()

    # Back up on the same data: the device resends everything it has no acknowledgement for.
    server = RoostServer(
        tmp_path / "data", env_overrides=backend, mqtt_port=free_port(), port=server.port
    ).start()
    try:
        resender = Streamer(server.mqtt_port, "crashy", token, "crashy-2")
        unacknowledged = [n for n in range(sent) if n not in acked]
        for n in unacknowledged:
            resender.send(n)
        deadline = time.monotonic() + 60
        while len(resender.acked()) < len(unacknowledged) and time.monotonic() < deadline:
            time.sleep(0.01)
        resender.stop()
        assert len(resender.acked()) == len(unacknowledged)

        with Api(server.url) as anon:
            admin = anon.as_token(anon.login("admin", ADMIN_PASSWORD))
            # In scale mode the worker commits what JetStream acknowledged just behind: wait.
            deadline = time.monotonic() + 60
            while True:
                points = admin.get(
                    "/api/v1/devices/crashy/telemetry",
                    params={"sensor": "count", "order": "asc", "limit": 100_000},
                ).json()["items"]
                events = admin.get(
                    "/api/v1/devices/crashy/events",
                    params={"type": "tick", "order": "asc", "limit": 100_000},
                ).json()["items"]
                if len(points) + len(events) >= sent or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            admin.close()
        stored_points = [int(p["value"]) for p in points]
        stored_events = [e["body"]["n"] for e in events]
        # Nothing twice...
        assert len(stored_points) == len(set(stored_points))
        assert len(stored_events) == len(set(stored_events))
        # ...everything acknowledged before the kill is there...
        stored = set(stored_points) | set(stored_events)
        lost = sorted(acked - stored)
        assert not lost, f"{len(lost)} acknowledged messages lost, e.g. {lost[:10]}"
        # ...and so is everything sent, once resent.
        assert stored == set(range(sent))
    finally:
        server.stop()
