"""The console's job pages in a real Chromium, with paho devices taking their executions: create a
job for a group in the form and watch its progress change without reload, cancel a job, the API's
refusal of a bad job, targets filled from the device list's link, a device's Jobs tab, and what a
viewer does not see."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.console.conftest import Console
from tests.mqtt_device import MqttDevice
from tests.support import Api, Device, RoostServer, make_device, unique

VIEWER_PASSWORD = "viewer-password-123"


@pytest.fixture(scope="module")
def viewer(console_api: Api) -> str:
    name = unique("viewer")
    resp = console_api.post(
        "/api/v1/users", json={"username": name, "password": VIEWER_PASSWORD, "role": "viewer"}
    )
    assert resp.status_code == 201, resp.text
    return name


@pytest.fixture
def pair(console_server: RoostServer, console_api: Api) -> Iterator[list[MqttDevice]]:
    """Two connected paho devices subscribed to their jobs topics."""
    clients = [MqttDevice(console_server, make_device(console_api)) for _ in range(2)]
    for client in clients:
        client.connect()
        client.subscribe("jobs/#")
    yield clients
    for client in clients:
        client.close()


def group_of(api: Api, device_ids: list[str]) -> str:
    group_id = unique("grp")
    resp = api.post("/api/v1/groups", json={"id": group_id, "name": f"Group {group_id}"})
    assert resp.status_code == 201, resp.text
    resp = api.post(f"/api/v1/groups/{group_id}/devices", json={"device_ids": device_ids})
    assert resp.status_code in (200, 201), resp.text
    return group_id


def create_job(api: Api, **body: Any) -> dict[str, Any]:
    body.setdefault("document", {"operation": "reboot"})
    resp = api.post("/api/v1/jobs", json=body)
    assert resp.status_code == 201, resp.text
    job: dict[str, Any] = resp.json()
    return job


def run_execution(client: MqttDevice, job_id: str, outcome: str) -> None:
    """The device is told of the job, starts it, and reports ``outcome``."""
    client.wait_for("jobs/notify", lambda m: any(j["job_id"] == job_id for j in m["jobs"]))
    client.publish("jobs/start-next", json.dumps({}))
    started = client.wait_for(
        "jobs/start-next/accepted", lambda m: (m["execution"] or {}).get("job_id") == job_id
    )
    assert started["execution"]["status"] == "IN_PROGRESS"
    client.publish(
        f"jobs/{job_id}/update", json.dumps({"status": outcome, "status_details": {"by": "test"}})
    )
    client.wait_for(f"jobs/{job_id}/update/accepted", lambda m: m["status"] == outcome)


def test_a_job_for_a_group_made_in_the_form_shows_its_progress_without_reload(
    console: Console, console_api: Api, pair: list[MqttDevice]
) -> None:
    first, second = pair
    group_id = group_of(console_api, [first.device.id, second.device.id])
    job_id = unique("upgrade")
    console.sign_in()
    console.goto("/jobs")
    console.page.get_by_role("link", name="New job").click()
    page = console.page
    page.get_by_label("Job id").fill(job_id)
    page.get_by_label("Description").fill("Firmware 2.1 for the pair")
    page.get_by_label("Job document").fill(json.dumps({"operation": "upgrade", "to": "2.1"}))
    page.get_by_label("Target groups").select_option(group_id)
    page.get_by_label("Releases per minute").fill("600")
    page.get_by_label("In-progress timeout, seconds").fill("600")
    page.get_by_role("button", name="Create job").click()
    page.wait_for_url(f"**/jobs/{job_id}")

    job = console_api.get(f"/api/v1/jobs/{job_id}").json()
    assert job["targets"]["groups"] == [group_id]
    assert job["document"] == {"operation": "upgrade", "to": "2.1"}
    assert job["rollout"] == {"max_per_minute": 600}
    assert job["timeout_in_progress_s"] == 600
    done = page.get_by_test_id("job-done")
    expect(done).to_have_text("0 of 2 executions ended")
    expect(page.locator("table.executions tbody tr")).to_have_count(2)
    page.evaluate("window.notReloaded = true")

    run_execution(first, job_id, "SUCCEEDED")
    expect(done).to_have_text("1 of 2 executions ended")
    expect(page.locator('td[data-status="SUCCEEDED"]')).to_have_text("1")
    run_execution(second, job_id, "FAILED")
    expect(done).to_have_text("2 of 2 executions ended")
    expect(page.locator('td[data-status="FAILED"]')).to_have_text("1")
    live = page.locator("#job-live")
    expect(page.get_by_test_id("job-status")).to_have_text("job COMPLETED")
    expect(live.get_by_role("row", name=second.device.id)).to_contain_text("FAILED")
    assert page.evaluate("window.notReloaded") is True
    # Done: the live part stops polling.
    expect(live).not_to_have_attribute("hx-trigger", "every 2s")

    counts = console_api.get(f"/api/v1/jobs/{job_id}").json()["counts"]
    assert (counts["SUCCEEDED"], counts["FAILED"]) == (1, 1)

    # Filter the executions by status; the list of jobs shows the job with its progress.
    page.get_by_label("Status").select_option("FAILED")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("table.executions tbody tr")).to_have_count(1)
    expect(page.locator("table.executions tbody tr")).to_contain_text(second.device.id)
    console.goto("/jobs")
    row = page.get_by_role("row", name=job_id)
    expect(row).to_contain_text("COMPLETED")
    expect(row).to_contain_text("2 / 2")

    # The device's Jobs tab lists its execution.
    console.goto(f"/devices/{first.device.id}/jobs")
    tab = page.get_by_role("row", name=job_id)
    expect(tab).to_contain_text("SUCCEEDED")
    expect(page.locator('.subnav a[aria-current="page"]')).to_have_text("Jobs")
    assert console.foreign_requests() == []


def test_cancel_a_job_and_see_it_canceled(console: Console, console_api: Api) -> None:
    device = make_device(console_api)
    job = create_job(console_api, targets={"devices": [device.id]}, description="to cancel")
    console.sign_in()
    console.goto(f"/jobs/{job['id']}")
    page = console.page
    expect(page.get_by_test_id("job-status")).to_have_text("job IN_PROGRESS")
    page.get_by_label("Reason").fill("wrong firmware")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Cancel job").click()
    expect(page.get_by_test_id("job-status")).to_have_text("job CANCELED")
    expect(page.get_by_text("wrong firmware")).to_be_visible()
    expect(page.get_by_role("button", name="Cancel job")).to_have_count(0)
    after = console_api.get(f"/api/v1/jobs/{job['id']}").json()
    assert after["status"] == "CANCELED" and after["reason"] == "wrong firmware"
    assert after["counts"]["CANCELED"] == 1
    console.goto("/jobs?status=CANCELED")
    expect(page.get_by_role("row", name=job["id"])).to_be_visible()
    # The id box opens a job (the API has no text search over jobs), or says there is none.
    page.get_by_label("Job id").fill(job["id"])
    page.get_by_role("button", name="Apply").click()
    page.wait_for_url(f"**/jobs/{job['id']}")
    console.goto("/jobs?q=no-such-job")
    expect(page.get_by_role("alert")).to_contain_text("No job has the id no-such-job")
    assert console.foreign_requests() == []


def test_a_bad_job_shows_the_api_error(console: Console, console_api: Api) -> None:
    device = make_device(console_api)
    console.sign_in()
    console.goto(f"/jobs/new?devices={device.id}")
    page = console.page
    problem = page.locator("[data-problem]")
    page.get_by_label("Releases per minute").fill("5000")
    page.get_by_role("button", name="Create job").click()
    expect(problem).to_contain_text("rollout.max_per_minute must be a number from 1 to 1000")
    assert "/jobs/new" in page.url

    page.get_by_label("Releases per minute").fill("")
    page.get_by_label("Target devices").fill(f"{device.id}, no-such-device")
    page.get_by_role("button", name="Create job").click()
    expect(problem).to_contain_text("no-such-device")

    page.get_by_label("Target devices").fill(device.id)
    page.get_by_label("Job document").fill("[1, 2]")
    page.get_by_role("button", name="Create job").click()
    expect(problem).to_contain_text("document")
    jobs = console_api.get("/api/v1/jobs", params={"limit": 1000}).json()["items"]
    assert not [j for j in jobs if device.id in j["targets"]["devices"]]


def test_the_device_lists_link_fills_the_targets(console: Console, console_api: Api) -> None:
    console.sign_in()
    console.goto("/jobs/new?devices=kiosk-a,kiosk-b")
    expect(console.page.get_by_label("Target devices")).to_have_value("kiosk-a\nkiosk-b")


def test_a_viewer_sees_no_write_actions(
    console: Console, console_api: Api, viewer: str, pair: list[MqttDevice]
) -> None:
    device: Device = pair[0].device
    job = create_job(console_api, targets={"devices": [device.id]})
    console.sign_in(viewer, VIEWER_PASSWORD)
    page = console.page
    console.goto("/jobs")
    expect(page.get_by_role("row", name=job["id"])).to_be_visible()
    expect(page.get_by_role("link", name="New job")).to_have_count(0)
    console.goto(f"/jobs/{job['id']}")
    expect(page.get_by_test_id("job-done")).to_be_visible()
    expect(page.get_by_role("button", name="Cancel job")).to_have_count(0)
    console.goto(f"/devices/{device.id}/jobs")
    expect(page.get_by_role("row", name=job["id"])).to_be_visible()
    expect(page.get_by_role("link", name="New job for this device")).to_have_count(0)
    response = console.goto("/jobs/new")
    assert response.status == 403
    expect(page.get_by_role("button", name="Create job")).to_have_count(0)
    assert console.foreign_requests() == []
