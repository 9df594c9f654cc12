"""The README's shell blocks run as written against a live ``roost serve --demo`` (the server
``make run`` starts), so the tour stays true (as sqlite-utils' tests keep its docs honest).

Every ```sh block runs, in order, in one bash session; only blocks that cannot run in a test carry
``<!-- readme-test: skip (reason) -->`` on the line before them. The test changes only addresses
(the server's free ports for 8000, 1884 and 8883, the venv's ``roost`` and ``roost-agent``) and
shortens what would only make the run slow (the simulator's duration, a 30 s long poll). Each curl
fails on a 4xx/5xx (``--fail-with-body``), each subscriber on silence (``-W``), and the first
failing command stops the run and is named.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.support import ADMIN_PASSWORD, RoostServer, admin_client, free_port

README = Path(__file__).resolve().parents[1] / "README.md"
SKIP_MARK = "<!-- readme-test: skip"
# The blocks a test cannot run (starting the server, running the suite): kept few.
MAX_SKIPPED = 3
# Run before the README's commands: stop at the first failure and name it; curl fails on HTTP
# errors, a subscriber that hears nothing fails instead of waiting forever.
PRELUDE = """\
set -Eeuo pipefail
trap 'echo "README command failed (exit $?): $BASH_COMMAND" >&2' ERR
curl() { command curl --fail-with-body --show-error --max-time 60 "$@"; }
mosquitto_sub() { command mosquitto_sub -W 20 "$@"; }
"""


def shell_blocks(text: str) -> tuple[list[str], list[str]]:
    """The README's ```sh / ```bash blocks: (to run, skipped), each as its text."""
    run: list[str] = []
    skipped: list[str] = []
    lines = text.splitlines()
    previous = ""
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.strip() in {"```sh", "```bash"}:
            end = lines.index("```", i + 1)
            block = "\n".join(lines[i + 1 : end])
            (skipped if previous.startswith(SKIP_MARK) else run).append(block)
            i = end + 1
            previous = ""
            continue
        if line.strip():
            previous = line.strip()
        i += 1
    return run, skipped


def adapt(script: str, server: RoostServer, mqtts_port: int, roost: str) -> str:
    """The tour with this test's addresses; every substitution must find its text."""
    roost_agent = Path(sys.executable).parent / "roost-agent"
    substitutions = [
        ("localhost:8000", f"127.0.0.1:{server.port}"),
        ("mqtt://127.0.0.1:1884", f"mqtt://127.0.0.1:{server.mqtt_port}"),
        ("-p 1884 ", f"-p {server.mqtt_port} "),
        ("-p 8883 ", f"-p {mqtts_port} "),
        (".venv/bin/roost-agent ", f"{roost_agent} "),
        (".venv/bin/roost ", f"{roost} "),
        # Shorter, not different: the simulator for 2 s with 5 devices, a 1 s long poll.
        ("--devices 100 --rate 500", "--devices 5 --rate 50"),
        ("--duration 30", "--duration 2"),
        ("commands?wait=30", "commands?wait=1"),
    ]
    for old, new in substitutions:
        assert old in script, f"the README no longer holds {old!r}: update tests/test_readme.py"
        script = script.replace(old, new)
    return script


def test_the_readme_marks_few_blocks_as_not_runnable() -> None:
    run, skipped = shell_blocks(README.read_text())
    assert len(run) >= 6 and 1 <= len(skipped) <= MAX_SKIPPED
    for line in README.read_text().splitlines():
        if line.startswith(SKIP_MARK):
            assert re.fullmatch(r"<!-- readme-test: skip \(.{10,}\) -->", line), line


@pytest.mark.skipif(
    not (shutil.which("mosquitto_pub") and shutil.which("mosquitto_sub")),
    reason="the tour uses mosquitto_pub/mosquitto_sub (make system-deps installs them)",
)
def test_the_readme_tour_runs_as_written(tmp_path: Path) -> None:
    mqtts_port = free_port()
    server = RoostServer(
        tmp_path / "roost-data",
        mqtt_port=free_port(),
        env_overrides={"ROOST_MQTTS_PORT": str(mqtts_port)},
    )
    venv_roost = Path(sys.executable).parent / "roost"
    roost = str(venv_roost) if venv_roost.exists() else f"{sys.executable} -m roost"
    blocks, _ = shell_blocks(README.read_text())
    script = PRELUDE + adapt("\n\n".join(blocks), server, mqtts_port, roost) + "\n"
    (tmp_path / "tour.sh").write_text(script)
    work = tmp_path / "work"
    work.mkdir()
    server.start("--demo", timeout=90)
    try:
        proc = subprocess.run(
            ["bash", str(tmp_path / "tour.sh")],
            input=ADMIN_PASSWORD + "\n",  # what `read` asks for: the admin password
            cwd=work,
            env=server.env(),
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, f"{proc.stderr[-3000:]}\n--- stdout ---\n{proc.stdout[-3000:]}"
        with admin_client(server) as admin:
            outcome = _outcome(admin)
    finally:
        server.stop()
    log = server.log_path.read_text(errors="replace")
    assert "Traceback" not in log, log[-5000:]

    # What the tour did, read back: the device answered its command and reported its state,
    # the consumer group committed, and the bundle names this server's endpoints.
    assert outcome["command"] == "SUCCEEDED"
    assert outcome["state"]["reported"] == {"light": "on", "volume": 4}
    assert outcome["state"]["delta"] == {}
    assert outcome["committed"] >= 0
    assert outcome["job"] == "IN_PROGRESS"  # the device's update was taken, not "not released"
    bundle: dict[str, Any] = orjson.loads((work / "kiosks.json").read_bytes())
    assert bundle["api_url"] == server.url
    assert bundle["mqtt"] == {"host": "127.0.0.1", "port": server.mqtt_port, "tls_port": mqtts_port}
    assert len(bundle["devices"]) == 20
    assert (work / "ca.pem").read_text().startswith("-----BEGIN CERTIFICATE-----")


def _outcome(admin: Any) -> dict[str, Any]:
    device = "/api/v1/devices/paris-display-09"
    commands = admin.get(f"{device}/commands", params={"limit": 5}).json()["items"]
    reboot = [c for c in commands if c["name"] == "reboot"]
    state = admin.get(f"{device}/state").json()
    group = admin.get("/api/v1/streams/billing").json()
    execution = admin.get("/api/v1/jobs/playlist-2026-12/executions/paris-display-09").json()
    return {
        "command": reboot[0]["status"] if reboot else None,
        "state": state,
        "committed": group["committed_offset"],
        "job": execution.get("status"),
    }
