"""The live alarm stream over WebSocket, presence rules that clear when a device comes back, and
job outcomes as a rule source — through a running ``roost serve`` (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import orjson
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from tests.alarms.conftest import alarms_of, wait_alarm
from tests.conftest import Tenant
from tests.mqtt_device import MqttDevice
from tests.support import Api, RoostServer, admin_client, eventually, make_device, unique

V1 = "/api/v1"


def _ws(server: RoostServer, path: str) -> str:
    return server.url.replace("http://", "ws://") + path


def _rule(api: Api, **body: Any) -> None:
    resp = api.post(f"{V1}/rules", json=body)
    assert resp.status_code == 201, resp.text


def test_alarm_changes_stream_live_to_the_tenant_only(server: RoostServer, tenant: Tenant) -> None:
    op = tenant.operator
    dev = make_device(op)
    device = tenant.client(dev.token)
    assert device.post(f"{V1}/telemetry", json={"temperature": 20}).status_code == 200
    _rule(
        op,
        id="hot",
        source={"kind": "telemetry", "sensor": "temperature"},
        condition={"type": "threshold", "op": ">", "value": 70},
        actions=[{"type": "alarm", "severity": "critical"}],
    )
    token = tenant.viewer.headers["Authorization"].split()[1]

    async def scenario() -> list[dict[str, Any]]:
        frames: list[dict[str, Any]] = []
        async with websockets.connect(_ws(server, f"{V1}/ws/alarms?token={token}")) as ws:
            await asyncio.sleep(0.2)
            await asyncio.to_thread(device.post, f"{V1}/telemetry", json={"temperature": 90})
            frames.append(orjson.loads(await asyncio.wait_for(ws.recv(), 15)))
            alarm_id = frames[0]["alarm"]["id"]
            await asyncio.to_thread(op.post, f"{V1}/alarms/{alarm_id}/ack")
            frames.append(orjson.loads(await asyncio.wait_for(ws.recv(), 15)))
            await asyncio.to_thread(device.post, f"{V1}/telemetry", json={"temperature": 20})
            frames.append(orjson.loads(await asyncio.wait_for(ws.recv(), 15)))
        return frames

    frames = asyncio.run(scenario())
    assert [f["change"] for f in frames] == ["raised", "acknowledged", "cleared"]
    assert all(f["alarm"]["device_id"] == dev.id for f in frames)
    assert "tenant_id" not in frames[0]
    assert frames[2]["alarm"]["status"] == "cleared" and frames[2]["alarm"]["acknowledged"]


def test_the_live_alarm_stream_needs_a_credential(server: RoostServer) -> None:
    async def scenario() -> int:
        try:
            async with websockets.connect(_ws(server, f"{V1}/ws/alarms?token=nonsense")):
                return 101
        except InvalidStatus as exc:
            return exc.response.status_code

    assert asyncio.run(scenario()) in (401, 403)


@pytest.mark.parametrize("protocol", ["mqtt"])
def test_a_presence_rule_raises_on_disconnect_and_clears_on_return(
    alarm_server: RoostServer, protocol: str
) -> None:
    del protocol
    with admin_client(alarm_server) as admin:
        dev = make_device(admin)
        _rule(
            admin,
            id=unique("offline"),
            source={"kind": "presence"},
            targets={"devices": [dev.id]},
            condition={"type": "threshold", "op": "==", "value": "offline"},
            actions=[{"type": "alarm", "alarm_type": "offline", "severity": "major"}],
        )
        device = MqttDevice(alarm_server, dev)
        device.connect()
        device.publish("telemetry", json.dumps({"up": 1}))
        device.close()  # the session ends: offline at once
        alarm = wait_alarm(admin, device_id=dev.id, status="active")
        assert alarm["type"] == "offline" and alarm["details"]["value"] == "offline"
        device = MqttDevice(alarm_server, dev)
        device.connect()
        try:
            eventually(lambda: alarms_of(admin, device_id=dev.id, status="cleared"))
        finally:
            device.close()


def test_a_failed_job_execution_raises_an_alarm(alarm_server: RoostServer) -> None:
    with admin_client(alarm_server) as admin:
        dev = make_device(admin)
        _rule(
            admin,
            id=unique("job-failed"),
            source={"kind": "job"},
            targets={"devices": [dev.id]},
            condition={"type": "threshold", "op": "==", "value": "FAILED"},
            actions=[{"type": "alarm", "alarm_type": "update-failed", "severity": "major"}],
        )
        job = admin.post(
            f"{V1}/jobs", json={"document": {"op": "update"}, "targets": {"devices": [dev.id]}}
        )
        assert job.status_code == 201, job.text
        job_id = job.json()["id"]
        with admin.as_token(dev.token) as device:

            def pending() -> Any:
                return device.get(f"{V1}/device/jobs").json()["jobs"]

            eventually(pending)
            started = device.post(
                f"{V1}/device/jobs/{job_id}/update", json={"status": "IN_PROGRESS"}
            )
            assert started.status_code == 200, started.text
            resp = device.post(
                f"{V1}/device/jobs/{job_id}/update",
                json={"status": "FAILED", "status_details": {"step": "flash"}},
            )
            assert resp.status_code == 200, resp.text
        alarm = wait_alarm(admin, device_id=dev.id)
        assert alarm["type"] == "update-failed" and alarm["details"]["value"] == "FAILED"
