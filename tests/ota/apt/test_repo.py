"""The repository files made from artifact rows (pure functions), and the sealed key."""

from __future__ import annotations

import gzip
import hashlib
from datetime import UTC, datetime

import pytest

from roost.errors import ConfigError
from roost.ota.apt import repo
from roost.ota.apt.gpg import seal, unseal

WHEN = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def row(artifact_id: str, **control: str) -> dict[str, object]:
    """An artifact row as the artifacts room stores a deb (control fields in metadata)."""
    data = f"{artifact_id}-bytes".encode()
    return {
        "id": artifact_id,
        "filename": f"{artifact_id}.deb",
        "size": len(data),
        "md5": hashlib.md5(data).hexdigest(),
        "sha1": hashlib.sha1(data).hexdigest(),
        "sha256": hashlib.sha256(data).hexdigest(),
        "metadata": control,
    }


def test_a_stanza_carries_control_fields_place_and_digests() -> None:
    package = repo.deb_package(
        row(
            "menu-1",
            Package="store-menu",
            Version="1.2-1",
            Architecture="all",
            Maintainer="Ops <ops@example.com>",
            Depends="python3",
            Description="Store menu data\nThe week's menu.\n.\nSecond paragraph.",
            Filename="evil/path.deb",  # never copied: Roost says where the file is
        )
    )
    text = repo.stanza(package)
    lines = text.split("\n")
    assert lines[:3] == ["Package: store-menu", "Version: 1.2-1", "Architecture: all"]
    assert "Maintainer: Ops <ops@example.com>" in lines
    assert "Depends: python3" in lines
    assert "Filename: pool/menu-1/menu-1.deb" in lines
    assert "evil" not in text
    assert f"SHA256: {package.sha256}" in lines
    assert f"MD5sum: {package.md5}" in lines
    assert f"Size: {package.size}" in lines
    # Continuation lines start with a space; an empty line is " .".
    assert text.endswith("Description: Store menu data\n The week's menu.\n .\n Second paragraph.")


def test_packages_index_per_architecture_takes_the_all_packages_too() -> None:
    packages = [
        repo.deb_package(row("a", Package="tool", Version="1", Architecture="amd64")),
        repo.deb_package(row("b", Package="tool", Version="1", Architecture="arm64")),
        repo.deb_package(row("c", Package="data", Version="2", Architecture="all")),
    ]
    amd64 = repo.packages_index(packages, "amd64").decode()
    assert "Filename: pool/a/a.deb" in amd64 and "Filename: pool/c/c.deb" in amd64
    assert "pool/b/" not in amd64
    assert amd64.index("Package: data") < amd64.index("Package: tool")  # sorted
    assert amd64.endswith("\n\n")
    assert repo.architectures(packages) == ["amd64", "arm64", "armhf"]
    assert repo.packages_index([], "amd64") == b""


def test_release_lists_every_index_with_its_size_and_digests() -> None:
    packages = [
        repo.deb_package(row("a", Package="tool", Version="1", Architecture="riscv64")),
    ]
    files, release = repo.channel_files("stable", packages, WHEN, origin="Roost")
    assert set(files) == {
        f"main/binary-{arch}/Packages{ext}"
        for arch in ("amd64", "arm64", "armhf", "riscv64")
        for ext in ("", ".gz")
    }
    gz = files["main/binary-riscv64/Packages.gz"]
    assert gzip.decompress(gz) == files["main/binary-riscv64/Packages"]
    # The same input makes the same bytes (gzip's timestamp is fixed).
    assert repo.channel_files("stable", packages, WHEN, origin="Roost")[0] == files
    text = release.decode()
    assert "Suite: stable\nCodename: stable\n" in text
    assert "Date: Mon, 07 Dec 2026 12:00:00 GMT" in text
    assert "Architectures: amd64 arm64 armhf riscv64" in text
    assert "Components: main" in text
    for path, data in files.items():
        for digest in (hashlib.md5, hashlib.sha1, hashlib.sha256):
            assert f" {digest(data).hexdigest()} {len(data):>16} {path}\n" in text
    assert text.index("MD5Sum:") < text.index("SHA1:") < text.index("SHA256:")


@pytest.mark.parametrize(
    ("control", "problem"),
    [
        ({"Version": "1", "Architecture": "all"}, "no Package"),
        ({"Package": "Tool", "Version": "1", "Architecture": "all"}, "not a Debian package name"),
        ({"Package": "tool", "Version": "1 2", "Architecture": "all"}, "not a Debian version"),
        ({"Package": "tool", "Version": "1", "Architecture": "x/y"}, "not a Debian architecture"),
    ],
)
def test_control_fields_that_cannot_make_a_stanza_are_named(
    control: dict[str, str], problem: str
) -> None:
    found = repo.control_problem(control)
    assert found is not None and problem in found
    assert (
        repo.control_problem({"Package": "tool", "Version": "1:2.0~rc1-3", "Architecture": "all"})
        is None
    )


def test_the_sealed_key_opens_only_with_the_same_secret() -> None:
    sealed = seal("-----BEGIN PGP PRIVATE KEY BLOCK-----", "secret-one")
    assert "PRIVATE" not in sealed
    assert unseal(sealed, "secret-one") == "-----BEGIN PGP PRIVATE KEY BLOCK-----"
    with pytest.raises(ConfigError, match="ROOST_SECRET_KEY"):
        unseal(sealed, "secret-two")
