"""Acknowledged means durable on power loss too: a Roost's SQLite connections sync every commit.

``PRAGMA synchronous`` belongs to each connection, not to the file, so it is read through the
connections a real Roost opens: the relational store's reader and writer, and the time-series
store's writer (the one whose commit releases the acknowledgements) and readers.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa

from roost.config import load_settings
from roost.runtime import Roost
from roost.telemetry.engine.sqlite import SQLiteTimeSeriesStore

# SQLite's numbering of PRAGMA synchronous levels.
LEVELS = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


def _synchronous(conn: sqlite3.Connection) -> str:
    return LEVELS[conn.execute("PRAGMA synchronous").fetchone()[0]]


async def synchronous_levels(env: dict[str, str], data_dir: Path) -> dict[str, str]:
    """The synchronous level of each kind of SQLite connection of a Roost started with ``env``."""
    roost = Roost.build(load_settings(env, data_dir=data_dir))
    await roost.start(serve=False)
    try:
        levels = {}
        pragma = sa.text("PRAGMA synchronous")
        async with roost.db.read() as conn:
            levels["store reader"] = LEVELS[(await conn.execute(pragma)).scalar_one()]
        async with roost.db.write() as conn:
            levels["store writer"] = LEVELS[(await conn.execute(pragma)).scalar_one()]
        store = roost.timeseries
        assert isinstance(store, SQLiteTimeSeriesStore)
        levels["telemetry writer"] = await store._write(_synchronous)
        levels["telemetry reader"] = await store._query(_synchronous)
        return levels
    finally:
        await roost.close()


async def test_every_sqlite_connection_syncs_each_commit_by_default(tmp_path: Path) -> None:
    levels = await synchronous_levels({}, tmp_path)
    assert levels == dict.fromkeys(levels, "FULL") and len(levels) == 4, levels


@pytest.mark.parametrize("level", ["NORMAL", "normal"])
async def test_the_setting_trades_power_loss_durability_for_speed(
    tmp_path: Path, level: str
) -> None:
    levels = await synchronous_levels({"ROOST_SQLITE_SYNCHRONOUS": level}, tmp_path)
    assert levels == dict.fromkeys(levels, "NORMAL") and len(levels) == 4, levels
