"""The agent's handlers against a real ``roost serve``: commands, desired state and jobs run
hooks (executables) or decorated functions, and their outcomes reach the operator's API."""

from __future__ import annotations

import json
import os
import signal
import stat
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from roost_agent.agent import Agent
from roost_agent.config import load_config
from roost_agent.dispatch import Journal
from roost_agent.handlers import HandlerError, Handlers, NoHandler

from tests.agent.support import AgentProcess, write_config
from tests.support import (
    Api,
    Device,
    RoostServer,
    admin_client,
    eventually,
    free_port,
    make_device,
    unique,
)

# Timer passes every 0.2 s: command and job moves are seen at once.
ENV = {"ROOST_TIMER_CHECK_S": "0.2"}
TIMEOUT = 20


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoostServer]:
    tmp = tmp_path_factory.mktemp("roost-handlers")
    with RoostServer(tmp, mqtt_port=free_port(), env_overrides=ENV).running() as running:
        yield running


@pytest.fixture(scope="module")
def admin(server: RoostServer) -> Iterator[Api]:
    with admin_client(server) as api:
        yield api


@pytest.fixture
def device(admin: Api) -> Device:
    return make_device(admin)


# -- hooks and agents ---------------------------------------------------------------------------


def write_hook(hooks: Path, name: str, body: str) -> Path:
    """An executable hook ``hooks/name``: a Python script unless ``body`` has its own #!."""
    path = hooks / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if not body.startswith("#!"):
        body = f"#!{sys.executable}\nimport json, os, sys\n{body}"
    path.write_text(body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def agent_config(tmp_path: Path, server: RoostServer, device: Device, hooks: Path) -> Path:
    return write_config(
        tmp_path / f"{device.id}.toml",
        server,
        device.id,
        device.token,
        sections={"hooks": {"dir": str(hooks)}},
    )


class InProcessAgent(Agent):
    """The real agent in this process (decorators reach it); :meth:`start` waits to connect."""

    def start(self) -> None:
        super().start()
        assert self.link.connected.wait(TIMEOUT), "the agent did not connect"


@contextmanager
def in_process_agent(config: Path) -> Iterator[InProcessAgent]:
    """An agent whose handlers the test registers before calling ``start()``."""
    agent = InProcessAgent(load_config(config))
    try:
        yield agent
    finally:
        agent.stop()


@contextmanager
def agent_process(config: Path) -> Iterator[AgentProcess]:
    """``roost-agent run --config FILE`` as a subprocess."""
    process = AgentProcess(config, load_config(config).local_port).start()
    try:
        yield process
    finally:
        process.stop()


# -- the operator's side ------------------------------------------------------------------------


def send_command(admin: Api, device_id: str, name: str, params: Any = None) -> str:
    body: dict[str, Any] = {"name": name}
    if params is not None:
        body["params"] = params
    resp = admin.post(f"/api/v1/devices/{device_id}/commands", json=body)
    assert resp.status_code == 201, resp.text
    command_id: str = resp.json()["id"]
    return command_id


def finished_command(admin: Api, device_id: str, command_id: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        resp = admin.get(f"/api/v1/devices/{device_id}/commands/{command_id}")
        assert resp.status_code == 200, resp.text
        record: dict[str, Any] = resp.json()
        return record if record["status"] in ("SUCCEEDED", "FAILED", "TIMED_OUT") else None

    result: dict[str, Any] = eventually(check, timeout=TIMEOUT)
    return result


def create_job(admin: Api, device_id: str, document: dict[str, Any]) -> str:
    job_id = unique("job")
    resp = admin.post(
        "/api/v1/jobs",
        json={"id": job_id, "document": document, "targets": {"devices": [device_id]}},
    )
    assert resp.status_code == 201, resp.text
    return job_id


def finished_execution(admin: Api, job_id: str, device_id: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        resp = admin.get(f"/api/v1/jobs/{job_id}/executions/{device_id}")
        assert resp.status_code == 200, resp.text
        execution: dict[str, Any] = resp.json()
        done = ("SUCCEEDED", "FAILED", "REJECTED", "TIMED_OUT")
        return execution if execution["status"] in done else None

    result: dict[str, Any] = eventually(check, timeout=TIMEOUT)
    return result


def execution_status(admin: Api, job_id: str, device_id: str) -> str:
    resp = admin.get(f"/api/v1/jobs/{job_id}/executions/{device_id}")
    assert resp.status_code == 200, resp.text
    status: str = resp.json()["status"]
    return status


# -- commands -----------------------------------------------------------------------------------


def test_a_command_runs_its_hook_and_the_result_reaches_the_api(
    tmp_path: Path, server: RoostServer, admin: Api, device: Device
) -> None:
    hooks = tmp_path / "hooks"
    write_hook(
        hooks,
        "commands/echo",
        "params = json.load(sys.stdin)\n"
        "json.dump({'got': params, 'id': os.environ['ROOST_COMMAND_ID'],"
        " 'device': os.environ['ROOST_DEVICE_ID']}, sys.stdout)\n",
    )
    write_hook(
        hooks,
        "commands/broken",
        "#!/bin/sh\necho 'step 1 ok' >&2\necho 'disk on fire' >&2\nexit 3\n",
    )
    with agent_process(agent_config(tmp_path, server, device, hooks)):
        echo = send_command(admin, device.id, "echo", {"volume": 4, "light": "on"})
        unknown = send_command(admin, device.id, "self-destruct")
        broken = send_command(admin, device.id, "broken")

        done = finished_command(admin, device.id, echo)
        assert done["status"] == "SUCCEEDED", done
        assert done["result"] == {
            "got": {"volume": 4, "light": "on"},
            "id": echo,
            "device": device.id,
        }

        refused = finished_command(admin, device.id, unknown)
        assert refused["status"] == "FAILED", refused
        assert refused["result"] == "no handler for command 'self-destruct'"

        failed = finished_command(admin, device.id, broken)
        assert failed["status"] == "FAILED", failed
        assert "exited with status 3" in failed["result"]
        assert "disk on fire" in failed["result"], failed


def test_a_command_interrupted_by_a_crash_is_not_run_again_and_is_answered(
    tmp_path: Path, server: RoostServer, admin: Api, device: Device
) -> None:
    hooks = tmp_path / "hooks"
    runs = tmp_path / "runs.log"
    write_hook(
        hooks,
        "commands/slow",
        f"with open({str(runs)!r}, 'a') as f:\n"
        "    f.write(str(os.getpid()) + '\\n')\n"
        "import time\ntime.sleep(60)\n",
    )
    config = agent_config(tmp_path, server, device, hooks)
    command_id = send_command(admin, device.id, "slow")
    first = AgentProcess(config, load_config(config).local_port).start()
    try:
        eventually(lambda: runs.exists() and runs.read_text().strip(), timeout=TIMEOUT)
    finally:
        first.stop(signal.SIGKILL)
    hook_pid = int(runs.read_text().split()[0])
    os.kill(hook_pid, signal.SIGKILL)  # the orphaned hook of the killed agent

    with agent_process(config):
        done = finished_command(admin, device.id, command_id)
    assert done["status"] == "FAILED", done
    assert "not run again" in done["result"]
    assert len(runs.read_text().split()) == 1, "the interrupted command ran twice"


def test_decorated_handlers_win_over_hooks_and_a_resent_command_runs_once(
    tmp_path: Path, server: RoostServer, admin: Api, device: Device
) -> None:
    hooks = tmp_path / "hooks"
    write_hook(hooks, "commands/add", "json.dump('the hook ran', sys.stdout)\n")
    config = agent_config(tmp_path, server, device, hooks)
    calls: list[dict[str, Any]] = []
    with in_process_agent(config) as agent:

        @agent.handlers.command("add")
        def add(params: dict[str, Any]) -> dict[str, Any]:
            calls.append(params)
            return {"sum": params["a"] + params["b"]}

        @agent.handlers.command("crash")
        def crash(params: dict[str, Any]) -> None:
            raise RuntimeError("the sensor is unplugged")

        agent.start()
        command_id = send_command(admin, device.id, "add", {"a": 2, "b": 3})
        done = finished_command(admin, device.id, command_id)
        assert done["status"] == "SUCCEEDED", done
        assert done["result"] == {"sum": 5}

        crashed = finished_command(admin, device.id, send_command(admin, device.id, "crash"))
        assert crashed["status"] == "FAILED"
        assert crashed["result"] == "RuntimeError: the sensor is unplugged"

        # A QoS 1 resend of the same command (same id) is answered again, never run again.
        payload = json.dumps({"id": command_id, "name": "add", "params": {"a": 2, "b": 3}})
        topic = f"devices/{device.id}/commands/{command_id}"
        journal = agent.dispatcher.commands
        assert journal.get(command_id) == {
            "key": command_id,
            "state": "done",
            "answer": {"status": "SUCCEEDED", "result": {"sum": 5}},
            "acked": True,
            "sent": 1,
        }
        agent.dispatcher._on_command(topic, payload.encode())
        eventually(lambda: answers_sent(journal, command_id) == 2, timeout=TIMEOUT)
    assert len(calls) == 1, calls

    # ... nor after a restart: the journal in data_dir remembers it.
    with in_process_agent(config) as again:
        again.handlers.command("add")(add)
        again.start()
        again.dispatcher._on_command(topic, payload.encode())
        eventually(
            lambda: answers_sent(again.dispatcher.commands, command_id) == 3, timeout=TIMEOUT
        )
    assert len(calls) == 1, calls


def answers_sent(journal: Journal, command_id: str) -> int:
    """How often the agent has answered a command (once, plus once per resend)."""
    record = journal.get(command_id) or {}
    return int(record.get("sent", 0)) if record.get("acked") else 0


# -- desired state ------------------------------------------------------------------------------


def test_a_desired_change_is_applied_by_the_state_hook_and_reported(
    tmp_path: Path, server: RoostServer, admin: Api, device: Device
) -> None:
    hooks = tmp_path / "hooks"
    applied = tmp_path / "applied.json"
    write_hook(
        hooks,
        "state",
        "delta = json.load(sys.stdin)\n"
        f"with open({str(applied)!r}, 'a') as f:\n"
        "    f.write(json.dumps(delta) + '\\n')\n"
        "json.dump(delta, sys.stdout)\n",
    )
    with agent_process(agent_config(tmp_path, server, device, hooks)):
        resp = admin.patch(
            f"/api/v1/devices/{device.id}/state", json={"desired": {"light": "on", "volume": 4}}
        )
        assert resp.status_code == 200, resp.text

        def reported() -> dict[str, Any] | None:
            body: dict[str, Any] = admin.get(f"/api/v1/devices/{device.id}/state").json()
            return body if body["reported"].get("light") == "on" else None

        state = eventually(reported, timeout=TIMEOUT)
        assert state["reported"] == {"light": "on", "volume": 4}, state
        assert state["delta"] == {}, state

        # Off, then on again: the same delta as before, at a later version, is applied again.
        for light in ("off", "on"):
            resp = admin.patch(
                f"/api/v1/devices/{device.id}/state", json={"desired": {"light": light}}
            )
            assert resp.status_code == 200, resp.text
            reported_light(admin, device.id, light)
        assert state_of(admin, device.id)["delta"] == {}
    lines = [json.loads(line) for line in applied.read_text().splitlines()]
    assert lines == [{"light": "on", "volume": 4}, {"light": "off"}, {"light": "on"}]


def reported_light(admin: Api, device_id: str, light: str) -> None:
    eventually(lambda: state_of(admin, device_id)["reported"].get("light") == light, TIMEOUT)


def state_of(admin: Api, device_id: str) -> dict[str, Any]:
    resp = admin.get(f"/api/v1/devices/{device_id}/state")
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def test_a_decorated_desired_handler_reports_what_it_applied(
    tmp_path: Path, server: RoostServer, admin: Api, device: Device
) -> None:
    # Desired before the agent connects: the delta comes on subscribing.
    resp = admin.patch(
        f"/api/v1/devices/{device.id}/state",
        json={"desired": {"brightness": 80, "mode": "turbo"}},
    )
    assert resp.status_code == 200, resp.text
    with in_process_agent(agent_config(tmp_path, server, device, tmp_path / "hooks")) as agent:

        @agent.handlers.desired
        def apply(delta: dict[str, Any]) -> dict[str, Any]:
            return {k: v for k, v in delta.items() if k != "mode"}  # no turbo on this model

        agent.start()

        def reported() -> dict[str, Any] | None:
            body: dict[str, Any] = admin.get(f"/api/v1/devices/{device.id}/state").json()
            return body if body["reported"] else None

        state = eventually(reported, timeout=TIMEOUT)
    assert state["reported"] == {"brightness": 80}
    assert state["delta"] == {"mode": "turbo"}


# -- jobs ---------------------------------------------------------------------------------------


def test_jobs_run_their_hooks_and_report_the_outcome(
    tmp_path: Path, server: RoostServer, admin: Api, device: Device
) -> None:
    hooks = tmp_path / "hooks"
    target = tmp_path / "touched" / "file.txt"
    write_hook(
        hooks,
        "jobs/touch",
        "doc = json.load(sys.stdin)\n"
        "print('PROGRESS ' + json.dumps({'step': 'touching'}), flush=True)\n"
        "os.makedirs(os.path.dirname(doc['path']), exist_ok=True)\n"
        "open(doc['path'], 'a').close()\n"
        "json.dump({'touched': doc['path'], 'job': os.environ['ROOST_JOB_ID']}, sys.stdout)\n",
    )
    write_hook(hooks, "jobs/flash", "#!/bin/sh\necho 'checksum mismatch' >&2\nexit 1\n")
    with agent_process(agent_config(tmp_path, server, device, hooks)):
        touch = create_job(admin, device.id, {"operation": "touch", "path": str(target)})
        flash = create_job(admin, device.id, {"operation": "flash", "image": "fw.bin"})
        unknown = create_job(admin, device.id, {"operation": "teleport"})
        no_operation = create_job(admin, device.id, {"action": "download"})

        done = finished_execution(admin, touch, device.id)
        assert done["status"] == "SUCCEEDED", done
        assert done["status_details"] == {"touched": str(target), "job": touch}
        assert target.exists()

        failed = finished_execution(admin, flash, device.id)
        assert failed["status"] == "FAILED", failed
        assert "checksum mismatch" in failed["status_details"]["reason"], failed

        rejected = finished_execution(admin, unknown, device.id)
        assert rejected["status"] == "REJECTED", rejected
        assert rejected["status_details"] == {"reason": "no handler for job operation 'teleport'"}

        odd = finished_execution(admin, no_operation, device.id)
        assert odd["status"] == "REJECTED", odd
        assert "operation" in odd["status_details"]["reason"]


def test_a_job_in_progress_when_the_agent_died_runs_again_after_the_restart(
    tmp_path: Path, server: RoostServer, admin: Api, device: Device
) -> None:
    hooks = tmp_path / "hooks"
    runs = tmp_path / "runs.log"
    write_hook(
        hooks,
        "jobs/install",
        f"with open({str(runs)!r}, 'a') as f:\n"
        "    f.write(str(os.getpid()) + '\\n')\n"
        f"if len(open({str(runs)!r}).read().split()) == 1:\n"
        "    import time; time.sleep(60)  # the 'reboot' in the middle of an install\n"
        "json.dump({'runs': 2}, sys.stdout)\n",
    )
    config = agent_config(tmp_path, server, device, hooks)
    job_id = create_job(admin, device.id, {"operation": "install"})
    first = AgentProcess(config, load_config(config).local_port).start()
    try:
        eventually(lambda: runs.exists() and runs.read_text().strip(), timeout=TIMEOUT)
        eventually(lambda: execution_status(admin, job_id, device.id) == "IN_PROGRESS")
    finally:
        first.stop(signal.SIGKILL)
    os.kill(int(runs.read_text().split()[0]), signal.SIGKILL)

    with agent_process(config):
        done = finished_execution(admin, job_id, device.id)
    assert done["status"] == "SUCCEEDED", done
    assert done["status_details"] == {"runs": 2}


def test_a_decorated_job_handler_reports_progress_and_its_failure_details(
    tmp_path: Path, server: RoostServer, admin: Api, device: Device
) -> None:
    seen: list[int] = []
    with in_process_agent(agent_config(tmp_path, server, device, tmp_path / "hooks")) as agent:

        @agent.handlers.job("count")
        def count(document: dict[str, Any], progress: Callable[[dict[str, Any]], None]) -> Any:
            seen.append(document["to"])
            progress({"at": 1})
            if document["to"] > 3:
                raise HandlerError("too far", {"stopped_at": 3})
            return {"counted": document["to"]}

        agent.start()
        good = create_job(admin, device.id, {"operation": "count", "to": 2})
        bad = create_job(admin, device.id, {"operation": "count", "to": 9})
        done = finished_execution(admin, good, device.id)
        failed = finished_execution(admin, bad, device.id)
    assert done["status"] == "SUCCEEDED" and done["status_details"] == {"counted": 2}, done
    assert failed["status"] == "FAILED", failed
    assert failed["status_details"] == {"reason": "too far", "stopped_at": 3}
    assert sorted(seen) == [2, 9], "each job ran once"


# -- the handlers without a server ----------------------------------------------------------------


def test_a_hook_that_overruns_its_timeout_is_killed_with_its_children(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    write_hook(
        tmp_path,
        "commands/hang",
        f"#!/bin/sh\nsleep 60 &\necho $! > {pids}\nwait\n",
    )
    handlers = Handlers(hooks_dir=tmp_path, command_timeout_s=1)
    started = time.monotonic()
    with pytest.raises(HandlerError, match="timed out after 1 s"):
        handlers.run_command("hang", {})
    assert time.monotonic() - started < 30
    child = int(pids.read_text())
    eventually(lambda: not _alive(child), timeout=TIMEOUT)


def test_hook_names_cannot_leave_the_hooks_directory(tmp_path: Path) -> None:
    hooks = tmp_path / "hooks"
    write_hook(tmp_path, "evil", "print('escaped')\n")
    write_hook(hooks, "commands/plain", "#!/bin/sh\necho not-json\n")
    (hooks / "commands" / "mode").write_text("#!/bin/sh\necho hi\n")  # not executable
    handlers = Handlers(hooks_dir=hooks)
    for name in ("../../evil", "../evil", ".hidden", ""):
        with pytest.raises(NoHandler):
            handlers.run_command(name, {})
    assert handlers.run_command("plain", {}) == "not-json"
    with pytest.raises(HandlerError, match="not executable"):
        handlers.run_command("mode", {})


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie waiting for its (killed) parent's reaper counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False
