"""Tables of the APT repositories; part of :data:`roost.store.metadata.metadata`.

A tenant's repository is made of channels (``ota_apt_channels``: a name, the devices that see it),
each holding Debian-package artifacts published into it (``ota_apt_channel_packages``; the
package name, version and architecture are copied from the artifact at publish time so that a
channel never holds two different files for one (package, version, architecture)). The one
platform signing key is kept sealed in ``ota_apt_keys`` so that every Roost process of a
deployment signs with the same key.
"""

from __future__ import annotations

import sqlalchemy as sa

from roost.store.metadata import UTCDateTime, metadata, tenant_fk, timestamps

ota_apt_channels = sa.Table(
    "ota_apt_channels",
    metadata,
    tenant_fk(),
    # The suite/codename of the channel: dists/<name>/ in the repository.
    sa.Column("name", sa.String(64), nullable=False),
    # Who sees the channel: "all", "site:<site id>" or "group:<group id>".
    sa.Column("audience", sa.String(200), nullable=False),
    sa.Column("description", sa.Text(), nullable=False, server_default=""),
    sa.Column("created_by", sa.String(200), nullable=False),
    *timestamps(),
    sa.PrimaryKeyConstraint("tenant_id", "name"),
)

ota_apt_channel_packages = sa.Table(
    "ota_apt_channel_packages",
    metadata,
    sa.Column("tenant_id", sa.String(64), nullable=False),
    sa.Column("channel", sa.String(64), nullable=False),
    sa.Column("artifact_id", sa.String(128), nullable=False),
    sa.Column("package", sa.String(200), nullable=False),
    sa.Column("version", sa.String(200), nullable=False),
    sa.Column("architecture", sa.String(64), nullable=False),
    sa.Column("published_by", sa.String(200), nullable=False),
    sa.Column("published_at", UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint("tenant_id", "channel", "artifact_id"),
    sa.ForeignKeyConstraint(
        ["tenant_id", "channel"],
        ["ota_apt_channels.tenant_id", "ota_apt_channels.name"],
        name="fk_ota_apt_channel_packages_channel",
        ondelete="CASCADE",
    ),
    # One file per (package, version, architecture) in a channel: apt could not tell two apart.
    sa.UniqueConstraint(
        "tenant_id",
        "channel",
        "package",
        "version",
        "architecture",
        name="uq_ota_apt_channel_packages_package",
    ),
    # "Is this artifact published anywhere?" (an artifact in a channel cannot be deleted).
    sa.Index(None, "tenant_id", "artifact_id"),
)

ota_apt_keys = sa.Table(
    "ota_apt_keys",
    metadata,
    # "platform": one key signs every tenant's repositories (as the platform CA signs devices).
    sa.Column("id", sa.String(32), nullable=False),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    # The ASCII-armoured public key devices trust (GET /api/v1/apt/key.asc).
    sa.Column("public_key", sa.Text(), nullable=False),
    # The armoured secret key, AES-GCM sealed under the server's secret key (Base64).
    sa.Column("sealed_secret_key", sa.Text(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint("id"),
)
