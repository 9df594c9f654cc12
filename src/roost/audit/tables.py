"""The audit log table."""

from __future__ import annotations

import sqlalchemy as sa

from roost.store.metadata import Json, UTCDateTime, metadata

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("tenant_id", sa.String(64), nullable=True),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("entity_type", sa.String(32), nullable=False),
    sa.Column("entity_id", sa.String(300), nullable=False),
    # Set for a device and everything under it (sensors, components, tags, group membership),
    # so a device's history is one indexed lookup.
    sa.Column("device_id", sa.String(128), nullable=True),
    sa.Column("before", Json, nullable=True),
    sa.Column("after", Json, nullable=True),
    sa.Index(None, "tenant_id", "at"),
    sa.Index(None, "tenant_id", "entity_type", "entity_id"),
    sa.Index(None, "tenant_id", "device_id"),
)
