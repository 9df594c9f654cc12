"""Tables of tenants, users and API keys."""

from __future__ import annotations

import sqlalchemy as sa

from roost.store.metadata import UTCDateTime, metadata, tenant_fk, timestamps

tenants = sa.Table(
    "tenants",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("description", sa.Text(), nullable=False, server_default=""),
    # Telemetry and events older than this many days are deleted; NULL keeps them forever.
    sa.Column("retention_days", sa.Integer(), nullable=True),
    *timestamps(),
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    tenant_fk(),
    sa.Column("username", sa.String(64), nullable=False, unique=True),
    sa.Column("password_hash", sa.String(255), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("is_superuser", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("disabled", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("last_login_at", UTCDateTime(), nullable=True),
    # Login tokens carry the epoch they were issued in; a password change or a logout moves the
    # user to the next epoch, and every older token is refused.
    sa.Column("session_epoch", sa.Integer(), nullable=False, server_default="0"),
    *timestamps(),
    sa.Index(None, "tenant_id"),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    tenant_fk(),
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
