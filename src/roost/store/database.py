"""The database port: connections for reading and transactions for writing.

Services and repositories speak SQLAlchemy Core, which renders the same statements for SQLite and
PostgreSQL; what differs between the two (connection set-up, write serialisation, driver errors)
lives in a backend (``store/sqlite.py``, ``store/postgres.py``) chosen by the URL's scheme.
"""

from __future__ import annotations

import abc
import asyncio
import math
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from roost.errors import ConfigError, Conflict, InvalidInput, Unavailable

# /readyz is public, so anyone may poll it: its write probe (a commit, hence an fsync) runs at most
# this often and its answer is reused meanwhile. A second old is fresh for a load balancer or an
# orchestrator polling every few seconds.
WRITABLE_CHECK_INTERVAL_S = 1.0
# The write probe rewrites the one row of the migrations' version table (Alembic's default name):
# every migrated Roost database has it and it belongs to the store, so the probe needs no table
# (and no migration) of its own. An UPDATE to the same value is still a real write on both
# databases (a WAL frame in SQLite, a new row version and WAL record in PostgreSQL).
_WRITE_PROBE = "UPDATE alembic_version SET version_num = version_num"
# A full disk: SQLite's SQLITE_FULL result code, PostgreSQL's SQLSTATE disk_full.
_SQLITE_FULL = 13
_PG_DISK_FULL = "53100"


def json_dumps(value: Any) -> str:
    """Serialise JSON columns with orjson (fast, and datetimes as RFC 3339)."""
    return orjson.dumps(value).decode()


class Database(abc.ABC):
    """A relational store reachable through SQLAlchemy's async engine."""

    dialect: str

    def __init__(self, url: str) -> None:
        self.url = url
        self._writable_lock = asyncio.Lock()
        self._writable_checked_at = -math.inf
        self._writable_problem: str | None = None

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
        except _DRIVER_ERRORS as exc:
            raise translate_database_error(exc, self.dialect) from exc

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A transaction, committed when the block exits normally and rolled back otherwise."""
        try:
            async with self._write_engine().begin() as conn:
                yield conn
        except _DRIVER_ERRORS as exc:
            raise translate_database_error(exc, self.dialect) from exc

    async def ping(self) -> None:
        """Raise Unavailable unless a trivial query succeeds."""
        async with self.read() as conn:
            await conn.execute(sa.text("SELECT 1"))

    async def check_writable(self) -> None:
        """Raise Unavailable unless the store can take writes now (probed at most once a second).

        Reads can go on when writes cannot (a full disk), so readiness asks this beside ping.
        Concurrent callers share one probe.
        """
        async with self._writable_lock:
            if time.monotonic() - self._writable_checked_at >= WRITABLE_CHECK_INTERVAL_S:
                try:
                    await self._probe_write()
                except Unavailable as exc:
                    self._writable_problem = exc.detail
                else:
                    self._writable_problem = None
                self._writable_checked_at = time.monotonic()
            problem = self._writable_problem
        if problem is not None:
            raise Unavailable(f"the store cannot write: {problem}")

    async def _probe_write(self) -> None:
        """Commit a one-row write: it needs what every write needs (space, the lock, a primary)."""
        async with self.write() as conn:
            await conn.execute(sa.text(_WRITE_PROBE))

    @abc.abstractmethod
    async def refresh_statistics(self, tables: Sequence[str]) -> None:
        """Bring the planner's statistics up to date after a bulk load into ``tables``.

        Without it PostgreSQL plans the next queries on those tables for the empty tables they
        were before the load (seen: an export of 20k devices took 26 s instead of 1.7 s).
        """

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self._engine().dispose()
        if self._write_engine() is not self._engine():
            await self._write_engine().dispose()

    @abc.abstractmethod
    def sync_url(self) -> str:
        """A SQLAlchemy URL for this database using the async driver (for Alembic)."""


# What the drivers raise that callers must never see raw: SQLAlchemy's wrappers of DB-API errors,
# its pool timeout, and OS errors of a connection attempt (refused, unreachable).
_DRIVER_ERRORS = (sa_exc.DBAPIError, sa_exc.TimeoutError, OSError)


def translate_database_error(exc: BaseException, dialect: str = "") -> Exception:
    """Map a driver error onto the Roost error a client should see."""
    if isinstance(exc, sa_exc.IntegrityError):
        return translate_integrity_error(exc)
    if isinstance(exc, sa_exc.TimeoutError):
        return Unavailable("the database is busy; retry shortly", retry_after=2)
    if isinstance(exc, sa_exc.DBAPIError):
        first_line = str(exc.orig).splitlines()[0] if str(exc.orig) else type(exc.orig).__name__
        sqlstate = str(getattr(exc.orig, "sqlstate", None) or "")
        # SQLSTATE class 22 (PostgreSQL): a value that cannot be stored or compared, e.g. a NUL
        # character or an out-of-range number that slipped past validation: the client's fault.
        if isinstance(exc, sa_exc.DataError) or sqlstate.startswith("22"):
            return InvalidInput(f"a value cannot be stored or compared: {first_line}")
        name = dialect or "configured"
        if sqlstate == _PG_DISK_FULL or getattr(exc.orig, "sqlite_errorcode", None) == _SQLITE_FULL:
            return Unavailable(f"the {name} database's disk is full: {first_line}")
        return Unavailable(f"cannot reach the {name} database: {first_line}")
    return Unavailable(f"cannot reach the {dialect or 'configured'} database: {exc}")


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


def open_database(url: str, *, sqlite_synchronous: str = "FULL") -> Database:
    """Open the backend named by the URL's scheme: ``sqlite:///path`` or ``postgresql://…``."""
    scheme = url.split(":", 1)[0].lower()
    if scheme.startswith("sqlite"):
        from roost.store.sqlite import SQLiteDatabase

        return SQLiteDatabase(url, synchronous=sqlite_synchronous)
    if scheme.startswith("postgres"):
        from roost.store.postgres import PostgresDatabase

        return PostgresDatabase(url)
    raise ConfigError(
        f"unsupported database URL scheme {scheme!r}: use sqlite:/// or postgresql://"
    )
