"""alarms and rules (issue 13)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 09:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import roost.store.metadata

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rule_actions",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("rule_id", sa.String(length=128), nullable=False),
        sa.Column("device_pk", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column(
            "payload",
            roost.store.metadata.Json,
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", roost.store.metadata.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rule_actions")),
    )
    op.create_table(
        "rule_cursors",
        sa.Column("feed", sa.String(length=32), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", roost.store.metadata.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("feed", name=op.f("pk_rule_cursors")),
    )
    op.create_table(
        "rules",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column(
            "definition",
            roost.store.metadata.Json,
            nullable=False,
        ),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("created_at", roost.store.metadata.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", roost.store.metadata.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_rules_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "id", name=op.f("pk_rules")),
    )
    op.create_table(
        "alarms",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("device_pk", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("type", sa.String(length=128), nullable=False),
        sa.Column("rule_id", sa.String(length=128), nullable=True),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("open_key", sa.String(length=160), nullable=True),
        sa.Column("acknowledged", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("acked_by", sa.String(length=128), nullable=True),
        sa.Column("acked_at", roost.store.metadata.UTCDateTime(timezone=True), nullable=True),
        sa.Column("cleared_by", sa.String(length=128), nullable=True),
        sa.Column("summary", sa.Text(), server_default="", nullable=False),
        sa.Column(
            "details",
            roost.store.metadata.Json,
            nullable=True,
        ),
        sa.Column("count", sa.Integer(), server_default="1", nullable=False),
        sa.Column("started_at", roost.store.metadata.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_at", roost.store.metadata.UTCDateTime(timezone=True), nullable=False),
        sa.Column("ended_at", roost.store.metadata.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["device_pk"],
            ["devices.pk"],
            name=op.f("fk_alarms_device_pk_devices"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_alarms_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alarms")),
        sa.UniqueConstraint("tenant_id", "open_key", name=op.f("uq_alarms_tenant_id_open_key")),
    )
    with op.batch_alter_table("alarms", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_alarms_device_pk_started_at"), ["device_pk", "started_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_alarms_ended_at"), ["ended_at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_alarms_tenant_id_status_severity"),
            ["tenant_id", "status", "severity"],
            unique=False,
        )

    op.create_table(
        "rule_states",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("rule_id", sa.String(length=128), nullable=False),
        sa.Column("device_pk", sa.Integer(), nullable=False),
        sa.Column("phase", sa.String(length=16), nullable=False),
        sa.Column("since", sa.Float(), nullable=True),
        sa.Column("due_at", sa.Float(), nullable=True),
        sa.Column(
            "last_value",
            roost.store.metadata.Json,
            nullable=True,
        ),
        sa.Column("last_ts", sa.Float(), nullable=True),
        sa.Column("updated_at", roost.store.metadata.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_pk"],
            ["devices.pk"],
            name=op.f("fk_rule_states_device_pk_devices"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "rule_id"],
            ["rules.tenant_id", "rules.id"],
            name=op.f("fk_rule_states_tenant_id_rule_id_rules"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "rule_id", "device_pk", name=op.f("pk_rule_states")),
    )
    # Rules read commands and job executions as they reach a final status.
    with op.batch_alter_table("commands", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_commands_completed_at"), ["completed_at"], unique=False
        )
    with op.batch_alter_table("job_executions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_job_executions_completed_at"), ["completed_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("job_executions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_job_executions_completed_at"))
    with op.batch_alter_table("commands", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_commands_completed_at"))
    op.drop_table("rule_states")
    with op.batch_alter_table("alarms", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_alarms_tenant_id_status_severity"))
        batch_op.drop_index(batch_op.f("ix_alarms_ended_at"))
        batch_op.drop_index(batch_op.f("ix_alarms_device_pk_started_at"))

    op.drop_table("alarms")
    op.drop_table("rules")
    op.drop_table("rule_cursors")
    op.drop_table("rule_actions")
