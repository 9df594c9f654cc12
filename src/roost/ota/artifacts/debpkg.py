"""The control fields of a Debian package (``Package``, ``Version``, ``Architecture`` …).

A ``.deb`` is an ``ar`` archive: ``debian-binary``, then ``control.tar[.gz|.xz]``, then the data.
The control archive comes first and is small, so the upload keeps the first
:data:`PREFIX_BYTES` of a package and this module reads the fields from them (the standard
library's ``tarfile`` opens gzip, xz and plain archives; zstd, which Ubuntu's dpkg-deb uses by
default, is refused with a hint: build with ``dpkg-deb -Zxz`` or ``-Zgzip``).
"""

from __future__ import annotations

import io
import tarfile

from roost.errors import InvalidInput

# Control archives hold the control file and maintainer scripts: kilobytes, rarely more than a
# few hundred. 4 MiB of a package's start always holds them, and bounds what an upload keeps.
PREFIX_BYTES = 4 * 1024 * 1024
_AR_MAGIC = b"!<arch>\n"
_HEADER_BYTES = 60
# At most this many fields are kept (a real control file has twenty or so).
MAX_FIELDS = 100


def _control_archive(prefix: bytes) -> tuple[str, bytes]:
    if not prefix.startswith(_AR_MAGIC):
        raise InvalidInput("not a Debian package: the file is not an ar archive")
    position = len(_AR_MAGIC)
    while position + _HEADER_BYTES <= len(prefix):
        header = prefix[position : position + _HEADER_BYTES]
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        try:
            size = int(header[48:58].decode("ascii").strip())
        except ValueError as exc:
            raise InvalidInput("not a Debian package: a damaged ar member header") from exc
        start = position + _HEADER_BYTES
        if name.startswith("control.tar"):
            if start + size > len(prefix):
                raise InvalidInput(
                    f"the package's control archive is larger than {PREFIX_BYTES} bytes"
                )
            return name, prefix[start : start + size]
        if name.startswith("data.tar"):
            break
        position = start + size + (size % 2)
    raise InvalidInput("not a Debian package: no control archive")


def parse_control(text: str) -> dict[str, str]:
    """Fields of a deb822 paragraph; continuation lines join their field with newlines."""
    fields: dict[str, str] = {}
    current: str | None = None
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        if line[0] in " \t":
            if current is None:
                raise InvalidInput("the package's control file starts with a continuation line")
            fields[current] += "\n" + line.strip()
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise InvalidInput(f"the package's control file has a malformed line: {line[:80]!r}")
        current = name.strip()
        fields[current] = value.strip()
        if len(fields) > MAX_FIELDS:
            raise InvalidInput(f"the package's control file has more than {MAX_FIELDS} fields")
    return fields


def control_fields(prefix: bytes) -> dict[str, str]:
    """The control fields of the package whose first bytes are ``prefix``; 422 when it is not a
    Debian package with Package, Version and Architecture."""
    name, archive = _control_archive(prefix)
    if name.endswith(".zst"):
        raise InvalidInput(
            "the package's control archive is zstd-compressed, which Roost cannot read: "
            "build it with dpkg-deb -Zxz or -Zgzip"
        )
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:*") as tar:
            member = next(
                (m for m in tar.getmembers() if m.name in ("control", "./control") and m.isfile()),
                None,
            )
            handle = tar.extractfile(member) if member is not None else None
            data = handle.read() if handle is not None else None
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise InvalidInput(f"the package's control archive cannot be read: {exc}") from exc
    if data is None:
        raise InvalidInput("the package's control archive has no control file")
    fields = parse_control(data.decode("utf-8", "replace"))
    missing = [f for f in ("Package", "Version", "Architecture") if not fields.get(f)]
    if missing:
        raise InvalidInput(f"the package's control file lacks {', '.join(missing)}")
    return fields
