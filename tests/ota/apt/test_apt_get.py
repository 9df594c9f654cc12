"""The real apt-get against a real Roost: update (signature verified) and download as a device;
a site's channel, another tenant's repository and a caller without credentials are refused."""

from __future__ import annotations

import base64
import hashlib
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.http.test_metrics import scrape, value
from tests.ota.apt.conftest import AptClient, Device, Fleet, upload_deb
from tests.ota.apt.debs import build_deb
from tests.support import RoostServer, assert_problem

STABLE = "stable"
SITE = "site-a"


@dataclass
class Repo:
    """The repository the tests of this module share."""

    server: RoostServer
    fleet: Fleet
    tmp: Path
    key: Path
    debs: dict[str, Path]
    artifacts: dict[str, dict[str, Any]]

    def client(
        self, name: str, device: Device | None, channels: list[str], key: Path | None = None
    ) -> AptClient:
        """An apt-get with a scratch root of its own."""
        return AptClient(
            self.tmp / name,
            self.server,
            self.fleet.tenant.id,
            key or self.key,
            device,
            channels,
        )

    def url(self, path: str, tenant: str | None = None) -> str:
        """A URL of the tenant's repository."""
        return f"{self.server.url}/api/v1/apt/{tenant or self.fleet.tenant.id}/{path}"


def basic(device: Device, login: str | None = None) -> dict[str, str]:
    """apt's Authorization header for a device."""
    raw = f"{login or device.id}:{device.token}".encode()
    return {"Authorization": f"Basic {base64.b64encode(raw).decode()}"}


