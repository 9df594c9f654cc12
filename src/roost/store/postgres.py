"""PostgreSQL backend (asyncpg): the scale-mode store shared by any number of Roost processes."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from roost.errors import ConfigError
from roost.store.database import Database, json_dumps

# Each Roost process holds at most this many connections (plus overflow for bursts), leaving
# room under PostgreSQL's default max_connections=100 for several processes and psql.
POOL_SIZE = 10
POOL_OVERFLOW = 10


class PostgresDatabase(Database):
    """PostgreSQL through asyncpg."""

    dialect = "postgresql"

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.async_url = to_asyncpg_url(url)
        self._engine_ = create_async_engine(
            self.async_url,
            json_serializer=json_dumps,
            pool_size=POOL_SIZE,
            max_overflow=POOL_OVERFLOW,
            pool_pre_ping=True,
        )

    def _engine(self) -> AsyncEngine:
        return self._engine_

    def _write_engine(self) -> AsyncEngine:
        return self._engine_

    async def refresh_statistics(self, tables: Sequence[str]) -> None:
        """ANALYZE the tables a bulk load filled (autovacuum would, but only minutes later)."""
        names = ", ".join(f'"{name}"' for name in tables)
        async with self.write() as conn:
            await conn.execute(sa.text(f"ANALYZE {names}"))

    def sync_url(self) -> str:
        return self.async_url


def to_asyncpg_url(url: str) -> str:
    """Rewrite ``postgresql://`` / ``postgres://`` into SQLAlchemy's asyncpg form."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ConfigError(f"expected postgresql://…, got {url!r}")
    if scheme in {"postgresql", "postgres", "postgresql+asyncpg"}:
        return f"postgresql+asyncpg://{rest}"
    raise ConfigError(f"unsupported PostgreSQL URL scheme {scheme!r}")
