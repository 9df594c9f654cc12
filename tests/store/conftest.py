"""Store fixtures: an empty database on each backend, opened through the real backends."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from roost.store.database import Database, open_database
from tests.support import fresh_postgres_database, postgres_reachable, skip_or_fail


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'roost.db'}"
        return
    reason = postgres_reachable()
    if reason:
        skip_or_fail(reason)
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """An opened, empty database."""
    database = open_database(database_url)
    try:
        yield database
    finally:
        await database.dispose()
