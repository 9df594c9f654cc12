"""device state documents and their history

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 16:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import roost.store.metadata

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "device_states",
        sa.Column("device_pk", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("desired", roost.store.metadata.Json, nullable=False),
        sa.Column("reported", roost.store.metadata.Json, nullable=False),
        sa.Column("meta", roost.store.metadata.Json, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", roost.store.metadata.UTCDateTime(), nullable=False),
        sa.Column("updated_at", roost.store.metadata.UTCDateTime(), nullable=False),
        sa.Column("deleted_at", roost.store.metadata.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["device_pk"],
            ["devices.pk"],
            name=op.f("fk_device_states_device_pk_devices"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("device_pk", "name", name=op.f("pk_device_states")),
    )
    op.create_table(
        "device_state_history",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("device_pk", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("at", roost.store.metadata.UTCDateTime(), nullable=False),
        sa.Column("actor_type", sa.String(length=16), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("patch", roost.store.metadata.Json, nullable=True),
        sa.Column("desired", roost.store.metadata.Json, nullable=False),
        sa.Column("reported", roost.store.metadata.Json, nullable=False),
        sa.ForeignKeyConstraint(
            ["device_pk"],
            ["devices.pk"],
            name=op.f("fk_device_state_history_device_pk_devices"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_device_state_history")),
    )
    with op.batch_alter_table("device_state_history", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_device_state_history_at"), ["at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_device_state_history_device_pk_name_version"),
            ["device_pk", "name", "version"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("device_state_history", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_device_state_history_device_pk_name_version"))
        batch_op.drop_index(batch_op.f("ix_device_state_history_at"))
    op.drop_table("device_state_history")
    op.drop_table("device_states")
