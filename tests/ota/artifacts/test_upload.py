"""Uploads through a real server: streamed bodies, hashes, limits, refusals that store nothing,
Debian packages, container references, reads, the release-notes change and deletes."""

from __future__ import annotations

import hashlib
import io
import socket
import subprocess
import tarfile
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.ota.artifacts.conftest import (
    MAX_BYTES,
    V1,
    World,
    blob_files,
    digest_of,
    random_chunks,
    upload,
)
from tests.support import assert_problem, unique

BIG = 24 * 1024 * 1024 + 12345  # several 1 MiB pieces and a ragged end


def test_a_streamed_upload_is_stored_with_its_hashes(world: World) -> None:
    api = world.org.operator
    artifact_id = unique("fw")
    resp = upload(
        api,
        random_chunks(BIG, b"big"),  # a generator: sent chunked, never whole in memory
        id=artifact_id,
        type="firmware",
        version="1.2.3",
        filename="image.bin",
        release_notes="first",
        sha256=digest_of(BIG, b"big"),
    )
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["id"] == artifact_id and body["size"] == BIG
    assert body["sha256"] == digest_of(BIG, b"big")
    sha1, md5 = hashlib.sha1(), hashlib.md5()
    for piece in random_chunks(BIG, b"big"):
        sha1.update(piece)
        md5.update(piece)
    assert (body["sha1"], body["md5"]) == (sha1.hexdigest(), md5.hexdigest())
    assert body["signature_by"] == "roost" and body["signature"] and body["signing_key_id"]
    assert isinstance(body["module_id"], int)
    assert body["name"] == "image.bin"  # the filename when no name is given

    got = world.org.viewer.get(f"{V1}/artifacts/{artifact_id}")
    assert got.status_code == 200 and got.json() == body
    listed = world.org.viewer.get(f"{V1}/artifacts", params={"type": "firmware"}).json()
    assert artifact_id in [item["id"] for item in listed["items"]]

    # The whole file back, streamed: the same bytes.
    digest = hashlib.sha256()
    with world.org.viewer.stream("GET", f"{V1}/artifacts/{artifact_id}/content") as stream:
        assert stream.status_code == 200
        assert stream.headers["content-length"] == str(BIG)
        assert stream.headers["etag"] == f'"{body["sha256"]}"'
        assert stream.headers["accept-ranges"] == "bytes"
        for piece in stream.iter_bytes():
            digest.update(piece)
    assert digest.hexdigest() == body["sha256"]


def test_an_upload_whose_sha256_differs_is_refused_and_stores_nothing(world: World) -> None:
    before = blob_files(world.server)
    artifact_id = unique("fw")
    resp = upload(
        world.org.operator,
        random_chunks(3 * 1024 * 1024, b"x"),
        id=artifact_id,
        type="file",
        version="1",
        sha256="0" * 64,
    )
    assert_problem(resp, 422, "sha-256")
    assert_problem(world.org.operator.get(f"{V1}/artifacts/{artifact_id}"), 404)
    assert blob_files(world.server) == before


def test_an_upload_over_the_limit_is_refused_with_413_and_stores_nothing(world: World) -> None:
    before = blob_files(world.server)
    artifact_id = unique("fw")
    # Streamed (no Content-Length): cut when the limit is passed.
    resp = upload(
        world.org.operator,
        random_chunks(MAX_BYTES + 1024 * 1024, b"huge"),
        id=artifact_id,
        type="file",
        version="1",
    )
    assert_problem(resp, 413, "limit")
    assert_problem(world.org.operator.get(f"{V1}/artifacts/{artifact_id}"), 404)
    assert blob_files(world.server) == before


def test_an_announced_size_over_the_limit_is_refused_at_once(world: World) -> None:
    host, port = "127.0.0.1", world.server.port
    token = world.org.operator.headers["authorization"]
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(
            (
                f"POST {V1}/artifacts?type=file&version=1 HTTP/1.1\r\nHost: {host}\r\n"
                f"Authorization: {token}\r\nContent-Type: application/octet-stream\r\n"
                f"Content-Length: {MAX_BYTES + 1}\r\n\r\n"
            ).encode()
        )
        answer = sock.recv(65536).decode(errors="replace")
    assert answer.startswith("HTTP/1.1 413"), answer


