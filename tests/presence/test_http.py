"""Presence over HTTP: heartbeats, offline after missed ones, back online, the fleet summary."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

from tests.conftest import Tenant
from tests.support import Api, assert_problem, eventually, unique

TIMEOUT = 15


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def device_with_token(api: Api, tenant: Tenant, **fields: Any) -> tuple[str, Api]:
    device_id = unique("d")
    resp = api.post("/api/v1/devices", json={"id": device_id, **fields})
    assert resp.status_code == 201, resp.text
    resp = api.post(f"/api/v1/devices/{device_id}/tokens", json={})
    assert resp.status_code == 201, resp.text
    return device_id, tenant.client(resp.json()["token"])


def presence(api: Api, device_id: str) -> dict[str, Any]:
    resp = api.get(f"/api/v1/devices/{device_id}/presence")
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def history(api: Api, device_id: str) -> list[dict[str, Any]]:
    resp = api.get(f"/api/v1/devices/{device_id}/presence/history")
    assert resp.status_code == 200, resp.text
    items: list[dict[str, Any]] = resp.json()["items"]
    return items


def test_a_silent_device_is_offline_after_three_intervals_and_back_on_its_next_message(
    tenant: Tenant,
) -> None:
    api = tenant.operator
    device_id, device = device_with_token(api, tenant, heartbeat_interval_s=1)
    first = presence(api, device_id)
    assert first["status"] == "never_seen" and first["last_seen_at"] is None
    assert first["offline_after_s"] == 3 and first["heartbeat_interval_s"] == 1

    resp = device.post("/api/v1/telemetry", json={"temperature": 21.5})
    assert resp.status_code == 200, resp.text
    online = eventually(lambda: presence(api, device_id)["status"] == "online")
    assert online, presence(api, device_id)

    # It stops: offline once three intervals (3 s) have passed since it was last heard.
    assert eventually(lambda: presence(api, device_id)["status"] == "offline")
    state = presence(api, device_id)
    assert at(state["since"]) - at(state["last_seen_at"]) == timedelta(seconds=3)
    changes = history(api, device_id)
    assert [(c["status"], c["reason"]) for c in changes[:2]] == [
        ("offline", "missed heartbeats"),
        ("online", "message"),
    ]
    listed = api.get("/api/v1/devices", params={"status": "offline", "q": device_id}).json()
    assert [d["id"] for d in listed["items"]] == [device_id]
    assert listed["items"][0]["status"] == "offline"

    # Any call of the device is a sign of life: online again on its next message.
    resp = device.post("/api/v1/events", json={"event": "door_opened"})
    assert resp.status_code == 200, resp.text
    assert presence(api, device_id)["status"] == "online"  # at once (see below)
    # The sweep records the change within a second: history and the device list follow.
    assert eventually(lambda: history(api, device_id)[0]["reason"] == "message")

    def listed_online() -> list[str]:
        found = api.get("/api/v1/devices", params={"status": "online", "q": device_id}).json()
        return [d["id"] for d in found["items"]]

    assert eventually(lambda: listed_online() == [device_id])


def test_the_interval_comes_from_the_model_unless_the_device_overrides_it(
    tenant: Tenant,
) -> None:
    api = tenant.operator
    model = unique("m")
    resp = api.post(
        "/api/v1/device-models",
        json={
            "id": model,
            "reference": model,
            "commercial_name": model,
            "heartbeat_interval_s": 20,
        },
    )
    assert resp.status_code == 201, resp.text
    by_model, _ = device_with_token(api, tenant, model_id=model)
    own, _ = device_with_token(api, tenant, model_id=model, heartbeat_interval_s=5)
    assert presence(api, by_model)["offline_after_s"] == 60
    assert presence(api, own)["offline_after_s"] == 15
    resp = api.patch(f"/api/v1/devices/{own}", json={"heartbeat_interval_s": None})
    assert resp.status_code == 200, resp.text
    assert resp.json()["heartbeat_interval_s"] is None
    assert presence(api, own)["offline_after_s"] == 60
    default, _ = device_with_token(api, tenant)
    assert presence(api, default)["heartbeat_interval_s"] == 60


def test_clock_skew_is_measured_per_device(tenant: Tenant) -> None:
    api = tenant.operator
    device_id, device = device_with_token(api, tenant)
    ahead_ms = int(time.time() * 1000) + 5_000  # the device's clock runs 5 s ahead
    resp = device.post("/api/v1/telemetry", json={"ts": ahead_ms, "values": {"t": 1.0}})
    assert resp.status_code == 200, resp.text
    skew = eventually(lambda: presence(api, device_id)["clock_skew_ms"])
    assert skew is not None and 3_000 < skew < 7_000, skew
    listed = api.get("/api/v1/devices", params={"q": device_id}).json()["items"][0]
    assert listed["clock_skew_ms"] == skew

    # A clock reset to 1970 (or a replay of very old data) is unknown (null), not an error and
    # not a clamped figure. A witness heard after it shows that the sweep has saved both.
    reset_id, reset = device_with_token(api, tenant)
    resp = reset.post("/api/v1/telemetry", json={"ts": 86_400, "values": {"t": 1.0}})
    assert resp.status_code == 200, resp.text
    witness_id, witness = device_with_token(api, tenant)
    resp = witness.post(
        "/api/v1/telemetry", json={"ts": int(time.time() * 1000), "values": {"t": 1}}
    )
    assert resp.status_code == 200, resp.text
    assert eventually(lambda: presence(api, witness_id)["clock_skew_ms"] is not None)
    far = presence(api, reset_id)
    assert far["clock_skew_ms"] is None and far["status"] == "online", far


def test_a_device_heard_once_is_online_at_once(tenant: Tenant) -> None:
    api = tenant.operator
    device_id, device = device_with_token(api, tenant)
    assert presence(api, device_id)["status"] == "never_seen"
    resp = device.post("/api/v1/telemetry", json={"values": {"t": 1.0}})
    assert resp.status_code == 200, resp.text
    # At once, before the sweep saves it: never "never seen" with a last-seen time.
    now = presence(api, device_id)
    assert now["status"] == "online" and now["last_seen_at"] is not None, now
    assert now["since"] is not None


def test_the_fleet_summary_counts_by_status_site_model_and_firmware(tenant: Tenant) -> None:
    api = tenant.operator
    site, model = unique("s"), unique("m")
    assert api.post("/api/v1/sites", json={"id": site, "name": site}).status_code == 201
    resp = api.post(
        "/api/v1/device-models", json={"id": model, "reference": model, "commercial_name": model}
    )
    assert resp.status_code == 201, resp.text
    resp = api.post("/api/v1/firmware", json={"id": "fw1", "model_id": model, "version": "1.0"})
    assert resp.status_code == 201, resp.text
    heard, heard_client = device_with_token(
        api, tenant, site_id=site, model_id=model, firmware_id="fw1"
    )
    device_with_token(api, tenant, site_id=site, model_id=model)
    device_with_token(api, tenant)
    assert heard_client.post("/api/v1/telemetry", json={"x": 1}).status_code == 200
    # The summary counts what the sweep recorded (within a second).
    assert eventually(
        lambda: tenant.viewer.get("/api/v1/fleet/summary").json()["by_status"]["online"] == 1
    )

    summary = tenant.viewer.get("/api/v1/fleet/summary")
    assert summary.status_code == 200, summary.text
    body = summary.json()
    assert body["total"] == 3
    assert body["by_status"] == {"online": 1, "offline": 0, "never_seen": 2}
    assert body["by_site"] == [
        {"site_id": site, "total": 2, "online": 1, "offline": 0, "never_seen": 1},
        {"site_id": None, "total": 1, "online": 0, "offline": 0, "never_seen": 1},
    ]
    assert body["by_model"][0] == {
        "model_id": model, "total": 2, "online": 1, "offline": 0, "never_seen": 1
    }  # fmt: skip
    assert {"firmware_id": "fw1", "total": 1, "online": 1, "offline": 0, "never_seen": 0} in (
        body["by_firmware"]
    )
    # The device list's filters narrow it.
    narrowed = api.get("/api/v1/fleet/summary", params={"site_id": site, "status": "online"})
    assert narrowed.json()["total"] == 1
    assert narrowed.json()["by_status"] == {"online": 1, "offline": 0, "never_seen": 0}


def test_bad_presence_queries_get_clear_errors(tenant: Tenant, admin: Api) -> None:
    api = tenant.operator
    assert_problem(api.get("/api/v1/devices", params={"status": "sleeping"}), 422)
    assert_problem(api.get("/api/v1/fleet/summary", params={"group": "nope"}), 404)
    assert_problem(api.get("/api/v1/devices/nope/presence"), 404)
    assert_problem(api.get("/api/v1/devices/nope/presence/history"), 404)
    device_id, _ = device_with_token(api, tenant)
    # Another tenant's device does not exist for the default tenant's admin.
    assert_problem(admin.get(f"/api/v1/devices/{device_id}/presence"), 404)
    assert_problem(api.patch(f"/api/v1/devices/{device_id}", json={"heartbeat_interval_s": 0}), 422)
    assert_problem(
        api.patch(f"/api/v1/devices/{device_id}", json={"heartbeat_interval_s": "5"}), 422
    )
    assert_problem(tenant.anonymous.get("/api/v1/fleet/summary"), 401)
