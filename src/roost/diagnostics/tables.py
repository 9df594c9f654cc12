"""Tables of device diagnostics (issue 15); part of :data:`roost.store.metadata.metadata`.

``diagnostics`` has a row per archive a device uploaded: where its bytes are (``blob_key`` in the
blob store), their size and SHA-256, and what the device said of it (``note``, the
``command_id`` that asked for it). There is no foreign key to the device on purpose: a deleted
device's rows stay until :meth:`~roost.diagnostics.service.DiagnosticsService.device_deleted`
removes them *with their blobs* (a cascade would forget the blob keys); reads join on
``device_pk``, so a new device given the same id never sees them.
"""

from __future__ import annotations

import sqlalchemy as sa

from roost.store.metadata import UTCDateTime, metadata, tenant_fk

diagnostics = sa.Table(
    "diagnostics",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    tenant_fk(),
    sa.Column("device_pk", sa.Integer(), nullable=False),
    sa.Column("device_id", sa.String(128), nullable=False),
    sa.Column("size", sa.BigInteger(), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("content_type", sa.String(100), nullable=False),
    sa.Column("note", sa.String(500), nullable=True),
    sa.Column("command_id", sa.String(64), nullable=True),
    sa.Column("blob_key", sa.String(400), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Index(None, "tenant_id", "device_pk", "created_at"),
    sa.Index(None, "tenant_id", "device_id"),
)
