"""Schema migrations (Alembic), run on an open async connection inside one transaction.

``roost db upgrade`` and ``roost serve`` call :func:`upgrade`. On PostgreSQL an advisory lock makes
concurrent starts of several processes wait for each other instead of racing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from roost.errors import Unavailable
from roost.store.database import Database

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Any constant works; it only has to be the same in every Roost process.
_ADVISORY_LOCK_ID = 0x526F6F7374  # "Roost"
#: How long a process waits for another one's upgrade to finish (SQLite) before giving up.
UPGRADE_WAIT_S = 120.0

log = logging.getLogger(__name__)


def alembic_config() -> Config:
    """An Alembic configuration pointing at Roost's migration scripts (no alembic.ini needed)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def head_revision() -> str:
    """The newest revision shipped with this version of Roost."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


async def current_revision(db: Database) -> str | None:
    """The revision the database is at, or None for an empty database."""

    def _current(conn: Connection) -> str | None:
        return MigrationContext.configure(conn).get_current_revision()

    async with db.read() as conn:
        return await conn.run_sync(_current)


async def upgrade(db: Database, revision: str = "head") -> tuple[str | None, str | None]:
    """Bring the schema up to ``revision``; answer (revision before, revision after)."""
    config = alembic_config()

    def _upgrade(conn: Connection) -> tuple[str | None, str | None]:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": _ADVISORY_LOCK_ID})
        before = MigrationContext.configure(conn).get_current_revision()
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
        after = MigrationContext.configure(conn).get_current_revision()
        return before, after

    # Processes starting together each run the upgrade; on SQLite the later ones wait for the
    # first one's write lock, which a long upgrade on a loaded machine may hold past the busy
    # timeout: they try again (and then find the schema done) rather than fail to start.
    deadline = time.monotonic() + UPGRADE_WAIT_S
    while True:
        try:
            async with db.write() as conn:
                return await conn.run_sync(_upgrade)
        except Unavailable as exc:
            if db.dialect != "sqlite" or "locked" not in exc.detail:
                raise
            if time.monotonic() > deadline:
                raise
            log.info("the database is locked by another upgrade; waiting")
            await asyncio.sleep(0.5)


async def make_revision(db: Database, message: str, metadata: sa.MetaData) -> Any:
    """Autogenerate a new migration from the difference between ``metadata`` and ``db``.

    Pass :data:`roost.store.metadata.metadata` once every room's tables are imported (import
    :mod:`roost.runtime`): the store itself knows no room.
    """
    config = alembic_config()

    def _revision(conn: Connection) -> Any:
        config.attributes["connection"] = conn
        config.attributes["target_metadata"] = metadata
        return command.revision(config, message=message, autogenerate=True)

    async with db.write() as conn:
        return await conn.run_sync(_revision)
