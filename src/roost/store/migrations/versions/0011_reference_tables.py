"""reference tables (issue 13)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 09:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import roost.store.metadata

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "reference_tables",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("key_column", sa.String(length=64), nullable=False),
        sa.Column("columns", roost.store.metadata.Json, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("row_count", sa.Integer(), nullable=False),
        sa.Column("updated_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", roost.store.metadata.UTCDateTime(), nullable=False),
        sa.Column("updated_at", roost.store.metadata.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_reference_tables_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "name", name=op.f("pk_reference_tables")),
    )
    op.create_table(
        "reference_table_versions",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("table_name", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("key_column", sa.String(length=64), nullable=False),
        sa.Column("columns", roost.store.metadata.Json, nullable=False),
        sa.Column("row_count", sa.Integer(), nullable=False),
        sa.Column("rows_kept", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", roost.store.metadata.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id", "table_name"],
            ["reference_tables.tenant_id", "reference_tables.name"],
            name="fk_reference_table_versions_table",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "tenant_id", "table_name", "version", name=op.f("pk_reference_table_versions")
        ),
    )
    op.create_table(
        "reference_rows",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("table_name", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("values", roost.store.metadata.Json, nullable=False),
        sa.Column("search_text", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id", "table_name", "version"],
            [
                "reference_table_versions.tenant_id",
                "reference_table_versions.table_name",
                "reference_table_versions.version",
            ],
            name="fk_reference_rows_version",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "tenant_id", "table_name", "version", "key", name=op.f("pk_reference_rows")
        ),
    )
    op.create_index(
        "ix_reference_rows_position",
        "reference_rows",
        ["tenant_id", "table_name", "version", "position"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_reference_rows_position", table_name="reference_rows")
    op.drop_table("reference_rows")
    op.drop_table("reference_table_versions")
    op.drop_table("reference_tables")
