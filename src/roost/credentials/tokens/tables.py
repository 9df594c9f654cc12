"""The table of device tokens (their secrets are never stored: a token is a signed JWT)."""

from __future__ import annotations

import sqlalchemy as sa

from roost.store.metadata import UTCDateTime, metadata, tenant_fk

device_tokens = sa.Table(
    "device_tokens",
    metadata,
    # The token's JWT id: a token names its row, so revoking it needs no lookup by secret.
    sa.Column("id", sa.String(32), primary_key=True),
    tenant_fk(),
    sa.Column(
        "device_pk", sa.Integer(), sa.ForeignKey("devices.pk", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("name", sa.String(200), nullable=False, server_default=""),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=True),
    sa.Column("revoked_at", UTCDateTime(), nullable=True),
    sa.Column("last_used_at", UTCDateTime(), nullable=True),
    sa.Index(None, "device_pk"),
    sa.Index(None, "revoked_at"),
)
