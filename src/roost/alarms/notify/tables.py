"""Tables of notifications (issue 13); part of :data:`roost.store.metadata.metadata`.

Everything the dispatcher knows lives here, so a restarted process resumes where the last one
stopped: ``notification_groups`` holds each group's next flush time (``next_flush_at``),
``notification_alerts`` the latest state of every alarm in a group and what was last sent of
it, ``notifications`` the outbox and delivery log (``due_at``: when the dispatcher next looks
at a row: a queued row's next attempt, a row being sent the end of its sender's lease).
"""

from __future__ import annotations

import sqlalchemy as sa

from roost.store.metadata import Json, UTCDateTime, metadata, tenant_fk, timestamps

notification_channels = sa.Table(
    "notification_channels",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    tenant_fk(),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    # Kind-specific settings without secrets (addresses, URL, headers, templates).
    sa.Column("config", Json, nullable=False),
    # The webhook secret, AES-GCM sealed under the server's secret key (never sent back).
    sa.Column("sealed_secret", sa.LargeBinary(), nullable=True),
    sa.Column("group_by", Json, nullable=False),
    sa.Column("group_wait_s", sa.Float(), nullable=False),
    sa.Column("group_interval_s", sa.Float(), nullable=False),
    sa.Column("repeat_interval_s", sa.Float(), nullable=False),
    sa.Column("send_resolved", sa.Boolean(), nullable=False),
    sa.Column("max_attempts", sa.Integer(), nullable=False),
    sa.Column("enabled", sa.Boolean(), nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    *timestamps(),
    sa.UniqueConstraint("tenant_id", "name"),
)

notification_groups = sa.Table(
    "notification_groups",
    metadata,
    sa.Column("pk", sa.Integer(), primary_key=True, autoincrement=True),
    tenant_fk(),
    sa.Column(
        "channel_id",
        sa.String(32),
        sa.ForeignKey("notification_channels.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("group_key", sa.String(64), nullable=False),
    sa.Column("labels", Json, nullable=False),
    # When the group is next looked at; NULL never stays long (a group without alerts is deleted).
    sa.Column("next_flush_at", UTCDateTime(), nullable=True),
    sa.Column("last_sent_at", UTCDateTime(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.UniqueConstraint("channel_id", "group_key"),
    sa.Index(None, "next_flush_at"),
)

notification_alerts = sa.Table(
    "notification_alerts",
    metadata,
    sa.Column("pk", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column(
        "group_pk",
        sa.Integer(),
        sa.ForeignKey("notification_groups.pk", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("channel_id", sa.String(32), nullable=False),
    sa.Column("alarm_id", sa.BigInteger(), nullable=False),
    sa.Column("type", sa.String(128), nullable=False),
    sa.Column("device_id", sa.String(128), nullable=False),
    sa.Column("site_id", sa.String(128), nullable=True),
    sa.Column("group_ids", Json, nullable=False),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("summary", sa.Text(), nullable=False),
    sa.Column("details", Json, nullable=False),
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("ended_at", UTCDateTime(), nullable=True),
    sa.Column("rule_id", sa.String(64), nullable=True),
    # The status last put in a message to this channel (NULL: never sent).
    sa.Column("sent_status", sa.String(16), nullable=True),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.UniqueConstraint("channel_id", "alarm_id"),
    sa.Index(None, "group_pk"),
)

notifications = sa.Table(
    "notifications",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    tenant_fk(),
    # No foreign key: the log outlives a deleted channel (its queued messages then fail).
    sa.Column("channel_id", sa.String(32), nullable=False),
    sa.Column("channel_name", sa.String(128), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("group_labels", Json, nullable=False),
    sa.Column("alarm_ids", Json, nullable=False),
    sa.Column("firing", sa.Integer(), nullable=False),
    sa.Column("resolved", sa.Integer(), nullable=False),
    sa.Column("subject", sa.Text(), nullable=False),
    # What is sent, rendered when the group was flushed (retries send the same message).
    sa.Column("payload", Json, nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("max_attempts", sa.Integer(), nullable=False),
    sa.Column("last_error", sa.Text(), nullable=True),
    # Every attempt: {"attempt", "at", "error"} (error null for the one that delivered).
    sa.Column("attempt_log", Json, nullable=False),
    sa.Column("due_at", UTCDateTime(), nullable=True),
    sa.Column("delivered_at", UTCDateTime(), nullable=True),
    *timestamps(),
    sa.Index(None, "tenant_id", "created_at"),
    sa.Index(None, "due_at"),
)

silences = sa.Table(
    "silences",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    tenant_fk(),
    # Label → value, all of which must hold for an alert to be silenced.
    sa.Column("matchers", Json, nullable=False),
    sa.Column("starts_at", UTCDateTime(), nullable=False),
    sa.Column("ends_at", UTCDateTime(), nullable=False),
    sa.Column("comment", sa.Text(), nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    *timestamps(),
    sa.Index(None, "tenant_id", "ends_at"),
)
