"""Tables of provisioning (issue 5); part of :data:`roost.store.metadata.metadata`.

An enrollment group key must be at hand to verify the HMAC of a registration, so it is stored
encrypted (AES-GCM, :class:`roost.credentials.keys.service.SecretBox`); attestation hashes are
stored as the SHA-256 of the hash, so a database dump cannot bootstrap a device. (Device keys
live in :mod:`roost.credentials.keys.tables`.)
"""

from __future__ import annotations

import sqlalchemy as sa

from roost.store.metadata import Json, UTCDateTime, metadata

enrollments = sa.Table(
    "enrollments",
    metadata,
    # Unique across tenants: a registering device names its enrollment and nothing else.
    sa.Column("id", sa.String(128), primary_key=True),
    sa.Column(
        "tenant_id",
        sa.String(64),
        sa.ForeignKey("tenants.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("secret", sa.LargeBinary(), nullable=False),
    sa.Column("site_id", sa.String(128), nullable=True),
    sa.Column("group_ids", Json, nullable=False),
    sa.Column("tags", Json, nullable=False),
    sa.Column("enabled", sa.Boolean(), nullable=False, server_default=sa.true()),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Index(None, "tenant_id"),
)

attestation_hashes = sa.Table(
    "attestation_hashes",
    metadata,
    # SHA-256 (hex) of the uploaded hash: unique across tenants, the bootstrap finds the tenant.
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column(
        "tenant_id",
        sa.String(64),
        sa.ForeignKey("tenants.id", ondelete="CASCADE"),
        nullable=False,
    ),
    # The first characters of the hash, so an operator can tell entries apart.
    sa.Column("hint", sa.String(8), nullable=False),
    sa.Column("site_id", sa.String(128), nullable=True),
    sa.Column("group_ids", Json, nullable=False),
    sa.Column("tags", Json, nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("used_at", UTCDateTime(), nullable=True),
    sa.Column("device_id", sa.String(128), nullable=True),
    sa.Index(None, "tenant_id", "created_at"),
)
