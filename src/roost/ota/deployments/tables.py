"""Tables of deployments; part of :data:`roost.store.metadata.metadata`.

A deployment sends artifacts to devices in phases; each phase is a job
(``ota-<deployment>-<n>``, see :mod:`roost.jobs`), and each device of a phase has an *action*
(``ota_actions``): the job execution seen as an update, with its device-side step
(DOWNLOADING, INSTALLING, …). An action's key is a number because hawkBit's DDI (and the update
clients speaking it) name actions by integers. ``ota_installed`` is each device's software
inventory, written when a device reports success.
"""

from __future__ import annotations

import sqlalchemy as sa

from roost.store.metadata import Json, UTCDateTime, metadata, tenant_fk

ota_deployments = sa.Table(
    "ota_deployments",
    metadata,
    tenant_fk(),
    sa.Column("id", sa.String(100), nullable=False),
    sa.Column("name", sa.String(200), nullable=False, server_default=""),
    sa.Column("artifact_ids", Json, nullable=False),
    # {"devices": [...], "groups": [...], "query": {...}} as given (the jobs' target shape).
    sa.Column("targets", Json, nullable=False),
    # The plan: [{name, devices?, groups?, percent?, success_threshold_pct, min_executed?,
    # device_ids: [...]}] (device_ids resolved when the deployment was created).
    sa.Column("phases", Json, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("current_phase", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("reason", sa.Text(), nullable=True),
    sa.Column("rollout", Json, nullable=True),
    sa.Column("abort_rules", Json, nullable=True),
    sa.Column("retries", Json, nullable=True),
    sa.Column("timeout_in_progress_s", sa.Integer(), nullable=True),
    sa.Column("maintenance", Json, nullable=True),
    sa.Column("schedule_at", UTCDateTime(), nullable=True),
    sa.Column("created_by", sa.String(200), nullable=False, server_default=""),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("completed_at", UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint("tenant_id", "id"),
    sa.Index(None, "status"),
    sa.Index(None, "tenant_id", "created_at"),
)

ota_actions = sa.Table(
    "ota_actions",
    metadata,
    sa.Column("action_id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("tenant_id", sa.String(64), nullable=False),
    sa.Column("deployment_id", sa.String(100), nullable=False),
    sa.Column("job_id", sa.String(128), nullable=False),
    sa.Column("phase", sa.Integer(), nullable=False),
    sa.Column(
        "device_pk", sa.Integer(), sa.ForeignKey("devices.pk", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("device_id", sa.String(128), nullable=False),
    sa.Column("step", sa.String(16), nullable=False),
    sa.Column("step_details", Json, nullable=True),
    sa.Column("version_reported", sa.String(64), nullable=True),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(
        ["tenant_id", "deployment_id"],
        ["ota_deployments.tenant_id", "ota_deployments.id"],
        ondelete="CASCADE",
    ),
    sa.UniqueConstraint("tenant_id", "job_id", "device_pk"),
    sa.Index(None, "tenant_id", "deployment_id", "step"),
    sa.Index(None, "device_pk"),
    # Never reuse a number: a DDI client may still ask about an old action.
    sqlite_autoincrement=True,
)

ota_installed = sa.Table(
    "ota_installed",
    metadata,
    sa.Column("tenant_id", sa.String(64), nullable=False),
    sa.Column(
        "device_pk", sa.Integer(), sa.ForeignKey("devices.pk", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("device_id", sa.String(128), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("type", sa.String(16), nullable=False),
    sa.Column("version", sa.String(64), nullable=False),
    sa.Column("artifact_id", sa.String(128), nullable=True),
    sa.Column("deployment_id", sa.String(100), nullable=True),
    sa.Column("installed_at", UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint("device_pk", "name"),
    sa.Index(None, "tenant_id", "device_id"),
)
