"""Devices download: their own credentials (token, SAS), signed URLs (expired or forged ones
refused), another tenant's device refused, resume with Range, counts; and signature checks as a
device would make them with the key of GET /api/v1/ota/signing-key."""

from __future__ import annotations

import base64
import hashlib
import time
from typing import Any

import httpx
import orjson
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from roost.credentials.keys import sas
from roost.ota.artifacts.signing import UrlSigner
from tests.ota.artifacts.conftest import V1, World, upload
from tests.support import SECRET_KEY, Api, assert_problem, eventually, unique

DATA = bytes(range(256)) * 12_000  # 3,072,000 bytes


def send(world: World, artifact_id: str, *device_ids: str) -> None:
    """Deploy the artifact to the devices: a device downloads only what it was sent."""
    resp = world.org.operator.post(
        f"{V1}/deployments",
        json={"artifact_ids": [artifact_id], "targets": {"devices": list(device_ids)}},
    )
    assert resp.status_code == 201, resp.text


@pytest.fixture(scope="module")
def artifact(world: World) -> dict[str, Any]:
    """A firmware artifact of the first tenant, sent to its device."""
    resp = upload(world.org.operator, DATA, id=unique("fw"), type="firmware", version="3.1.0")
    assert resp.status_code == 201, resp.text
    made: dict[str, Any] = resp.json()
    send(world, made["id"], world.org.device.id)
    return made


def _counts(world: World, artifact_id: str) -> dict[str, dict[str, Any]]:
    resp = world.org.viewer.get(f"{V1}/artifacts/{artifact_id}/downloads")
    assert resp.status_code == 200, resp.text
    return {item["device_id"]: item for item in resp.json()["items"]}


def test_a_device_downloads_with_its_token_and_resumes_with_a_range(
    world: World, artifact: dict[str, Any]
) -> None:
    url = f"{V1}/ota/artifacts/{artifact['id']}/download"
    device = world.org.device_api
    # A download cut after a megabyte, resumed where it stopped.
    got = bytearray()
    with device.stream("GET", url) as stream:
        assert stream.status_code == 200
        for piece in stream.iter_bytes():
            got += piece
            if len(got) >= 1024 * 1024:
                break
    rest = device.get(
        url, headers={"Range": f"bytes={len(got)}-", "If-Range": stream.headers["etag"]}
    )
    assert rest.status_code == 206, rest.text
    got += rest.content
    assert hashlib.sha256(got).hexdigest() == artifact["sha256"]
    head = device.head(url)
    assert head.status_code == 200 and head.headers["content-length"] == str(len(DATA))

    # The resumed download reached the end: counted (the cut one too when the server had
    # already handed all its bytes to the kernel before the client left); HEAD is not. Bytes
    # add up what was sent: at least the second half and the first megabyte.
    counts = eventually(lambda: _counts(world, artifact["id"]).get(world.org.device.id))
    assert 1 <= counts["count"] <= 2
    assert counts["bytes"] >= len(DATA)


def test_a_device_with_a_sas_token_downloads(world: World, artifact: dict[str, Any]) -> None:
    device_id = unique("sas")
    assert world.org.admin.post(f"{V1}/devices", json={"id": device_id}).status_code == 201
    key = world.org.admin.post(f"{V1}/devices/{device_id}/keys", json={})
    assert key.status_code == 201, key.text
    send(world, artifact["id"], device_id)
    token = sas.sign(
        base64.b64decode(key.json()["key"]),
        sas.device_resource(world.org.id, device_id),
        int(time.time()) + 600,
    )
    with Api(world.server.url, headers={"Authorization": token}) as device:
        resp = device.get(f"{V1}/ota/artifacts/{artifact['id']}/download")
    assert resp.status_code == 200 and resp.content == DATA


def test_signed_urls_work_without_headers_and_refuse_forgeries(
    world: World, artifact: dict[str, Any]
) -> None:
    view = world.org.device_api.get(f"{V1}/ota/artifacts/{artifact['id']}")
    assert view.status_code == 200, view.text
    body = view.json()
    assert body["url"] == f"{V1}/ota/artifacts/{artifact['id']}/download"
    with httpx.Client(base_url=world.server.url) as anonymous:
        resp = anonymous.get(body["signed_url"], headers={"Range": "bytes=0-99"})
        assert resp.status_code == 206 and resp.content == DATA[:100]
        assert anonymous.get(body["signed_url"]).content == DATA

        token = body["signed_url"].rsplit("/", 1)[-1]
        payload, mac = token.split(".")
        forged = f"{payload}.{'A' * len(mac)}"
        assert_problem(anonymous.get(f"{V1}/ota/dl/{forged}"), 401, "signature")
        assert_problem(anonymous.get(f"{V1}/ota/dl/not-a-token"), 401)
        # Signed with the server's own secret but expired a minute ago.
        signer = UrlSigner(SECRET_KEY)
        old = signer.make(world.org.id, artifact["id"], world.org.device.id, int(time.time()) - 60)
        assert_problem(anonymous.get(f"{V1}/ota/dl/{old}"), 401, "expired")
        # Valid for a device that does not exist: refused.
        ghost = signer.make(world.org.id, artifact["id"], "ghost", int(time.time()) + 60)
        assert_problem(anonymous.get(f"{V1}/ota/dl/{ghost}"), 404)


