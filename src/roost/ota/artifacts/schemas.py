"""Request and response bodies of the artifact routes."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from roost.http import schemas as s
from roost.ota.artifacts.rules import MAX_NOTES_CHARS


class ArtifactOut(s.Out):
    """An artifact: immutable bytes (or a container reference) with hashes and signature."""

    id: str
    module_id: int = Field(description="A number per artifact (hawkBit DDI's software module)")
    name: str
    version: str
    type: Literal["firmware", "application", "deb", "file", "container"]
    filename: str
    size: int
    sha256: str
    sha1: str
    md5: str
    content_type: str
    model_ids: list[str] = Field(description="Device models it suits; empty: any model")
    release_notes: str
    metadata: dict[str, Any] = Field(description="A Debian package's control fields (control)")
    reference: str | None = Field(description="A container artifact's image reference")
    signature: str | None = Field(
        description="Base64 Ed25519 signature of the manifest (Roost's), or the operator's own"
    )
    signature_by: Literal["roost", "operator"]
    signing_key_id: str | None = Field(description="Roost's key that signed (signature_by roost)")
    created_by: str
    created_at: datetime


class ArtifactPatch(s.Body):
    """The one change an artifact takes: its release notes."""

    release_notes: str = Field(max_length=MAX_NOTES_CHARS)


class DownloadOut(s.Out):
    """Downloads of an artifact by one device."""

    device_id: str
    count: int = Field(description="Downloads that reached the end of the file")
    bytes: int = Field(description="Bytes sent, partial downloads included")
    last_at: datetime


class SigningKeyOut(s.Out):
    """The public key devices verify artifact manifests with."""

    algorithm: Literal["ed25519"]
    key_id: str = Field(description="First 16 hex digits of SHA-256 of the raw public key")
    public_key: str = Field(description="PEM (SubjectPublicKeyInfo)")
    public_key_raw: str = Field(description="The 32 raw bytes, base64")


class DeviceArtifactOut(s.Out):
    """What a device is told of an artifact: the signed manifest and where to download."""

    id: str
    sha256: str
    size: int
    type: str
    version: str
    name: str
    filename: str
    signature: str | None
    signature_by: Literal["roost", "operator"]
    signing_key_id: str | None
    url: str = Field(description="Download path, with the device's own credentials")
    signed_url: str | None = Field(
        default=None, description="Download path without headers, valid for a short while"
    )
    reference: str | None = Field(default=None, description="A container's image reference")
