"""Tables of certificates (issue 5); part of :data:`roost.store.metadata.metadata`.

``certificate_authorities`` holds the platform CA when Roost made it: the certificate, and the
private key sealed with AES-GCM under a key derived from the secret key (so a database dump alone
cannot sign). In the database rather than the data dir because processes of a scale deployment
share one database but not always one disk. An operator's own CA (``ROOST_CA_CERT_FILE``) is read
from its files and never stored.

``device_certificates`` has a row per issued certificate (the certificate itself is public; a
generated private key is never stored). Rows are found by fingerprint when a device connects.
"""

from __future__ import annotations

import sqlalchemy as sa

from roost.store.metadata import UTCDateTime, metadata

certificate_authorities = sa.Table(
    "certificate_authorities",
    metadata,
    # One row today ("platform"); keyed so that a rotated CA can stand beside the old one.
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("certificate", sa.Text(), nullable=False),
    sa.Column("sealed_key", sa.Text(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)

device_certificates = sa.Table(
    "device_certificates",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column(
        "tenant_id", sa.String(64), sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column(
        "device_pk", sa.Integer(), sa.ForeignKey("devices.pk", ondelete="CASCADE"), nullable=False
    ),
    # Hexadecimal: random serials have up to 159 bits.
    sa.Column("serial", sa.String(48), nullable=False),
    sa.Column("fingerprint", sa.String(64), nullable=False, unique=True),
    sa.Column("certificate", sa.Text(), nullable=False),
    # True when Roost generated the key pair (and handed out the private key once).
    sa.Column("key_generated", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("not_before", UTCDateTime(), nullable=False),
    sa.Column("not_after", UTCDateTime(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("revoked_at", UTCDateTime(), nullable=True),
    sa.Index(None, "device_pk"),
    sa.Index(None, "revoked_at"),
)
