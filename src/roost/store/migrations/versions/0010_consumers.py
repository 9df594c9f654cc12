"""consumers (issue 5)

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-22 17:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import roost.store.metadata

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "consumers",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("grants", roost.store.metadata.Json, nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("secret_hash", sa.String(length=128), nullable=False),
        sa.Column("key_created_at", roost.store.metadata.UTCDateTime(), nullable=False),
        sa.Column("created_at", roost.store.metadata.UTCDateTime(), nullable=False),
        sa.Column("updated_at", roost.store.metadata.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_consumers_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "id", name=op.f("pk_consumers")),
        sa.UniqueConstraint("key_id", name=op.f("uq_consumers_key_id")),
    )


def downgrade() -> None:
    op.drop_table("consumers")
