"""Health and diagnostics against a real ``roost serve``: system metrics arrive as the device's
telemetry, and the ``diagnostics`` command uploads an archive the operator downloads."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from roost_agent import health
from roost_agent.config import load_config

from tests.agent.support import AgentProcess, write_config
from tests.support import Api, Device, RoostServer, admin_client, eventually, free_port, make_device

# Timer passes every 0.2 s: command moves are seen at once.
ENV = {"ROOST_TIMER_CHECK_S": "0.2"}
TIMEOUT = 30
#: Sensors every Linux system gives (temperature is absent in containers and VMs).
ALWAYS = (
    "agent_cpu_pct",
    "agent_mem_used_pct",
    "agent_mem_available_bytes",
    "agent_disk_used_pct",
    "agent_uptime_s",
    "agent_rss_bytes",
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoostServer]:
    tmp = tmp_path_factory.mktemp("roost-health")
    with RoostServer(tmp, mqtt_port=free_port(), env_overrides=ENV).running() as running:
        yield running


@pytest.fixture(scope="module")
def admin(server: RoostServer) -> Iterator[Api]:
    with admin_client(server) as api:
        yield api


@pytest.fixture
def device(admin: Api) -> Device:
    return make_device(admin)


def latest(admin: Api, device_id: str) -> dict[str, Any]:
    resp = admin.get(f"/api/v1/devices/{device_id}/latest")
    assert resp.status_code == 200, resp.text
    return {item["sensor"]: item["value"] for item in resp.json()["items"]}


def agent_post(agent: AgentProcess, body: dict[str, Any]) -> int:
    return httpx.post(f"{agent.url}/v1/telemetry", json=body, timeout=10).status_code


def test_system_metrics_arrive_as_the_device_s_telemetry(
    tmp_path: Path, server: RoostServer, admin: Api, device: Device
) -> None:
    config = write_config(
        tmp_path / "agent.toml",
        server,
        device.id,
        device.token,
        sections={"health": {"interval_s": 1}},
    )
    agent = AgentProcess(config, load_config(config).local_port).start()
    try:
        values = eventually(
            lambda: (
                (found := latest(admin, device.id)) and all(s in found for s in ALWAYS) and found
            ),
            timeout=TIMEOUT,
        )
    finally:
        agent.stop()
    for sensor in ("agent_cpu_pct", "agent_mem_used_pct", "agent_disk_used_pct"):
        assert 0 <= values[sensor] <= 100, (sensor, values[sensor])
    assert values["agent_uptime_s"] > 0
    # A Python process with sqlite and paho loaded holds more than a few MiB.
    assert 4 * 1024 * 1024 < values["agent_rss_bytes"] < 1024**3
    assert values["agent_mem_available_bytes"] > 0


def test_health_off_sends_nothing(
    tmp_path: Path, server: RoostServer, admin: Api, device: Device
) -> None:
    config = write_config(tmp_path / "agent.toml", server, device.id, device.token)  # interval 0
    agent = AgentProcess(config, load_config(config).local_port).start()
    try:
        resp = agent_post(agent, {"values": {"marker": 1}})
        assert resp == 200
        eventually(lambda: "marker" in latest(admin, device.id), timeout=TIMEOUT)
    finally:
        agent.stop()
    assert not [s for s in latest(admin, device.id) if s.startswith("agent_")]


def test_the_diagnostics_command_uploads_an_archive_the_operator_downloads(
    tmp_path: Path, server: RoostServer, admin: Api, device: Device
) -> None:
    log_file = tmp_path / "app.log"  # not agent.log: the process writes its output there
    log_file.write_text("".join(f"log line {n}\n" for n in range(3000)))
    config_path = write_config(
        tmp_path / "agent.toml",
        server,
        device.id,
        device.token,
        sections={"diagnostics": {"log_file": str(log_file)}},
    )
    agent = AgentProcess(config_path, load_config(config_path).local_port).start()
    try:
        resp = admin.post(
            f"/api/v1/devices/{device.id}/commands",
            json={"name": "diagnostics", "params": {"lines": 100, "note": "it crashed"}},
        )
        assert resp.status_code == 201, resp.text
        command_id = resp.json()["id"]

        def finished() -> dict[str, Any] | None:
            body: dict[str, Any] = admin.get(
                f"/api/v1/devices/{device.id}/commands/{command_id}"
            ).json()
            return body if body["status"] in ("SUCCEEDED", "FAILED", "TIMED_OUT") else None

        command = eventually(finished, timeout=TIMEOUT)
    finally:
        agent.stop()
    assert command["status"] == "SUCCEEDED", (command, agent.log())
    result = command["result"]
    diag_id = result["diagnostic_id"]

    listed = admin.get(f"/api/v1/devices/{device.id}/diagnostics").json()
    assert [item["id"] for item in listed["items"]] == [diag_id]
    assert listed["items"][0]["note"] == "it crashed"
    assert listed["items"][0]["size"] == result["size"]
    assert listed["items"][0]["sha256"] == result["sha256"]

    got = admin.get(f"/api/v1/devices/{device.id}/diagnostics/{diag_id}/content")
    assert got.status_code == 200, got.text
    assert len(got.content) == result["size"]
    with tarfile.open(fileobj=io.BytesIO(got.content), mode="r:gz") as tar:
        names = tar.getnames()
        members = {name: tar.extractfile(name).read() for name in names}  # type: ignore[union-attr]
    assert set(names) == {"agent.log", "status.json", "system.json", "df.txt", "config.json"}
    assert names == result["members"]
    log_lines = members["agent.log"].decode().splitlines()
    assert log_lines == [f"log line {n}" for n in range(2900, 3000)]
    status = json.loads(members["status.json"])
    assert status["agent"]["device_id"] == device.id
    assert "mem_used_pct" in status["health"]
    assert json.loads(members["system.json"])["uname"]["system"]
    config = json.loads(members["config.json"])
    assert config["device_id"] == device.id and config["token"] == "***"
    for name, data in members.items():
        assert device.token.encode() not in data, f"the device token leaked into {name}"


def test_readings_come_from_proc_and_sys_files(tmp_path: Path) -> None:
    """The parsers read the kernel's formats (a fake /proc and /sys: any machine's numbers)."""
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "stat").write_text("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4\n")
    (proc / "meminfo").write_text(
        "MemTotal:        1000 kB\nMemFree:          100 kB\nMemAvailable:     250 kB\n"
    )
    (proc / "uptime").write_text("12345.67 20000.00\n")
    before = health.cpu_times(proc)
    assert before == (150, 1000)
    (proc / "stat").write_text("cpu  130 0 70 850 50 0 0 0 0 0\n")
    after = health.cpu_times(proc)
    assert after is not None
    assert health.cpu_percent(before, after) == pytest.approx(50.0)
    assert health.memory(proc) == {"mem_used_pct": 75.0, "mem_available_bytes": 250 * 1024}
    assert health.uptime(proc) == pytest.approx(12345.67)

    thermal = tmp_path / "thermal"
    assert health.temperature(thermal) is None  # no zones: no reading, never a 0
    for zone, milli in (("thermal_zone0", "48500"), ("thermal_zone1", "61250")):
        (thermal / zone).mkdir(parents=True)
        (thermal / zone / "temp").write_text(milli + "\n")
    assert health.temperature(thermal) == pytest.approx(61.25)
    assert set(health.disk(tmp_path)) == {"disk_used_pct", "disk_free_bytes"}
