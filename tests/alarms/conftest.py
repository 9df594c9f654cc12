"""Fixtures of the alarms room: a Roost with MQTT on and quick timers, per backend."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import (
    Api,
    RoostServer,
    eventually,
    free_port,
    fresh_postgres_database,
    postgres_reachable,
    skip_or_fail,
)

# Quick timers (command delivery, notifications) and presence checks, for tests that wait on them.
ENV = {
    "ROOST_TIMER_CHECK_S": "0.2",
    "ROOST_PRESENCE_CHECK_S": "0.2",
}


def run_server(server: RoostServer) -> Iterator[RoostServer]:
    """Start, yield, stop; then fail on any unhandled error or rules-engine failure it logged."""
    server.start()
    try:
        yield server
    finally:
        server.stop()
    assert not server.unhandled_errors(), server.unhandled_errors()
    log = server.log_path.read_text(errors="replace")
    assert "rules engine's step failed" not in log, log
    assert "Traceback" not in log, log


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def alarm_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RoostServer]:
    """A Roost with its MQTT listener on and quick timers, per backend, shared by a module."""
    tmp = tmp_path_factory.mktemp(f"roost-alarms-{request.param}")
    if request.param == "postgresql":
        reason = postgres_reachable()
        if reason:
            skip_or_fail(reason)
        with fresh_postgres_database() as url:
            yield from run_server(
                RoostServer(tmp, database_url=url, mqtt_port=free_port(), env_overrides=ENV)
            )
    else:
        yield from run_server(RoostServer(tmp, mqtt_port=free_port(), env_overrides=ENV))


def alarms_of(api: Api, **query: Any) -> list[dict[str, Any]]:
    """The tenant's alarms matching a query."""
    resp = api.get("/api/v1/alarms", params=query)
    assert resp.status_code == 200, resp.text
    items: list[dict[str, Any]] = resp.json()["items"]
    return items


def wait_alarm(api: Api, timeout: float = 15.0, **query: Any) -> dict[str, Any]:
    """The first alarm matching the query, once there is one."""
    found = eventually(lambda: alarms_of(api, **query), timeout=timeout)
    return dict(found[0])
