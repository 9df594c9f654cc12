"""jobs (issue 4)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22 16:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import roost.store.metadata

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("document", roost.store.metadata.Json, nullable=False),
        sa.Column("targets", roost.store.metadata.Json, nullable=False),
        sa.Column("target_selection", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("rollout", roost.store.metadata.Json, nullable=True),
        sa.Column("abort_rules", roost.store.metadata.Json, nullable=True),
        sa.Column("retries", roost.store.metadata.Json, nullable=True),
        sa.Column("timeout_in_progress_s", sa.Integer(), nullable=True),
        sa.Column("schedule_at", roost.store.metadata.UTCDateTime(), nullable=True),
        sa.Column("end_at", roost.store.metadata.UTCDateTime(), nullable=True),
        sa.Column("release_tat", sa.Float(), nullable=True),
        sa.Column("released_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("created_by", sa.String(length=200), server_default="", nullable=False),
        sa.Column("created_at", roost.store.metadata.UTCDateTime(), nullable=False),
        sa.Column("updated_at", roost.store.metadata.UTCDateTime(), nullable=False),
        sa.Column("started_at", roost.store.metadata.UTCDateTime(), nullable=True),
        sa.Column("completed_at", roost.store.metadata.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_jobs_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "id", name=op.f("pk_jobs")),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_jobs_status"), ["status"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_jobs_tenant_id_created_at"), ["tenant_id", "created_at"], unique=False
        )
    op.create_table(
        "job_executions",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("job_id", sa.String(length=128), nullable=False),
        sa.Column("device_pk", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("status_details", roost.store.metadata.Json, nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("retried", roost.store.metadata.Json, nullable=True),
        sa.Column("queued_at", roost.store.metadata.UTCDateTime(), nullable=False),
        sa.Column("released_at", roost.store.metadata.UTCDateTime(), nullable=True),
        sa.Column("started_at", roost.store.metadata.UTCDateTime(), nullable=True),
        sa.Column("updated_at", roost.store.metadata.UTCDateTime(), nullable=False),
        sa.Column("completed_at", roost.store.metadata.UTCDateTime(), nullable=True),
        sa.Column("timeout_at", roost.store.metadata.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["device_pk"],
            ["devices.pk"],
            name=op.f("fk_job_executions_device_pk_devices"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "job_id"],
            ["jobs.tenant_id", "jobs.id"],
            name=op.f("fk_job_executions_tenant_id_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "job_id", "device_pk", name=op.f("pk_job_executions")),
    )
    with op.batch_alter_table("job_executions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_job_executions_device_pk_status"), ["device_pk", "status"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_job_executions_tenant_id_job_id_status"),
            ["tenant_id", "job_id", "status"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_job_executions_timeout_at"), ["timeout_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("job_executions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_job_executions_timeout_at"))
        batch_op.drop_index(batch_op.f("ix_job_executions_tenant_id_job_id_status"))
        batch_op.drop_index(batch_op.f("ix_job_executions_device_pk_status"))
    op.drop_table("job_executions")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_jobs_tenant_id_created_at"))
        batch_op.drop_index(batch_op.f("ix_jobs_status"))
    op.drop_table("jobs")
