"""The seed fleets' scenarios of issue 13, end to end through real doors: ``roost serve`` (SQLite
and PostgreSQL) with devices on MQTT (paho) and HTTP, a real SMTP server (aiosmtpd), a real
webhook receiver that checks the HMAC-SHA256 signature, and a consumer group reading derived
events."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from tests.alarms.conftest import ENV, alarms_of, run_server, wait_alarm
from tests.mqtt_device import MqttDevice
from tests.support import (
    Api,
    Device,
    RoostServer,
    admin_client,
    eventually,
    free_port,
    fresh_postgres_database,
    make_device,
    postgres_reachable,
    skip_or_fail,
    unique,
)

V1 = "/api/v1"
SECRET = "scenario-secret"
# Notification grouping made quick for tests (Alertmanager's defaults are 30 s / 5 min / 4 h).
QUICK = {"group_wait_s": 1.0, "group_interval_s": 1.0, "repeat_interval_s": 3600}


class Mailbox:
    """A real SMTP server (aiosmtpd) keeping what it receives."""

    def __init__(self) -> None:
        self.port = free_port()
        self.messages: list[Message] = []
        self._lock = threading.Lock()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self._lock:
            self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"

    def about(self, text: str) -> list[Message]:
        with self._lock:
            return [m for m in self.messages if text in str(m["Subject"]) + _body(m)]


def _body(message: Message) -> str:
    if message.is_multipart():
        return "".join(_body(part) for part in message.get_payload())  # type: ignore[union-attr]
    payload = message.get_payload(decode=True)
    return payload.decode(errors="replace") if isinstance(payload, bytes) else str(payload)


class Hooks:
    """A real webhook receiver (HTTP server thread) that checks each request's signature."""

    def __init__(self) -> None:
        self.hits: list[tuple[bool, dict[str, Any]]] = []
        hooks = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                expected = hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()
                signed = hmac.compare_digest(
                    self.headers.get("X-Roost-Signature", ""), f"sha256={expected}"
                )
                hooks.hits.append((signed, json.loads(raw)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def about(self, text: str) -> list[dict[str, Any]]:
        return [body for _signed, body in list(self.hits) if text in json.dumps(body)]


@pytest.fixture(scope="module")
def mailbox() -> Iterator[Mailbox]:
    box = Mailbox()
    box.controller.start()
    try:
        yield box
    finally:
        box.controller.stop()


@pytest.fixture(scope="module")
def hooks() -> Iterator[Hooks]:
    made = Hooks()
    made.thread.start()
    try:
        yield made
    finally:
        made.server.shutdown()
        made.server.server_close()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, mailbox: Mailbox
) -> Iterator[RoostServer]:
    """Roost with MQTT on, quick timers, and its SMTP relay the test's mailbox."""
    tmp = tmp_path_factory.mktemp(f"roost-scenarios-{request.param}")
    env = {**ENV, "ROOST_SMTP_HOST": "127.0.0.1", "ROOST_SMTP_PORT": str(mailbox.port)}
    if request.param == "postgresql":
        reason = postgres_reachable()
        if reason:
            skip_or_fail(reason)
        with fresh_postgres_database() as url:
            yield from run_server(
                RoostServer(tmp, database_url=url, mqtt_port=free_port(), env_overrides=env)
            )
    else:
        yield from run_server(RoostServer(tmp, mqtt_port=free_port(), env_overrides=env))


@pytest.fixture(scope="module")
def admin(server: RoostServer) -> Iterator[Api]:
    with admin_client(server) as api:
        yield api


def made(resp: Any) -> dict[str, Any]:
    assert resp.status_code in (200, 201), resp.text
    body: dict[str, Any] = resp.json()
    return body


def test_a_pi_that_misses_three_heartbeats_sends_one_email_and_one_when_it_returns(
    server: RoostServer, admin: Api, mailbox: Mailbox
) -> None:
    pi = make_device(admin, heartbeat_interval_s=1)
    channel = made(
        admin.post(
            f"{V1}/notification-channels",
            json={
                "name": "ops mail",
                "kind": "email",
                "config": {"to": ["ops@example.com"]},
                **QUICK,
            },
        )  # fmt: skip
    )["id"]
    mqtt = MqttDevice(server, pi)
    mqtt.connect()
    try:
        mqtt.publish("telemetry", json.dumps({"heartbeat": 1}))
        made(
            admin.post(
                f"{V1}/rules",
                json={
                    "id": unique("pi-silent"),
                    "name": "Alert Pi silent",
                    "targets": {"devices": [pi.id]},
                    "source": {"kind": "telemetry"},
                    "condition": {"type": "no_data", "heartbeats": 3},
                    "actions": [
                        {"type": "alarm", "alarm_type": "missed_heartbeats", "severity": "major"},
                        {"type": "notify", "channels": [channel]},
                    ],
                },
            )
        )
        for _ in range(4):  # heartbeating: nothing is wrong
            time.sleep(0.5)
            mqtt.publish("telemetry", json.dumps({"heartbeat": 1}))
        assert alarms_of(admin, device_id=pi.id) == []
        # Silence (still connected): three missed heartbeats later, one alarm and one e-mail.
        alarm = wait_alarm(admin, device_id=pi.id, status="active")
        assert alarm["type"] == "missed_heartbeats"
        firing = eventually(lambda: mailbox.about(pi.id), timeout=20)
        assert len(firing) == 1 and "FIRING" in str(firing[0]["Subject"])
        assert firing[0]["To"] == "ops@example.com"
        # It comes back: the alarm clears and one "resolved" e-mail follows.
        mqtt.publish("telemetry", json.dumps({"heartbeat": 1}))
        eventually(lambda: alarms_of(admin, device_id=pi.id, status="cleared"))
        both = eventually(lambda: len(mailbox.about(pi.id)) == 2 and mailbox.about(pi.id))
        assert "RESOLVED" in str(both[1]["Subject"]), both[1]["Subject"]
        for _ in range(4):
            time.sleep(0.5)
            mqtt.publish("telemetry", json.dumps({"heartbeat": 1}))
        assert len(mailbox.about(pi.id)) == 2  # exactly one of each
    finally:
        mqtt.close()


def test_a_hot_display_raises_a_critical_alarm_and_a_signed_webhook_then_clears(
    admin: Api, hooks: Hooks
) -> None:
    display = make_device(admin)
    http = admin.as_token(display.token)
    made(http.post(f"{V1}/telemetry", json={"temperature": 40}))
    channel = made(
        admin.post(
            f"{V1}/notification-channels",
            json={
                "name": "ops hook",
                "kind": "webhook",
                "config": {"url": hooks.url, "secret": SECRET},
                **QUICK,
            },
        )  # fmt: skip
    )["id"]
    made(
        admin.post(
            f"{V1}/rules",
            json={
                "id": unique("overheat"),
                "targets": {"devices": [display.id]},
                "source": {"kind": "telemetry", "sensor": "temperature"},
                "condition": {"type": "threshold", "op": ">", "value": 70},
                "for_s": 1.0,
                "actions": [
                    {"type": "alarm", "alarm_type": "overheat", "severity": "critical"},
                    {"type": "notify", "channels": [channel]},
                ],
            },
        )
    )
    for value in (72, 74, 75):
        made(http.post(f"{V1}/telemetry", json={"temperature": value}))
        time.sleep(0.3)
    alarm = wait_alarm(admin, device_id=display.id, status="active")
    assert alarm["severity"] == "critical" and alarm["type"] == "overheat"
    firing = eventually(lambda: hooks.about(display.id))
    assert all(signed for signed, body in hooks.hits if display.id in json.dumps(body))
    assert firing[0]["status"] == "firing"
    made(http.post(f"{V1}/telemetry", json={"temperature": 55}))
    eventually(lambda: alarms_of(admin, device_id=display.id, status="cleared"))
    resolved = eventually(lambda: [b for b in hooks.about(display.id) if b["status"] == "resolved"])
    assert len(resolved) == 1
    http.close()


def test_a_kiosk_charge_error_sends_a_reboot_command_over_mqtt(
    server: RoostServer, admin: Api
) -> None:
    kiosk = make_device(admin)
    made(
        admin.post(
            f"{V1}/rules",
            json={
                "id": unique("kiosk-reboot"),
                "source": {"kind": "event", "event_type": "charge_error"},
                "condition": {"type": "always"},
                "targets": {"devices": [kiosk.id]},
                "actions": [{"type": "command", "name": "reboot", "params": {"delay_s": 5}}],
            },
        )
    )
    mqtt = MqttDevice(server, kiosk)
    mqtt.connect()
    try:
        mqtt.subscribe("commands/#")
        mqtt.publish("events", json.dumps({"event": "charge_error", "connector": 2}))
        command = eventually(
            lambda: [p for t, p in mqtt.messages if t.startswith(f"devices/{kiosk.id}/commands/")]
        )[0]
        assert command["name"] == "reboot" and command["params"] == {"delay_s": 5}
        record = admin.get(f"{V1}/devices/{kiosk.id}/commands/{command['id']}").json()
        assert record["created_by"].startswith("rule:")
    finally:
        mqtt.close()


def test_pickups_are_enriched_from_the_catalog_and_republished_for_a_consumer_group(
    admin: Api,
) -> None:
    display = make_device(admin)
    table = unique("products")
    catalog = "product_id,name,brand,category,price\n162,Aero 5,Nimbus,shoes,129.90\n"
    resp = admin.put(
        f"{V1}/reference-tables/{table}",
        content=catalog,
        headers={"Content-Type": "text/csv"},
    )
    assert resp.status_code == 200, resp.text
    group = unique("dash")
    made(admin.post(f"{V1}/streams", json={"id": group, "start": "latest"}))
    made(
        admin.post(
            f"{V1}/rules",
            json={
                "id": unique("enrich"),
                "source": {"kind": "event", "event_type": "product_pickup"},
                "condition": {"type": "always"},
                "targets": {"devices": [display.id]},
                "enrich": [{"table": table, "key": "msg.product_id", "as": "product"}],
                "actions": [{"type": "emit_event", "event_type": "product_pickup_enriched"}],
            },
        )
    )
    http = admin.as_token(display.token)
    made(http.post(f"{V1}/events", json={"event": "product_pickup", "product_id": 162, "ms": 900}))

    def enriched() -> list[dict[str, Any]]:
        items = admin.get(f"{V1}/streams/{group}/messages", params={"after_offset": -1}).json()
        return [
            i for i in items["items"]
            if i["type"] == "event" and i["event"] == "product_pickup_enriched"
        ]  # fmt: skip

    found = eventually(enriched)
    body = found[0]["body"]
    assert found[0]["device_id"] == display.id
    assert body["product_id"] == 162 and body["ms"] == 900
    assert body["product"]["brand"] == "Nimbus" and body["product"]["category"] == "shoes"
    assert body["product"]["price"] == 129.9
    time.sleep(1.0)
    assert len(enriched()) == 1  # derived once, and it does not feed back into the rule
    http.close()


def test_two_hundred_devices_of_a_store_going_offline_send_one_grouped_message(
    admin: Api, hooks: Hooks
) -> None:
    site = unique("store")
    made(admin.post(f"{V1}/sites", json={"id": site, "name": site}))
    devices = [make_device(admin, site_id=site, heartbeat_interval_s=1) for _ in range(200)]
    channel = made(
        admin.post(
            f"{V1}/notification-channels",
            json={
                "name": "store ops",
                "kind": "webhook",
                "config": {"url": hooks.url, "secret": SECRET},
                **{**QUICK, "group_wait_s": 8.0},
            },
        )  # fmt: skip
    )["id"]
    made(
        admin.post(
            f"{V1}/rules",
            json={
                "id": unique("store-offline"),
                "source": {"kind": "presence"},
                "targets": {"query": {"site_id": site}},
                "condition": {"type": "threshold", "op": "==", "value": "offline"},
                "actions": [
                    {"type": "alarm", "alarm_type": "offline", "severity": "major"},
                    {"type": "notify", "channels": [channel]},
                ],
            },
        )
    )

    def heard(device: Device) -> None:
        with admin.as_token(device.token) as http:
            made(http.post(f"{V1}/telemetry", json={"up": 1}))

    # Each is heard once, within a second, then the store loses its network: they go offline
    # within a few seconds of each other, inside the channel's group_wait.
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(heard, devices))
    ids = {d.id for d in devices}

    def offline() -> int:
        listed = alarms_of(admin, type="offline", status="active", limit=1000)
        return len([a for a in listed if a["device_id"] in ids])

    eventually(lambda: offline() == 200, timeout=30)
    eventually(lambda: hooks.about(site), timeout=20)
    time.sleep(2.0)  # anything else would have come by now
    messages = hooks.about(site)
    assert len(messages) == 1, [m.get("alerts", m)[:1] for m in messages]
    listed = json.dumps(messages[0])
    assert all(d.id in listed for d in devices)
