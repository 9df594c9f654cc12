"""Tables of provisioning (issue 5); part of :data:`roost.store.metadata.metadata`.

Secrets that must be used to verify HMACs (device keys, enrollment group keys) are stored
encrypted (AES-GCM, :mod:`roost.provisioning.service`); attestation hashes are stored as the
SHA-256 of the hash, so a database dump cannot bootstrap a device.
"""

from __future__ import annotations

import sqlalchemy as sa

from roost.store.metadata import Json, UTCDateTime, metadata

device_keys = sa.Table(
    "device_keys",
    metadata,
    # ``key_…``: the key id is the credential id (SAS ``skn``, revocation, session closing).
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column(
        "tenant_id",
        sa.String(64),
        sa.ForeignKey("tenants.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column(
        "device_pk", sa.Integer(), sa.ForeignKey("devices.pk", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("name", sa.String(200), nullable=False, server_default=""),
    # 12-byte nonce + AES-GCM ciphertext and tag of the raw key bytes.
    sa.Column("secret", sa.LargeBinary(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("revoked_at", UTCDateTime(), nullable=True),
    sa.Index(None, "device_pk"),
    sa.Index(None, "revoked_at"),
)

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
