"""commands and command schedules (issue 4)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22 16:00:00
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import roost.store.metadata

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "command_schedules",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("device_pk", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("params", _json(), nullable=False),
        sa.Column("timeout_s", sa.Integer(), nullable=True),
        sa.Column("expires_in_s", sa.Integer(), nullable=True),
        sa.Column("cron", sa.String(length=128), nullable=True),
        sa.Column("timezone", sa.String(length=64), server_default="UTC", nullable=False),
        sa.Column("offset_s", sa.Integer(), server_default="0", nullable=False),
        sa.Column("schedule_at", roost.store.metadata.UTCDateTime(), nullable=True),
        sa.Column("enabled", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("next_fire_at", roost.store.metadata.UTCDateTime(), nullable=True),
        sa.Column("last_fired_at", roost.store.metadata.UTCDateTime(), nullable=True),
        sa.Column("fire_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_command_id", sa.String(length=32), nullable=True),
        sa.Column("created_by", sa.String(length=200), server_default="", nullable=False),
        sa.Column("created_at", roost.store.metadata.UTCDateTime(), nullable=False),
        sa.Column("updated_at", roost.store.metadata.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_pk"],
            ["devices.pk"],
            name=op.f("fk_command_schedules_device_pk_devices"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_command_schedules_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_command_schedules")),
    )
    with op.batch_alter_table("command_schedules", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_command_schedules_tenant_id_device_pk"),
            ["tenant_id", "device_pk"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_command_schedules_next_fire_at"), ["next_fire_at"], unique=False
        )
    op.create_table(
        "commands",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("device_pk", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("params", _json(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("status_details", _json(), nullable=True),
        sa.Column("result", _json(), nullable=True),
        sa.Column("timeout_s", sa.Integer(), nullable=False),
        sa.Column("schedule_at", roost.store.metadata.UTCDateTime(), nullable=True),
        sa.Column("expires_at", roost.store.metadata.UTCDateTime(), nullable=True),
        sa.Column("due_at", roost.store.metadata.UTCDateTime(), nullable=True),
        sa.Column("schedule_id", sa.String(length=32), nullable=True),
        sa.Column("created_by", sa.String(length=200), server_default="", nullable=False),
        sa.Column("created_at", roost.store.metadata.UTCDateTime(), nullable=False),
        sa.Column("updated_at", roost.store.metadata.UTCDateTime(), nullable=False),
        sa.Column("sent_at", roost.store.metadata.UTCDateTime(), nullable=True),
        sa.Column("delivered_at", roost.store.metadata.UTCDateTime(), nullable=True),
        sa.Column("completed_at", roost.store.metadata.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["device_pk"],
            ["devices.pk"],
            name=op.f("fk_commands_device_pk_devices"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["schedule_id"],
            ["command_schedules.id"],
            name=op.f("fk_commands_schedule_id_command_schedules"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_commands_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_commands")),
    )
    with op.batch_alter_table("commands", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_commands_device_pk_status"), ["device_pk", "status"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_commands_device_pk_created_at"),
            ["device_pk", "created_at"],
            unique=False,
        )
        batch_op.create_index(batch_op.f("ix_commands_due_at"), ["due_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_commands_schedule_id"), ["schedule_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("commands", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_commands_schedule_id"))
        batch_op.drop_index(batch_op.f("ix_commands_due_at"))
        batch_op.drop_index(batch_op.f("ix_commands_device_pk_created_at"))
        batch_op.drop_index(batch_op.f("ix_commands_device_pk_status"))
    op.drop_table("commands")
    with op.batch_alter_table("command_schedules", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_command_schedules_next_fire_at"))
        batch_op.drop_index(batch_op.f("ix_command_schedules_tenant_id_device_pk"))
    op.drop_table("command_schedules")
