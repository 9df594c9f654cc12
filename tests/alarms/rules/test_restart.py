"""Rule state survives restarts: a pending ``for`` is neither lost nor fired twice, and what fired
before a crash (SIGKILL) does not fire again, on SQLite and PostgreSQL."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.alarms.conftest import ENV, alarms_of, wait_alarm
from tests.support import (
    Api,
    RoostServer,
    admin_client,
    eventually,
    fresh_postgres_database,
    make_device,
    postgres_reachable,
    skip_or_fail,
)

V1 = "/api/v1"


@pytest.fixture(params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RoostServer]:
    if request.param == "postgresql":
        reason = postgres_reachable()
        if reason:
            skip_or_fail(reason)
        with fresh_postgres_database() as url:
            made = RoostServer(tmp_path, database_url=url, env_overrides=ENV)
            try:
                yield made
            finally:
                made.stop()
    else:
        made = RoostServer(tmp_path, env_overrides=ENV)
        try:
            yield made
        finally:
            made.stop()
    assert not made.unhandled_errors(), made.unhandled_errors()


def rule(api: Api, rule_id: str, for_s: float) -> None:
    resp = api.post(
        f"{V1}/rules",
        json={
            "id": rule_id,
            "source": {"kind": "telemetry", "sensor": "temperature"},
            "condition": {"type": "threshold", "op": ">", "value": 70},
            "for_s": for_s,
            "actions": [{"type": "alarm", "alarm_type": rule_id, "severity": "critical"}],
        },
    )
    assert resp.status_code == 201, resp.text


def test_a_pending_for_survives_a_crash_and_fires_once(server: RoostServer) -> None:
    server.start()
    with admin_client(server) as admin:
        dev = make_device(admin)
        with admin.as_token(dev.token) as device:
            assert device.post(f"{V1}/telemetry", json={"temperature": 20}).status_code == 200
            rule(admin, "slow-burn", for_s=8.0)
            rule(admin, "at-once", for_s=0)
            assert device.post(f"{V1}/telemetry", json={"temperature": 90}).status_code == 200
        wait_alarm(admin, type="at-once")
        eventually(lambda: admin.get(f"{V1}/rules/slow-burn").json()["pending"] == 1)
    server.stop(signal.SIGKILL)  # a crash: nothing is flushed on the way out
    server.start()
    with admin_client(server) as admin:
        assert admin.get(f"{V1}/rules/slow-burn").json()["pending"] == 1
        fired = wait_alarm(admin, type="slow-burn", timeout=20)
        assert fired["count"] == 1
    server.stop()  # a clean stop and start: nothing fires again
    server.start()
    with admin_client(server) as admin:
        time.sleep(2.0)
        alarms = alarms_of(admin)
        assert sorted((a["type"], a["count"], a["status"]) for a in alarms) == [
            ("at-once", 1, "active"),
            ("slow-burn", 1, "active"),
        ]
        assert admin.get(f"{V1}/rules/slow-burn").json()["active"] == 1
