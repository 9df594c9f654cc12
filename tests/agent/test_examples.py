"""The device examples (examples/python, examples/node) against a real ``roost serve``.

Each example runs as a subprocess with only the environment a device developer would give it;
what it did is read back through the HTTP API as the admin: the telemetry and the event stored
(exactly once), a command answered, a desired-state change reported back, TLS with the platform
CA, and plain refusals for a wrong CA or token.
"""

from __future__ import annotations

import datetime
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import (
    Api,
    Device,
    RoostServer,
    admin_client,
    eventually,
    free_port,
    make_device,
    skip_or_fail,
    unique,
)

ROOT = Path(__file__).resolve().parents[2]
PYTHON_EXAMPLE = ROOT / "examples" / "python" / "device.py"
NODE_DIR = ROOT / "examples" / "node"
EXAMPLES = ["python", "node"]
#: What each example puts in its answers and reports (``CLIENT`` in its source).
CLIENT = {"python": "python-paho", "node": "node-mqttjs"}


@pytest.fixture(scope="module")
def example_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoostServer]:
    """One server for the module, MQTT on plain TCP and over TLS."""
    server = RoostServer(
        tmp_path_factory.mktemp("examples"),
        mqtt_port=free_port(),
        env_overrides={"ROOST_MQTTS_PORT": str(free_port())},
    )
    # A generous start: the machine may be busy with other servers (the default is 30 s).
    server.start(timeout=90)
    try:
        yield server
    finally:
        server.stop()
    assert "Traceback" not in server.log_path.read_text(errors="replace")
    assert not server.unhandled_errors(), server.unhandled_errors()


@pytest.fixture(scope="module")
def api(example_server: RoostServer) -> Iterator[Api]:
    with admin_client(example_server) as client:
        yield client


def example_command(example: str) -> list[str]:
    """The command line that runs ``example`` (skipped locally, failed in CI, when it cannot)."""
    if example == "python":
        return [sys.executable, str(PYTHON_EXAMPLE)]
    node = shutil.which("node")
    if node is None:
        skip_or_fail("node is not installed (Debian package nodejs)")
    if not (NODE_DIR / "node_modules" / "mqtt" / "package.json").exists():
        skip_or_fail(
            "examples/node/node_modules is missing: run `npm ci --prefix examples/node`"
            " (make install does)"
        )
    assert node is not None
    return [node, str(NODE_DIR / "device.js")]


