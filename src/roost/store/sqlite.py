"""SQLite backend: one file in WAL mode, reads pooled, writes serialised on one connection.

SQLite allows one writer at a time. Writes go through a dedicated single-connection engine whose
transactions start with ``BEGIN IMMEDIATE``, so concurrent writers queue in the pool instead of
failing with SQLITE_BUSY when a deferred transaction tries to upgrade its lock. The aiosqlite driver
runs each connection in its own thread, so the event loop never waits on disk.

Connections run with ``PRAGMA synchronous=FULL`` unless configured otherwise: in WAL mode the WAL
is fsynced at every commit, so a committed transaction survives a power cut (``NORMAL`` survives
a process crash only). Readiness (``check_writable``) also looks at the database's free space.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from roost.errors import ConfigError, Unavailable
from roost.store.database import Database, json_dumps
from roost.store.files import private_database

# Other processes (the CLI beside a running server) may hold the write lock briefly; wait this
# long before reporting the database busy.
BUSY_TIMEOUT_MS = 10_000
_SYNCHRONOUS = {"OFF", "NORMAL", "FULL", "EXTRA"}
# Below this much free space on the database's file system the store says it cannot write. The
# write probe alone does not see a full disk: after a checkpoint SQLite reuses the WAL file from
# its start, so a one-row write fits in space already allocated while a telemetry group commit,
# or the checkpoint that grows the database file, fails (seen on a full tmpfs). 16 MiB holds a
# large group commit (a few MiB of encoded points) and the checkpoint that follows it.
MIN_FREE_BYTES = 16 * 1024 * 1024


class SQLiteDatabase(Database):
    """The embedded default backend."""

    dialect = "sqlite"

    def __init__(self, url: str, *, synchronous: str = "FULL") -> None:
        super().__init__(url)
        if synchronous.upper() not in _SYNCHRONOUS:
            raise ConfigError(f"sqlite_synchronous must be one of {sorted(_SYNCHRONOUS)}")
        self.path = _path_from_url(url)
        if self.path != ":memory:":
            private_database(Path(self.path))
        async_url = f"sqlite+aiosqlite:///{self.path}"
        self._reader = create_async_engine(async_url, json_serializer=json_dumps, pool_size=4)
        self._writer = create_async_engine(
            async_url, json_serializer=json_dumps, pool_size=1, max_overflow=0, pool_timeout=60
        )
        _configure(self._reader, synchronous.upper(), immediate=False)
        _configure(self._writer, synchronous.upper(), immediate=True)

    def _engine(self) -> AsyncEngine:
        return self._reader

    def _write_engine(self) -> AsyncEngine:
        return self._writer

    async def _probe_write(self) -> None:
        """Refuse when the database's disk is (nearly) full, else commit the one-row write."""
        if self.path != ":memory:":
            directory = Path(self.path).parent
            free = await asyncio.to_thread(_free_bytes, directory)
            if free < MIN_FREE_BYTES:
                raise Unavailable(
                    f"the disk of {directory} is full: {free // 1024} KiB free, "
                    f"{MIN_FREE_BYTES // 2**20} MiB needed to accept writes"
                )
        await super()._probe_write()

    async def refresh_statistics(self, tables: Sequence[str]) -> None:
        """Let SQLite gather the statistics it judges useful (cheap when nothing is needed)."""
        async with self.write() as conn:
            await conn.execute(sa.text("PRAGMA optimize"))

    def sync_url(self) -> str:
        return f"sqlite+aiosqlite:///{self.path}"


def _path_from_url(url: str) -> str:
    prefix, sep, rest = url.partition(":///")
    if not sep or not prefix.startswith("sqlite"):
        raise ConfigError(f"expected sqlite:///path, got {url!r}")
    return rest or ":memory:"


def _free_bytes(directory: Path) -> int:
    """Bytes an unprivileged process may still write on the file system holding ``directory``."""
    stats = os.statvfs(directory)
    return stats.f_bavail * stats.f_frsize


def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


def _configure(engine: AsyncEngine, synchronous: str, *, immediate: bool) -> None:
    """Set pragmas on every new connection and take over transaction start from pysqlite."""

    @sa.event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
        # Autocommit at the driver level: SQLAlchemy's "begin" event below issues BEGIN itself.
        dbapi_conn.isolation_level = None
        # SQLite's lower() folds ASCII only; text search must fold "ÉCOLE" like PostgreSQL does.
        dbapi_conn.create_function("lower", 1, _lower, deterministic=True)
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.close()

    @sa.event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
