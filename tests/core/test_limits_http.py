"""Abuse limits at the HTTP and WebSocket device doors, on a Roost with low limits: per-device
message and byte rates (429 + Retry-After, nothing stored beyond), WebSocket streams per device,
and failed credential checks per source address."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from tests.support import (
    Api,
    Device,
    RoostServer,
    admin_client,
    assert_problem,
    eventually,
    make_device,
)

MESSAGES_PER_S = 5
BYTES_PER_S = 2000
MAX_CONNECTIONS = 2
MAX_FAILURES = 4


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoostServer]:
    """A Roost with every device limit set low."""
    with RoostServer(
        tmp_path_factory.mktemp("roost-limits"),
        env_overrides={
            "ROOST_DEVICE_MAX_MESSAGES_PER_S": str(MESSAGES_PER_S),
            "ROOST_DEVICE_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
            "ROOST_CREDENTIAL_MAX_FAILURES": str(MAX_FAILURES),
        },
    ).running() as server:
        yield server


@pytest.fixture(scope="module")
def bytes_limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoostServer]:
    """A Roost with only a byte rate per device."""
    with RoostServer(
        tmp_path_factory.mktemp("roost-byte-limits"),
        env_overrides={"ROOST_DEVICE_MAX_BYTES_PER_S": str(BYTES_PER_S)},
    ).running() as server:
        yield server


@pytest.fixture(scope="module")
def admin(limited: RoostServer) -> Iterator[Api]:
    with admin_client(limited) as api:
        yield api


def stored(admin: Api, device_id: str, sensor: str = "n") -> list[Any]:
    resp = admin.get(
        f"/api/v1/devices/{device_id}/telemetry",
        params={"sensor": sensor, "order": "asc", "limit": 1000},
    )
    if resp.status_code == 404:  # the sensor was never created: nothing stored
        return []
    assert resp.status_code == 200, resp.text
    return [item["value"] for item in resp.json()["items"]]


def test_http_over_the_message_rate_gets_429_with_retry_after_and_nothing_stored(
    limited: RoostServer, admin: Api
) -> None:
    device = make_device(admin)
    accepted: list[int] = []
    refused: list[httpx.Response] = []
    with Api(limited.url, device.token) as api:
        for n in range(40):
            resp = api.post("/api/v1/telemetry", json={"n": n})
            if resp.status_code == 200:
                accepted.append(n)
            else:
                refused.append(resp)
    # A burst holds 2 s worth (10 messages), plus what refilled while the requests ran.
    assert len(accepted) >= 2 * MESSAGES_PER_S
    assert refused, "40 requests at once went through a 5 msg/s limit"
    for resp in refused:
        body = assert_problem(resp, 429, "rate")
        assert int(resp.headers["Retry-After"]) >= 1, body
    # Exactly the accepted messages are stored, none of the refused ones.
    assert stored(admin, device.id) == accepted


def test_the_rate_is_per_device(limited: RoostServer, admin: Api) -> None:
    hog, other = make_device(admin), make_device(admin)
    with Api(limited.url, hog.token) as api:
        statuses = [api.post("/api/v1/telemetry", json={"n": n}).status_code for n in range(30)]
    assert 429 in statuses
    with Api(limited.url, other.token) as api:
        resp = api.post("/api/v1/telemetry", json={"n": 1})
    assert resp.status_code == 200, resp.text


def test_http_over_the_byte_rate_gets_429(bytes_limited: RoostServer) -> None:
    with admin_client(bytes_limited) as admin:
        device = make_device(admin)
        padding = "x" * 900  # ~1 KB a message against 2 KB/s (4 KB burst)
        accepted: list[int] = []
        refused: list[httpx.Response] = []
        with Api(bytes_limited.url, device.token) as api:
            for n in range(20):
                resp = api.post("/api/v1/events", json={"event": "pad", "n": n, "pad": padding})
                if resp.status_code == 200:
                    accepted.append(n)
                else:
                    refused.append(resp)
        assert refused and len(accepted) >= 3
        for resp in refused:
            assert_problem(resp, 429, "byte rate")
            assert int(resp.headers["Retry-After"]) >= 1
        resp = admin.get(f"/api/v1/devices/{device.id}/events", params={"limit": 1000})
        assert resp.status_code == 200, resp.text
        assert sorted(item["body"]["n"] for item in resp.json()["items"]) == accepted


def test_websocket_frames_over_the_rate_get_a_429_ack_and_are_not_stored(
    limited: RoostServer, admin: Api
) -> None:
    device = make_device(admin)
    url = limited.url.replace("http://", "ws://") + "/api/v1/ws/ingest"
    acks: list[dict[str, Any]] = []
    with ws_connect(url, additional_headers={"Authorization": f"Bearer {device.token}"}) as ws:
        for n in range(30):
            ws.send(json.dumps({"n": n}))
        while len(acks) < 30:
            acks.append(json.loads(ws.recv(timeout=10)))
    assert [ack["ack"] for ack in acks] == list(range(1, 31))
    accepted = [ack["ack"] - 1 for ack in acks if "accepted" in ack]
    refused = [ack for ack in acks if "error" in ack]
    assert refused and len(accepted) >= 2 * MESSAGES_PER_S
    for ack in refused:
        assert ack["error"]["status"] == 429
        assert ack["error"]["retry_after"] >= 1
    assert stored(admin, device.id) == accepted


def test_websocket_streams_per_device_are_limited(limited: RoostServer, admin: Api) -> None:
    device = make_device(admin)
    url = limited.url.replace("http://", "ws://") + "/api/v1/ws/ingest"
    headers = {"Authorization": f"Bearer {device.token}"}
    with ws_connect(url, additional_headers=headers), ws_connect(url, additional_headers=headers):
        with pytest.raises(InvalidStatus) as refused, ws_connect(url, additional_headers=headers):
            pass
        response = refused.value.response
        assert response.status_code == 429
        assert int(response.headers["Retry-After"]) >= 1
        # Another device is not affected.
        other = make_device(admin)
        with ws_connect(url, additional_headers={"Authorization": f"Bearer {other.token}"}):
            pass

    def reconnects() -> bool:
        try:
            with ws_connect(url, additional_headers=headers):
                return True
        except InvalidStatus:
            return False

    # A slot frees once a stream ends.
    assert eventually(reconnects)


def test_failed_credentials_lock_out_the_address_even_for_a_good_token(
    limited: RoostServer, admin: Api
) -> None:
    device = make_device(admin)
    # uvicorn trusts X-Forwarded-For from 127.0.0.1 (its default forwarded_allow_ips), which
    # lets one test play several source addresses.
    attacker = {"X-Forwarded-For": "10.9.8.7"}
    bystander = {"X-Forwarded-For": "10.9.8.8"}
    with httpx.Client(base_url=limited.url, timeout=30) as http:
        for n in range(MAX_FAILURES):
            resp = http.post(
                "/api/v1/telemetry",
                json={"n": n},
                headers={**attacker, "Authorization": f"Bearer not.a.token{n}"},
            )
            assert resp.status_code in (401, 403), resp.text
        good = {"Authorization": f"Bearer {device.token}"}
        resp = http.post("/api/v1/telemetry", json={"n": 99}, headers={**attacker, **good})
        assert_problem(resp, 429, "failed credential")
        assert 1 <= int(resp.headers["Retry-After"]) <= 60
        # The WebSocket door refuses the address too, before looking at the token.
        url = limited.url.replace("http://", "ws://") + "/api/v1/ws/ingest"
        with (
            pytest.raises(InvalidStatus) as refused,
            ws_connect(url, additional_headers={**attacker, **good}),
        ):
            pass
        assert refused.value.response.status_code == 429
        # Another address is not affected.
        resp = http.post("/api/v1/telemetry", json={"n": 7}, headers={**bystander, **good})
        assert resp.status_code == 200, resp.text
    assert stored(admin, device.id) == [7]


def test_good_credentials_do_not_count_as_failures(limited: RoostServer, admin: Api) -> None:
    device: Device = make_device(admin)
    headers = {"X-Forwarded-For": "10.9.8.20", "Authorization": f"Bearer {device.token}"}
    with httpx.Client(base_url=limited.url, timeout=30) as http:
        for _ in range(MAX_FAILURES * 2):
            resp = http.get("/api/v1/device/state", headers=headers)
            assert resp.status_code != 429, resp.text
