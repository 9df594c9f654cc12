"""Jobs over HTTP on every backend: the user side, HTTP devices, cancel, filters, bad input."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tests.conftest import Tenant
from tests.support import Api, assert_problem, eventually, unique

TIMEOUT = 15


@dataclass
class Device:
    id: str
    api: Api  # authenticated with the device's token


def make_devices(tenant: Tenant, n: int, **fields: Any) -> list[Device]:
    made = []
    for _ in range(n):
        device_id = unique("dev")
        resp = tenant.operator.post("/api/v1/devices", json={"id": device_id, **fields})
        assert resp.status_code == 201, resp.text
        resp = tenant.admin.post(f"/api/v1/devices/{device_id}/tokens", json={})
        assert resp.status_code in (200, 201), resp.text
        made.append(Device(device_id, tenant.client(resp.json()["token"])))
    return made


def make_group(tenant: Tenant, members: list[Device]) -> str:
    group_id = unique("grp")
    resp = tenant.operator.post("/api/v1/groups", json={"id": group_id, "name": group_id})
    assert resp.status_code == 201, resp.text
    if members:
        add_members(tenant, group_id, members)
    return group_id


def add_members(tenant: Tenant, group_id: str, members: list[Device]) -> None:
    resp = tenant.operator.post(
        f"/api/v1/groups/{group_id}/devices", json={"device_ids": [d.id for d in members]}
    )
    assert resp.status_code in (200, 201), resp.text


def create_job(tenant: Tenant, **body: Any) -> dict[str, Any]:
    body.setdefault("document", {"operation": "reboot"})
    resp = tenant.operator.post("/api/v1/jobs", json=body)
    assert resp.status_code == 201, resp.text
    job: dict[str, Any] = resp.json()
    return job


def job(tenant: Tenant, job_id: str) -> dict[str, Any]:
    resp = tenant.viewer.get(f"/api/v1/jobs/{job_id}")
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def executions(tenant: Tenant, job_id: str, **params: Any) -> list[dict[str, Any]]:
    resp = tenant.viewer.get(f"/api/v1/jobs/{job_id}/executions", params={"limit": 1000, **params})
    assert resp.status_code == 200, resp.text
    items: list[dict[str, Any]] = resp.json()["items"]
    return items


def pending(device: Device) -> list[dict[str, Any]]:
    resp = device.api.get("/api/v1/device/jobs")
    assert resp.status_code == 200, resp.text
    jobs: list[dict[str, Any]] = resp.json()["jobs"]
    return jobs


def update(device: Device, job_id: str, **body: Any) -> Any:
    return device.api.post(f"/api/v1/device/jobs/{job_id}/update", json=body)


def finish(device: Device, job_id: str, status: str = "SUCCEEDED") -> None:
    """Start the device's execution and end it with ``status``."""
    assert update(device, job_id, status="IN_PROGRESS").status_code == 200
    resp = update(device, job_id, status=status)
    assert resp.status_code == 200, resp.text


def test_a_job_runs_on_http_devices_to_completion(tenant: Tenant) -> None:
    grouped = make_devices(tenant, 2)
    named = make_devices(tenant, 1)
    group_id = make_group(tenant, grouped)
    job_id = unique("job")
    made = create_job(
        tenant,
        id=job_id,
        document={"operation": "upgrade", "version": "2.1"},
        targets={"groups": [group_id], "devices": [named[0].id]},
        description="upgrade to 2.1",
    )
    assert made["id"] == job_id and made["status"] == "IN_PROGRESS"
    assert made["counts"]["QUEUED"] == 3 and made["created_by"] == tenant.usernames["operator"]
    assert made["created_at"].endswith("Z")

    for device in grouped + named:
        jobs = eventually(lambda d=device: pending(d))
        assert [(j["job_id"], j["status"], j["version"]) for j in jobs] == [(job_id, "QUEUED", 1)]
        assert jobs[0]["document"] == {"operation": "upgrade", "version": "2.1"}
        started = device.api.post("/api/v1/device/jobs/start-next", json={})
        assert started.status_code == 200, started.text
        execution = started.json()["execution"]
        assert (execution["job_id"], execution["status"], execution["version"]) == (
            job_id,
            "IN_PROGRESS",
            2,
        )
        # start-next again answers the same IN_PROGRESS execution, unchanged
        again = device.api.post("/api/v1/device/jobs/start-next").json()["execution"]
        assert (again["status"], again["version"]) == ("IN_PROGRESS", 2)
        resp = update(device, job_id, status="IN_PROGRESS", status_details={"step": "download"})
        assert resp.status_code == 200, resp.text
        assert resp.json()["version"] == 3
        resp = update(device, job_id, status="SUCCEEDED", expected_version=3, client_token="t1")
        assert resp.status_code == 200, resp.text
        assert resp.json()["status"] == "SUCCEEDED" and resp.json()["client_token"] == "t1"
        assert pending(device) == []
        assert device.api.post("/api/v1/device/jobs/start-next").json() == {"execution": None}

    done = eventually(lambda: (j := job(tenant, job_id))["status"] == "COMPLETED" and j)
    assert done, job(tenant, job_id)
    assert done["counts"]["SUCCEEDED"] == 3 and done["completed_at"]
    one = tenant.viewer.get(f"/api/v1/jobs/{job_id}/executions/{named[0].id}").json()
    assert one["status"] == "SUCCEEDED" and one["version"] == 4 and one["attempt"] == 1
    assert one["status_details"] == {"step": "download"}
    assert one["started_at"] and one["completed_at"] and one["released_at"]
    history = tenant.operator.get(
        "/api/v1/audit", params={"entity_type": "job", "entity_id": job_id}
    ).json()["items"]
    assert [e["action"] for e in history] == ["create"]


