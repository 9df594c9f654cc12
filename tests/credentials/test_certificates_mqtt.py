"""MQTT over TLS with client certificates of the platform CA (``ROOST_MQTTS_PORT``): paho and
mosquitto_pub connect with a certificate alone; a revoked one is refused and its live session
closed; another CA's certificate does not get in; tokens still work over TLS."""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from roost.credentials.certificates import ca
from roost.credentials.certificates.ca import CertificateAuthority, DeviceName
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

TIMEOUT = 10


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoostServer]:
    """A Roost with MQTT over TLS on a free port, shared by this module."""
    with RoostServer(
        tmp_path_factory.mktemp("roost-mtls"),
        mqtt_port=free_port(),
        env_overrides={"ROOST_MQTTS_PORT": str(free_port())},
    ).running() as server:
        yield server


def mqtts_port(server: RoostServer) -> int:
    return int(server.env()["ROOST_MQTTS_PORT"])


@pytest.fixture(scope="module")
def admin(tls_server: RoostServer) -> Iterator[Api]:
    with admin_client(tls_server) as api:
        yield api


@pytest.fixture(scope="module")
def ca_file(admin: Api, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    path.write_text(admin.get("/api/v1/ca").json()["certificate"])
    return path


@dataclass(frozen=True)
class Credentials:
    device_id: str
    cert_id: str
    cert_file: Path
    key_file: Path


def issue_files(admin: Api, device_id: str, folder: Path) -> Credentials:
    resp = admin.post(f"/api/v1/devices/{device_id}/certificates", json={})
    assert resp.status_code == 201, resp.text
    body = resp.json()
    cert_file, key_file = folder / f"{body['id']}.pem", folder / f"{body['id']}.key"
    cert_file.write_text(body["certificate"])
    key_file.write_text(body["private_key"])
    return Credentials(device_id, body["id"], cert_file, key_file)


@pytest.fixture
def device(admin: Api) -> Device:
    return make_device(admin)


@pytest.fixture
def creds(admin: Api, device: Device, tmp_path: Path) -> Credentials:
    return issue_files(admin, device.id, tmp_path)


def values(admin: Api, device_id: str) -> list[Any]:
    resp = admin.get(f"/api/v1/devices/{device_id}/telemetry", params={"sensor": "temperature"})
    if resp.status_code == 404 and "no sensor" in resp.text:
        return []
    assert resp.status_code == 200, resp.text
    return sorted(item["value"] for item in resp.json()["items"])


class TlsClient:
    """A paho client over TLS, with what its callbacks saw."""

    def __init__(self, server: RoostServer, ca_file: Path, protocol: int = mqtt.MQTTv5) -> None:
        self.server = server
        self.protocol = protocol
        self.paho = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=unique("c"), protocol=protocol
        )
        self.ca_file = ca_file
        self.connack: Any = None
        self.disconnect_reason: Any = None
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.acks: dict[int, Any] = {}
        self.paho.on_connect = self._on_connect
        self.paho.on_disconnect = self._on_disconnect
        self.paho.on_publish = lambda c, u, mid, reason, props: self.acks.__setitem__(mid, reason)

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self.connack = reason
        self.connected.set()

    def _on_disconnect(self, client: Any, _: Any, flags: Any, reason: Any, props: Any) -> None:
        self.disconnect_reason = reason
        self.disconnected.set()

    def connect(
        self,
        cert: Path | None = None,
        key: Path | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> Any:
        """CONNECT over TLS; the CONNACK's reason, or None when none came."""
        self.paho.tls_set(
            ca_certs=str(self.ca_file),
            certfile=None if cert is None else str(cert),
            keyfile=None if key is None else str(key),
        )
        if username is not None:
            self.paho.username_pw_set(username, password)
        self.paho.connect("127.0.0.1", mqtts_port(self.server), keepalive=30)
        self.paho.loop_start()
        assert self.connected.wait(TIMEOUT) or self.disconnected.wait(TIMEOUT), "no answer"
        return self.connack

    def publish(self, topic: str, payload: str) -> Any:
        info = self.paho.publish(topic, payload, 1)
        info.wait_for_publish(TIMEOUT)
        return self.acks.get(info.mid)

    def close(self) -> None:
        self.paho.disconnect()
        self.paho.loop_stop()


@pytest.fixture
def clients() -> Iterator[list[TlsClient]]:
    made: list[TlsClient] = []
    yield made
    for client in made:
        client.close()


@pytest.mark.parametrize("protocol", [mqtt.MQTTv311, mqtt.MQTTv5], ids=["v311", "v5"])
def test_a_ca_issued_certificate_connects_and_publishes_with_paho(
    tls_server: RoostServer,
    admin: Api,
    ca_file: Path,
    creds: Credentials,
    clients: list[TlsClient],
    protocol: int,
) -> None:
    client = TlsClient(tls_server, ca_file, protocol)
    clients.append(client)
    assert client.connect(creds.cert_file, creds.key_file) == 0  # no username, no password
    reason = client.publish(f"devices/{creds.device_id}/telemetry", '{"temperature": 20.5}')
    assert reason == 0 or not reason.is_failure
    assert values(admin, creds.device_id) == [20.5]


def test_a_ca_issued_certificate_publishes_with_mosquitto_pub(
    tls_server: RoostServer, admin: Api, ca_file: Path, creds: Credentials
) -> None:
    binary = shutil.which("mosquitto_pub")
    if binary is None:
        pytest.skip("mosquitto_pub is not installed (Debian package mosquitto-clients)")
    done = subprocess.run(
        [binary, "-h", "127.0.0.1", "-p", str(mqtts_port(tls_server)), "--cafile", str(ca_file),
         "--cert", str(creds.cert_file), "--key", str(creds.key_file), "-q", "1",
         "-t", f"devices/{creds.device_id}/telemetry", "-m", json.dumps({"temperature": 7.25})],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert values(admin, creds.device_id) == [7.25]


def test_a_revoked_certificate_is_refused_and_its_live_session_closed(
    tls_server: RoostServer,
    admin: Api,
    ca_file: Path,
    creds: Credentials,
    clients: list[TlsClient],
    tmp_path: Path,
) -> None:
    live = TlsClient(tls_server, ca_file)
    clients.append(live)
    assert live.connect(creds.cert_file, creds.key_file) == 0
    # Another certificate of the same device is not touched by the revocation.
    other = issue_files(admin, creds.device_id, tmp_path)
    bystander = TlsClient(tls_server, ca_file)
    clients.append(bystander)
    assert bystander.connect(other.cert_file, other.key_file) == 0

    resp = admin.delete(f"/api/v1/devices/{creds.device_id}/certificates/{creds.cert_id}")
    assert resp.status_code == 204, resp.text
    assert live.disconnected.wait(TIMEOUT), "the revoked certificate's session stayed open"
    assert live.disconnect_reason == 0x87
    assert not bystander.disconnected.is_set()

    again = TlsClient(tls_server, ca_file)
    clients.append(again)
    assert again.connect(creds.cert_file, creds.key_file) == 0x87  # Not authorized
    assert bystander.publish(f"devices/{creds.device_id}/telemetry", '{"temperature": 1}') == 0
    assert values(admin, creds.device_id) == [1]


def test_a_certificate_from_another_ca_is_refused(
    tls_server: RoostServer,
    admin: Api,
    ca_file: Path,
    creds: Credentials,
    clients: list[TlsClient],
    tmp_path: Path,
) -> None:
    # A look-alike: same device name in the same shape, signed by a CA Roost does not trust.
    name = DeviceName("default", creds.device_id, 0)
    other_ca = CertificateAuthority.generate(datetime.now(UTC))
    key = ca.generate_key()
    lookalike = other_ca.issue_device_certificate(key.public_key(), name, datetime.now(UTC))
    cert_file, key_file = tmp_path / "other.pem", tmp_path / "other.key"
    cert_file.write_text(lookalike.pem)
    key_file.write_text(ca.private_key_pem(key))
    client = TlsClient(tls_server, ca_file)
    clients.append(client)
    # The TLS layer refuses it: during the handshake (TLS 1.2), or with an alert right after
    # it (TLS 1.3, where the client finishes first), so no CONNACK ever comes.
    try:
        reason = client.connect(cert_file, key_file)
    except (ssl.SSLError, OSError):
        reason = None
    else:
        assert client.disconnected.wait(TIMEOUT)
    assert reason is None
    assert values(admin, creds.device_id) == []


def test_tokens_work_over_tls_and_a_certificate_speaks_only_for_its_device(
    tls_server: RoostServer,
    admin: Api,
    ca_file: Path,
    device: Device,
    creds: Credentials,
    clients: list[TlsClient],
) -> None:
    by_token = TlsClient(tls_server, ca_file)
    clients.append(by_token)
    assert by_token.connect(username=device.id, password=device.token) == 0
    someone = make_device(admin)
    wrong = TlsClient(tls_server, ca_file)
    clients.append(wrong)
    assert wrong.connect(creds.cert_file, creds.key_file, username=someone.id) == 0x87
    eventually(lambda: wrong.disconnected.is_set())
