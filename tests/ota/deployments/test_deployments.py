"""Deployments through the real doors: phases with a canary, steps over HTTP and MQTT, the
device's inventory, halts and resume, maintenance windows, bad input and cancel."""

from __future__ import annotations

import hashlib
import json
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from tests.mqtt_device import MqttDevice
from tests.ota.deployments.conftest import Fleet, pending, report
from tests.support import Api, assert_problem, eventually, unique


def test_a_canary_phase_gates_the_rest_and_success_updates_the_inventory(fleet: Fleet) -> None:
    model = fleet.model()
    version = f"2.0.{unique('v')}"
    artifact = fleet.artifact(version, [model])
    canary = [fleet.device(model_id=model) for _ in range(2)]
    rest = [fleet.device(model_id=model) for _ in range(2)]
    group = fleet.group(canary)
    made = fleet.deploy(
        artifact_ids=[artifact["id"]],
        targets={"devices": [d.id for d in canary + rest]},
        phases=[
            {"name": "canary", "groups": [group], "success_threshold_pct": 100},
            {"name": "rest"},
        ],
    )
    dep = made["id"]
    assert made["status"] == "IN_PROGRESS" and made["devices"] == 4
    assert [p["devices"] for p in made["phases"]] == [2, 2]
    job0 = f"ota-{dep}-0"

    http = fleet.as_device(canary[0])
    jobs = eventually(lambda: pending(http))
    assert [j["job_id"] for j in jobs] == [job0]
    document = jobs[0]["document"]
    assert document["operation"] == "ota.install" and document["deployment_id"] == dep
    (sent,) = document["artifacts"]
    assert sent["id"] == artifact["id"] and sent["version"] == version
    assert sent["sha256"] == artifact["sha256"] and sent["url"].endswith("/download")
    # the device's own view carries a signed URL
    actions = http.get("/api/v1/ota/actions").json()["actions"]
    assert [a["job_id"] for a in actions] == [job0] and actions[0]["state"] == "pending"
    assert actions[0]["artifacts"][0]["signed_url"]
    # the device fetches the bytes with its signed URL (no header) and a resumed Range request;
    # the counts reach the artifact's download list
    whole = http.get(actions[0]["artifacts"][0]["signed_url"], headers={"Authorization": ""})
    assert whole.status_code == 200 and hashlib.sha256(whole.content).hexdigest() == sent["sha256"]
    part = http.get(sent["url"], headers={"Range": "bytes=100-"})
    assert part.status_code == 206 and part.content == whole.content[100:]
    counted = eventually(
        lambda: [
            d
            for d in fleet.api.get(f"/api/v1/artifacts/{artifact['id']}/downloads").json()["items"]
            if d["device_id"] == canary[0].id and d["count"] == 2
        ]
    )
    assert counted[0]["bytes"] == len(whole.content) * 2 - 100
    # the rest have nothing while the canary runs
    for device in rest:
        assert pending(fleet.as_device(device)) == []

    # canary 1 over HTTP: DOWNLOADING → INSTALLING → REBOOTING → SUCCEEDED
    for step in ("DOWNLOADING", "INSTALLING", "REBOOTING"):
        resp = report(http, job0, "IN_PROGRESS", step=step, progress=50)
        assert resp.status_code == 200, resp.text
        assert fleet.overview(dep)["steps"][step] == 1
    wrong = report(http, job0, "SUCCEEDED", version="9.9.9")
    assert_problem(wrong, 422)
    assert "9.9.9" in wrong.json()["detail"]
    assert report(http, job0, "SUCCEEDED", version=version).status_code == 200

    # canary 2 over MQTT, with a wrong version refused first
    mqtt = MqttDevice(fleet.server, canary[1])
    mqtt.connect()
    try:
        mqtt.subscribe(f"jobs/{job0}/update/+")
        topic = f"jobs/{job0}/update"
        mqtt.publish(
            topic, json.dumps({"status": "IN_PROGRESS", "status_details": {"step": "DOWNLOADING"}})
        )
        mqtt.wait_for(f"{topic}/accepted")
        reason = mqtt.publish(
            topic, json.dumps({"status": "SUCCEEDED", "status_details": {"version": "0.0.1"}})
        )
        assert int(getattr(reason, "value", reason)) in (0, 0x99)
        refused = mqtt.wait_for(f"{topic}/rejected")
        assert refused["code"] == "InvalidRequest" and "0.0.1" in refused["message"]
        mqtt.publish(
            topic, json.dumps({"status": "SUCCEEDED", "status_details": {"version": version}})
        )
        eventually(lambda: len(mqtt.received(f"{topic}/accepted")) == 2)
    finally:
        mqtt.close()

    # the canary passed: phase 2 starts, its devices succeed, the deployment succeeds
    job1 = f"ota-{dep}-1"
    for device in rest:
        client = fleet.as_device(device)
        assert [j["job_id"] for j in eventually(lambda c=client: pending(c), timeout=20)] == [job1]
        assert report(client, job1, "IN_PROGRESS", step="INSTALLING").status_code == 200
        assert report(client, job1, "SUCCEEDED", version=version).status_code == 200
    done = fleet.wait_status(dep, "SUCCEEDED")
    assert done["steps"]["SUCCEEDED"] == 4 and done["completed_at"]
    assert [p["success_pct"] for p in done["phases"]] == [100, 100]

    # the device's firmware record and software inventory follow its report
    device = fleet.api.get(f"/api/v1/devices/{canary[0].id}").json()
    firmware = fleet.api.get(f"/api/v1/firmware/{device['firmware_id']}")
    assert firmware.status_code == 200, firmware.text
    assert firmware.json()["version"] == version and firmware.json()["model_id"] == model
    software = fleet.api.get(f"/api/v1/devices/{canary[0].id}/software").json()
    assert [(s["name"], s["version"], s["artifact_id"]) for s in software] == [
        ("firmware", version, artifact["id"])
    ]
    listed = fleet.api.get(f"/api/v1/deployments/{dep}/devices", params={"step": "SUCCEEDED"})
    assert listed.json()["total"] == 4
    # an artifact in use by a finished deployment may go; while active it may not (other test)


