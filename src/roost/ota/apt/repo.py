"""The files of an APT repository, made from artifact rows: pure functions, no IO.

A channel is one suite of a flat-pool repository::

    dists/<channel>/Release, InRelease, Release.gpg
    dists/<channel>/main/binary-<arch>/Packages, Packages.gz
    pool/<artifact id>/<filename>

The ``Packages`` stanzas come from the control fields the artifacts room parsed at upload
(``metadata``) plus the file's place, size and digests; ``Release`` lists every index with its
size and MD5/SHA1/SHA256 (what apt checks each index against, once the signature of ``InRelease``
verifies). Packages of architecture ``all`` go into every architecture's index, as in Debian.
"""

from __future__ import annotations

import gzip
import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime
from typing import Any

#: The single component of every channel (dists/<channel>/main/…).
COMPONENT = "main"
#: Architectures every channel lists even with no package built for them: a device asks for its
#: own architecture's index, and an empty index is a clean "nothing for you" (a missing one is an
#: apt error). These are the architectures of the seed fleets (PCs, Raspberry Pis 64/32-bit).
DEFAULT_ARCHITECTURES = ("amd64", "arm64", "armhf")
#: Fields Roost writes itself (from the artifact row), never copied from the control file.
OWN_FIELDS = frozenset({"Filename", "Size", "MD5sum", "SHA1", "SHA256", "SHA512", "Description"})
#: The control fields a stanza must have.
REQUIRED_FIELDS = ("Package", "Version", "Architecture")
#: A control field's name (Debian Policy 5.1: printable ASCII without ':' or spaces).
_FIELD_NAME = re.compile(r"^[!-9;-~]+$")
#: What a package name, version or architecture may hold (Debian Policy 5.6.1, 5.6.12, 11.1).
_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
_VERSION = re.compile(r"^[A-Za-z0-9.+~:-]+$")
_ARCHITECTURE = re.compile(r"^[a-z0-9-]+$")
# gzip's header holds a timestamp: a fixed one keeps an index's bytes (and its digests) stable.
_GZIP_MTIME = 0


@dataclass(frozen=True, slots=True)
class DebPackage:
    """A Debian package in a channel: its control fields and the file's place and digests."""

    artifact_id: str
    filename: str
    size: int
    md5: str
    sha1: str
    sha256: str
    control: Mapping[str, str]

    @property
    def package(self) -> str:
        """The package's name."""
        return self.control["Package"]

    @property
    def version(self) -> str:
        """The package's version."""
        return self.control["Version"]

    @property
    def architecture(self) -> str:
        """The package's architecture (``all`` for an architecture-independent one)."""
        return self.control["Architecture"]

    @property
    def pool_path(self) -> str:
        """Where the file is, relative to the repository's root."""
        return f"pool/{self.artifact_id}/{self.filename}"


def control_problem(control: Mapping[str, Any]) -> str | None:
    """Why these control fields cannot make a ``Packages`` stanza, or None when they can."""
    for field in REQUIRED_FIELDS:
        if not isinstance(control.get(field), str) or not control[field].strip():
            return f"the control file has no {field} field"
    if not _PACKAGE.match(control["Package"]):
        return f"package name {control['Package']!r} is not a Debian package name"
    if not _VERSION.match(control["Version"]):
        return f"version {control['Version']!r} is not a Debian version"
    if not _ARCHITECTURE.match(control["Architecture"]):
        return f"architecture {control['Architecture']!r} is not a Debian architecture"
    return None


def deb_package(row: Mapping[str, Any]) -> DebPackage:
    """A channel's package from an artifact row (its ``metadata`` holds the control fields)."""
    metadata = row.get("metadata") or {}
    control = metadata.get("control", metadata) if isinstance(metadata, Mapping) else {}
    fields = {str(k): str(v) for k, v in control.items() if isinstance(v, str | int | float)}
    return DebPackage(
        artifact_id=str(row["id"]),
        filename=str(row["filename"]),
        size=int(row["size"]),
        md5=str(row["md5"]),
        sha1=str(row["sha1"]),
        sha256=str(row["sha256"]),
        control=fields,
    )


