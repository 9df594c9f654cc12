"""A device rotates its own credentials over real HTTP (``/api/v1/device/credentials/…``): the new
token works at once, the old one until it is retired and then never again (HTTP and MQTT, its
live session closed); a CSR gets a certificate of the platform CA; another device's ids do not
exist; operators ask for a rotation with the ``roost.rotate_credentials`` command."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.mqtt.test_gateway import TIMEOUT, Client
from tests.support import (
    Api,
    Device,
    RoostServer,
    admin_client,
    assert_problem,
    free_port,
    make_device,
)

V1 = "/api/v1"
ROTATE = f"{V1}/device/credentials/rotate"
RETIRE = f"{V1}/device/credentials/retire"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoostServer]:
    """A Roost with its MQTT listener on, shared by this module."""
    with RoostServer(
        tmp_path_factory.mktemp("roost-rotation"), mqtt_port=free_port()
    ).running() as running:
        yield running


@pytest.fixture(scope="module")
def admin(server: RoostServer) -> Iterator[Api]:
    with admin_client(server) as api:
        yield api


@pytest.fixture
def device(admin: Api) -> Device:
    return make_device(admin)


def as_device(server: RoostServer, token: str) -> Api:
    return Api(server.url, token)


def rotations(server: RoostServer, kind: str) -> float:
    with Api(server.url) as anon:
        text = anon.get("/metrics").text
    found = re.search(rf'^roost_credential_rotations_total{{kind="{kind}"}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def new_csr() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ignored")]))
        .sign(key, hashes.SHA256())
    )
    return request.public_bytes(serialization.Encoding.PEM).decode()


def mqtt_connect(server: RoostServer, device_id: str, token: str) -> tuple[Client, int]:
    client = Client(server, mqtt.MQTTv5)
    reason = client.connect(device_id, token)
    return client, int(reason.value if hasattr(reason, "value") else reason)


def test_a_rotated_token_works_and_the_old_one_until_retired(
    server: RoostServer, admin: Api, device: Device
) -> None:
    before = rotations(server, "token")
    with as_device(server, device.token) as old:
        resp = old.post(ROTATE, json={})
        assert resp.status_code == 201, resp.text
        rotated = resp.json()
        assert rotated["device_id"] == device.id and rotated["tenant_id"] == "default"
        assert rotated["previous"] == {"kind": "token", "id": device.token_id}
        assert rotated["certificate_id"] is None and rotated["certificate"] is None
        assert rotated["token_id"] != device.token_id
        assert rotations(server, "token") == before + 1
        listed = admin.get(f"{V1}/devices/{device.id}/tokens").json()["items"]
        assert {t["id"]: t["name"] for t in listed}[rotated["token_id"]] == "rotated"

        # Both work until the old one is retired; a session opened with the old one is live.
        live, reason = mqtt_connect(server, device.id, device.token)
        try:
            assert reason == 0
            with as_device(server, rotated["token"]) as new:
                assert new.get(f"{V1}/device").json()["id"] == device.id
                assert old.get(f"{V1}/device").status_code == 200

                # The old credential cannot retire itself: the new one must work first.
                assert_problem(
                    old.post(RETIRE, json={"token_ids": [device.token_id]}), 409, "new credential"
                )
                assert old.get(f"{V1}/device").status_code == 200

                resp = new.post(RETIRE, json={"token_ids": [device.token_id]})
                assert resp.status_code == 200, resp.text
                assert resp.json() == {
                    "revoked": {"token_ids": [device.token_id], "certificate_ids": []}
                }
                # Refused at once, as an operator's revocation is (403: revoked), and the
                # session opened with it is closed.
                assert_problem(old.get(f"{V1}/device"), 403, "revoked")
                assert live.disconnected.wait(TIMEOUT), "the retired token's session stayed open"
                refused, reason = mqtt_connect(server, device.id, device.token)
                refused.close()
                assert reason != 0
                new_client, reason = mqtt_connect(server, device.id, rotated["token"])
                new_client.close()
                assert reason == 0

                # Retiring again changes nothing.
                again = new.post(RETIRE, json={"token_ids": [device.token_id]})
                assert again.status_code == 200, again.text
                assert new.get(f"{V1}/device").status_code == 200
        finally:
            live.close()
    entries = admin.get(
        f"{V1}/audit", params={"entity_type": "device_token", "entity_id": device.token_id}
    ).json()["items"]
    assert [(e["action"], e["actor"]) for e in entries][0] == ("revoke", f"device:{device.id}")


def test_a_csr_gets_a_certificate_of_the_platform_ca(
    server: RoostServer, admin: Api, device: Device
) -> None:
    before = rotations(server, "certificate")
    with as_device(server, device.token) as api:
        resp = api.post(ROTATE, json={"csr": new_csr()})
        assert resp.status_code == 201, resp.text
        rotated = resp.json()
        assert_problem(api.post(ROTATE, json={"csr": "not a csr"}), 422, "csr")
    assert rotated["certificate_id"].startswith("crt_") and rotated["token"]
    issued = x509.load_pem_x509_certificate(rotated["certificate"].encode())
    authority = x509.load_pem_x509_certificate(admin.get(f"{V1}/ca").json()["certificate"].encode())
    issued.verify_directly_issued_by(authority)  # raises unless the CA signed it
    listed = admin.get(f"{V1}/devices/{device.id}/certificates").json()["items"]
    assert [c["id"] for c in listed] == [rotated["certificate_id"]]
    assert rotations(server, "certificate") == before + 1

    # The new certificate is the device's to retire (with its new token).
    with as_device(server, rotated["token"]) as new:
        resp = new.post(RETIRE, json={"certificate_ids": [rotated["certificate_id"]]})
        assert resp.status_code == 200, resp.text
    listed = admin.get(f"{V1}/devices/{device.id}/certificates").json()["items"]
    assert listed[0]["revoked_at"] is not None


def test_another_devices_credentials_do_not_exist(
    server: RoostServer, admin: Api, device: Device
) -> None:
    other = make_device(admin)
    cert_id = admin.post(f"{V1}/devices/{other.id}/certificates", json={}).json()["id"]
    with as_device(server, device.token) as api:
        for body in (
            {"token_ids": [other.token_id]},
            {"certificate_ids": [cert_id]},
            {"token_ids": ["0" * 32]},
        ):
            assert_problem(api.post(RETIRE, json=body), 404)
        # All or nothing: a known id beside an unknown one is not revoked either.
        mine = admin.post(f"{V1}/devices/{device.id}/tokens", json={}).json()
        assert_problem(
            api.post(RETIRE, json={"token_ids": [mine["id"], other.token_id]}), 404, other.token_id
        )
    with as_device(server, mine["token"]) as spare:
        assert spare.get(f"{V1}/device").status_code == 200
    with as_device(server, other.token) as api:
        assert api.get(f"{V1}/device").status_code == 200
    certificates = admin.get(f"{V1}/devices/{other.id}/certificates").json()["items"]
    assert certificates[0]["revoked_at"] is None
    # Users are not devices.
    assert_problem(admin.post(ROTATE, json={}), 403)


def test_an_operator_asks_a_device_to_rotate(
    server: RoostServer, admin: Api, device: Device
) -> None:
    path = f"{V1}/devices/{device.id}/credentials/rotate-request"
    resp = admin.post(path)
    assert resp.status_code == 202, resp.text
    command = resp.json()
    assert command["name"] == "roost.rotate_credentials"
    assert command["params"] == {"certificate": False}  # the device holds no certificate
    assert admin.get(f"{V1}/devices/{device.id}/commands/{command['id']}").json()["status"] in (
        "QUEUED",
        "SENT",
    )

    # A device with an active certificate is asked for a new one too; unless told otherwise.
    assert admin.post(f"{V1}/devices/{device.id}/certificates", json={}).status_code == 201
    assert admin.post(path, json={}).json()["params"] == {"certificate": True}
    assert admin.post(path, json={"certificate": False}).json()["params"] == {"certificate": False}
    with as_device(server, device.token) as api:
        pending = api.get(f"{V1}/device/commands", params={"wait": 0}).json()["items"]
    assert command["id"] in {c["id"] for c in pending}
    assert_problem(admin.post(f"{V1}/devices/no-such-device/credentials/rotate-request"), 404)


def test_the_cli_asks_a_device_to_rotate(server: RoostServer, admin: Api, device: Device) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "roost", "device", "rotate-credentials", device.id, "--json"],
        env=server.env(),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    command_id = re.search(r'"id": "(cmd[^"]+)"', done.stdout)
    assert command_id, done.stdout
    shown = admin.get(f"{V1}/devices/{device.id}/commands/{command_id.group(1)}").json()
    assert shown["name"] == "roost.rotate_credentials" and shown["params"] == {"certificate": False}


def test_rotation_routes_are_documented(server: RoostServer) -> None:
    with Api(server.url) as anon:
        paths = anon.get("/openapi.json").json()["paths"]
    for path in (ROTATE, RETIRE, f"{V1}/devices/{{device_id}}/credentials/rotate-request"):
        operation = paths[path]["post"]
        assert operation["summary"] and operation["operationId"], path
