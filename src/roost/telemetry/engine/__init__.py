"""Telemetry storage: the time-series store port and its SQLite and PostgreSQL backends.

``open_timeseries(url)`` picks the backend by the URL's scheme, like ``open_database``; the tables
come from the relational migrations (revision 0003). See ``docs/telemetry-storage.md``.
"""

from __future__ import annotations

from roost.errors import ConfigError
from roost.telemetry.engine.base import TimeSeriesStore
from roost.telemetry.engine.compaction import (
    BLOCK_MAX_POINTS,
    BLOCK_MAX_TEXT_BYTES,
    COMPACT_MAX_POINTS,
    CompactionSettings,
)
from roost.telemetry.engine.tail import TAIL_CACHE_BYTES


def open_timeseries(
    database_url: str,
    *,
    block_points: int = BLOCK_MAX_POINTS,
    block_text_bytes: int = BLOCK_MAX_TEXT_BYTES,
    compress_blocks: bool = True,
    compact_max_points: int = COMPACT_MAX_POINTS,
    tail_cache_bytes: int = TAIL_CACHE_BYTES,
    sqlite_synchronous: str = "FULL",
    sqlite_readers: int | None = None,
    pool_size: int | None = None,
) -> TimeSeriesStore:
    """The time-series store of the database at ``database_url`` (not yet opened).

    ``sqlite:///path`` (the relational store's file) or ``postgresql://…``. Options: points per
    block, bytes of string/json values per block, whether full blocks are zlib-compressed, points
    folded per compaction pass at most, the per-process cache of decoded log rows; SQLite's
    ``synchronous`` and reader threads; the PostgreSQL pool size (None: the backend's default).
    """
    from roost.telemetry.engine.engine import StoreOptions

    if block_points < 2:
        raise ConfigError("block_points must be at least 2")
    options = StoreOptions(
        compaction=CompactionSettings(
            block_points=block_points,
            block_text_bytes=block_text_bytes,
            compress=compress_blocks,
            max_points=compact_max_points,
        ),
        tail_cache_bytes=tail_cache_bytes,
    )
    scheme = database_url.split(":", 1)[0].lower()
    if scheme.startswith("sqlite"):
        from roost.telemetry.engine.sqlite import READER_THREADS, SQLiteTimeSeriesStore

        return SQLiteTimeSeriesStore(
            database_url,
            options=options,
            synchronous=sqlite_synchronous,
            readers=sqlite_readers or READER_THREADS,
        )
    if scheme.startswith("postgres"):
        from roost.telemetry.engine.postgres import POOL_SIZE, PostgresTimeSeriesStore

        return PostgresTimeSeriesStore(
            database_url, options=options, pool_size=pool_size or POOL_SIZE
        )
    raise ConfigError(
        f"unsupported database URL scheme {scheme!r}: use sqlite:/// or postgresql://"
    )


__all__ = ["TimeSeriesStore", "open_timeseries"]