def test_a_failing_canary_halts_and_resume_goes_on(fleet: Fleet) -> None:
    model = fleet.model()
    version = f"3.1.{unique('v')}"
    artifact = fleet.artifact(version, [model])
    site_a, site_b = fleet.site("Europe/Paris"), fleet.site("America/Chicago")
    canary = fleet.device(model_id=model, site_id=site_a)
    rest = fleet.device(model_id=model, site_id=site_b)
    dep = fleet.deploy(
        artifact_ids=[artifact["id"]],
        targets={"devices": [canary.id, rest.id]},
        phases=[
            {"name": "canary", "devices": [canary.id], "success_threshold_pct": 100},
            {"name": "rest", "success_threshold_pct": 100},
        ],
    )["id"]
    in_use = fleet.api.delete(f"/api/v1/artifacts/{artifact['id']}")
    assert_problem(in_use, 409)
    job0 = f"ota-{dep}-0"
    client = fleet.as_device(canary)
    eventually(lambda: pending(client))
    assert report(client, job0, "IN_PROGRESS", step="INSTALLING").status_code == 200
    resp = report(client, job0, "FAILED", step="ROLLED_BACK", error="boot loop, rolled back")
    assert resp.status_code == 200, resp.text

    halted = fleet.wait_status(dep, "HALTED")
    assert "canary" in halted["reason"] and "threshold" in halted["reason"]
    assert halted["steps"]["ROLLED_BACK"] == 1 and halted["steps"]["QUEUED"] == 0
    (failure,) = halted["failures"]
    assert failure["device_id"] == canary.id and failure["site_id"] == site_a
    assert failure["details"]["error"] == "boot loop, rolled back"
    sites = {s["site_id"]: s["steps"] for s in halted["sites"]}
    assert sites[site_a]["ROLLED_BACK"] == 1 and site_b not in sites
    assert halted["phases"][1]["job_id"] is None
    # the rest never got it
    time.sleep(1)
    rest_client = fleet.as_device(rest)
    assert pending(rest_client) == []
    assert fleet.api.get(f"/api/v1/jobs/ota-{dep}-1").status_code == 404

    resumed = fleet.api.post(f"/api/v1/deployments/{dep}/resume")
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["status"] == "IN_PROGRESS" and resumed.json()["current_phase"] == 1
    job1 = f"ota-{dep}-1"
    assert [j["job_id"] for j in eventually(lambda: pending(rest_client))] == [job1]
    assert report(rest_client, job1, "IN_PROGRESS", step="DOWNLOADING").status_code == 200
    assert report(rest_client, job1, "FAILED", error="disk full").status_code == 200
    failed = fleet.wait_status(dep, "FAILED")
    assert failed["steps"]["FAILED"] == 1 and failed["steps"]["ROLLED_BACK"] == 1
    rows = fleet.api.get(f"/api/v1/deployments/{dep}/devices", params={"site_id": site_b}).json()
    assert [(r["device_id"], r["step"]) for r in rows["items"]] == [(rest.id, "FAILED")]
    assert rows["items"][0]["step_details"]["error"] == "disk full"
    assert_problem(fleet.api.post(f"/api/v1/deployments/{dep}/resume"), 409)
    # over: the artifact may be deleted now
    assert fleet.api.delete(f"/api/v1/artifacts/{artifact['id']}").status_code == 204


