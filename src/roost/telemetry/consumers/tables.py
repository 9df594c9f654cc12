"""Tables of consumers (issue 5); part of :data:`roost.store.metadata.metadata`."""

from __future__ import annotations

import sqlalchemy as sa

from roost.store.metadata import Json, UTCDateTime, metadata

consumers = sa.Table(
    "consumers",
    metadata,
    sa.Column(
        "tenant_id",
        sa.String(64),
        sa.ForeignKey("tenants.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("id", sa.String(128), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    # The API form of the grants (roost.core.access.Grants.to_json).
    sa.Column("grants", Json, nullable=False),
    # The current key: its id in the clear (to find the row), a keyed hash of its secret.
    sa.Column("key_id", sa.String(32), nullable=False, unique=True),
    sa.Column("secret_hash", sa.String(128), nullable=False),
    sa.Column("key_created_at", UTCDateTime(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint("tenant_id", "id"),
)
