"""Fixtures of the APT room: one Roost for the package, two tenants, sites and devices, real
``.deb`` files made with ``dpkg-deb`` and the real ``apt-get`` pointed at scratch directories."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.ota.apt.debs import DPKG_DEB
from tests.support import (
    ADMIN_PASSWORD,
    Api,
    Device,
    RoostServer,
    make_device,
    unique,
)

APT_GET = shutil.which("apt-get")


def run_server(server: RoostServer) -> Iterator[RoostServer]:
    """Start, yield, stop; then fail on any unhandled error or traceback it logged."""
    server.start()
    try:
        yield server
    finally:
        server.stop()
    assert not server.unhandled_errors(), server.unhandled_errors()
    log = server.log_path.read_text(errors="replace")
    assert "Traceback" not in log, log


@pytest.fixture(scope="package")
def apt_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoostServer]:
    """One Roost (SQLite) for every test of the APT room."""
    if APT_GET is None or DPKG_DEB is None:
        pytest.skip("apt-get and dpkg-deb are needed (a Debian system)")
    yield from run_server(RoostServer(tmp_path_factory.mktemp("roost-apt")))


@dataclass
class Tenant:
    """A tenant made for the APT tests: its users' clients."""

    id: str
    admin: Api
    operator: Api
    viewer: Api
    clients: list[Api] = field(default_factory=list)


def make_tenant(server: RoostServer) -> Tenant:
    """A fresh tenant with an admin, an operator and a viewer."""
    tenant_id = unique("apt")
    with Api(server.url) as anon:
        root = Api(server.url, anon.login("admin", ADMIN_PASSWORD))
        names = {role: f"{tenant_id}-{role}" for role in ("admin", "operator", "viewer")}
        resp = root.post(
            "/api/v1/tenants",
            json={
                "id": tenant_id,
                "name": tenant_id,
                "admin": {"username": names["admin"], "password": f"pw-{names['admin']}"},
            },
        )
        assert resp.status_code == 201, resp.text
        root.close()
        admin = Api(server.url, anon.login(names["admin"], f"pw-{names['admin']}"))
        for role in ("operator", "viewer"):
            resp = admin.post(
                "/api/v1/users",
                json={"username": names[role], "password": f"pw-{names[role]}", "role": role},
            )
            assert resp.status_code == 201, resp.text
        operator = Api(server.url, anon.login(names["operator"], f"pw-{names['operator']}"))
        viewer = Api(server.url, anon.login(names["viewer"], f"pw-{names['viewer']}"))
    return Tenant(tenant_id, admin, operator, viewer, [admin, operator, viewer])


@dataclass
class Fleet:
    """Two tenants: the first with two sites, a device in each and one without a site."""

    tenant: Tenant
    other: Tenant
    site_a: str
    site_b: str
    device_a: Device  # at site_a
    device_b: Device  # at site_b
    outsider: Device  # a device of the other tenant


@pytest.fixture(scope="package")
def fleet(apt_server: RoostServer) -> Iterator[Fleet]:
    """The tenants, sites and devices every APT test uses."""
    tenant, other = make_tenant(apt_server), make_tenant(apt_server)
    sites = []
    for _ in range(2):
        site = unique("site")
        resp = tenant.operator.post("/api/v1/sites", json={"id": site, "name": site})
        assert resp.status_code == 201, resp.text
        sites.append(site)
    made = Fleet(
        tenant,
        other,
        sites[0],
        sites[1],
        make_device(tenant.operator, site_id=sites[0]),
        make_device(tenant.operator, site_id=sites[1]),
        make_device(other.operator),
    )
    yield made
    for client in (*tenant.clients, *other.clients):
        client.close()


def upload_deb(api: Api, path: Path, artifact_id: str | None = None) -> dict[str, Any]:
    """Upload a .deb as an artifact of type deb; the artifact as Roost answers it."""
    params = {"type": "deb", "filename": path.name, "id": artifact_id or unique("deb")}
    resp = api.post(
        "/api/v1/artifacts",
        params=params,
        content=path.read_bytes(),
        headers={"Content-Type": "application/octet-stream"},
    )
    assert resp.status_code == 201, resp.text
    body: dict[str, Any] = resp.json()
    assert body["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    return body


@dataclass
class AptResult:
    """What an apt-get run answered."""

    returncode: int
    output: str


class AptClient:
    """The real apt-get with every directory in a scratch root, as one device (or nobody)."""

    def __init__(
        self,
        root: Path,
        server: RoostServer,
        tenant_id: str,
        key: Path,
        device: Device | None,
        channels: list[str],
    ) -> None:
        self.root = root
        self.repository = f"{server.url}/api/v1/apt/{tenant_id}"
        for sub in ("lists/partial", "cache/archives/partial", "parts", "download", "trusted"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        (root / "status").write_text("")
        lines = [f"deb [signed-by={key}] {self.repository} {channel} main" for channel in channels]
        (root / "sources.list").write_text("\n".join(lines) + "\n")
        auth = root / "auth.conf"
        # apt applies an entry without a scheme to https only: name http:// explicitly.
        auth.write_text(
            f"machine {self.repository}\nlogin {device.id}\npassword {device.token}\n"
            if device is not None
            else ""
        )
        auth.chmod(0o600)

    def options(self) -> list[str]:
        """apt-get options that keep it in the scratch root and off the host's configuration."""
        settings = {
            "Dir::Etc::SourceList": self.root / "sources.list",
            "Dir::Etc::SourceParts": self.root / "parts",
            "Dir::Etc::netrc": self.root / "auth.conf",
            "Dir::Etc::netrcparts": self.root / "parts",
            "Dir::Etc::Trusted": self.root / "trusted" / "none.gpg",
            "Dir::Etc::TrustedParts": self.root / "trusted",
            "Dir::State::Lists": self.root / "lists",
            "Dir::State::status": self.root / "status",
            "Dir::Cache": self.root / "cache",
            "Debug::NoLocking": "1",
            # Root runs the download methods itself: the scratch root is not _apt's to read.
            "APT::Sandbox::User": "root",
            "Acquire::Languages": "none",
            "Acquire::Retries": "0",
            "Acquire::http::Proxy": "DIRECT",
        }
        return [arg for name, value in settings.items() for arg in ("-o", f"{name}={value}")]

    def run(self, *args: str) -> AptResult:
        """Run apt-get with ``args``; its exit status and output."""
        assert APT_GET is not None
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        env["LC_ALL"] = "C"
        done = subprocess.run(
            [APT_GET, "-q", *self.options(), *args],
            cwd=self.root / "download",
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        return AptResult(done.returncode, done.stdout + done.stderr)

    def update(self) -> AptResult:
        """``apt-get update``."""
        return self.run("update")

    def download(self, package: str) -> AptResult:
        """``apt-get download <package>`` into the scratch root's download directory."""
        return self.run("download", package)

    def downloaded(self, package: str) -> list[Path]:
        """The .deb files of ``package`` downloaded so far."""
        return sorted((self.root / "download").glob(f"{package}_*.deb"))
