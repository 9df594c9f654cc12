"""The relational schema, one definition for SQLite and PostgreSQL (SQLAlchemy Core).

Inventory rows are keyed by ``(tenant_id, id)`` so that two tenants may use the same slugs without
learning of each other. Devices and sensors also carry an integer surrogate ``pk``: it keeps the
foreign keys of per-device tables and, later, time-series rows small.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
    }
)


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """A timestamp stored as UTC and always read back timezone-aware (SQLite keeps no zone)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


Json = sa.JSON().with_variant(JSONB(), "postgresql")


def _tenant_fk() -> sa.Column[Any]:
    return sa.Column(
        "tenant_id",
        sa.String(64),
        sa.ForeignKey("tenants.id", ondelete="CASCADE"),
        nullable=False,
    )


def _timestamps() -> list[sa.Column[Any]]:
    return [
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    ]


tenants = sa.Table(
    "tenants",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("description", sa.Text(), nullable=False, server_default=""),
    # Telemetry and events older than this many days are deleted; NULL keeps them forever.
    sa.Column("retention_days", sa.Integer(), nullable=True),
    *_timestamps(),
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    _tenant_fk(),
    sa.Column("username", sa.String(64), nullable=False, unique=True),
    sa.Column("password_hash", sa.String(255), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("is_superuser", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("disabled", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("last_login_at", UTCDateTime(), nullable=True),
    # Login tokens carry the epoch they were issued in; a password change or a logout moves the
    # user to the next epoch, and every older token is refused.
    sa.Column("session_epoch", sa.Integer(), nullable=False, server_default="0"),
    *_timestamps(),
    sa.Index(None, "tenant_id"),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    _tenant_fk(),
    sa.Column(
        "user_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("secret_hash", sa.String(128), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=True),
    sa.Column("revoked_at", UTCDateTime(), nullable=True),
    sa.Column("last_used_at", UTCDateTime(), nullable=True),
    sa.Index(None, "tenant_id"),
    sa.Index(None, "user_id"),
)

customers = sa.Table(
    "customers",
    metadata,
    _tenant_fk(),
    sa.Column("id", sa.String(128), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("contact_email", sa.String(320), nullable=True),
    sa.Column("notes", sa.Text(), nullable=False, server_default=""),
    *_timestamps(),
    sa.PrimaryKeyConstraint("tenant_id", "id"),
)

sites = sa.Table(
    "sites",
    metadata,
    _tenant_fk(),
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
    *_timestamps(),
    sa.PrimaryKeyConstraint("tenant_id", "id"),
    sa.ForeignKeyConstraint(["tenant_id", "customer_id"], ["customers.tenant_id", "customers.id"]),
    sa.Index(None, "tenant_id", "customer_id"),
)

manufacturers = sa.Table(
    "manufacturers",
    metadata,
    _tenant_fk(),
    sa.Column("id", sa.String(128), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("website", sa.String(500), nullable=True),
    sa.Column("notes", sa.Text(), nullable=False, server_default=""),
    *_timestamps(),
    sa.PrimaryKeyConstraint("tenant_id", "id"),
)

device_models = sa.Table(
    "device_models",
    metadata,
    _tenant_fk(),
    sa.Column("id", sa.String(128), nullable=False),
    sa.Column("reference", sa.String(64), nullable=False),
    sa.Column("commercial_name", sa.String(200), nullable=False),
    sa.Column("manufacturer_id", sa.String(128), nullable=True),
    sa.Column("family", sa.String(128), nullable=False, server_default=""),
    sa.Column("description", sa.Text(), nullable=False, server_default=""),
    sa.Column("heartbeat_interval_s", sa.Integer(), nullable=True),
    sa.Column("auto_create_sensors", sa.Boolean(), nullable=False, server_default=sa.true()),
    *_timestamps(),
    sa.PrimaryKeyConstraint("tenant_id", "id"),
    sa.ForeignKeyConstraint(
        ["tenant_id", "manufacturer_id"], ["manufacturers.tenant_id", "manufacturers.id"]
    ),
    sa.Index(None, "tenant_id", "manufacturer_id"),
)

firmware = sa.Table(
    "firmware",
    metadata,
    _tenant_fk(),
    sa.Column("id", sa.String(128), nullable=False),
    sa.Column("version", sa.String(64), nullable=False),
    sa.Column("model_id", sa.String(128), nullable=True),
    sa.Column("release_notes", sa.Text(), nullable=False, server_default=""),
    sa.Column("released_at", UTCDateTime(), nullable=True),
    *_timestamps(),
    sa.PrimaryKeyConstraint("tenant_id", "id"),
    sa.ForeignKeyConstraint(
        ["tenant_id", "model_id"], ["device_models.tenant_id", "device_models.id"]
    ),
    sa.Index(None, "tenant_id", "model_id"),
)

groups = sa.Table(
    "groups",
    metadata,
    _tenant_fk(),
    sa.Column("id", sa.String(128), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("description", sa.Text(), nullable=False, server_default=""),
    # A dynamic group's membership rule ({site_id, model_id, firmware_id, customer_id, tags});
    # NULL for a static group whose members are listed in group_members.
    sa.Column("filter", Json, nullable=True),
    *_timestamps(),
    sa.PrimaryKeyConstraint("tenant_id", "id"),
)

devices = sa.Table(
    "devices",
    metadata,
    sa.Column("pk", sa.Integer(), primary_key=True, autoincrement=True),
    _tenant_fk(),
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
    *_timestamps(),
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
    *_timestamps(),
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
    *_timestamps(),
    sa.UniqueConstraint("device_pk", "id"),
    # Never reuse a deleted sensor's key: its stored points are keyed by it.
    sqlite_autoincrement=True,
)

device_tokens = sa.Table(
    "device_tokens",
    metadata,
    # The token's JWT id: a token names its row, so revoking it needs no lookup by secret.
    sa.Column("id", sa.String(32), primary_key=True),
    _tenant_fk(),
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

consumer_groups = sa.Table(
    "consumer_groups",
    metadata,
    _tenant_fk(),
    sa.Column("id", sa.String(128), nullable=False),
    # Every item at or below this offset of the ingest log is consumed.
    sa.Column("committed_offset", sa.BigInteger(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint("tenant_id", "id"),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("tenant_id", sa.String(64), nullable=True),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("entity_type", sa.String(32), nullable=False),
    sa.Column("entity_id", sa.String(300), nullable=False),
    # Set for a device and everything under it (sensors, components, tags, group membership),
    # so a device's history is one indexed lookup.
    sa.Column("device_id", sa.String(128), nullable=True),
    sa.Column("before", Json, nullable=True),
    sa.Column("after", Json, nullable=True),
    sa.Index(None, "tenant_id", "at"),
    sa.Index(None, "tenant_id", "entity_type", "entity_id"),
    sa.Index(None, "tenant_id", "device_id"),
)

system_settings = sa.Table(
    "system_settings",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text(), nullable=False),
)

# The time-series tables (telemetry) live beside their engine; importing registers them here.
import roost.commands.tables  # noqa: E402
import roost.credentials.certificates.tables  # noqa: E402
import roost.jobs.tables  # noqa: E402
import roost.presence.tables  # noqa: E402
import roost.provisioning.tables  # noqa: E402
import roost.state.tables  # noqa: E402
import roost.telemetry.consumers.tables  # noqa: E402
import roost.telemetry.engine.tables  # noqa: E402,F401