def cut_uploads(world: World) -> float:
    """How many artifact uploads the server has answered 422 (a cut upload is one of them)."""
    text = httpx.get(f"{world.server.url}/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if (
                sample.name == "roost_http_requests_total"
                and labels.get("method") == "POST"
                and labels.get("route") == f"{V1}/artifacts"
                and labels.get("status") == "422"
            ):
                return sample.value
    return 0.0


def test_a_truncated_upload_stores_nothing(world: World) -> None:
    before = blob_files(world.server)
    answered = cut_uploads(world)
    artifact_id = unique("cut")
    host, port = "127.0.0.1", world.server.port
    token = world.org.operator.headers["authorization"]
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(
            (
                f"POST {V1}/artifacts?type=file&version=1&id={artifact_id} HTTP/1.1\r\n"
                f"Host: {host}\r\nAuthorization: {token}\r\n"
                "Content-Type: application/octet-stream\r\n"
                f"Content-Length: {8 * 1024 * 1024}\r\n\r\n"
            ).encode()
        )
        sock.sendall(b"y" * (3 * 1024 * 1024))  # then the client goes away
    # The server notices the cut and answers it (to nobody) once the temporary file is gone.
    # (Polling the blob directory alone raced: it could look unchanged before the server had
    # even created the temporary file.)
    deadline = time.monotonic() + 30
    while cut_uploads(world) == answered and time.monotonic() < deadline:
        time.sleep(0.05)
    assert cut_uploads(world) == answered + 1
    assert blob_files(world.server) == before
    assert_problem(world.org.operator.get(f"{V1}/artifacts/{artifact_id}"), 404)


def test_ranges_validators_and_head(world: World) -> None:
    data = bytes(range(256)) * 4000  # 1,024,000 bytes
    artifact_id = unique("r")
    resp = upload(world.org.operator, data, id=artifact_id, type="file", version="1")
    assert resp.status_code == 201, resp.text
    etag = f'"{hashlib.sha256(data).hexdigest()}"'
    url = f"{V1}/artifacts/{artifact_id}/content"
    api = world.org.viewer

    part = api.get(url, headers={"Range": "bytes=1000-1999"})
    assert part.status_code == 206 and part.content == data[1000:2000]
    assert part.headers["content-range"] == f"bytes 1000-1999/{len(data)}"
    tail = api.get(url, headers={"Range": "bytes=-100"})
    assert tail.status_code == 206 and tail.content == data[-100:]
    rest = api.get(url, headers={"Range": "bytes=1000000-"})
    assert rest.status_code == 206 and rest.content == data[1000000:]
    beyond = api.get(url, headers={"Range": f"bytes={len(data)}-"})
    assert_problem(beyond, 416)
    assert beyond.headers["content-range"] == f"bytes */{len(data)}"
    # Several ranges or a malformed one: the whole file.
    assert api.get(url, headers={"Range": "bytes=0-1,5-6"}).content == data
    assert api.get(url, headers={"Range": "lines=1-2"}).status_code == 200
    # If-Range: the range only while the tag still matches.
    same = api.get(url, headers={"Range": "bytes=0-9", "If-Range": etag})
    assert same.status_code == 206 and same.content == data[:10]
    changed = api.get(url, headers={"Range": "bytes=0-9", "If-Range": '"other"'})
    assert changed.status_code == 200 and changed.content == data

    cached = api.get(url, headers={"If-None-Match": etag})
    assert cached.status_code == 304 and cached.content == b""
    assert cached.headers["etag"] == etag
    assert api.get(url, headers={"If-None-Match": '"nope"'}).status_code == 200

    head = api.head(url)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(data))
    assert head.headers["etag"] == etag


