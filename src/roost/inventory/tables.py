"""Tables of the inventory: customers, sites, manufacturers, models, firmware, groups, devices.

Devices and sensors also carry an integer surrogate ``pk``: it keeps the foreign keys of
per-device tables and the time-series rows small.
"""

from __future__ import annotations

import sqlalchemy as sa

from roost.store.metadata import Json, UTCDateTime, metadata, tenant_fk, timestamps

customers = sa.Table(
    "customers",
    metadata,
    tenant_fk(),
    sa.Column("id", sa.String(128), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("contact_email", sa.String(320), nullable=True),
    sa.Column("notes", sa.Text(), nullable=False, server_default=""),
    *timestamps(),
    sa.PrimaryKeyConstraint("tenant_id", "id"),
)

sites = sa.Table(
    "sites",
    metadata,
    tenant_fk(),
    sa.Column("id", sa.String(128), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("customer_id", sa.String(128), nullable=True),
    sa.Column("address", sa.Text(), nullable=False, server_default=""),
    sa.Column("city", sa.String(200), nullable=False, server_default=""),
    sa.Column("postal_code", sa.String(32), nullable=False, server_default=""),
    sa.Column("country", sa.String(2), nullable=True),
    sa.Column("timezone", sa.String(64), nullable=False, server_default="UTC"),
    sa.Column("latitude", sa.Float(), nullable=True),
    sa.Column("longitude", sa.Float(), nullable=True),
    sa.Column("notes", sa.Text(), nullable=False, server_default=""),
    *timestamps(),
    sa.PrimaryKeyConstraint("tenant_id", "id"),
    sa.ForeignKeyConstraint(["tenant_id", "customer_id"], ["customers.tenant_id", "customers.id"]),
    sa.Index(None, "tenant_id", "customer_id"),
)

manufacturers = sa.Table(
    "manufacturers",
    metadata,
    tenant_fk(),
    sa.Column("id", sa.String(128), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("website", sa.String(500), nullable=True),
    sa.Column("notes", sa.Text(), nullable=False, server_default=""),
    *timestamps(),
    sa.PrimaryKeyConstraint("tenant_id", "id"),
)

device_models = sa.Table(
    "device_models",
    metadata,
    tenant_fk(),
    sa.Column("id", sa.String(128), nullable=False),
    sa.Column("reference", sa.String(64), nullable=False),
    sa.Column("commercial_name", sa.String(200), nullable=False),
    sa.Column("manufacturer_id", sa.String(128), nullable=True),
    sa.Column("family", sa.String(128), nullable=False, server_default=""),
    sa.Column("description", sa.Text(), nullable=False, server_default=""),
    sa.Column("heartbeat_interval_s", sa.Integer(), nullable=True),
    sa.Column("auto_create_sensors", sa.Boolean(), nullable=False, server_default=sa.true()),
    *timestamps(),
    sa.PrimaryKeyConstraint("tenant_id", "id"),
    sa.ForeignKeyConstraint(
        ["tenant_id", "manufacturer_id"], ["manufacturers.tenant_id", "manufacturers.id"]
    ),
    sa.Index(None, "tenant_id", "manufacturer_id"),
)

firmware = sa.Table(
    "firmware",
    metadata,
    tenant_fk(),
    sa.Column("id", sa.String(128), nullable=False),
    sa.Column("version", sa.String(64), nullable=False),
    sa.Column("model_id", sa.String(128), nullable=True),
    sa.Column("release_notes", sa.Text(), nullable=False, server_default=""),
    sa.Column("released_at", UTCDateTime(), nullable=True),
    *timestamps(),
    sa.PrimaryKeyConstraint("tenant_id", "id"),
    sa.ForeignKeyConstraint(
        ["tenant_id", "model_id"], ["device_models.tenant_id", "device_models.id"]
    ),
    sa.Index(None, "tenant_id", "model_id"),
)

groups = sa.Table(
    "groups",
    metadata,
    tenant_fk(),
    sa.Column("id", sa.String(128), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("description", sa.Text(), nullable=False, server_default=""),
    # A dynamic group's membership rule ({site_id, model_id, firmware_id, customer_id, tags});
    # NULL for a static group whose members are listed in group_members.
    sa.Column("filter", Json, nullable=True),
    *timestamps(),
    sa.PrimaryKeyConstraint("tenant_id", "id"),
)

devices = sa.Table(
    "devices",
    metadata,
    sa.Column("pk", sa.Integer(), primary_key=True, autoincrement=True),
    tenant_fk(),
    sa.Column("id", sa.String(128), nullable=False),
    sa.Column("name", sa.String(200), nullable=False, server_default=""),
    sa.Column("description", sa.Text(), nullable=False, server_default=""),
    sa.Column("model_id", sa.String(128), nullable=True),
    sa.Column("site_id", sa.String(128), nullable=True),
    sa.Column("firmware_id", sa.String(128), nullable=True),
    sa.Column("customer_id", sa.String(128), nullable=True),
    sa.Column("notes", sa.Text(), nullable=False, server_default=""),
    sa.Column("last_seen_at", UTCDateTime(), nullable=True),
    # Presence (roost.presence.service): expected seconds between heartbeats (overrides the
    # model's), the derived status and since when, live connections, when a silent device turns
    # offline (the sweeper's timer), and the median clock skew (device ahead of server, ms).
    sa.Column("heartbeat_interval_s", sa.Integer(), nullable=True),
    sa.Column("presence", sa.String(16), nullable=False, server_default="never_seen"),
    sa.Column("presence_since", UTCDateTime(), nullable=True),
    sa.Column("connections", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("offline_due_at", UTCDateTime(), nullable=True),
    sa.Column("clock_skew_ms", sa.Integer(), nullable=True),
    *timestamps(),
    sa.UniqueConstraint("tenant_id", "id"),
    sa.ForeignKeyConstraint(
        ["tenant_id", "model_id"], ["device_models.tenant_id", "device_models.id"]
    ),
    sa.ForeignKeyConstraint(["tenant_id", "site_id"], ["sites.tenant_id", "sites.id"]),
    sa.ForeignKeyConstraint(["tenant_id", "firmware_id"], ["firmware.tenant_id", "firmware.id"]),
    sa.ForeignKeyConstraint(["tenant_id", "customer_id"], ["customers.tenant_id", "customers.id"]),
    sa.Index(None, "tenant_id", "site_id"),
    sa.Index(None, "tenant_id", "model_id"),
    sa.Index(None, "tenant_id", "firmware_id"),
    sa.Index(None, "tenant_id", "customer_id"),
    sa.Index(None, "tenant_id", "presence"),
    sa.Index(None, "offline_due_at"),
    # Never reuse a deleted device's key (SQLite would): tokens and stored data name it.
    sqlite_autoincrement=True,
)

device_tags = sa.Table(
    "device_tags",
    metadata,
    sa.Column(
        "device_pk", sa.Integer(), sa.ForeignKey("devices.pk", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("key", sa.String(128), nullable=False),
    sa.Column("value", sa.String(256), nullable=False),
    sa.PrimaryKeyConstraint("device_pk", "key"),
    sa.Index(None, "key", "value"),
)

group_members = sa.Table(
    "group_members",
    metadata,
    sa.Column("tenant_id", sa.String(64), nullable=False),
    sa.Column("group_id", sa.String(128), nullable=False),
    sa.Column(
        "device_pk", sa.Integer(), sa.ForeignKey("devices.pk", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("added_at", UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint("tenant_id", "group_id", "device_pk"),
    sa.ForeignKeyConstraint(
        ["tenant_id", "group_id"], ["groups.tenant_id", "groups.id"], ondelete="CASCADE"
    ),
    sa.Index(None, "device_pk"),
)

components = sa.Table(
    "components",
    metadata,
    sa.Column(
        "device_pk", sa.Integer(), sa.ForeignKey("devices.pk", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("id", sa.String(128), nullable=False),
    sa.Column("parent_id", sa.String(128), nullable=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("kind", sa.String(64), nullable=False, server_default=""),
    sa.Column("serial_number", sa.String(128), nullable=True),
    sa.Column("mac_address", sa.String(17), nullable=True),
    sa.Column("manufacturer", sa.String(200), nullable=False, server_default=""),
    sa.Column("notes", sa.Text(), nullable=False, server_default=""),
    *timestamps(),
    sa.PrimaryKeyConstraint("device_pk", "id"),
    sa.ForeignKeyConstraint(
        ["device_pk", "parent_id"], ["components.device_pk", "components.id"], ondelete="CASCADE"
    ),
    sa.Index(None, "serial_number"),
    sa.Index(None, "mac_address"),
)

sensors = sa.Table(
    "sensors",
    metadata,
    sa.Column("pk", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column(
        "device_pk", sa.Integer(), sa.ForeignKey("devices.pk", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("id", sa.String(128), nullable=False),
    sa.Column("path", sa.String(500), nullable=False, server_default=""),
    sa.Column("name", sa.String(200), nullable=False, server_default=""),
    sa.Column("type", sa.String(16), nullable=False),
    sa.Column("unit", sa.String(32), nullable=False, server_default=""),
    sa.Column("description", sa.Text(), nullable=False, server_default=""),
    *timestamps(),
    sa.UniqueConstraint("device_pk", "id"),
    # Never reuse a deleted sensor's key: its stored points are keyed by it.
    sqlite_autoincrement=True,
)