def sha256(path: Path) -> str:
    """The SHA-256 of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def repo(apt_server: RoostServer, fleet: Fleet, tmp_path_factory: pytest.TempPathFactory) -> Repo:
    """Three packages uploaded; a channel for all devices and one for site A, published."""
    tmp = tmp_path_factory.mktemp("apt-get")
    key = tmp / "roost.asc"
    resp = httpx.get(f"{apt_server.url}/api/v1/apt/key.asc")
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("application/pgp-keys")
    assert resp.text.startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----")
    key.write_text(resp.text)
    debs = {
        "roost-menu": build_deb(tmp, "roost-menu", "1.0-1", payload=b"menu " * 5000),
        "roost-tool": build_deb(tmp, "roost-tool", "2.1", architecture="amd64"),
        "roost-store": build_deb(tmp, "roost-store", "0.3", depends="roost-menu (>= 1.0)"),
        "roost-later": build_deb(tmp, "roost-later", "1.0"),
    }
    operator = fleet.tenant.operator
    artifacts = {name: upload_deb(operator, path) for name, path in debs.items()}
    for name, audience in ((STABLE, "all"), (SITE, f"site:{fleet.site_a}")):
        resp = operator.post("/api/v1/apt/channels", json={"name": name, "audience": audience})
        assert resp.status_code == 201, resp.text
    for channel, package in (
        (STABLE, "roost-menu"),
        (STABLE, "roost-tool"),
        (SITE, "roost-store"),
    ):
        resp = operator.post(
            f"/api/v1/apt/channels/{channel}/packages",
            json={"artifact_id": artifacts[package]["id"]},
        )
        assert resp.status_code == 201, resp.text
    return Repo(apt_server, fleet, tmp, key, debs, artifacts)


def test_a_device_updates_and_downloads_with_the_signature_verified(repo: Repo) -> None:
    apt = repo.client("site-a-device", repo.fleet.device_a, [STABLE, SITE])
    result = apt.update()
    assert result.returncode == 0, result.output
    assert "W:" not in result.output and "E:" not in result.output, result.output
    lists = sorted(p.name for p in (apt.root / "lists").iterdir() if p.is_file())
    assert any(name.endswith(f"_dists_{STABLE}_InRelease") for name in lists), lists
    assert any(name.endswith(f"_dists_{SITE}_InRelease") for name in lists), lists
    for package in ("roost-menu", "roost-tool", "roost-store"):
        result = apt.download(package)
        assert result.returncode == 0, result.output
        (got,) = apt.downloaded(package)
        assert sha256(got) == repo.artifacts[package]["sha256"] == sha256(repo.debs[package])
    # apt resolves the dependency through the index (the store package needs the menu).
    result = apt.run("install", "--download-only", "-y", "--no-install-recommends", "roost-store")
    assert result.returncode == 0, result.output
    cached = sorted(p.name for p in (apt.root / "cache" / "archives").glob("*.deb"))
    assert cached == ["roost-menu_1.0-1_all.deb", "roost-store_0.3_all.deb"], cached


def test_a_key_other_than_roosts_fails_the_update(repo: Repo, tmp_path: Path) -> None:
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    gpg = ["gpg", "--homedir", str(home), "--batch", "--pinentry-mode", "loopback"]
    subprocess.run(
        [*gpg, "--passphrase", "", "--quick-generate-key", "Other <o@x.invalid>", "ed25519"],
        check=True,
        capture_output=True,
    )
    other_key = tmp_path / "other.asc"
    other_key.write_bytes(
        subprocess.run([*gpg, "--armor", "--export"], check=True, capture_output=True).stdout
    )
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], check=False)
    apt = repo.client("wrong-key", repo.fleet.device_a, [STABLE], key=other_key)
    result = apt.update()
    assert result.returncode != 0, result.output
    assert "NO_PUBKEY" in result.output and "is not signed" in result.output, result.output
    assert apt.download("roost-menu").returncode != 0
    assert apt.downloaded("roost-menu") == []


def test_a_site_channel_is_refused_to_a_device_of_another_site(repo: Repo) -> None:
    device_b = repo.fleet.device_b
    apt = repo.client("site-b-device", device_b, [STABLE, SITE])
    result = apt.update()
    assert result.returncode != 0, result.output
    assert f"{SITE} Release" in result.output and "404" in result.output, result.output
    # The channel for all works for it; the site's package is nowhere to be found.
    apt = repo.client("site-b-stable", device_b, [STABLE])
    result = apt.update()
    assert result.returncode == 0, result.output
    assert apt.download("roost-menu").returncode == 0
    result = apt.download("roost-store")
    assert result.returncode != 0 and apt.downloaded("roost-store") == [], result.output
    # Nor can it fetch the site's index or file by URL.
    store = repo.artifacts["roost-store"]
    for path in (f"dists/{SITE}/InRelease", f"pool/{store['id']}/{store['filename']}"):
        resp = httpx.get(repo.url(path), headers=basic(device_b))
        assert_problem(resp, 404)
    resp = httpx.get(
        repo.url(f"pool/{store['id']}/{store['filename']}"), headers=basic(repo.fleet.device_a)
    )
    assert resp.status_code == 200
    assert hashlib.sha256(resp.content).hexdigest() == store["sha256"]


def test_another_tenants_device_and_nobody_are_refused(repo: Repo) -> None:
    outsider = repo.fleet.outsider
    result = repo.client("outsider", outsider, [STABLE]).update()
    assert result.returncode != 0 and "404" in result.output, result.output
    result = repo.client("nobody", None, [STABLE]).update()
    assert result.returncode != 0 and "401" in result.output, result.output

    menu = repo.artifacts["roost-menu"]
    for path in (f"dists/{STABLE}/InRelease", f"pool/{menu['id']}/{menu['filename']}"):
        assert_problem(httpx.get(repo.url(path), headers=basic(outsider)), 404)
        resp = httpx.get(repo.url(path))
        assert_problem(resp, 401)
        assert resp.headers["www-authenticate"].startswith("Basic")
        # A token with another device's login, a garbled credential, a user's login token.
        device_a, device_b = repo.fleet.device_a, repo.fleet.device_b
        assert_problem(httpx.get(repo.url(path), headers=basic(device_a, device_b.id)), 401)
        assert_problem(httpx.get(repo.url(path), headers={"Authorization": "Basic !!"}), 401)
        # A user's login token is a well-formed token but no device's: 403, as on every device door.
        user = repo.fleet.tenant.admin.headers["authorization"]
        assert_problem(httpx.get(repo.url(path), headers={"Authorization": user}), 403)
        password = user.split()[1]
        user_basic = f"Basic {base64.b64encode(f'{device_a.id}:{password}'.encode()).decode()}"
        assert_problem(httpx.get(repo.url(path), headers={"Authorization": user_basic}), 403)
    # The outsider's own tenant has no such channel either.
    resp = httpx.get(
        repo.url(f"dists/{STABLE}/InRelease", repo.fleet.other.id), headers=basic(outsider)
    )
    assert_problem(resp, 404)


def test_a_bearer_token_reads_the_signed_indices(repo: Repo) -> None:
    headers = {"Authorization": f"Bearer {repo.fleet.device_a.token}"}
    release = httpx.get(repo.url(f"dists/{STABLE}/Release"), headers=headers)
    assert release.status_code == 200
    inrelease = httpx.get(repo.url(f"dists/{STABLE}/InRelease"), headers=headers)
    assert inrelease.text.startswith("-----BEGIN PGP SIGNED MESSAGE-----")
    assert release.text.strip() in inrelease.text
    signature = httpx.get(repo.url(f"dists/{STABLE}/Release.gpg"), headers=headers)
    assert signature.text.startswith("-----BEGIN PGP SIGNATURE-----")
    packages = httpx.get(repo.url(f"dists/{STABLE}/main/binary-amd64/Packages"), headers=headers)
    assert packages.status_code == 200
    digest = hashlib.sha256(packages.content).hexdigest()
    assert f" {digest} {len(packages.content):>16} main/binary-amd64/Packages\n" in release.text
    tool = repo.artifacts["roost-tool"]
    assert f"Filename: pool/{tool['id']}/{tool['filename']}\n" in packages.text
    assert f"SHA256: {tool['sha256']}\n" in packages.text
    assert "Package: roost-store" not in packages.text  # site A's channel, not this one
    arm = httpx.get(repo.url(f"dists/{STABLE}/main/binary-arm64/Packages"), headers=headers)
    assert "Package: roost-menu" in arm.text and "Package: roost-tool" not in arm.text
    for missing in ("main/binary-amd64/Packages.xz", "main/i18n/Translation-en", "Contents"):
        resp = httpx.get(repo.url(f"dists/{STABLE}/{missing}"), headers=headers)
        assert resp.status_code == 404


def test_a_package_published_later_appears_after_the_next_update(repo: Repo) -> None:
    apt = repo.client("later", repo.fleet.device_a, [STABLE])
    assert apt.update().returncode == 0
    result = apt.download("roost-later")
    assert result.returncode != 0, result.output
    later = repo.artifacts["roost-later"]
    resp = repo.fleet.tenant.operator.post(
        f"/api/v1/apt/channels/{STABLE}/packages", json={"artifact_id": later["id"]}
    )
    assert resp.status_code == 201, resp.text
    result = apt.update()
    assert result.returncode == 0, result.output
    result = apt.download("roost-later")
    assert result.returncode == 0, result.output
    (got,) = apt.downloaded("roost-later")
    assert sha256(got) == later["sha256"]
    # Taken out again: gone at the next update.
    resp = repo.fleet.tenant.operator.delete(
        f"/api/v1/apt/channels/{STABLE}/packages/{later['id']}"
    )
    assert resp.status_code == 204, resp.text
    got.unlink()
    assert apt.update().returncode == 0
    assert apt.download("roost-later").returncode != 0


def test_apt_requests_are_counted_by_kind_and_result(repo: Repo) -> None:
    admin = repo.fleet.tenant.admin
    menu = repo.artifacts["roost-menu"]
    index, package = f"dists/{STABLE}/InRelease", f"pool/{menu['id']}/{menu['filename']}"

    def counts() -> dict[tuple[str, str], float]:
        samples = scrape(admin)
        return {
            (kind, result): value(samples, "roost_apt_requests_total", kind=kind, result=result)
            or 0.0
            for kind in ("index", "package")
            for result in ("served", "refused")
        }

    before = counts()
    device = repo.fleet.device_a
    assert httpx.get(repo.url(index), headers=basic(device)).status_code == 200
    assert httpx.get(repo.url(package), headers=basic(device)).status_code == 200
    assert httpx.get(repo.url(package), headers=basic(device)).status_code == 200
    assert httpx.get(repo.url(index)).status_code == 401
    assert httpx.get(repo.url(package), headers=basic(repo.fleet.outsider)).status_code == 404
    after = counts()
    assert {k: after[k] - before[k] for k in after} == {
        ("index", "served"): 1,
        ("package", "served"): 2,
        ("index", "refused"): 1,
        ("package", "refused"): 1,
    }
