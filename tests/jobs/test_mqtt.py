"""Jobs end to end with paho-mqtt devices against a running ``roost serve``: rollout rate, abort
rules, in-progress and step timeouts with retries, MQTT replies and refusals, and a restart in the
middle of a job."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from tests.support import (
    ADMIN_PASSWORD,
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

TIMEOUT = 15
# Passes every 0.2 s, so timeouts and releases are seen within a fraction of a second.
ENV = {"ROOST_TIMER_CHECK_S": "0.2"}


@pytest.fixture(scope="module")
def mqtt_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoostServer]:
    """A Roost with its MQTT listener on, shared by this module."""
    with RoostServer(
        tmp_path_factory.mktemp("roost-jobs"), mqtt_port=free_port(), env_overrides=ENV
    ).running() as server:
        yield server


@pytest.fixture(scope="module")
def admin(mqtt_server: RoostServer) -> Iterator[Api]:
    with admin_client(mqtt_server) as api:
        yield api


class JobDevice:
    """A paho device subscribed to its jobs topics, keeping what it receives."""

    def __init__(self, server: RoostServer, device: Device, protocol: int = mqtt.MQTTv5) -> None:
        self.device = device
        self.protocol = protocol
        self.lock = threading.Lock()
        self.received: list[tuple[str, Any]] = []
        self.acks: dict[int, Any] = {}
        self.subscribed = threading.Event()
        self.paho = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=unique("c"), protocol=protocol
        )
        self.paho.on_message = self._on_message
        self.paho.on_publish = lambda c, u, mid, reason, props: self.acks.__setitem__(mid, reason)
        self.paho.on_subscribe = lambda c, u, mid, reasons, props: self.subscribed.set()
        connected = threading.Event()
        self.paho.on_connect = lambda c, u, flags, reason, props: connected.set()
        self.paho.username_pw_set(device.id, device.token)
        self.paho.connect("127.0.0.1", server.mqtt_port, keepalive=30)
        self.paho.loop_start()
        assert connected.wait(TIMEOUT), "no CONNACK"
        self.paho.subscribe(f"devices/{device.id}/jobs/#", qos=1)
        assert self.subscribed.wait(TIMEOUT), "no SUBACK"

    @property
    def id(self) -> str:
        return self.device.id

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self.lock:
            self.received.append((msg.topic, json.loads(msg.payload)))

    def messages(self, suffix: str) -> list[Any]:
        topic = f"devices/{self.id}/jobs/{suffix}"
        with self.lock:
            return [body for t, body in self.received if t == topic]

    def notified(self) -> list[dict[str, Any]]:
        """The last pending list the device was sent ([] before any)."""
        lists = self.messages("notify")
        return lists[-1]["jobs"] if lists else []

    def wait_reply(self, suffix: str, count: int) -> Any:
        assert eventually(lambda: len(self.messages(suffix)) >= count), (suffix, self.received)
        return self.messages(suffix)[count - 1]

    def publish(self, suffix: str, body: Any) -> Any:
        payload = body if isinstance(body, bytes) else json.dumps(body)
        info = self.paho.publish(f"devices/{self.id}/jobs/{suffix}", payload, qos=1)
        info.wait_for_publish(TIMEOUT)
        return self.acks.get(info.mid)

    def start_next(self, **body: Any) -> dict[str, Any] | None:
        count = len(self.messages("start-next/accepted")) + 1
        self.publish("start-next", body)
        execution: dict[str, Any] | None = self.wait_reply("start-next/accepted", count)[
            "execution"
        ]
        return execution

    def update(self, job_id: str, **body: Any) -> tuple[str, Any]:
        """Publish an update; answer ("accepted" | "rejected", the reply)."""
        seen = {kind: len(self.messages(f"{job_id}/update/{kind}")) for kind in self.KINDS}
        self.publish(f"{job_id}/update", body)

        def reply() -> tuple[str, Any] | None:
            for kind in self.KINDS:
                got = self.messages(f"{job_id}/update/{kind}")
                if len(got) > seen[kind]:
                    return kind, got[-1]
            return None

        answer = eventually(reply)
        assert answer, f"no reply to the update of {job_id}"
        return answer  # type: ignore[no-any-return]

    KINDS = ("accepted", "rejected")

    def close(self) -> None:
        self.paho.disconnect()
        self.paho.loop_stop()


@pytest.fixture
def fleet(mqtt_server: RoostServer, admin: Api) -> Iterator[Callable[[int], list[JobDevice]]]:
    made: list[JobDevice] = []

    def make(n: int, protocol: int = mqtt.MQTTv5) -> list[JobDevice]:
        new = [JobDevice(mqtt_server, make_device(admin), protocol) for _ in range(n)]
        made.extend(new)
        return new

    yield make
    for device in made:
        device.close()


def group_of(admin: Api, devices: list[JobDevice]) -> str:
    group_id = unique("grp")
    assert admin.post("/api/v1/groups", json={"id": group_id, "name": group_id}).status_code == 201
    resp = admin.post(
        f"/api/v1/groups/{group_id}/devices", json={"device_ids": [d.id for d in devices]}
    )
    assert resp.status_code in (200, 201), resp.text
    return group_id


def create_job(api: Api, **body: Any) -> str:
    body.setdefault("document", {"operation": "upgrade"})
    resp = api.post("/api/v1/jobs", json=body)
    assert resp.status_code == 201, resp.text
    job_id: str = resp.json()["id"]
    return job_id


def get_job(api: Api, job_id: str) -> dict[str, Any]:
    resp = api.get(f"/api/v1/jobs/{job_id}")
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def executions(api: Api, job_id: str) -> list[dict[str, Any]]:
    resp = api.get(f"/api/v1/jobs/{job_id}/executions", params={"limit": 1000})
    assert resp.status_code == 200, resp.text
    items: list[dict[str, Any]] = resp.json()["items"]
    return items


def released_times(api: Api, job_id: str) -> list[float]:
    return sorted(
        datetime.fromisoformat(e["released_at"]).timestamp()
        for e in executions(api, job_id)
        if e["released_at"]
    )


def assert_rate(times: list[float], per_minute: float) -> None:
    """Consecutive releases are at least 60/rate seconds apart (the server's own clock)."""
    interval = 60 / per_minute
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert all(gap >= interval - 0.001 for gap in gaps), gaps


# -- rollout -----------------------------------------------------------------------------------


def test_a_group_of_20_is_released_at_max_per_minute(
    admin: Api, fleet: Callable[[int], list[JobDevice]]
) -> None:
    devices = fleet(20)
    group_id = group_of(admin, devices)
    job_id = create_job(admin, targets={"groups": [group_id]}, rollout={"max_per_minute": 60})
    assert get_job(admin, job_id)["counts"]["QUEUED"] == 20
    first = eventually(lambda: len(released_times(admin, job_id)) >= 2)
    assert first
    early = released_times(admin, job_id)
    assert eventually(lambda: len(released_times(admin, job_id)) >= len(early) + 2)
    later = released_times(admin, job_id)
    # 60/min: at least a second between releases, so a few seconds in most are still unreleased.
    assert_rate(later, 60)
    assert len(later) < 20
    elapsed = later[-1] - later[0]
    assert len(later) <= elapsed + 1 + 1e-6
    # Exactly the released devices were told, each with the document.
    released = {e["device_id"] for e in executions(admin, job_id) if e["released_at"]}
    told = eventually(
        lambda: (
            {d.id for d in devices if any(j["job_id"] == job_id for j in d.notified())} >= released
            and {d.id for d in devices if any(j["job_id"] == job_id for j in d.notified())}
        )
    )
    assert told and told <= {e["device_id"] for e in executions(admin, job_id) if e["released_at"]}
    one = next(d for d in devices if d.id in released)
    assert one.notified()[0]["document"] == {"operation": "upgrade"}
    resp = admin.post(f"/api/v1/jobs/{job_id}/cancel", json={"force": True})
    assert resp.status_code == 200, resp.text
    # The cancelled job's released devices are told their pending list is empty again.
    assert eventually(lambda: one.notified() == [])
    assert_rate(released_times(admin, job_id), 60)


# -- abort -------------------------------------------------------------------------------------


def test_abort_rule_cancels_the_rest(admin: Api, fleet: Callable[[int], list[JobDevice]]) -> None:
    devices = fleet(8)
    job_id = create_job(
        admin,
        targets={"devices": [d.id for d in devices]},
        abort=[
            {"failure_type": "FAILED", "action": "CANCEL", "min_executed": 4, "threshold_pct": 50}
        ],
    )
    assert eventually(lambda: all(d.notified() for d in devices))
    outcomes = ["SUCCEEDED", "FAILED", "SUCCEEDED", "FAILED"]
    for n, (device, outcome) in enumerate(zip(devices, outcomes, strict=False)):
        if n == 3:
            # A fifth device starts before the rule is met (the fourth outcome meets it; the
            # cancellation that follows races with any later start): it keeps running.
            assert devices[4].start_next() is not None
        execution = device.start_next()
        assert execution and execution["job_id"] == job_id
        assert device.update(job_id, status=outcome)[0] == "accepted"
    done = eventually(lambda: (j := get_job(admin, job_id))["status"] == "CANCELED" and j)
    assert done, get_job(admin, job_id)
    assert "FAILED" in done["reason"] and "50%" in done["reason"]
    counts = {k: v for k, v in done["counts"].items() if v}
    assert counts == {"SUCCEEDED": 2, "FAILED": 2, "CANCELED": 3, "IN_PROGRESS": 1}
    for device in devices[5:]:
        assert eventually(lambda d=device: d.messages("notify") and d.notified() == [])
    assert devices[4].update(job_id, status="SUCCEEDED")[0] == "accepted"


# -- timeouts and retries ----------------------------------------------------------------------


def test_in_progress_timeout_gives_timed_out_and_a_retry(
    admin: Api, fleet: Callable[[int], list[JobDevice]]
) -> None:
    (device,) = fleet(1)
    job_id = create_job(
        admin,
        targets={"devices": [device.id]},
        timeout_in_progress_s=1,
        retries=[{"failure_type": "TIMED_OUT", "max_attempts": 1}],
    )
    first = device.start_next()
    if first is None:  # not yet released
        assert eventually(lambda: device.notified())
        first = device.start_next()
    assert first and (first["status"], first["attempt"]) == ("IN_PROGRESS", 1)
    # No update within a second: TIMED_OUT, then attempt 2 queued and delivered again.
    assert eventually(
        lambda: [(j["status"], j["attempt"]) for j in device.notified()] == [("QUEUED", 2)]
    ), device.received
    execution = executions(admin, job_id)[0]
    assert (execution["status"], execution["attempt"]) == ("QUEUED", 2)
    second = device.start_next(step_timeout_s=1)
    assert second and (second["status"], second["attempt"]) == ("IN_PROGRESS", 2)
    # The step timeout of the second attempt runs out too; no retry is left.
    done = eventually(lambda: (j := get_job(admin, job_id))["status"] == "COMPLETED" and j)
    assert done and done["counts"]["TIMED_OUT"] == 1, get_job(admin, job_id)
    execution = executions(admin, job_id)[0]
    assert (execution["status"], execution["attempt"]) == ("TIMED_OUT", 2)
    kind, reply = device.update(job_id, status="SUCCEEDED")
    assert kind == "rejected" and reply["code"] == "InvalidStateTransition"


def test_a_step_timeout_is_reset_by_each_update(
    admin: Api, fleet: Callable[[int], list[JobDevice]]
) -> None:
    (device,) = fleet(1)
    job_id = create_job(
        admin,
        targets={"devices": [device.id]},
        retries=[{"failure_type": "FAILED", "max_attempts": 2}],
    )
    assert eventually(lambda: device.notified())
    assert device.start_next(step_timeout_s=2)
    for _ in range(3):  # each update with a new step timeout pushes the deadline on
        kind, reply = device.update(job_id, status="IN_PROGRESS", step_timeout_s=2)
        assert kind == "accepted", reply
        time.sleep(0.5)
    assert executions(admin, job_id)[0]["status"] == "IN_PROGRESS"
    kind, reply = device.update(job_id, status="FAILED")
    assert kind == "accepted" and reply["retry"] == {"attempt": 2, "status": "QUEUED"}
    assert eventually(
        lambda: [(j["status"], j["attempt"]) for j in device.notified()] == [("QUEUED", 2)]
    )


# -- replies and refusals ----------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [mqtt.MQTTv311, mqtt.MQTTv5], ids=["v311", "v5"])
def test_updates_are_accepted_or_rejected_with_a_reason(
    admin: Api, fleet: Callable[..., list[JobDevice]], protocol: int
) -> None:
    (device,) = fleet(1, protocol)
    job_id = create_job(admin, targets={"devices": [device.id]}, document={"do": "it"})
    assert eventually(lambda: device.notified())
    kind, reply = device.update(job_id, status="IN_PROGRESS", expected_version=5, client_token="a")
    assert (
        kind == "rejected" and reply["code"] == "VersionMismatch" and reply["client_token"] == "a"
    )
    kind, reply = device.update(job_id, status="IN_PROGRESS", expected_version=1)
    assert kind == "accepted" and (reply["status"], reply["version"]) == ("IN_PROGRESS", 2)
    kind, reply = device.update(job_id, status="SUCCEEDED", status_details={"took_s": 3})
    assert kind == "accepted" and reply["status_details"] == {"took_s": 3}
    kind, reply = device.update(job_id, status="IN_PROGRESS")
    assert kind == "rejected" and reply["code"] == "InvalidStateTransition"
    assert "SUCCEEDED" in reply["message"]
    kind, reply = device.update("no-such-job", status="IN_PROGRESS")
    assert kind == "rejected" and reply["code"] == "ResourceNotFound"
    # Malformed: a v5 device also gets PUBACK 0x99; a 3.1.1 device only the rejected reply.
    count = len(device.messages(f"{job_id}/update/rejected")) + 1
    ack = device.publish(f"{job_id}/update", b"not json")
    assert device.wait_reply(f"{job_id}/update/rejected", count)["code"] == "InvalidRequest"
    if protocol == mqtt.MQTTv5:
        assert ack == 0x99
    kind, reply = device.update(job_id, status="EXPLODED")
    assert kind == "rejected" and reply["code"] == "InvalidRequest"
    execution = executions(admin, job_id)[0]
    assert (execution["status"], execution["version"]) == ("SUCCEEDED", 3)


def test_jobs_get_and_subscribe_send_the_pending_list(mqtt_server: RoostServer, admin: Api) -> None:
    device = make_device(admin)
    job_id = create_job(admin, targets={"devices": [device.id]}, document={"n": 1})
    assert eventually(
        lambda: admin.get(f"/api/v1/jobs/{job_id}/executions/{device.id}").json()["released_at"]
    )
    # The device comes online after the release: subscribing sends it its pending list.
    late = JobDevice(mqtt_server, device)
    try:
        assert eventually(lambda: [j["job_id"] for j in late.notified()] == [job_id])
        count = len(late.messages("notify")) + 1
        late.publish("get", {})
        assert late.wait_reply("notify", count)["jobs"][0]["document"] == {"n": 1}
    finally:
        late.close()


# -- restart -----------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_restart_mid_job_resumes_releases_and_timers(tmp_path: Path, backend: str) -> None:
    if backend == "postgresql":
        reason = postgres_reachable()
        if reason:
            skip_or_fail(reason)
        with fresh_postgres_database() as url:
            _restart_mid_job(RoostServer(tmp_path, database_url=url, env_overrides=ENV))
    else:
        _restart_mid_job(RoostServer(tmp_path, env_overrides=ENV))


def _restart_mid_job(server: RoostServer) -> None:
    server.start()
    try:
        anon = Api(server.url)
        api = anon.as_token(anon.login("admin", ADMIN_PASSWORD))
        anon.close()
        devices = [make_device(api) for _ in range(6)]
        clients = {d.id: api.as_token(d.token) for d in devices}
        job_id = create_job(
            api,
            targets={"devices": [d.id for d in devices]},
            rollout={"max_per_minute": 60},
            timeout_in_progress_s=3,
        )
        assert eventually(lambda: len(released_times(api, job_id)) >= 2)
        first = next(e for e in executions(api, job_id) if e["released_at"])
        resp = clients[first["device_id"]].post("/api/v1/device/jobs/start-next")
        assert resp.json()["execution"]["job_id"] == job_id
        before = len(released_times(api, job_id))
        server.stop()
        assert before < 6  # the restart is in the middle of the rollout
        server.start()
        # Releases continue at the same rate; the started execution's timeout still fires.
        assert eventually(lambda: len(released_times(api, job_id)) == 6, timeout=30)
        assert_rate(released_times(api, job_id), 60)
        assert eventually(
            lambda: (
                api.get(f"/api/v1/jobs/{job_id}/executions/{first['device_id']}").json()["status"]
                == "TIMED_OUT"
            )
        )
        for device in devices:
            if device.id == first["device_id"]:
                continue
            client = clients[device.id]
            assert client.post(f"/api/v1/device/jobs/{job_id}/update", json={
                "status": "IN_PROGRESS"}).status_code == 200  # fmt: skip
            assert client.post(f"/api/v1/device/jobs/{job_id}/update", json={
                "status": "SUCCEEDED"}).status_code == 200  # fmt: skip
        done = eventually(lambda: (j := get_job(api, job_id))["status"] == "COMPLETED" and j)
        assert done, get_job(api, job_id)
        assert {k: v for k, v in done["counts"].items() if v} == {"SUCCEEDED": 5, "TIMED_OUT": 1}
        items = executions(api, job_id)
        assert len(items) == 6 and {e["attempt"] for e in items} == {1}
        assert done["released_count"] == 6
        for client in clients.values():
            client.close()
        api.close()
    finally:
        server.stop()
    assert not server.unhandled_errors()
