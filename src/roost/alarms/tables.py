"""Tables of alarms (issue 13); part of :data:`roost.store.metadata.metadata`.

One row per alarm. While an alarm is active its ``open_key`` holds ``<device pk>:<type>``, unique
within the tenant, so that a device has at most one open alarm of a type: a repeat increases
``count`` on that row instead of opening another. Clearing sets ``open_key`` to NULL (NULLs do not
collide), and the next occurrence opens a new alarm.
"""

from __future__ import annotations

import sqlalchemy as sa

from roost.store.metadata import Json, UTCDateTime, metadata

# A 64-bit key that is the rowid on SQLite.
_ROW_KEY = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

alarms = sa.Table(
    "alarms",
    metadata,
    sa.Column("id", _ROW_KEY, primary_key=True, autoincrement=True),
    sa.Column(
        "tenant_id", sa.String(64), sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column(
        "device_pk", sa.Integer(), sa.ForeignKey("devices.pk", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("device_id", sa.String(128), nullable=False),
    sa.Column("type", sa.String(128), nullable=False),
    sa.Column("rule_id", sa.String(128), nullable=True),
    sa.Column("severity", sa.String(16), nullable=False),
    # active | cleared
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("open_key", sa.String(160), nullable=True),
    sa.Column("acknowledged", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("acked_by", sa.String(128), nullable=True),
    sa.Column("acked_at", UTCDateTime(), nullable=True),
    sa.Column("cleared_by", sa.String(128), nullable=True),
    sa.Column("summary", sa.Text(), nullable=False, server_default=""),
    sa.Column("details", Json, nullable=True),
    sa.Column("count", sa.Integer(), nullable=False, server_default="1"),
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("last_at", UTCDateTime(), nullable=False),
    sa.Column("ended_at", UTCDateTime(), nullable=True),
    sa.UniqueConstraint("tenant_id", "open_key"),
    sa.Index(None, "tenant_id", "status", "severity"),
    sa.Index(None, "device_pk", "started_at"),
    sa.Index(None, "ended_at"),
)
