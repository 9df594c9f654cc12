"""device tokens, consumer groups, tenant retention

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 10:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import roost.store.metadata

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.add_column(sa.Column("retention_days", sa.Integer(), nullable=True))
    op.create_table(
        "device_tokens",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("device_pk", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), server_default="", nullable=False),
        sa.Column("created_at", roost.store.metadata.UTCDateTime(), nullable=False),
        sa.Column("expires_at", roost.store.metadata.UTCDateTime(), nullable=True),
        sa.Column("revoked_at", roost.store.metadata.UTCDateTime(), nullable=True),
        sa.Column("last_used_at", roost.store.metadata.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["device_pk"],
            ["devices.pk"],
            name=op.f("fk_device_tokens_device_pk_devices"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_device_tokens_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_device_tokens")),
    )
    op.create_table(
        "consumer_groups",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("committed_offset", sa.BigInteger(), nullable=False),
        sa.Column("created_at", roost.store.metadata.UTCDateTime(), nullable=False),
        sa.Column("updated_at", roost.store.metadata.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_consumer_groups_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "id", name=op.f("pk_consumer_groups")),
    )
    with op.batch_alter_table("device_tokens", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_device_tokens_device_pk"), ["device_pk"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_device_tokens_revoked_at"), ["revoked_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("device_tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_device_tokens_revoked_at"))
        batch_op.drop_index(batch_op.f("ix_device_tokens_device_pk"))
    op.drop_table("device_tokens")
    op.drop_table("consumer_groups")
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.drop_column("retention_days")