def test_devices_of_another_tenant_and_users_are_refused(
    world: World, artifact: dict[str, Any]
) -> None:
    url = f"{V1}/ota/artifacts/{artifact['id']}/download"
    assert_problem(world.other.device_api.get(url), 404)
    assert_problem(world.other.device_api.get(f"{V1}/ota/artifacts/{artifact['id']}"), 404)
    with Api(world.server.url) as anonymous:
        assert_problem(anonymous.get(url), 401)
    assert_problem(world.org.viewer.get(url), 403)  # a user's token is no device credential
    assert_problem(world.org.device_api.get(f"{V1}/ota/artifacts/nope/download"), 404)


def test_a_device_reaches_only_the_artifacts_it_was_sent(
    world: World, artifact: dict[str, Any]
) -> None:
    device_id = unique("other")
    assert world.org.admin.post(f"{V1}/devices", json={"id": device_id}).status_code == 201
    token = world.org.admin.post(f"{V1}/devices/{device_id}/tokens", json={}).json()["token"]
    url = f"{V1}/ota/artifacts/{artifact['id']}"
    with Api(world.server.url, token=token) as neighbour:
        # same tenant, never sent it: as if it did not exist
        assert_problem(neighbour.get(url), 404, "was sent to this device")
        assert_problem(neighbour.get(f"{url}/download"), 404)
        send(world, artifact["id"], device_id)
        # sent now: within a second (a refusal is remembered that long)
        assert eventually(lambda: neighbour.get(f"{url}/download").status_code == 200)
        assert neighbour.get(f"{url}/download").content == DATA


def _public_key(world: World) -> ed25519.Ed25519PublicKey:
    with Api(world.server.url) as anonymous:
        resp = anonymous.get(f"{V1}/ota/signing-key")
    assert resp.status_code == 200, resp.text
    doc = resp.json()
    assert doc["algorithm"] == "ed25519"
    key = serialization.load_pem_public_key(doc["public_key"].encode())
    assert isinstance(key, ed25519.Ed25519PublicKey)
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert base64.b64decode(doc["public_key_raw"]) == raw
    assert doc["key_id"] == hashlib.sha256(raw).hexdigest()[:16]
    return key


def _manifest_bytes(view: dict[str, Any]) -> bytes:
    manifest = {k: view[k] for k in ("id", "sha256", "size", "type", "version")}
    return orjson.dumps(manifest, option=orjson.OPT_SORT_KEYS)


def test_the_manifest_signature_verifies_and_a_tampered_one_does_not(
    world: World, artifact: dict[str, Any]
) -> None:
    key = _public_key(world)
    view = world.org.device_api.get(f"{V1}/ota/artifacts/{artifact['id']}").json()
    assert view["signature_by"] == "roost"
    signature = base64.b64decode(view["signature"])
    key.verify(signature, _manifest_bytes(view))  # raises if it does not verify
    for field, value in (("sha256", "0" * 64), ("version", "9.9.9"), ("size", view["size"] + 1)):
        with pytest.raises(InvalidSignature):
            key.verify(signature, _manifest_bytes({**view, field: value}))
    # A downloaded file whose hash is not the manifest's would be refused by the device too.
    body = world.org.device_api.get(view["url"]).content
    assert hashlib.sha256(body).hexdigest() == view["sha256"]


def test_an_operator_signature_is_kept_as_given(world: World) -> None:
    own = ed25519.Ed25519PrivateKey.generate()
    data = b"operator-signed firmware"
    signature = base64.b64encode(own.sign(data)).decode()
    resp = upload(
        world.org.operator, data, id=unique("op"), type="firmware", version="1", signature=signature
    )
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["signature"] == signature and body["signature_by"] == "operator"
    assert body["signing_key_id"] is None
    send(world, body["id"], world.org.device.id)
    view = world.org.device_api.get(f"{V1}/ota/artifacts/{body['id']}").json()
    assert view["signature"] == signature and view["signature_by"] == "operator"
    own.public_key().verify(base64.b64decode(view["signature"]), data)