def _deb(tmp: Path, package: str, version: str) -> bytes:
    root = tmp / package
    (root / "DEBIAN").mkdir(parents=True)
    (root / "usr/share" / package).mkdir(parents=True)
    (root / "usr/share" / package / "data.txt").write_text("hello\n")
    (root / "DEBIAN" / "control").write_text(
        f"Package: {package}\nVersion: {version}\nArchitecture: all\n"
        "Maintainer: Roost <roost@example.com>\nDescription: a test package\n more text\n"
    )
    out = tmp / f"{package}.deb"
    subprocess.run(
        ["dpkg-deb", "-Zxz", "--root-owner-group", "--build", str(root), str(out)],
        check=True,
        capture_output=True,
    )
    return out.read_bytes()


def test_a_debian_package_has_its_control_fields(world: World, tmp_path: Path) -> None:
    deb = _deb(tmp_path, "roost-demo", "2.0.1-1")
    resp = upload(world.org.operator, deb, type="deb", filename="roost-demo_2.0.1-1_all.deb")
    assert resp.status_code == 201, resp.text
    body = resp.json()
    control = body["metadata"]["control"]
    assert control["Package"] == "roost-demo" and control["Architecture"] == "all"
    assert control["Description"] == "a test package\nmore text"
    assert (body["name"], body["version"]) == ("roost-demo", "2.0.1-1")
    assert body["content_type"] == "application/vnd.debian.binary-package"


def test_a_file_that_is_not_a_debian_package_is_refused_as_one(world: World) -> None:
    before = blob_files(world.server)
    assert_problem(upload(world.org.operator, b"not an archive", type="deb"), 422, "ar archive")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz"):
        pass
    assert_problem(upload(world.org.operator, buf.getvalue(), type="deb"), 422)
    assert blob_files(world.server) == before


def test_a_container_reference_has_no_bytes(world: World) -> None:
    artifact_id = unique("img")
    reference = "registry.example.com/shop/display@sha256:" + "a" * 64
    resp = upload(
        world.org.operator, b"", id=artifact_id, type="container", version="5", reference=reference
    )
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["reference"] == reference and body["size"] == 0
    assert_problem(world.org.viewer.get(f"{V1}/artifacts/{artifact_id}/content"), 404, "container")
    assert_problem(upload(world.org.operator, b"", type="container", version="5"), 422)
    assert_problem(
        upload(world.org.operator, b"bytes", type="container", version="5", reference=reference),
        422,
        "no bytes",
    )
    assert_problem(upload(world.org.operator, b"x", type="file", version="1", reference="a"), 422)


@pytest.mark.parametrize(
    ("params", "phrase"),
    [
        ({"type": "firmware"}, "version"),
        ({"type": "file", "version": "1", "id": "-bad"}, None),
        ({"type": "file", "version": "1", "filename": "../x"}, "filename"),
        ({"type": "file", "version": "1", "model_id": "no-such-model"}, "model"),
        ({"type": "file", "version": "1", "signature": "***"}, "base64"),
        ({"type": "nope", "version": "1"}, None),
    ],
)
def test_bad_metadata_is_refused(world: World, params: dict[str, str], phrase: str | None) -> None:
    assert_problem(upload(world.org.operator, b"data", **params), 422, phrase)


def test_ids_are_unique_roles_and_tenants_are_kept(world: World) -> None:
    artifact_id = unique("dup")
    assert (
        upload(world.org.operator, b"a", id=artifact_id, type="file", version="1").status_code
        == 201
    )
    assert_problem(
        upload(world.org.operator, b"b", id=artifact_id, type="file", version="2"), 409, "exists"
    )
    assert_problem(upload(world.org.viewer, b"c", type="file", version="1"), 403)
    # Another tenant does not see it, and may use the same id for its own.
    assert_problem(world.other.admin.get(f"{V1}/artifacts/{artifact_id}"), 404)
    assert_problem(world.other.admin.get(f"{V1}/artifacts/{artifact_id}/content"), 404)
    assert_problem(world.other.admin.delete(f"{V1}/artifacts/{artifact_id}"), 404)
    assert (
        upload(world.other.admin, b"z", id=artifact_id, type="file", version="1").status_code == 201
    )