def _window_around_now(zone: str) -> dict[str, str]:
    local = datetime.now(UTC).astimezone(ZoneInfo(zone))
    start, end = local - timedelta(hours=1), local + timedelta(hours=1)
    return {"start": start.strftime("%H:%M"), "end": end.strftime("%H:%M")}


def test_maintenance_windows_are_read_in_each_sites_time_zone(fleet: Fleet) -> None:
    artifact = fleet.artifact("4.0.0")
    tokyo, new_york = fleet.site("Asia/Tokyo"), fleet.site("America/New_York")
    inside = fleet.device(site_id=tokyo)
    outside = fleet.device(site_id=new_york)
    dep = fleet.deploy(
        artifact_ids=[artifact["id"]],
        targets={"devices": [inside.id, outside.id]},
        # two hours around Tokyo's local time now: New York (13-14 h behind) is outside
        maintenance=[_window_around_now("Asia/Tokyo")],
    )["id"]
    job = f"ota-{dep}-0"
    assert [j["job_id"] for j in eventually(lambda: pending(fleet.as_device(inside)))] == [job]
    time.sleep(1)  # several passes
    assert pending(fleet.as_device(outside)) == []
    assert fleet.as_device(outside).get("/api/v1/ota/actions").json() == {"actions": []}
    execution = fleet.api.get(f"/api/v1/jobs/{job}/executions/{outside.id}").json()
    assert execution["status"] == "QUEUED" and execution["released_at"] is None
    assert fleet.api.get(f"/api/v1/jobs/{job}").json()["maintenance"] == [
        _window_around_now("Asia/Tokyo")
    ]


def test_incompatible_models_are_refused_with_the_device_list(fleet: Fleet) -> None:
    good, other = fleet.model(), fleet.model()
    artifact = fleet.artifact("5.0.0", [good])
    suited = fleet.device(model_id=good)
    wrong = fleet.device(model_id=other)
    bare = fleet.device()
    resp = fleet.api.post(
        "/api/v1/deployments",
        json={
            "artifact_ids": [artifact["id"]],
            "targets": {"devices": [suited.id, wrong.id, bare.id]},
        },
    )
    assert_problem(resp, 422)
    listed = sorted(e["value"] for e in resp.json()["errors"])
    assert listed == sorted([wrong.id, bare.id])
    unknown = fleet.api.post(
        "/api/v1/deployments", json={"artifact_ids": ["nope"], "targets": {"devices": [suited.id]}}
    )
    assert_problem(unknown, 422)
    assert fleet.api.get("/api/v1/deployments", params={"limit": 1000}).status_code == 200


def test_cancel_tells_a_device_mid_install(fleet: Fleet, api: Api) -> None:
    artifact = fleet.artifact("6.0.0")
    device = fleet.device()
    dep = fleet.deploy(artifact_ids=[artifact["id"]], targets={"devices": [device.id]})["id"]
    job = f"ota-{dep}-0"
    client = fleet.as_device(device)
    eventually(lambda: pending(client))
    assert report(client, job, "IN_PROGRESS", step="DOWNLOADING").status_code == 200
    (action,) = client.get("/api/v1/ota/actions").json()["actions"]
    assert action["state"] == "running" and action["step"] == "DOWNLOADING"

    cancelled = api.post(f"/api/v1/deployments/{dep}/cancel", json={"reason": "bad build"})
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "CANCELED" and cancelled.json()["reason"] == "bad build"
    view = client.get(f"/api/v1/ota/actions/{action['action_id']}").json()
    assert view["cancel_requested"] and view["execution_status"] == "CANCELED"
    assert fleet.overview(dep)["steps"]["CANCELED"] == 1
    assert_problem(report(client, job, "SUCCEEDED", version="6.0.0"), 409)
    assert_problem(api.post(f"/api/v1/deployments/{dep}/cancel"), 409)
    # another device cannot see the action
    stranger = fleet.as_device(fleet.device())
    assert_problem(stranger.get(f"/api/v1/ota/actions/{action['action_id']}"), 404)