def test_illegal_moves_and_stale_versions_are_refused(tenant: Tenant) -> None:
    (device,) = make_devices(tenant, 1)
    job_id = create_job(tenant, targets={"devices": [device.id]})["id"]
    eventually(lambda: pending(device))
    resp = update(device, job_id, status="IN_PROGRESS", expected_version=7)
    assert_problem(resp, 409, "version")
    assert_problem(update(device, job_id, status="SUCCEEDED"), 409, "QUEUED")
    finish(device, job_id)
    assert_problem(update(device, job_id, status="IN_PROGRESS"), 409, "SUCCEEDED")
    assert_problem(update(device, job_id, status="CANCELED"), 422, "status")
    assert_problem(update(device, job_id, status="TIMED_OUT"), 422, "status")
    assert_problem(update(device, "no-such-job", status="SUCCEEDED"), 404)
    resp = update(device, job_id, status="FAILED", bogus=1)
    assert resp.status_code == 422, resp.text
    execution = tenant.viewer.get(f"/api/v1/jobs/{job_id}/executions/{device.id}").json()
    assert (execution["status"], execution["version"]) == ("SUCCEEDED", 3)


def test_bad_job_input_gets_clear_errors(tenant: Tenant, admin: Api) -> None:
    (device,) = make_devices(tenant, 1)
    post = tenant.operator.post
    resp = post("/api/v1/jobs", json={"document": ["not", "an", "object"], "targets": {}})
    assert_problem(resp, 422)
    resp = post("/api/v1/jobs", json={"document": {}, "targets": {"devices": ["nope", device.id]}})
    body = assert_problem(resp, 422, "nope")
    assert body["errors"] == [
        {"field": "targets.devices", "value": "nope", "message": "no device 'nope'"}
    ]
    resp = post("/api/v1/jobs", json={"document": {}, "targets": {"groups": ["no-group"]}})
    assert_problem(resp, 422, "no-group")
    assert_problem(post("/api/v1/jobs", json={"document": {}, "targets": {}}), 422, "at least")
    big = {"blob": "x" * 40_000}
    resp = post("/api/v1/jobs", json={"document": big, "targets": {"devices": [device.id]}})
    assert_problem(resp, 413)
    resp = post(
        "/api/v1/jobs",
        json={
            "document": {},
            "targets": {"devices": [device.id]},
            "retries": [{"failure_type": "FAILED", "max_attempts": 11}],
        },
    )
    assert_problem(resp, 422, "max_attempts")
    resp = post(
        "/api/v1/jobs",
        json={
            "document": {},
            "targets": {"devices": [device.id]},
            "rollout": {"max_per_minute": 0},
        },
    )
    assert_problem(resp, 422, "max_per_minute")
    viewer = tenant.viewer.post("/api/v1/jobs", json={"document": {}, "targets": {"devices": []}})
    assert_problem(viewer, 403)
    viewer = tenant.viewer.post(
        "/api/v1/jobs", json={"document": {}, "targets": {"devices": [device.id]}}
    )
    assert_problem(viewer, 403)
    job_id = create_job(tenant, targets={"devices": [device.id]})["id"]
    assert_problem(post("/api/v1/jobs", json={"id": job_id, "document": {}, "targets": {
        "devices": [device.id]}}), 409)  # fmt: skip
    # Another tenant's job, executions and device do not exist for the superuser's tenant.
    assert_problem(admin.get(f"/api/v1/jobs/{job_id}"), 404)
    assert_problem(admin.get(f"/api/v1/jobs/{job_id}/executions"), 404)
    assert_problem(admin.post(f"/api/v1/jobs/{job_id}/cancel", json={}), 404)
    assert_problem(admin.get(f"/api/v1/devices/{device.id}/jobs"), 404)
    assert job_id not in [j["id"] for j in admin.get("/api/v1/jobs").json()["items"]]
    assert_problem(tenant.viewer.post(f"/api/v1/jobs/{job_id}/cancel", json={}), 403)


