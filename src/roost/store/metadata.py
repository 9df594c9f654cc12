"""The one MetaData every room's tables are defined on, and the column types they share.

Each capability keeps its tables in its own ``tables.py`` (SQLAlchemy Core, one definition for
SQLite and PostgreSQL); :mod:`roost.runtime` imports them all, so the metadata is whole in a running
Roost and in the migration check. Rows of a tenant are keyed by ``(tenant_id, id)`` so that two
tenants may use the same slugs without learning of each other.
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


def tenant_fk() -> sa.Column[Any]:
    """The ``tenant_id`` column of a tenant's rows (deleted with the tenant)."""
    return sa.Column(
        "tenant_id",
        sa.String(64),
        sa.ForeignKey("tenants.id", ondelete="CASCADE"),
        nullable=False,
    )


def timestamps() -> list[sa.Column[Any]]:
    """``created_at`` and ``updated_at``."""
    return [
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    ]


system_settings = sa.Table(
    "system_settings",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text(), nullable=False),
)
