"""Tables of jobs (issue 4); part of :data:`roost.store.metadata.metadata`.

A job's timers are columns, so a restart resumes them: ``release_tat`` is the rollout's stored
rate state (see :mod:`roost.jobs.rollout`), ``schedule_at`` / ``end_at`` bound it, and each
execution's ``timeout_at`` is its in-progress (or step) deadline. An execution is *released*
(notified to its device) when ``released_at`` is set; one row per (job, device) holds every
attempt, so a restart can never create a second execution for a device.
"""

from __future__ import annotations

import sqlalchemy as sa

from roost.store.metadata import Json, UTCDateTime, metadata

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column(
        "tenant_id",
        sa.String(64),
        sa.ForeignKey("tenants.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("id", sa.String(128), nullable=False),
    sa.Column("description", sa.Text(), nullable=False, server_default=""),
    sa.Column("document", Json, nullable=False),
    # {"devices": [...], "groups": [...], "query": {...}} as given (ids, not keys).
    sa.Column("targets", Json, nullable=False),
    sa.Column("target_selection", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text(), nullable=True),
    sa.Column("rollout", Json, nullable=True),
    sa.Column("abort_rules", Json, nullable=True),
    sa.Column("retries", Json, nullable=True),
    sa.Column("timeout_in_progress_s", sa.Integer(), nullable=True),
    sa.Column("schedule_at", UTCDateTime(), nullable=True),
    sa.Column("end_at", UTCDateTime(), nullable=True),
    # Windows in each device's local time outside which nothing is released (roost.jobs.windows).
    sa.Column("maintenance", Json, nullable=True),
    # The rollout's theoretical arrival time, epoch seconds (GCRA); NULL before the first release.
    sa.Column("release_tat", sa.Float(), nullable=True),
    # Releases made so far (retries count again): the exponential rollout's notified count.
    sa.Column("released_count", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("created_by", sa.String(200), nullable=False, server_default=""),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("started_at", UTCDateTime(), nullable=True),
    sa.Column("completed_at", UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint("tenant_id", "id"),
    sa.Index(None, "status"),
    sa.Index(None, "tenant_id", "created_at"),
)

job_executions = sa.Table(
    "job_executions",
    metadata,
    sa.Column("tenant_id", sa.String(64), nullable=False),
    sa.Column("job_id", sa.String(128), nullable=False),
    sa.Column(
        "device_pk", sa.Integer(), sa.ForeignKey("devices.pk", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("device_id", sa.String(128), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("status_details", Json, nullable=True),
    sa.Column("version", sa.Integer(), nullable=False),
    sa.Column("attempt", sa.Integer(), nullable=False),
    # Retries made per outcome ({"FAILED": n, "TIMED_OUT": m}), for the retry rules.
    sa.Column("retried", Json, nullable=True),
    sa.Column("queued_at", UTCDateTime(), nullable=False),
    sa.Column("released_at", UTCDateTime(), nullable=True),
    sa.Column("started_at", UTCDateTime(), nullable=True),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("completed_at", UTCDateTime(), nullable=True),
    # When an IN_PROGRESS execution times out (in-progress or step timeout, the earlier).
    sa.Column("timeout_at", UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint("tenant_id", "job_id", "device_pk"),
    sa.ForeignKeyConstraint(
        ["tenant_id", "job_id"], ["jobs.tenant_id", "jobs.id"], ondelete="CASCADE"
    ),
    sa.Index(None, "device_pk", "status"),
    sa.Index(None, "tenant_id", "job_id", "status"),
    sa.Index(None, "timeout_at"),
    # Rules read executions as they reach a final status (roost.alarms.rules.feeds).
    sa.Index(None, "completed_at"),
)
