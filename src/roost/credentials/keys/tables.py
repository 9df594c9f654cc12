"""The table of device keys; part of :data:`roost.store.metadata.metadata`.

A key must be at hand to verify the HMAC of a SAS token, so it is stored encrypted (AES-GCM,
:class:`roost.credentials.keys.service.SecretBox`), never in the clear.
"""

from __future__ import annotations

import sqlalchemy as sa

from roost.store.metadata import UTCDateTime, metadata

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
