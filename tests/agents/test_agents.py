"""The fleet's agents against a real ``roost serve``: a ``roost-agent`` reports its status as the
named state ``agent``; ``GET /api/v1/agents`` lists it (filters, cursor paging) and ``/metrics``
counts it. The report's rules (malformed documents, version order, sums) are checked with values."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from roost_agent import __version__ as agent_version
from roost_agent.config import load_config
from roost_agent.health import significant

from roost.agents.service import matches, queued_points, summarise, version_counts, version_key
from tests.agent.support import AgentProcess, write_config
from tests.support import Api, Device, RoostServer, admin_client, eventually, free_port, make_device

TIMEOUT = 30


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoostServer]:
    tmp = tmp_path_factory.mktemp("roost-agents")
    with RoostServer(tmp, mqtt_port=free_port()).running() as running:
        yield running


@pytest.fixture(scope="module")
def admin(server: RoostServer) -> Iterator[Api]:
    with admin_client(server) as api:
        yield api


def agents(admin: Api, **params: Any) -> dict[str, Any]:
    resp = admin.get("/api/v1/agents", params=params)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def agent_of(admin: Api, device_id: str, **params: Any) -> dict[str, Any] | None:
    found = [a for a in agents(admin, limit=1000, **params)["items"] if a["device_id"] == device_id]
    return found[0] if found else None


def report(server: RoostServer, device: Device, fields: dict[str, Any]) -> None:
    """Report the state ``agent`` over the HTTP device door, as an agent would over MQTT."""
    resp = httpx.post(
        f"{server.url}/api/v1/device/states/agent/reported",
        json=fields,
        headers={"Authorization": f"Bearer {device.token}"},
        timeout=10,
    )
    assert resp.status_code == 200, resp.text


def status(version: str, points: int, dropped: int = 0) -> dict[str, Any]:
    return {
        "version": version,
        "python": "3.9.2",
        "queue": {"points": points, "bytes": points * 100, "dropped": dropped, "refused": 0},
        "forwarded_points": 10,
        "connected_since": 1765100000000,
        "started_at": 1765099990000,
    }


def gauges(admin: Api) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    resp = admin.get("/metrics")
    assert resp.status_code == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(resp.text)
        for sample in family.samples
        if sample.name.startswith("roost_agent")
    }


def test_a_running_agent_reports_its_version_and_queue(
    tmp_path: Path, server: RoostServer, admin: Api
) -> None:
    device = make_device(admin)
    config = write_config(
        tmp_path / "agent.toml",
        server,
        device.id,
        device.token,
        sections={"health": {"interval_s": 1, "status_refresh_s": 5}},
    )
    agent = AgentProcess(config, load_config(config).local_port).start()
    try:
        shown = eventually(lambda: agent_of(admin, device.id), timeout=TIMEOUT)
        assert shown["version"] == agent_version
        assert shown["name"] == device.id
        assert shown["python"]
        assert isinstance(shown["queued_points"], int)
        assert shown["dropped_points"] == 0
        assert shown["started_at"] and shown["connected_since"] and shown["reported_at"]
        assert eventually(lambda: agent_of(admin, device.id)["presence"] == "online")
        # A point forwarded changes only counters: the next full report (status_refresh_s)
        # carries it.
        resp = httpx.post(f"{agent.url}/v1/telemetry", json={"marker": 1}, timeout=10)
        assert resp.status_code == 200, resp.text
        eventually(
            lambda: (agent_of(admin, device.id)["forwarded_points"] or 0) >= 1, timeout=TIMEOUT
        )
        assert agent_of(admin, device.id, version=agent_version) is not None
        assert agent_of(admin, device.id, version="0.0.0-none") is None
        # The metrics count it (read at most every few seconds).
        eventually(
            lambda: (
                gauges(admin).get(("roost_agents", frozenset({("version", agent_version)})), 0) >= 1
            ),
            timeout=TIMEOUT,
        )
    finally:
        agent.stop()
    # The state the agent wrote is an ordinary named state of the device.
    resp = admin.get(f"/api/v1/devices/{device.id}/states/agent")
    assert resp.status_code == 200, resp.text
    assert resp.json()["reported"]["version"] == agent_version


def test_an_agent_without_system_metrics_still_reports_on_connect(
    tmp_path: Path, server: RoostServer, admin: Api
) -> None:
    device = make_device(admin)
    config = write_config(tmp_path / "agent.toml", server, device.id, device.token)  # interval 0
    agent = AgentProcess(config, load_config(config).local_port).start()
    try:
        shown = eventually(lambda: agent_of(admin, device.id), timeout=TIMEOUT)
    finally:
        agent.stop()
    assert shown["version"] == agent_version and shown["connected_since"]


def test_backlog_and_version_filters_and_the_metrics(server: RoostServer, admin: Api) -> None:
    busy, idle = make_device(admin), make_device(admin)
    report(server, busy, status("9.9.1", points=700, dropped=3))
    report(server, idle, status("9.9.1", points=0))
    shown = agent_of(admin, busy.id)
    assert shown is not None
    assert (shown["queued_points"], shown["dropped_points"], shown["queued_bytes"]) == (
        700,
        3,
        70000,
    )
    assert shown["connected_since"] == "2025-12-07T09:33:20Z"
    with_backlog = {a["device_id"] for a in agents(admin, backlog="true", limit=1000)["items"]}
    assert busy.id in with_backlog and idle.id not in with_backlog
    assert {a["device_id"] for a in agents(admin, version="9.9.1")["items"]} == {busy.id, idle.id}

    def counted() -> bool:
        found = gauges(admin)
        return (
            found.get(("roost_agents", frozenset({("version", "9.9.1")}))) == 2
            and found.get(("roost_agent_queued_points", frozenset()), 0) >= 700
        )

    eventually(counted, timeout=TIMEOUT)


def test_pages_follow_the_cursor(server: RoostServer, admin: Api) -> None:
    made = sorted((make_device(admin) for _ in range(5)), key=lambda d: d.id)
    version = "7.7.7-paging"
    for device in made:
        report(server, device, status(version, points=1))
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"version": version, "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = agents(admin, **params)
        assert page["total"] == 5 and page["limit"] == 2
        seen += [a["device_id"] for a in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [d.id for d in made]
    resp = admin.get("/api/v1/agents", params={"limit": 0})
    assert resp.status_code == 422, resp.text


def test_a_viewer_may_list_and_a_device_may_not(server: RoostServer, admin: Api) -> None:
    device = make_device(admin)
    resp = httpx.get(
        f"{server.url}/api/v1/agents",
        headers={"Authorization": f"Bearer {device.token}"},
        timeout=10,
    )
    assert resp.status_code in (401, 403), resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")


# -- the rules, with values ----------------------------------------------------------------------


def test_a_malformed_report_shows_as_unknown_never_as_an_error() -> None:
    row = {
        "device_id": "d",
        "name": "",
        "presence": "online",
        "reported": {"version": 3, "queue": "full", "forwarded_points": True, "started_at": "x"},
        "updated_at": None,
    }
    agent = summarise(row)
    assert agent["version"] is None and agent["queued_points"] is None
    assert agent["forwarded_points"] is None and agent["started_at"] is None
    assert not matches(agent, version=None, backlog=True)
    assert matches(agent, version=None, backlog=False)
    assert version_counts([row["reported"], None, {"version": "1.0"}]) == {
        ("unknown",): 2.0,
        ("1.0",): 1.0,
    }
    assert queued_points([{"queue": {"points": 5}}, {"queue": {"points": -2}}, {}, "x"]) == {
        (): 5.0
    }


def test_versions_sort_as_people_read_them() -> None:
    versions = ["0.9.1", "0.10.0", "0.9.10", "1.0.0rc1", "1.0.0"]
    assert sorted(versions, key=version_key) == ["0.9.1", "0.9.10", "0.10.0", "1.0.0rc1", "1.0.0"]


def test_only_what_an_operator_acts_on_triggers_a_report() -> None:
    """Counters moving do not make a report (each is a state-history row); a backlog appearing,
    a dropped point or a new connection does."""
    base = {
        "version": "1.0",
        "python": "3.11.2",
        "queue": {"points": 0, "bytes": 0, "dropped": 0, "refused": 0},
        "forwarded_points": 10,
        "connected_since": 1,
        "started_at": 1,
    }
    busier = {**base, "forwarded_points": 5000, "queue": {**base["queue"], "bytes": 99}}
    assert significant(busier) == significant(base)
    backlog = {**base, "queue": {**base["queue"], "points": 3}}
    dropped = {**base, "queue": {**base["queue"], "dropped": 1}}
    reconnected = {**base, "connected_since": 2}
    for changed in (backlog, dropped, reconnected):
        assert significant(changed) != significant(base)
