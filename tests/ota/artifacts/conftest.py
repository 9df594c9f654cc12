"""Fixtures of the artifact tests: one Roost per module (SQLite), two tenants, devices."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.support import ADMIN_PASSWORD, Api, Device, RoostServer, make_device, unique

# Small enough that the size-limit test sends little, large enough for the 24 MiB upload.
MAX_BYTES = 40 * 1024 * 1024
ENV = {"ROOST_ARTIFACT_MAX_BYTES": str(MAX_BYTES)}
V1 = "/api/v1"


@dataclass
class Org:
    """A tenant with an operator, a viewer and a device (with a token)."""

    id: str
    admin: Api
    operator: Api
    viewer: Api
    device: Device
    device_api: Api
    clients: list[Api] = field(default_factory=list)


def make_org(server: RoostServer, superuser: Api) -> Org:
    """A fresh tenant with an operator, a viewer and one device."""
    tenant_id = unique("t")
    password = f"pw-{tenant_id}"
    resp = superuser.post(
        f"{V1}/tenants",
        json={
            "id": tenant_id,
            "name": tenant_id,
            "admin": {"username": f"{tenant_id}-admin", "password": password},
        },
    )
    assert resp.status_code == 201, resp.text
    anon = Api(server.url)
    admin = anon.as_token(anon.login(f"{tenant_id}-admin", password))
    clients = {}
    for role in ("operator", "viewer"):
        resp = admin.post(
            f"{V1}/users",
            json={"username": f"{tenant_id}-{role}", "password": password, "role": role},
        )
        assert resp.status_code == 201, resp.text
        clients[role] = anon.as_token(anon.login(f"{tenant_id}-{role}", password))
    device = make_device(admin)
    device_api = anon.as_token(device.token)
    anon.close()
    return Org(
        tenant_id,
        admin,
        clients["operator"],
        clients["viewer"],
        device,
        device_api,
        [admin, *clients.values(), device_api],
    )


@dataclass
class World:
    """The server, its superuser, and two tenants."""

    server: RoostServer
    superuser: Api
    org: Org
    other: Org


def start_world(server: RoostServer) -> Iterator[World]:
    """Start ``server``, make two tenants, yield; then stop and fail on any unhandled error."""
    server.start()
    try:
        anon = Api(server.url)
        superuser = anon.as_token(anon.login("admin", ADMIN_PASSWORD))
        anon.close()
        world = World(server, superuser, make_org(server, superuser), make_org(server, superuser))
        yield world
        for client in (superuser, *world.org.clients, *world.other.clients):
            client.close()
    finally:
        server.stop()
    log = server.log_path.read_text(errors="replace")
    assert not server.unhandled_errors(), server.unhandled_errors()
    assert "Traceback" not in log, log


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """A Roost (SQLite, local blobs) with a 40 MiB artifact limit, shared by a module."""
    yield from start_world(
        RoostServer(tmp_path_factory.mktemp("roost-artifacts"), env_overrides=ENV)
    )


def random_chunks(total: int, seed: bytes, chunk: int = 256 * 1024) -> Iterator[bytes]:
    """``total`` pseudo-random bytes in pieces (made on the fly: never held whole)."""
    block = hashlib.sha256(seed).digest() * (chunk // 32)
    sent = 0
    counter = 0
    while sent < total:
        counter += 1
        piece = counter.to_bytes(8, "big") + block[8:]
        piece = piece[: total - sent]
        sent += len(piece)
        yield piece


def digest_of(total: int, seed: bytes) -> str:
    """The SHA-256 of :func:`random_chunks` of the same arguments."""
    h = hashlib.sha256()
    for piece in random_chunks(total, seed):
        h.update(piece)
    return h.hexdigest()


def upload(api: Api, data: Any, **params: Any) -> Any:
    """POST /api/v1/artifacts with ``data`` as the raw body and the metadata as the query."""
    return api.post(
        f"{V1}/artifacts",
        params=params,
        content=data,
        headers={"Content-Type": "application/octet-stream"},
    )


def blob_files(server: RoostServer) -> list[str]:
    """Every file under the local blob store (temporary files included)."""
    root = server.data_dir / "blobs"
    return sorted(
        os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs
    )
