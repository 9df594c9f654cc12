"""Tables of commands (issue 4); part of :data:`roost.store.metadata.metadata`.

Every timer of a command lives in its row as ``due_at``, the next time the command pass must look
at it: a queued command's ``schedule_at`` (it may be sent from then on) or ``expires_at`` (it
expires then), a sent one's timeout. A schedule's timer is its ``next_fire_at``. Both are indexed,
so a pass reads only what is due, and a restarted server resumes every timer where it was.
"""

from __future__ import annotations

import sqlalchemy as sa

from roost.store.metadata import Json, UTCDateTime, metadata

command_schedules = sa.Table(
    "command_schedules",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column(
        "tenant_id", sa.String(64), sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column(
        "device_pk", sa.Integer(), sa.ForeignKey("devices.pk", ondelete="CASCADE"), nullable=False
    ),
    # What each fire sends: the command's name and params, its timeout and time to live.
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("params", Json, nullable=False),
    sa.Column("timeout_s", sa.Integer(), nullable=True),
    sa.Column("expires_in_s", sa.Integer(), nullable=True),
    # When: a five-field cron expression read in ``timezone``, fired ``offset_s`` from each
    # event; or once, at ``schedule_at``.
    sa.Column("cron", sa.String(128), nullable=True),
    sa.Column("timezone", sa.String(64), nullable=False, server_default="UTC"),
    sa.Column("offset_s", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("schedule_at", UTCDateTime(), nullable=True),
    sa.Column("enabled", sa.Boolean(), nullable=False, server_default=sa.true()),
    # NULL once a one-off schedule fired, or while disabled.
    sa.Column("next_fire_at", UTCDateTime(), nullable=True),
    sa.Column("last_fired_at", UTCDateTime(), nullable=True),
    sa.Column("fire_count", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("last_command_id", sa.String(32), nullable=True),
    sa.Column("created_by", sa.String(200), nullable=False, server_default=""),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Index(None, "tenant_id", "device_pk"),
    sa.Index(None, "next_fire_at"),
)

commands = sa.Table(
    "commands",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column(
        "tenant_id", sa.String(64), sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column(
        "device_pk", sa.Integer(), sa.ForeignKey("devices.pk", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("params", Json, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("status_details", Json, nullable=True),
    sa.Column("result", Json, nullable=True),
    sa.Column("timeout_s", sa.Integer(), nullable=False),
    sa.Column("schedule_at", UTCDateTime(), nullable=True),
    sa.Column("expires_at", UTCDateTime(), nullable=True),
    sa.Column("due_at", UTCDateTime(), nullable=True),
    sa.Column(
        "schedule_id",
        sa.String(32),
        sa.ForeignKey("command_schedules.id", ondelete="SET NULL"),
        nullable=True,
    ),
    sa.Column("created_by", sa.String(200), nullable=False, server_default=""),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("sent_at", UTCDateTime(), nullable=True),
    sa.Column("delivered_at", UTCDateTime(), nullable=True),
    sa.Column("completed_at", UTCDateTime(), nullable=True),
    sa.Index(None, "device_pk", "status"),
    sa.Index(None, "device_pk", "created_at"),
    sa.Index(None, "due_at"),
    sa.Index(None, "schedule_id"),
    # Rules read commands as they reach a final status (roost.alarms.rules.feeds).
    sa.Index(None, "completed_at"),
)
