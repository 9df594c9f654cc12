"""The pure rules of artifacts: an upload's metadata checked, and an artifact as the API shows it.

No IO here: the service adds what needs the database (the models exist, the id is free).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import Any

from roost.core.ids import SLUG_RULE, generate_id, is_slug
from roost.errors import InvalidInput
from roost.ota.artifacts.tables import ARTIFACT_TYPES

CONTENT_TYPES = {"deb": "application/vnd.debian.binary-package"}
DEFAULT_CONTENT_TYPE = "application/octet-stream"
SHA256 = re.compile(r"[0-9a-f]{64}")
_FILENAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+~-]{0,254}")
_REFERENCE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@+-]{0,499}")
FILENAME_RULE = "1-255 characters: letters, digits and . _ + ~ - (not starting with a symbol)"
MAX_NAME_CHARS = 200
MAX_VERSION_CHARS = 128
MAX_NOTES_CHARS = 20_000
NO_BYTES = "a container artifact has no bytes: send an empty body"
DOWNLOAD_PATH = "/api/v1/ota/artifacts/{id}/download"
SIGNED_PATH = "/api/v1/ota/dl/{token}"


def artifact_out(row: Mapping[str, Any]) -> dict[str, Any]:
    """An artifact as the API shows it (never its blob key)."""
    return {
        "id": row["id"],
        "module_id": row["module_id"],
        "name": row["name"],
        "version": row["version"],
        "type": row["type"],
        "filename": row["filename"],
        "size": row["size"],
        "sha256": row["sha256"],
        "sha1": row["sha1"],
        "md5": row["md5"],
        "content_type": row["content_type"],
        "model_ids": list(row["model_ids"]),
        "release_notes": row["release_notes"],
        "metadata": dict(row["metadata"]),
        "reference": row["reference"],
        "signature": row["signature"],
        "signature_by": row["signature_by"],
        "signing_key_id": row["signing_key_id"],
        "created_by": row["created_by"],
        "created_at": row["created_at"],
    }


def text_field(meta: Mapping[str, Any], name: str, limit: int, default: str = "") -> str:
    value = meta.get(name)
    if value is None or value == "":
        return default
    if not isinstance(value, str) or len(value) > limit or "\x00" in value:
        raise InvalidInput(f"{name} must be text of at most {limit} characters")
    return value


def upload_fields(meta: Mapping[str, Any]) -> dict[str, Any]:
    """An upload's metadata checked, with defaults (a deb's name and version come from its
    control file later)."""
    artifact_type = meta.get("type")
    if artifact_type not in ARTIFACT_TYPES:
        raise InvalidInput(f"type must be one of {', '.join(ARTIFACT_TYPES)}")
    artifact_id = text_field(meta, "id", 128) or generate_id("art")
    if not is_slug(artifact_id):
        raise InvalidInput(f"artifact id {artifact_id[:80]!r} is not valid: {SLUG_RULE}")
    filename = text_field(meta, "filename", 255, artifact_id)
    if _FILENAME.fullmatch(filename) is None:
        raise InvalidInput(f"filename {filename[:80]!r} is not valid: {FILENAME_RULE}")
    models = meta.get("model_ids") or []
    if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
        raise InvalidInput("model_ids must be a list of device model ids")
    signature = text_field(meta, "signature", 4096) or None
    if signature is not None:
        try:
            base64.b64decode(signature, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidInput("signature must be base64") from exc
    reference = text_field(meta, "reference", 500) or None
    if artifact_type == "container":
        if reference is None or _REFERENCE.fullmatch(reference) is None:
            raise InvalidInput(
                "a container artifact needs reference: the image, e.g. "
                "registry.example.com/app@sha256:<digest>"
            )
    elif reference is not None:
        raise InvalidInput("reference is for container artifacts only")
    version = text_field(meta, "version", MAX_VERSION_CHARS)
    if not version and artifact_type != "deb":
        raise InvalidInput("version is required")
    return {
        "id": artifact_id,
        "type": artifact_type,
        "name": text_field(meta, "name", MAX_NAME_CHARS),
        "version": version,
        "filename": filename,
        "model_ids": list(dict.fromkeys(models)),
        "release_notes": text_field(meta, "release_notes", MAX_NOTES_CHARS),
        "reference": reference,
        "signature": signature,
        "content_type": CONTENT_TYPES.get(artifact_type, DEFAULT_CONTENT_TYPE),
    }
