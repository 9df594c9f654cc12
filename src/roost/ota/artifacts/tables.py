"""Tables of artifacts (issue 14); part of :data:`roost.store.metadata.metadata`.

``ota_artifacts`` has a row per artifact: its metadata, hashes, where its bytes are (``blob_key``
in the blob store; none for a container reference) and the signature of its manifest.
``module_id`` is a number per artifact, never reused (hawkBit's DDI names software modules by
number). ``ota_downloads`` counts downloads per artifact and device. ``ota_signing_keys`` holds
the platform signing key when Roost made it, sealed under the secret key (as the platform CA).
"""

from __future__ import annotations

import sqlalchemy as sa

from roost.store.metadata import Json, UTCDateTime, metadata, tenant_fk

ARTIFACT_TYPES = ("firmware", "application", "deb", "file", "container")

ota_artifacts = sa.Table(
    "ota_artifacts",
    metadata,
    sa.Column("module_id", sa.Integer(), primary_key=True, autoincrement=True),
    tenant_fk(),
    sa.Column("id", sa.String(128), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("version", sa.String(128), nullable=False),
    sa.Column("type", sa.String(16), nullable=False),
    sa.Column("filename", sa.String(255), nullable=False),
    sa.Column("size", sa.BigInteger(), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("sha1", sa.String(40), nullable=False),
    sa.Column("md5", sa.String(32), nullable=False),
    sa.Column("content_type", sa.String(200), nullable=False),
    # Device models it suits; empty: any model.
    sa.Column("model_ids", Json, nullable=False),
    sa.Column("release_notes", sa.Text(), nullable=False, server_default=""),
    # Per type: a Debian package's control fields (Package, Version, Architecture, …).
    sa.Column("metadata", Json, nullable=False),
    # A container reference (``registry/image@sha256:…``); bytes-less.
    sa.Column("reference", sa.String(500), nullable=True),
    sa.Column("blob_key", sa.String(400), nullable=True),
    # Base64 Ed25519 signature of the manifest (Roost's) or the operator's detached signature.
    sa.Column("signature", sa.Text(), nullable=True),
    sa.Column("signature_by", sa.String(16), nullable=False),
    sa.Column("signing_key_id", sa.String(16), nullable=True),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.UniqueConstraint("tenant_id", "id"),
    sa.Index(None, "tenant_id", "type"),
    # Never reuse a deleted artifact's module number: a DDI client may still name it.
    sqlite_autoincrement=True,
)

ota_downloads = sa.Table(
    "ota_downloads",
    metadata,
    sa.Column("tenant_id", sa.String(64), nullable=False),
    sa.Column("artifact_id", sa.String(128), nullable=False),
    sa.Column("device_id", sa.String(128), nullable=False),
    # Downloads that reached the end of the file (a resumed one counts once), and bytes sent.
    sa.Column("count", sa.Integer(), nullable=False),
    sa.Column("bytes", sa.BigInteger(), nullable=False),
    sa.Column("last_at", UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint("tenant_id", "artifact_id", "device_id"),
    sa.ForeignKeyConstraint(
        ["tenant_id", "artifact_id"],
        ["ota_artifacts.tenant_id", "ota_artifacts.id"],
        name="fk_ota_downloads_artifact",
        ondelete="CASCADE",
    ),
)

ota_signing_keys = sa.Table(
    "ota_signing_keys",
    metadata,
    # One row today ("platform"); keyed so that a rotated key can stand beside the old one.
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("key_id", sa.String(16), nullable=False),
    sa.Column("public_key", sa.Text(), nullable=False),
    sa.Column("sealed_key", sa.Text(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)

ota_artifact_tombstones = sa.Table(
    "ota_artifact_tombstones",
    metadata,
    # A deleted artifact's id and the bytes it named: the id may come back only with the same
    # bytes, so an artifact id always means one file (devices and job documents keep naming it).
    sa.Column("tenant_id", sa.String(64), nullable=False),
    sa.Column("id", sa.String(128), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("deleted_at", UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint("tenant_id", "id"),
)
