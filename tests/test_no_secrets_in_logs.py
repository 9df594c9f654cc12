"""Secrets never reach the server log, even at debug level: passwords, user and device tokens,
API keys, the signing key, and bad credentials a client sent (often a real secret mistyped or
meant for another system)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from websockets.sync.client import connect as ws_connect

from tests.support import (
    ADMIN_PASSWORD,
    SECRET_KEY,
    Api,
    RoostServer,
    eventually,
    free_port,
    make_device,
    unique,
)

TIMEOUT = 10


@pytest.fixture(scope="module")
def debug_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoostServer]:
    """A Roost logging at debug level, with MQTT on."""
    server = RoostServer(
        tmp_path_factory.mktemp("roost-debug-log"),
        mqtt_port=free_port(),
        env_overrides={"ROOST_LOG_LEVEL": "debug", "ROOST_CREDENTIAL_MAX_FAILURES": "100"},
    ).start()
    try:
        yield server
    finally:
        server.stop()
    assert not server.unhandled_errors()


def mqtt_session(server: RoostServer, username: str, password: str) -> tuple[Any, list[Any]]:
    """Connect with paho (MQTT 5), publish one QoS 1 message, disconnect; answer the CONNACK
    reason code and the PUBACK codes."""
    done = threading.Event()
    result: dict[str, Any] = {}
    acks: list[Any] = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=unique("c"),
                         protocol=mqtt.MQTTv5)  # fmt: skip

    def on_connect(c: Any, u: Any, flags: Any, reason: Any, props: Any) -> None:
        result["connack"] = reason
        done.set()

    client.on_connect = on_connect
    client.on_publish = lambda c, u, mid, reason, props: acks.append(reason)
    client.username_pw_set(username, password)
    client.connect("127.0.0.1", server.mqtt_port, keepalive=30)
    client.loop_start()
    try:
        assert done.wait(TIMEOUT), "no CONNACK"
        if not result["connack"].is_failure:
            info = client.publish(f"devices/{username}/telemetry", json.dumps({"t": 1.5}), 1)
            info.wait_for_publish(TIMEOUT)
    finally:
        client.disconnect()
        client.loop_stop()
    return result["connack"], acks


def test_no_secret_appears_in_the_debug_log(debug_server: RoostServer) -> None:
    secrets: dict[str, str] = {"admin password": ADMIN_PASSWORD, "signing key": SECRET_KEY}
    with Api(debug_server.url) as anon:
        user_token = anon.login("admin", ADMIN_PASSWORD)
        secrets["user token"] = user_token
        # A failed login with a password that is someone's real one elsewhere.
        wrong = "correct-horse-battery-staple-" + unique("pw")
        resp = anon.post("/api/v1/auth/login", json={"username": "admin", "password": wrong})
        assert resp.status_code == 401
        secrets["wrong password"] = wrong
    with Api(debug_server.url, user_token) as admin:
        device = make_device(admin)
        secrets["device token"] = device.token
        resp = admin.post("/api/v1/api-keys", json={"name": "automation"})
        assert resp.status_code == 201, resp.text
        key = resp.json()["key"]
        secrets["api key"] = key
        with Api(debug_server.url, key) as automation:
            assert automation.get("/api/v1/devices").status_code == 200

        # The device: HTTP ingest with its bearer token, the WebSocket door with ?token=, MQTT.
        with Api(debug_server.url, device.token) as dev:
            assert dev.post("/api/v1/telemetry", json={"t": 1.0}).status_code == 200
        url = debug_server.url.replace("http://", "ws://") + "/api/v1/ws/ingest"
        with ws_connect(f"{url}?token={device.token}") as ws:
            ws.send(json.dumps({"t": 2.0}))
            assert "accepted" in json.loads(ws.recv(timeout=TIMEOUT))
        # The websockets library logs upgrade request headers at debug level.
        headers = {"Authorization": f"Bearer {device.token}"}
        with ws_connect(url, additional_headers=headers) as ws:
            ws.send(json.dumps({"t": 2.5}))
            assert "accepted" in json.loads(ws.recv(timeout=TIMEOUT))
        connack, acks = mqtt_session(debug_server, device.id, device.token)
        assert not connack.is_failure and acks and not acks[0].is_failure

        # Refused credentials: a forged device token on HTTP and MQTT, a garbage one.
        forged = device.token[:-6] + ("AAAAAA" if not device.token.endswith("AAAAAA") else "BBBBBB")
        secrets["forged token"] = forged
        with Api(debug_server.url, forged) as bad:
            assert bad.post("/api/v1/telemetry", json={"t": 3.0}).status_code in (401, 403)
        connack, _ = mqtt_session(debug_server, device.id, forged)
        assert connack.is_failure
        garbage = "s3cr3t-" + unique("garbage") + "-not-a-jwt"
        secrets["garbage token"] = garbage
        connack, _ = mqtt_session(debug_server, device.id, garbage)
        assert connack.is_failure
        with Api(debug_server.url, garbage) as bad:
            assert bad.post("/api/v1/telemetry", json={"t": 3.0}).status_code == 401

        # Everything above happened (the debug log is not empty of it).
        assert eventually(lambda: "CONNECT refused" in debug_server.log_path.read_text())

    log = debug_server.log_path.read_text(errors="replace")
    assert "DEBUG" in log  # the server did log at debug level
    leaked = {name: value for name, value in secrets.items() if value in log}
    # A token's signature alone (its last part) is as good as the token for a replay check.
    for name in ("user token", "device token", "forged token"):
        signature = secrets[name].rsplit(".", 1)[-1]
        if signature in log:
            leaked[f"{name} signature"] = signature
    assert not leaked, f"secrets in the server log: {sorted(leaked)}"
