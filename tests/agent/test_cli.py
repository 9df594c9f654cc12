"""``roost-agent`` as a real subprocess: help that helps, ``check`` that masks secrets and names
mistakes, ``run`` that stops at once on a bad config and cleanly on SIGTERM and SIGINT."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.agent.support import AgentProcess
from tests.support import free_port


def agent(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "roost_agent", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def config_file(tmp_path: Path, *, local_port: int = 0, extra: str = "") -> Path:
    """A config for a server nobody runs (the agent must not care)."""
    path = tmp_path / "agent.toml"
    path.write_text(
        "[device]\n"
        'id = "till-07"\n'
        'token = "very-secret-token"\n'
        'api_url = "http://127.0.0.1:9"\n'
        "[mqtt]\n"
        'host = "127.0.0.1"\n'
        f"port = {free_port()}\n"
        "[agent]\n"
        f'data_dir = "{tmp_path / "data"}"\n'
        "[local_api]\n"
        f"port = {local_port}\n"
        "[health]\n"
        "interval_s = 0\n" + extra
    )
    return path


@pytest.mark.parametrize("args", [["--help"], ["run", "--help"], ["check", "--help"]])
def test_help_explains_the_commands(args: list[str]) -> None:
    done = agent(*args)
    assert done.returncode == 0, done.stderr
    assert "--config" in done.stdout or "run" in done.stdout
    if args == ["--help"]:
        for word in ("run", "check", "bundle", "README"):
            assert word in done.stdout


def test_check_prints_the_config_without_secrets(tmp_path: Path) -> None:
    done = agent("check", "--config", str(config_file(tmp_path)))
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["device_id"] == "till-07" and shown["token"] == "***"
    assert "very-secret-token" not in done.stdout


def test_check_names_a_mistake_and_exits_2(tmp_path: Path) -> None:
    done = agent("check", "--config", str(config_file(tmp_path, extra="[queue]\nwhen_full = 1\n")))
    assert done.returncode == 2
    assert "configuration error: [queue] when_full must be one of" in done.stderr


def test_check_refuses_a_ca_certificate_that_is_not_one(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text(
        "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n"
    )
    path = config_file(tmp_path)
    path.write_text(
        path.read_text().replace("[mqtt]\n", '[mqtt]\ntls = true\nca_file = "ca.pem"\n')
    )
    done = agent("check", "--config", str(path))
    assert done.returncode == 2
    assert "CA certificate" in done.stderr and "unusable" in done.stderr


def test_run_stops_at_once_on_a_bad_config(tmp_path: Path) -> None:
    done = agent("run", "--config", str(tmp_path / "missing.toml"))
    assert done.returncode == 2
    assert "configuration error: cannot read" in done.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_run_stops_cleanly_on_a_signal(tmp_path: Path, sig: signal.Signals) -> None:
    port = free_port()
    process = AgentProcess(config_file(tmp_path, local_port=port), port).start()
    process.stop(sig)
    assert process.process is not None and process.process.returncode == 0, process.log()
    log = process.log()
    assert f"{sig.name}: stopping" in log and "roost-agent stopped" in log
    assert "Traceback" not in log
