"""The S3 blob store over a real socket, against moto's standalone S3-compatible server; and the
operator's own signing key (ROOST_OTA_SIGNING_KEY_FILE) on the same server."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from tests.ota.artifacts.conftest import (
    ENV,
    V1,
    World,
    digest_of,
    random_chunks,
    start_world,
    upload,
)
from tests.support import Api, RoostServer, assert_problem, free_port, unique

BUCKET = "roost-artifacts"
PREFIX = "blobs"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3-compatible server on a free port (its endpoint URL)."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"moto did not start:\n{log.read_text()}") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def s3(moto: str) -> Any:
    """A boto3 client of moto's server, with the bucket made."""
    import boto3

    client = boto3.client("s3", endpoint_url=moto, region_name="us-east-1", **_keys())
    client.create_bucket(Bucket=BUCKET)
    return client


def _keys() -> dict[str, str]:
    return {
        "aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    }


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ed25519.Ed25519PrivateKey]:
    """The operator's own Ed25519 signing key, as a PEM file."""
    key = ed25519.Ed25519PrivateKey.generate()
    path = tmp_path_factory.mktemp("keys") / "ota-signing.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path, key


@pytest.fixture(scope="module")
def s3_world(
    tmp_path_factory: pytest.TempPathFactory,
    moto: str,
    s3: Any,
    key_file: tuple[Path, ed25519.Ed25519PrivateKey],
) -> Iterator[World]:
    """A Roost whose blobs are in moto's S3, signing with the operator's key."""
    env = {
        **ENV,
        **CREDENTIALS,
        "ROOST_BLOB_URL": f"s3://{BUCKET}/{PREFIX}?endpoint={moto}",
        "ROOST_OTA_SIGNING_KEY_FILE": str(key_file[0]),
    }
    yield from start_world(RoostServer(tmp_path_factory.mktemp("roost-s3"), env_overrides=env))


def _objects(s3: Any) -> list[str]:
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}/")
    return sorted(item["Key"] for item in listed.get("Contents", []))


def test_s3_round_trip_upload_ranged_download_delete(s3_world: World, s3: Any) -> None:
    size = 20 * 1024 * 1024 + 7  # three multipart parts
    artifact_id = unique("s3")
    resp = upload(
        s3_world.org.operator,
        random_chunks(size, b"s3"),
        id=artifact_id,
        type="firmware",
        version="1",
        sha256=digest_of(size, b"s3"),
    )
    assert resp.status_code == 201, resp.text
    objects = _objects(s3)
    mine = [key for key in objects if f"/{s3_world.org.id}/{artifact_id}/" in key]
    assert len(mine) == 1
    assert s3.head_object(Bucket=BUCKET, Key=mine[0])["ContentLength"] == size

    url = f"{V1}/artifacts/{artifact_id}/content"  # the one download path every door shares
    device = s3_world.org.viewer
    middle = device.get(url, headers={"Range": "bytes=9000000-9000999"})
    assert middle.status_code == 206 and len(middle.content) == 1000
    expected = b"".join(random_chunks(size, b"s3"))[9_000_000:9_001_000]
    assert middle.content == expected
    digest = hashlib.sha256()
    with device.stream("GET", url) as stream:
        assert stream.status_code == 200
        for piece in stream.iter_bytes():
            digest.update(piece)
    assert digest.hexdigest() == resp.json()["sha256"]

    assert s3_world.org.operator.delete(f"{V1}/artifacts/{artifact_id}").status_code == 204
    assert mine[0] not in _objects(s3)
    assert_problem(device.get(url), 404)


def test_s3_refused_uploads_leave_no_object_or_parts(s3_world: World, s3: Any) -> None:
    before = _objects(s3)
    resp = upload(
        s3_world.org.operator,
        random_chunks(17 * 1024 * 1024, b"bad"),  # multipart begun, then refused
        type="file",
        version="1",
        sha256="1" * 64,
    )
    assert_problem(resp, 422)
    assert _objects(s3) == before
    assert not s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads")


def test_the_operator_signing_key_signs(
    s3_world: World, key_file: tuple[Path, ed25519.Ed25519PrivateKey]
) -> None:
    public = key_file[1].public_key()
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    with Api(s3_world.server.url) as anonymous:
        doc = anonymous.get(f"{V1}/ota/signing-key").json()
    assert doc["key_id"] == hashlib.sha256(raw).hexdigest()[:16]
    assert base64.b64decode(doc["public_key_raw"]) == raw
    made = upload(s3_world.org.operator, b"small", type="file", version="2").json()
    assert made["signing_key_id"] == doc["key_id"]
    manifest = {k: made[k] for k in ("id", "sha256", "size", "type", "version")}
    public.verify(
        base64.b64decode(made["signature"]), orjson.dumps(manifest, option=orjson.OPT_SORT_KEYS)
    )
