"""Real Debian packages for tests, made with ``dpkg-deb --build`` (the APT room, the matrix)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

DPKG_DEB = shutil.which("dpkg-deb")


def build_deb(
    where: Path,
    package: str,
    version: str,
    *,
    architecture: str = "all",
    depends: str | None = None,
    payload: bytes = b"",
) -> Path:
    """A real Debian package made by ``dpkg-deb --build`` (xz: what Roost reads)."""
    root = where / f"{package}-{version}-{architecture}"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "usr" / "share" / package).mkdir(parents=True)
    (root / "usr" / "share" / package / "data.txt").write_bytes(
        payload or f"{package} {version}\n".encode()
    )
    control = [
        f"Package: {package}",
        f"Version: {version}",
        f"Architecture: {architecture}",
        "Maintainer: Roost tests <tests@roost.invalid>",
        "Section: misc",
        "Priority: optional",
    ]
    if depends:
        control.append(f"Depends: {depends}")
    control += [
        f"Description: {package} for the APT tests",
        " Built by dpkg-deb in the test.",
        " .",
        " A second paragraph.",
    ]
    (root / "DEBIAN" / "control").write_text("\n".join(control) + "\n")
    out = where / f"{package}_{version}_{architecture}.deb"
    assert DPKG_DEB is not None
    subprocess.run(
        [DPKG_DEB, "-Zxz", "--root-owner-group", "--build", str(root), str(out)],
        check=True,
        capture_output=True,
    )
    return out
