"""device diagnostics (issue 15)

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 16:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import roost.store.metadata

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "diagnostics",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("device_pk", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("content_type", sa.String(length=100), nullable=False),
        sa.Column("note", sa.String(length=500), nullable=True),
        sa.Column("command_id", sa.String(length=64), nullable=True),
        sa.Column("blob_key", sa.String(length=400), nullable=False),
        sa.Column("created_at", roost.store.metadata.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_diagnostics_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_diagnostics")),
    )
    op.create_index(
        op.f("ix_diagnostics_tenant_id_device_pk_created_at"),
        "diagnostics",
        ["tenant_id", "device_pk", "created_at"],
        unique=False,
    )
    op.create_index(
        op.f("ix_diagnostics_tenant_id_device_id"),
        "diagnostics",
        ["tenant_id", "device_id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_diagnostics_tenant_id_device_id"), table_name="diagnostics")
    op.drop_index(op.f("ix_diagnostics_tenant_id_device_pk_created_at"), table_name="diagnostics")
    op.drop_table("diagnostics")
