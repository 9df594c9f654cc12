"""provisioning (issue 5): device keys, enrollment groups, attestation hashes

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-22 17:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import roost.store.metadata

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "device_keys",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("device_pk", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), server_default="", nullable=False),
        sa.Column("secret", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", roost.store.metadata.UTCDateTime(), nullable=False),
        sa.Column("revoked_at", roost.store.metadata.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["device_pk"],
            ["devices.pk"],
            name=op.f("fk_device_keys_device_pk_devices"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_device_keys_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_device_keys")),
    )
    with op.batch_alter_table("device_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_device_keys_device_pk"), ["device_pk"], unique=False)
        batch_op.create_index(batch_op.f("ix_device_keys_revoked_at"), ["revoked_at"], unique=False)
    op.create_table(
        "enrollments",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("secret", sa.LargeBinary(), nullable=False),
        sa.Column("site_id", sa.String(length=128), nullable=True),
        sa.Column("group_ids", roost.store.metadata.Json, nullable=False),
        sa.Column("tags", roost.store.metadata.Json, nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("created_at", roost.store.metadata.UTCDateTime(), nullable=False),
        sa.Column("updated_at", roost.store.metadata.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_enrollments_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_enrollments")),
    )
    with op.batch_alter_table("enrollments", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_enrollments_tenant_id"), ["tenant_id"], unique=False)
    op.create_table(
        "attestation_hashes",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("hint", sa.String(length=8), nullable=False),
        sa.Column("site_id", sa.String(length=128), nullable=True),
        sa.Column("group_ids", roost.store.metadata.Json, nullable=False),
        sa.Column("tags", roost.store.metadata.Json, nullable=False),
        sa.Column("created_at", roost.store.metadata.UTCDateTime(), nullable=False),
        sa.Column("used_at", roost.store.metadata.UTCDateTime(), nullable=True),
        sa.Column("device_id", sa.String(length=128), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_attestation_hashes_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_attestation_hashes")),
    )
    with op.batch_alter_table("attestation_hashes", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_attestation_hashes_tenant_id_created_at"),
            ["tenant_id", "created_at"],
            unique=False,
        )


def downgrade() -> None:
    op.drop_table("attestation_hashes")
    op.drop_table("enrollments")
    op.drop_table("device_keys")