def test_release_notes_change_and_models_filter(world: World) -> None:
    admin = world.org.admin
    model = unique("model")
    resp = admin.post(
        f"{V1}/device-models", json={"id": model, "reference": model, "commercial_name": model}
    )
    assert resp.status_code == 201, resp.text
    artifact_id = unique("m")
    made = upload(
        world.org.operator, b"m", id=artifact_id, type="application", version="1", model_id=model
    )
    assert made.status_code == 201, made.text
    assert made.json()["model_ids"] == [model]
    found = world.org.viewer.get(f"{V1}/artifacts", params={"model_id": model}).json()
    assert [item["id"] for item in found["items"]] == [artifact_id] or artifact_id in [
        item["id"] for item in found["items"]
    ]
    other_model = world.org.viewer.get(f"{V1}/artifacts", params={"model_id": "x-none"}).json()
    assert artifact_id not in [item["id"] for item in other_model["items"]]

    patched = world.org.operator.patch(
        f"{V1}/artifacts/{artifact_id}", json={"release_notes": "fixes the fan"}
    )
    assert patched.status_code == 200 and patched.json()["release_notes"] == "fixes the fan"
    assert patched.json()["sha256"] == made.json()["sha256"]
    assert_problem(
        world.org.operator.patch(f"{V1}/artifacts/{artifact_id}", json={"version": "2"}), 422
    )


def test_delete_removes_the_row_and_the_bytes(world: World) -> None:
    before = blob_files(world.server)
    artifact_id = unique("del")
    assert (
        upload(
            world.org.operator, b"bytes" * 100, id=artifact_id, type="file", version="1"
        ).status_code
        == 201
    )
    assert len(blob_files(world.server)) == len(before) + 1
    assert_problem(world.org.viewer.delete(f"{V1}/artifacts/{artifact_id}"), 403)
    assert world.org.operator.delete(f"{V1}/artifacts/{artifact_id}").status_code == 204
    assert_problem(world.org.viewer.get(f"{V1}/artifacts/{artifact_id}"), 404)
    assert blob_files(world.server) == before
    audit = world.org.admin.get(f"{V1}/audit", params={"entity_type": "artifact"}).json()
    actions = {(e["action"], e["entity_id"]) for e in audit["items"]}
    assert {("create", artifact_id), ("delete", artifact_id)} <= actions
    # An artifact id always means the same bytes: after the delete it comes back only with them.
    again = upload(world.org.operator, b"other", id=artifact_id, type="file", version="1")
    assert_problem(again, 409, "always means the same bytes")
    assert blob_files(world.server) == before
    same = upload(world.org.operator, b"bytes" * 100, id=artifact_id, type="file", version="1")
    assert same.status_code == 201, same.text


def test_delete_is_refused_while_a_deployment_uses_the_artifact(world: World) -> None:
    artifact_id = unique("used")
    made = upload(world.org.operator, b"used", id=artifact_id, type="firmware", version="1")
    assert made.status_code == 201, made.text
    deployment = world.org.operator.post(
        f"{V1}/deployments",
        json={"artifact_ids": [artifact_id], "targets": {"devices": [world.org.device.id]}},
    )
    assert deployment.status_code == 201, deployment.text
    assert_problem(world.org.operator.delete(f"{V1}/artifacts/{artifact_id}"), 409, "in use")
    assert world.org.viewer.get(f"{V1}/artifacts/{artifact_id}/content").content == b"used"


def test_bytes_missing_from_the_store_answer_503_before_any_header(world: World) -> None:
    before = set(blob_files(world.server))
    artifact_id = unique("lost")
    assert (
        upload(world.org.operator, b"lost", id=artifact_id, type="file", version="1").status_code
        == 201
    )
    (added,) = set(blob_files(world.server)) - before
    (world.server.data_dir / "blobs" / added).unlink()
    assert_problem(
        world.org.viewer.get(f"{V1}/artifacts/{artifact_id}/content"), 503, "cannot be read"
    )
    # A HEAD reads no bytes: still answered from the row.
    assert world.org.viewer.head(f"{V1}/artifacts/{artifact_id}/content").status_code == 200
