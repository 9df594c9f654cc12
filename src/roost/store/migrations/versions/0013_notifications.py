"""notifications (issue 13)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 09:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import roost.store.metadata

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "notification_channels",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("config", roost.store.metadata.Json, nullable=False),
        sa.Column("sealed_secret", sa.LargeBinary(), nullable=True),
        sa.Column("group_by", roost.store.metadata.Json, nullable=False),
        sa.Column("group_wait_s", sa.Float(), nullable=False),
        sa.Column("group_interval_s", sa.Float(), nullable=False),
        sa.Column("repeat_interval_s", sa.Float(), nullable=False),
        sa.Column("send_resolved", sa.Boolean(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", roost.store.metadata.UTCDateTime(), nullable=False),
        sa.Column("updated_at", roost.store.metadata.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_notification_channels_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_channels")),
        sa.UniqueConstraint(
            "tenant_id", "name", name=op.f("uq_notification_channels_tenant_id_name")
        ),
    )
    op.create_table(
        "notifications",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("channel_id", sa.String(length=32), nullable=False),
        sa.Column("channel_name", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("group_labels", roost.store.metadata.Json, nullable=False),
        sa.Column("alarm_ids", roost.store.metadata.Json, nullable=False),
        sa.Column("firing", sa.Integer(), nullable=False),
        sa.Column("resolved", sa.Integer(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("payload", roost.store.metadata.Json, nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("attempt_log", roost.store.metadata.Json, nullable=False),
        sa.Column("due_at", roost.store.metadata.UTCDateTime(), nullable=True),
        sa.Column("delivered_at", roost.store.metadata.UTCDateTime(), nullable=True),
        sa.Column("created_at", roost.store.metadata.UTCDateTime(), nullable=False),
        sa.Column("updated_at", roost.store.metadata.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_notifications_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
    )
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_notifications_due_at"), ["due_at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_notifications_tenant_id_created_at"),
            ["tenant_id", "created_at"],
            unique=False,
        )

    op.create_table(
        "silences",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("matchers", roost.store.metadata.Json, nullable=False),
        sa.Column("starts_at", roost.store.metadata.UTCDateTime(), nullable=False),
        sa.Column("ends_at", roost.store.metadata.UTCDateTime(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", roost.store.metadata.UTCDateTime(), nullable=False),
        sa.Column("updated_at", roost.store.metadata.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_silences_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_silences")),
    )
    with op.batch_alter_table("silences", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_silences_tenant_id_ends_at"), ["tenant_id", "ends_at"], unique=False
        )

    op.create_table(
        "notification_groups",
        sa.Column("pk", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("channel_id", sa.String(length=32), nullable=False),
        sa.Column("group_key", sa.String(length=64), nullable=False),
        sa.Column("labels", roost.store.metadata.Json, nullable=False),
        sa.Column("next_flush_at", roost.store.metadata.UTCDateTime(), nullable=True),
        sa.Column("last_sent_at", roost.store.metadata.UTCDateTime(), nullable=True),
        sa.Column("created_at", roost.store.metadata.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["channel_id"],
            ["notification_channels.id"],
            name=op.f("fk_notification_groups_channel_id_notification_channels"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_notification_groups_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_notification_groups")),
        sa.UniqueConstraint(
            "channel_id", "group_key", name=op.f("uq_notification_groups_channel_id_group_key")
        ),
    )
    with op.batch_alter_table("notification_groups", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_notification_groups_next_flush_at"), ["next_flush_at"], unique=False
        )

    op.create_table(
        "notification_alerts",
        sa.Column("pk", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("group_pk", sa.Integer(), nullable=False),
        sa.Column("channel_id", sa.String(length=32), nullable=False),
        sa.Column("alarm_id", sa.BigInteger(), nullable=False),
        sa.Column("type", sa.String(length=128), nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("site_id", sa.String(length=128), nullable=True),
        sa.Column("group_ids", roost.store.metadata.Json, nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("details", roost.store.metadata.Json, nullable=False),
        sa.Column("started_at", roost.store.metadata.UTCDateTime(), nullable=False),
        sa.Column("ended_at", roost.store.metadata.UTCDateTime(), nullable=True),
        sa.Column("rule_id", sa.String(length=64), nullable=True),
        sa.Column("sent_status", sa.String(length=16), nullable=True),
        sa.Column("updated_at", roost.store.metadata.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_pk"],
            ["notification_groups.pk"],
            name=op.f("fk_notification_alerts_group_pk_notification_groups"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_notification_alerts")),
        sa.UniqueConstraint(
            "channel_id", "alarm_id", name=op.f("uq_notification_alerts_channel_id_alarm_id")
        ),
    )
    with op.batch_alter_table("notification_alerts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_notification_alerts_group_pk"), ["group_pk"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("notification_alerts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_notification_alerts_group_pk"))

    op.drop_table("notification_alerts")
    with op.batch_alter_table("notification_groups", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_notification_groups_next_flush_at"))

    op.drop_table("notification_groups")
    with op.batch_alter_table("silences", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_silences_tenant_id_ends_at"))

    op.drop_table("silences")
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_notifications_tenant_id_created_at"))
        batch_op.drop_index(batch_op.f("ix_notifications_due_at"))

    op.drop_table("notifications")
    op.drop_table("notification_channels")
