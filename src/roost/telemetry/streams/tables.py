"""The table of consumer groups and their committed offsets."""

from __future__ import annotations

import sqlalchemy as sa

from roost.store.metadata import UTCDateTime, metadata, tenant_fk

consumer_groups = sa.Table(
    "consumer_groups",
    metadata,
    tenant_fk(),
    sa.Column("id", sa.String(128), nullable=False),
    # Every item at or below this offset of the ingest log is consumed.
    sa.Column("committed_offset", sa.BigInteger(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint("tenant_id", "id"),
)
