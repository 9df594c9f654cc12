"""ota apt (issue 14)

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 12:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import roost.store.metadata

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ota_apt_channels",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("audience", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", roost.store.metadata.UTCDateTime(), nullable=False),
        sa.Column("updated_at", roost.store.metadata.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_ota_apt_channels_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "name", name=op.f("pk_ota_apt_channels")),
    )
    op.create_table(
        "ota_apt_channel_packages",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("channel", sa.String(length=64), nullable=False),
        sa.Column("artifact_id", sa.String(length=128), nullable=False),
        sa.Column("package", sa.String(length=200), nullable=False),
        sa.Column("version", sa.String(length=200), nullable=False),
        sa.Column("architecture", sa.String(length=64), nullable=False),
        sa.Column("published_by", sa.String(length=200), nullable=False),
        sa.Column("published_at", roost.store.metadata.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id", "channel"],
            ["ota_apt_channels.tenant_id", "ota_apt_channels.name"],
            name="fk_ota_apt_channel_packages_channel",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "tenant_id", "channel", "artifact_id", name=op.f("pk_ota_apt_channel_packages")
        ),
        sa.UniqueConstraint(
            "tenant_id",
            "channel",
            "package",
            "version",
            "architecture",
            name="uq_ota_apt_channel_packages_package",
        ),
    )
    op.create_index(
        op.f("ix_ota_apt_channel_packages_tenant_id_artifact_id"),
        "ota_apt_channel_packages",
        ["tenant_id", "artifact_id"],
        unique=False,
    )
    op.create_table(
        "ota_apt_keys",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("public_key", sa.Text(), nullable=False),
        sa.Column("sealed_secret_key", sa.Text(), nullable=False),
        sa.Column("created_at", roost.store.metadata.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ota_apt_keys")),
    )


def downgrade() -> None:
    op.drop_table("ota_apt_keys")
    op.drop_index(
        op.f("ix_ota_apt_channel_packages_tenant_id_artifact_id"),
        table_name="ota_apt_channel_packages",
    )
    op.drop_table("ota_apt_channel_packages")
    op.drop_table("ota_apt_channels")
