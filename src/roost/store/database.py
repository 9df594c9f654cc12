"""The database port: connections for reading and transactions for writing.

Services and repositories speak SQLAlchemy Core, which renders the same statements for SQLite and
PostgreSQL; what differs between the two (connection set-up, write serialisation, driver errors)
lives in a backend (``store/sqlite.py``, ``store/postgres.py``) chosen by the URL's scheme.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from roost.errors import ConfigError, Conflict, InvalidInput, Unavailable


def json_dumps(value: Any) -> str:
    """Serialise JSON columns with orjson (fast, and datetimes as RFC 3339)."""
    return orjson.dumps(value).decode()


class Database(abc.ABC):
    """A relational store reachable through SQLAlchemy's async engine."""

    dialect: str

    def __init__(self, url: str) -> None:
        self.url = url

    @abc.abstractmethod
    def _engine(self) -> AsyncEngine:
        """The engine that serves reads."""

    @abc.abstractmethod
    def _write_engine(self) -> AsyncEngine:
        """The engine that serves write transactions."""

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A connection for queries; nothing written through it is committed."""
        try:
            async with self._engine().connect() as conn:
                yield conn
        except sa_exc.OperationalError as exc:
            raise Unavailable(f"database unavailable: {exc.orig}") from exc

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A transaction, committed when the block exits normally and rolled back otherwise."""
        try:
            async with self._write_engine().begin() as conn:
                yield conn
        except sa_exc.IntegrityError as exc:
            raise translate_integrity_error(exc) from exc
        except sa_exc.OperationalError as exc:
            raise Unavailable(f"database unavailable: {exc.orig}") from exc

    async def ping(self) -> None:
        """Raise Unavailable unless a trivial query succeeds."""
        async with self.read() as conn:
            await conn.execute(sa.text("SELECT 1"))

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self._engine().dispose()
        if self._write_engine() is not self._engine():
            await self._write_engine().dispose()

    @abc.abstractmethod
    def sync_url(self) -> str:
        """A SQLAlchemy URL for this database using the async driver (for Alembic)."""


def translate_integrity_error(exc: sa_exc.IntegrityError) -> Exception:
    """Map a driver's constraint violation onto Conflict (duplicates) or InvalidInput."""
    message = str(exc.orig).lower()
    if "unique" in message or "duplicate" in message:
        return Conflict("a record with this id already exists")
    if "foreign key" in message:
        return Conflict("the record is still referenced, or refers to a missing record")
    if "not null" in message or "null value" in message:
        return InvalidInput("a required field is missing")
    return Conflict(f"constraint violated: {exc.orig}")


def open_database(url: str, *, sqlite_synchronous: str = "NORMAL") -> Database:
    """Open the backend named by the URL's scheme: ``sqlite:///path`` or ``postgresql://…``."""
    scheme = url.split(":", 1)[0].lower()
    if scheme.startswith("sqlite"):
        from roost.store.sqlite import SQLiteDatabase

        return SQLiteDatabase(url, synchronous=sqlite_synchronous)
    if scheme.startswith("postgres"):
        from roost.store.postgres import PostgresDatabase

        return PostgresDatabase(url)
    raise ConfigError(f"unsupported database URL scheme {scheme!r}: use sqlite:/// or postgresql://")
