"""ota artifacts (issue 14)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 12:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import roost.store.metadata

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ota_artifacts",
        sa.Column("module_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("version", sa.String(length=128), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("sha1", sa.String(length=40), nullable=False),
        sa.Column("md5", sa.String(length=32), nullable=False),
        sa.Column("content_type", sa.String(length=200), nullable=False),
        sa.Column("model_ids", roost.store.metadata.Json, nullable=False),
        sa.Column("release_notes", sa.Text(), server_default="", nullable=False),
        sa.Column("metadata", roost.store.metadata.Json, nullable=False),
        sa.Column("reference", sa.String(length=500), nullable=True),
        sa.Column("blob_key", sa.String(length=400), nullable=True),
        sa.Column("signature", sa.Text(), nullable=True),
        sa.Column("signature_by", sa.String(length=16), nullable=False),
        sa.Column("signing_key_id", sa.String(length=16), nullable=True),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", roost.store.metadata.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_ota_artifacts_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("module_id", name=op.f("pk_ota_artifacts")),
        sa.UniqueConstraint("tenant_id", "id", name=op.f("uq_ota_artifacts_tenant_id_id")),
        sqlite_autoincrement=True,
    )
    op.create_index(
        op.f("ix_ota_artifacts_tenant_id_type"),
        "ota_artifacts",
        ["tenant_id", "type"],
        unique=False,
    )
    op.create_table(
        "ota_downloads",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("artifact_id", sa.String(length=128), nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("last_at", roost.store.metadata.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id", "artifact_id"],
            ["ota_artifacts.tenant_id", "ota_artifacts.id"],
            name="fk_ota_downloads_artifact",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "tenant_id", "artifact_id", "device_id", name=op.f("pk_ota_downloads")
        ),
    )
    op.create_table(
        "ota_signing_keys",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("key_id", sa.String(length=16), nullable=False),
        sa.Column("public_key", sa.Text(), nullable=False),
        sa.Column("sealed_key", sa.Text(), nullable=False),
        sa.Column("created_at", roost.store.metadata.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ota_signing_keys")),
    )
    op.create_table(
        "ota_artifact_tombstones",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("deleted_at", roost.store.metadata.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "id", name=op.f("pk_ota_artifact_tombstones")),
    )


def downgrade() -> None:
    op.drop_table("ota_artifact_tombstones")
    op.drop_table("ota_signing_keys")
    op.drop_table("ota_downloads")
    op.drop_index(op.f("ix_ota_artifacts_tenant_id_type"), table_name="ota_artifacts")
    op.drop_table("ota_artifacts")
