"""A device's update of an execution the rollout has not released yet says so (HTTP door)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.conftest import Tenant
from tests.jobs.test_http import create_job, make_devices, update
from tests.support import assert_problem


def test_an_update_before_the_release_says_not_released_yet(tenant: Tenant) -> None:
    (device,) = make_devices(tenant, 1)
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    job_id = create_job(tenant, targets={"devices": [device.id]}, schedule_at=later)["id"]
    body = assert_problem(update(device, job_id, status="IN_PROGRESS"), 404)
    assert "not released" in body["detail"] and "yet" in body["detail"]
    # A job the device has no execution of at all is a plain "no job".
    body = assert_problem(update(device, "no-such-job", status="IN_PROGRESS"), 404)
    assert "no job" in body["detail"] and "released" not in body["detail"]
