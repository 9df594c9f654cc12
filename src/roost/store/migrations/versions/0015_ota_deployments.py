"""ota deployments (issue 14): deployments, their actions, installed software; jobs.maintenance

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 12:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import roost.store.metadata

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("maintenance", roost.store.metadata.Json, nullable=True))
    op.create_table(
        "ota_deployments",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("id", sa.String(length=100), nullable=False),
        sa.Column("name", sa.String(length=200), server_default="", nullable=False),
        sa.Column("artifact_ids", roost.store.metadata.Json, nullable=False),
        sa.Column("targets", roost.store.metadata.Json, nullable=False),
        sa.Column("phases", roost.store.metadata.Json, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("current_phase", sa.Integer(), server_default="0", nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("rollout", roost.store.metadata.Json, nullable=True),
        sa.Column("abort_rules", roost.store.metadata.Json, nullable=True),
        sa.Column("retries", roost.store.metadata.Json, nullable=True),
        sa.Column("timeout_in_progress_s", sa.Integer(), nullable=True),
        sa.Column("maintenance", roost.store.metadata.Json, nullable=True),
        sa.Column("schedule_at", roost.store.metadata.UTCDateTime(), nullable=True),
        sa.Column("created_by", sa.String(length=200), server_default="", nullable=False),
        sa.Column("created_at", roost.store.metadata.UTCDateTime(), nullable=False),
        sa.Column("updated_at", roost.store.metadata.UTCDateTime(), nullable=False),
        sa.Column("completed_at", roost.store.metadata.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_ota_deployments_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "id", name=op.f("pk_ota_deployments")),
    )
    with op.batch_alter_table("ota_deployments", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ota_deployments_status"), ["status"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_ota_deployments_tenant_id_created_at"),
            ["tenant_id", "created_at"],
            unique=False,
        )
    op.create_table(
        "ota_actions",
        sa.Column("action_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("deployment_id", sa.String(length=100), nullable=False),
        sa.Column("job_id", sa.String(length=128), nullable=False),
        sa.Column("phase", sa.Integer(), nullable=False),
        sa.Column("device_pk", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("step", sa.String(length=16), nullable=False),
        sa.Column("step_details", roost.store.metadata.Json, nullable=True),
        sa.Column("version_reported", sa.String(length=64), nullable=True),
        sa.Column("updated_at", roost.store.metadata.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_pk"],
            ["devices.pk"],
            name=op.f("fk_ota_actions_device_pk_devices"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "deployment_id"],
            ["ota_deployments.tenant_id", "ota_deployments.id"],
            name=op.f("fk_ota_actions_tenant_id_deployment_id_ota_deployments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("action_id", name=op.f("pk_ota_actions")),
        sa.UniqueConstraint(
            "tenant_id",
            "job_id",
            "device_pk",
            name=op.f("uq_ota_actions_tenant_id_job_id_device_pk"),
        ),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("ota_actions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ota_actions_device_pk"), ["device_pk"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_ota_actions_tenant_id_deployment_id_step"),
            ["tenant_id", "deployment_id", "step"],
            unique=False,
        )
    op.create_table(
        "ota_installed",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("device_pk", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("artifact_id", sa.String(length=128), nullable=True),
        sa.Column("deployment_id", sa.String(length=100), nullable=True),
        sa.Column("installed_at", roost.store.metadata.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_pk"],
            ["devices.pk"],
            name=op.f("fk_ota_installed_device_pk_devices"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("device_pk", "name", name=op.f("pk_ota_installed")),
    )
    with op.batch_alter_table("ota_installed", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_ota_installed_tenant_id_device_id"),
            ["tenant_id", "device_id"],
            unique=False,
        )


def downgrade() -> None:
    op.drop_table("ota_installed")
    op.drop_table("ota_actions")
    op.drop_table("ota_deployments")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("maintenance")