def _field(name: str, value: str) -> str:
    """``Name: value`` with continuation lines folded as deb822 wants (" ." for an empty one)."""
    first, *rest = value.strip("\n").split("\n")
    lines = [f"{name}: {first.strip()}"]
    for line in rest:
        if not line.strip():
            lines.append(" .")
        else:
            lines.append(line if line.startswith((" ", "\t")) else f" {line}")
    return "\n".join(lines)


def stanza(package: DebPackage) -> str:
    """The ``Packages`` stanza of one package (no trailing blank line)."""
    lines = [_field(name, package.control[name]) for name in REQUIRED_FIELDS]
    for name, value in package.control.items():
        if name in REQUIRED_FIELDS or name in OWN_FIELDS or not _FIELD_NAME.match(name):
            continue
        lines.append(_field(name, value))
    lines += [
        f"Filename: {package.pool_path}",
        f"Size: {package.size}",
        f"MD5sum: {package.md5}",
        f"SHA1: {package.sha1}",
        f"SHA256: {package.sha256}",
    ]
    description = package.control.get("Description")
    if description:
        lines.append(_field("Description", description))
    return "\n".join(lines)


def architectures(packages: Iterable[DebPackage]) -> list[str]:
    """The architectures a channel lists: the defaults and those of its packages, sorted."""
    found = {p.architecture for p in packages if p.architecture != "all"}
    return sorted(found | set(DEFAULT_ARCHITECTURES))


def packages_index(packages: Iterable[DebPackage], architecture: str) -> bytes:
    """The ``Packages`` file of one architecture: its packages and the ``all`` ones, sorted."""
    chosen = sorted(
        (p for p in packages if p.architecture in (architecture, "all")),
        key=lambda p: (p.package, p.version, p.architecture, p.artifact_id),
    )
    return "".join(stanza(p) + "\n\n" for p in chosen).encode("utf-8")


def gzipped(data: bytes) -> bytes:
    """``data`` gzip-compressed with a fixed timestamp (same input, same bytes)."""
    return gzip.compress(data, compresslevel=9, mtime=_GZIP_MTIME)


def release(
    channel: str,
    files: Mapping[str, bytes],
    archs: Sequence[str],
    date: datetime,
    *,
    origin: str,
    description: str = "",
) -> bytes:
    """The ``Release`` file of a channel; ``files`` maps paths under dists/<channel>/ to bytes."""
    lines = [
        f"Origin: {origin}",
        f"Label: {origin}",
        f"Suite: {channel}",
        f"Codename: {channel}",
        f"Date: {format_datetime(date, usegmt=True)}",
        f"Architectures: {' '.join(archs)}",
        f"Components: {COMPONENT}",
    ]
    if description.strip():
        lines.append(f"Description: {' '.join(description.split())}")
    for title, algorithm in (("MD5Sum", "md5"), ("SHA1", "sha1"), ("SHA256", "sha256")):
        lines.append(f"{title}:")
        for path in sorted(files):
            digest = hashlib.new(algorithm, files[path]).hexdigest()
            lines.append(f" {digest} {len(files[path]):>16} {path}")
    return ("\n".join(lines) + "\n").encode("utf-8")


def channel_files(
    channel: str,
    packages: Sequence[DebPackage],
    date: datetime,
    *,
    origin: str,
    description: str = "",
) -> tuple[dict[str, bytes], bytes]:
    """Every index of a channel (path under dists/<channel>/ → bytes) and its ``Release``."""
    archs = architectures(packages)
    files: dict[str, bytes] = {}
    for arch in archs:
        index = packages_index(packages, arch)
        base = f"{COMPONENT}/binary-{arch}/Packages"
        files[base] = index
        files[f"{base}.gz"] = gzipped(index)
    return files, release(channel, files, archs, date, origin=origin, description=description)
