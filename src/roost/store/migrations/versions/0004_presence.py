"""presence: device heartbeat interval, status, connections, offline timer, clock skew, history

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 16:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import roost.store.metadata

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


_ROW_KEY = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.add_column(sa.Column("heartbeat_interval_s", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column("presence", sa.String(length=16), server_default="never_seen", nullable=False)
        )
        batch_op.add_column(
            sa.Column("presence_since", roost.store.metadata.UTCDateTime(), nullable=True)
        )
        batch_op.add_column(
            sa.Column("connections", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(
            sa.Column("offline_due_at", roost.store.metadata.UTCDateTime(), nullable=True)
        )
        batch_op.add_column(sa.Column("clock_skew_ms", sa.Integer(), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_devices_tenant_id_presence"), ["tenant_id", "presence"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_devices_offline_due_at"), ["offline_due_at"], unique=False
        )
    # Devices heard from before presence existed are offline until they are heard again.
    op.execute("UPDATE devices SET presence = 'offline' WHERE last_seen_at IS NOT NULL")
    op.create_table(
        "presence_history",
        sa.Column("id", _ROW_KEY, autoincrement=True, nullable=False),
        sa.Column("device_pk", sa.Integer(), nullable=False),
        sa.Column("at", roost.store.metadata.UTCDateTime(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_pk"],
            ["devices.pk"],
            name=op.f("fk_presence_history_device_pk_devices"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_presence_history")),
    )
    op.create_index(
        op.f("ix_presence_history_device_pk_at"), "presence_history", ["device_pk", "at"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_presence_history_device_pk_at"), table_name="presence_history")
    op.drop_table("presence_history")
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_devices_offline_due_at"))
        batch_op.drop_index(batch_op.f("ix_devices_tenant_id_presence"))
        for column in (
            "clock_skew_ms",
            "offline_due_at",
            "connections",
            "presence_since",
            "presence",
            "heartbeat_interval_s",
        ):
            batch_op.drop_column(column)