def test_cancel_keeps_in_progress_executions_unless_forced(tenant: Tenant) -> None:
    devices = make_devices(tenant, 3)
    job_id = create_job(tenant, targets={"devices": [d.id for d in devices]})["id"]
    eventually(lambda: all(pending(d) for d in devices))
    for device in devices[:2]:
        assert update(device, job_id, status="IN_PROGRESS").status_code == 200
    resp = tenant.operator.post(f"/api/v1/jobs/{job_id}/cancel", json={"reason": "wrong image"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["status"] == "CANCELED" and body["reason"] == "wrong image"
    assert body["counts"]["CANCELED"] == 1 and body["counts"]["IN_PROGRESS"] == 2
    assert pending(devices[2]) == []
    # An IN_PROGRESS execution of a cancelled job may still finish.
    assert update(devices[0], job_id, status="SUCCEEDED").status_code == 200
    assert_problem(tenant.operator.post(f"/api/v1/jobs/{job_id}/cancel", json={}), 409)

    other = create_job(tenant, targets={"devices": [devices[1].id]})["id"]
    eventually(lambda: len(pending(devices[1])) == 2)
    assert update(devices[1], other, status="IN_PROGRESS").status_code == 200
    resp = tenant.operator.post(f"/api/v1/jobs/{other}/cancel", json={"force": True})
    assert resp.json()["counts"]["CANCELED"] == 1, resp.text
    assert_problem(update(devices[1], other, status="SUCCEEDED"), 409, "CANCELED")
    actions = tenant.operator.get(
        "/api/v1/audit", params={"entity_type": "job", "entity_id": other}
    ).json()["items"]
    assert sorted(e["action"] for e in actions) == ["cancel", "create"]


def test_executions_filter_by_status_and_pending(tenant: Tenant) -> None:
    devices = make_devices(tenant, 4)
    job_id = create_job(tenant, targets={"devices": [d.id for d in devices]})["id"]
    eventually(lambda: all(pending(d) for d in devices))
    finish(devices[0], job_id)
    assert update(devices[1], job_id, status="REJECTED").status_code == 200
    assert update(devices[2], job_id, status="IN_PROGRESS").status_code == 200

    def ids(**params: Any) -> list[str]:
        return sorted(e["device_id"] for e in executions(tenant, job_id, **params))

    assert ids(pending="true") == sorted([devices[2].id, devices[3].id])
    assert ids(pending="false") == sorted([devices[0].id, devices[1].id])
    assert ids(status=["SUCCEEDED", "REJECTED"]) == sorted([devices[0].id, devices[1].id])
    assert ids(status="QUEUED") == [devices[3].id]
    resp = tenant.viewer.get(f"/api/v1/jobs/{job_id}/executions", params={"status": "DONE"})
    assert_problem(resp, 422)
    counts = job(tenant, job_id)["counts"]
    assert {k: v for k, v in counts.items() if v} == {
        "SUCCEEDED": 1,
        "REJECTED": 1,
        "IN_PROGRESS": 1,
        "QUEUED": 1,
    }
    mine = tenant.viewer.get(f"/api/v1/devices/{devices[2].id}/jobs", params={"pending": True})
    assert [(e["job_id"], e["status"]) for e in mine.json()["items"]] == [(job_id, "IN_PROGRESS")]
    listed = tenant.viewer.get("/api/v1/jobs", params={"status": "IN_PROGRESS"}).json()
    assert job_id in [j["id"] for j in listed["items"]] and listed["total"] >= 1
    assert_problem(tenant.viewer.get("/api/v1/jobs", params={"status": "NOPE"}), 422)


def test_continuous_job_reaches_devices_that_join_later(tenant: Tenant) -> None:
    first, later, tagged, leaver = make_devices(tenant, 4)
    group_id = make_group(tenant, [first])
    job_id = create_job(
        tenant,
        targets={"groups": [group_id], "query": {"tag": "ring:canary"}},
        target_selection="CONTINUOUS",
    )["id"]
    eventually(lambda: pending(first))
    assert pending(later) == [] and pending(tagged) == []
    add_members(tenant, group_id, [later])
    resp = tenant.operator.patch(f"/api/v1/devices/{tagged.id}", json={"tags": {"ring": "canary"}})
    assert resp.status_code == 200, resp.text
    assert eventually(lambda: pending(later)), "the device that joined the group got no job"
    assert eventually(lambda: pending(tagged)), "the device matching the query got no job"
    # A device that leaves the group before it started its execution has it REMOVED.
    add_members(tenant, group_id, [leaver])
    assert eventually(lambda: pending(leaver))
    resp = tenant.operator.delete(f"/api/v1/groups/{group_id}/devices/{leaver.id}")
    assert resp.status_code in (200, 204), resp.text
    assert eventually(lambda: pending(leaver) == [])
    gone = tenant.viewer.get(f"/api/v1/jobs/{job_id}/executions/{leaver.id}").json()
    assert gone["status"] == "REMOVED", gone
    for device in (first, later, tagged):
        finish(device, job_id)
    # A snapshot job with no target completes in the next pass, which settles every job: after
    # it, the continuous job is seen not to complete although nothing of it is pending.
    barrier = create_job(tenant, targets={"query": {"site_id": unique("nowhere")}})["id"]
    assert eventually(lambda: job(tenant, barrier)["status"] == "COMPLETED")
    body = job(tenant, job_id)
    assert body["status"] == "IN_PROGRESS" and body["counts"]["SUCCEEDED"] == 3
    assert body["counts"]["REMOVED"] == 1 and len(executions(tenant, job_id)) == 4


def test_a_scheduled_job_waits_for_its_start(tenant: Tenant) -> None:
    (device,) = make_devices(tenant, 1)
    soon = time.time() + 2
    start = datetime.fromtimestamp(soon, UTC).isoformat()
    made = create_job(tenant, targets={"devices": [device.id]}, schedule_at=start)
    assert made["status"] == "SCHEDULED" and made["started_at"] is None
    assert pending(device) == [] or time.time() >= soon
    assert eventually(lambda: pending(device))
    assert time.time() >= soon
    assert job(tenant, made["id"])["status"] == "IN_PROGRESS"


def test_http_devices_long_poll_for_jobs(tenant: Tenant) -> None:
    (device,) = make_devices(tenant, 1)
    answers: list[Any] = []
    poller = threading.Thread(
        target=lambda: answers.append(device.api.get("/api/v1/device/jobs", params={"wait": 20}))
    )
    poller.start()
    time.sleep(0.3)
    job_id = create_job(tenant, targets={"devices": [device.id]})["id"]
    poller.join(25)
    assert answers and answers[0].status_code == 200, answers
    assert [j["job_id"] for j in answers[0].json()["jobs"]] == [job_id]


def test_end_at_stops_releases_and_cancels_the_unreleased(tenant: Tenant) -> None:
    devices = make_devices(tenant, 3)
    end = datetime.fromtimestamp(time.time() + 2, UTC).isoformat()
    job_id = create_job(
        tenant,
        targets={"devices": [d.id for d in devices]},
        rollout={"max_per_minute": 1},  # one release, then the next only after a minute
        end_at=end,
    )["id"]
    assert eventually(lambda: len(executions(tenant, job_id, status="CANCELED")) == 2)
    (released,) = [e for e in executions(tenant, job_id) if e["released_at"]]
    assert released["status"] == "QUEUED"
    cancelled = executions(tenant, job_id, status="CANCELED")
    assert all(e["released_at"] is None and e["status_details"] for e in cancelled)
    device = next(d for d in devices if d.id == released["device_id"])
    finish(device, job_id)
    done = eventually(lambda: (j := job(tenant, job_id))["status"] == "COMPLETED" and j)
    assert done and done["counts"]["SUCCEEDED"] == 1 and done["released_count"] == 1


def test_an_exponential_rollout_starts_at_its_base_rate(tenant: Tenant) -> None:
    devices = make_devices(tenant, 4)
    made = create_job(
        tenant,
        targets={"devices": [d.id for d in devices]},
        rollout={
            "max_per_minute": 120,
            "exponential": {
                "base_rate_per_minute": 60,
                "increment_factor": 2,
                "rate_increase_criteria": {"number_of_notified_things": 2},
            },
        },
    )
    assert made["rollout"]["exponential"]["base_rate_per_minute"] == 60
    job_id = made["id"]
    assert eventually(lambda: all(e["released_at"] for e in executions(tenant, job_id)))
    times = sorted(datetime.fromisoformat(e["released_at"]) for e in executions(tenant, job_id))
    gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:], strict=False)]
    # The first two go at the base rate, 60/min: a second apart. After two notified the rate
    # doubles to 120/min, whose burst is two releases (a second's worth), never more.
    assert gaps[0] >= 0.999, gaps
    assert gaps[1] + gaps[2] >= 0.499, gaps
    assert done_at_most(times, per_minute=120, burst=2)


def done_at_most(times: list[datetime], per_minute: float, burst: int) -> bool:
    """No window of the release times holds more than the rate allows plus the burst."""
    stamps = [t.timestamp() for t in times]
    return all(
        j - i + 1 <= (stamps[j] - stamps[i]) * per_minute / 60 + burst + 1e-6
        for i in range(len(stamps))
        for j in range(i, len(stamps))
    )
