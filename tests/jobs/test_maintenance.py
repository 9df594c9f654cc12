"""Jobs with maintenance windows over HTTP: released only inside a window (UTC without a site)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from tests.conftest import Tenant
from tests.jobs.test_http import create_job, executions, make_devices, pending
from tests.support import assert_problem, eventually, unique


def _window(hours_from_now: float) -> dict[str, str]:
    start = datetime.now(UTC) + timedelta(hours=hours_from_now - 1)
    end = start + timedelta(hours=2)
    return {"start": start.strftime("%H:%M"), "end": end.strftime("%H:%M")}


def test_executions_wait_for_their_devices_window(tenant: Tenant) -> None:
    (device,) = make_devices(tenant, 1)
    later = _window(12)
    closed = create_job(
        tenant, id=unique("job"), targets={"devices": [device.id]}, maintenance=[later]
    )
    assert closed["maintenance"] == [later]
    opened = create_job(
        tenant, id=unique("job"), targets={"devices": [device.id]}, maintenance=[_window(0)]
    )
    assert [j["job_id"] for j in eventually(lambda: pending(device))] == [opened["id"]]
    time.sleep(0.5)
    assert [j["job_id"] for j in pending(device)] == [opened["id"]]
    (waiting,) = executions(tenant, closed["id"])
    assert waiting["status"] == "QUEUED" and waiting["released_at"] is None


def test_a_bad_window_is_refused(tenant: Tenant) -> None:
    (device,) = make_devices(tenant, 1)
    resp = tenant.operator.post(
        "/api/v1/jobs",
        json={
            "document": {"operation": "reboot"},
            "targets": {"devices": [device.id]},
            "maintenance": [{"start": "25:00", "end": "02:00"}],
        },
    )
    assert_problem(resp, 422, "maintenance[0].start")