class Example:
    """An example device running as a subprocess, its output in a log file."""

    def __init__(
        self,
        example: str,
        server: RoostServer,
        device: Device,
        log_dir: Path,
        *args: str,
        tls_ca: Path | None = None,
    ) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROOST_")}
        env.update(
            {
                "ROOST_URL": server.url,
                "ROOST_DEVICE_ID": device.id,
                "ROOST_DEVICE_TOKEN": device.token,
                "ROOST_MQTT_HOST": "127.0.0.1",
                "ROOST_MQTT_PORT": str(server.mqtt_port),
            }
        )
        if tls_ca is not None:
            env["ROOST_CA_FILE"] = str(tls_ca)
            env["ROOST_MQTT_PORT"] = server.env_overrides["ROOST_MQTTS_PORT"]
        self.log_path = log_dir / f"{example}-{device.id}.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [*example_command(example), *args],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait(self, timeout: float = 60) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"the example did not finish:\n{self.log()}") from None

    def stop(self) -> int:
        """SIGTERM, then its exit status (it must stop by itself)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.wait(timeout=30)


def command(api: Api, device_id: str, command_id: str) -> dict[str, Any]:
    resp = api.get(f"/api/v1/devices/{device_id}/commands/{command_id}")
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def send_command(api: Api, device_id: str, name: str, params: dict[str, Any]) -> str:
    resp = api.post(f"/api/v1/devices/{device_id}/commands", json={"name": name, "params": params})
    assert resp.status_code == 201, resp.text
    command_id: str = resp.json()["id"]
    return command_id


def finished(api: Api, device_id: str, command_id: str) -> dict[str, Any] | None:
    record = command(api, device_id, command_id)
    return record if record["status"] in {"SUCCEEDED", "FAILED"} else None


def state(api: Api, device_id: str) -> dict[str, Any]:
    resp = api.get(f"/api/v1/devices/{device_id}/state")
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def values(api: Api, device_id: str, sensor: str) -> list[Any]:
    """Every stored value of a sensor, oldest first."""
    resp = api.get(
        f"/api/v1/devices/{device_id}/telemetry",
        params={"sensor": sensor, "from": "2020-01-01", "limit": 1000},
    )
    if resp.status_code == 404:  # the sensor is created by its first value
        return []
    assert resp.status_code == 200, resp.text
    return [item["value"] for item in resp.json()["items"]]


def boot_events(api: Api, device_id: str) -> list[dict[str, Any]]:
    resp = api.get(f"/api/v1/devices/{device_id}/events", params={"type": "boot"})
    assert resp.status_code == 200, resp.text
    items: list[dict[str, Any]] = resp.json()["items"]
    return items


@pytest.mark.parametrize("example", EXAMPLES)
def test_example_answers_commands_and_reports_desired_state(
    example: str, example_server: RoostServer, api: Api, tmp_path: Path
) -> None:
    device = make_device(api)
    echo = unique("echo")
    # Queued before the device exists on the wire: delivered when it connects and subscribes.
    resp = api.patch(
        f"/api/v1/devices/{device.id}/state", json={"desired": {"light": "on", "volume": 4}}
    )
    assert resp.status_code == 200, resp.text
    ping = send_command(api, device.id, "ping", {"echo": echo})

    running = Example(example, example_server, device, tmp_path, "--forever", "--interval", "0.2")
    try:
        done = eventually(lambda: finished(api, device.id, ping), timeout=30)
        assert done["status"] == "SUCCEEDED", (done, running.log())
        assert done["result"]["pong"] == echo
        assert done["result"]["client"] == CLIENT[example]

        # Sent while it runs: a command it knows, one it does not.
        interval = send_command(api, device.id, "set_interval", {"seconds": 0.5})
        unknown = send_command(api, device.id, "self_destruct", {})
        done = eventually(lambda: finished(api, device.id, interval), timeout=30)
        assert (done["status"], done["result"]) == ("SUCCEEDED", {"interval_s": 0.5})
        done = eventually(lambda: finished(api, device.id, unknown), timeout=30)
        assert done["status"] == "FAILED"
        assert "unknown command 'self_destruct'" in done["result"]["error"]

        def reported() -> dict[str, Any] | None:
            doc = state(api, device.id)
            return doc if not doc["delta"] and doc["reported"].get("light") == "on" else None

        doc = eventually(reported, timeout=30)
        assert doc["reported"]["volume"] == 4
        assert doc["reported"]["client"] == CLIENT[example]

        # A change of desired state while it runs is applied and reported back.
        resp = api.patch(f"/api/v1/devices/{device.id}/state", json={"desired": {"volume": 7}})
        assert resp.status_code == 200, resp.text
        eventually(lambda: state(api, device.id)["reported"].get("volume") == 7, timeout=30)

        # Telemetry in the key/value form and the boot event are stored.
        temperatures = eventually(lambda: values(api, device.id, "temperature"), timeout=30)
        assert all(isinstance(t, float) and 20 <= t <= 26.01 for t in temperatures), temperatures
        events = eventually(lambda: boot_events(api, device.id), timeout=30)
        assert [e["body"]["client"] for e in events] == [CLIENT[example]]
    finally:
        status = running.stop()
    assert status == 0, running.log()
    assert "Traceback" not in running.log(), running.log()


@pytest.mark.parametrize("example", EXAMPLES)
def test_example_sends_its_rounds_once_each_and_exits(
    example: str, example_server: RoostServer, api: Api, tmp_path: Path
) -> None:
    device = make_device(api)
    run = Example(example, example_server, device, tmp_path, "--rounds", "3", "--interval", "0.1")
    assert run.wait() == 0, run.log()
    # Every message was acknowledged (stored) before it exited: no waiting here.
    assert values(api, device.id, "pickups") == [1, 2, 3], run.log()
    assert len(values(api, device.id, "temperature")) == 3
    assert set(values(api, device.id, "presence")) <= {True, False}
    assert len(boot_events(api, device.id)) == 1


@pytest.mark.parametrize("example", EXAMPLES)
def test_example_over_tls_trusts_the_platform_ca(
    example: str, example_server: RoostServer, api: Api, tmp_path: Path
) -> None:
    device = make_device(api)
    ca = example_server.data_dir / "ca" / "ca.pem"
    run = Example(example, example_server, device, tmp_path, "--rounds", "1", tls_ca=ca)
    assert run.wait() == 0, run.log()
    assert "(TLS)" in run.log()
    assert values(api, device.id, "pickups") == [1]


@pytest.mark.parametrize("example", EXAMPLES)
def test_example_refuses_a_server_its_ca_does_not_vouch_for(
    example: str, example_server: RoostServer, api: Api, tmp_path: Path
) -> None:
    device = make_device(api)
    other_ca = tmp_path / "other-ca.pem"
    other_ca.write_bytes(self_signed_ca())
    run = Example(example, example_server, device, tmp_path, "--rounds", "1", tls_ca=other_ca)
    assert run.wait() == 1, run.log()
    assert f"is not the one {other_ca} vouches for" in run.log()
    assert values(api, device.id, "pickups") == []


@pytest.mark.parametrize("example", EXAMPLES)
def test_example_stops_on_a_refused_token(
    example: str, example_server: RoostServer, api: Api, tmp_path: Path
) -> None:
    device = make_device(api)
    resp = api.delete(f"/api/v1/devices/{device.id}/tokens/{device.token_id}")
    assert resp.status_code == 204, resp.text
    run = Example(example, example_server, device, tmp_path, "--rounds", "1")
    assert run.wait() == 1, run.log()
    assert "refused the device's credentials" in run.log()


def self_signed_ca() -> bytes:
    """A CA certificate (PEM) that did not sign the server's certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Another CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)
