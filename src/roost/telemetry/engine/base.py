"""The time-series store port: durable telemetry points and events, and what is read back.

Writes arrive as packed batches (``batch.py``) from the ingest writer, one commit each. The store
keeps an append-only log of batches (the commit is one row: cheap whatever the batch size), keeps
the last value of every series current, and compacts the log behind the writer into per-series
blocks with summaries so that queries by series and time are fast. Backends: SQLite and
PostgreSQL, chosen by the database URL like the relational store.

Semantics every backend honours (the contract suite ``tests/telemetry/test_engine.py`` checks them):

* A point is identified by (series, ts). A later write of the same (series, ts) replaces the earlier
  one (last write wins, like InfluxDB), so a resend is stored once and queries never show two values
  at one instant. Late and out-of-order points are accepted and read back in time order.
* An event is identified by (device, ts, body): an identical resend is stored once; two different
  events at the same instant are both kept.
* A point is queryable as soon as :meth:`TimeSeriesStore.append` returns, compacted or not.
* Offsets: every item (points first, then events) of the batch committed at offset ``o`` has offset
  ``o + i``; offsets only grow. The log is kept ``log_retention`` behind compaction so that consumer
  groups can read it by offset.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from roost.telemetry.engine.batch import DecodedBatch, Event

AGGREGATES = ("avg", "min", "max", "sum", "count", "first", "last")


@dataclass(frozen=True, slots=True)
class Committed:
    """Where a batch landed in the log."""

    first_offset: int
    count: int


@dataclass(frozen=True, slots=True)
class Point:
    """One stored point as read back."""

    ts: int  # ns since the epoch, device time
    value: Any  # float, int, bool, str, or parsed JSON (by the point's kind)
    recv: int = 0  # ns since the epoch, receive time


@dataclass(frozen=True, slots=True)
class Bucket:
    """Aggregates of one time bucket [start, start + interval)."""

    start: int  # ns
    values: dict[str, float | int | None]  # aggregate name → value (None when no numeric point)


@dataclass(frozen=True, slots=True)
class Latest:
    """The newest point of one series."""

    series: int
    ts: int
    value: Any
    recv: int


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One stored event as read back."""

    offset: int
    device_pk: int
    ts: int
    recv: int
    type: str
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class LogEntry:
    """A committed batch read back from the log for a consumer group."""

    first_offset: int
    batch: DecodedBatch


@dataclass(frozen=True, slots=True)
class CompactionReport:
    """What one compaction pass did."""

    log_rows: int  # log rows folded into blocks
    points: int  # points read from them
    blocks_written: int
    upto_offset: int  # every item below this offset is now in blocks
    more: bool = False  # the pass stopped at a limit: log rows wait behind it


class TimeSeriesStore(abc.ABC):
    """Durable points and events of every device."""

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect and prepare (the schema itself comes from the relational migrations)."""

    async def release_memory(self) -> None:
        """Give back what caches hold once ingest is quiet (backends with such caches do)."""
        return None

    @abc.abstractmethod
    async def close(self) -> None:
        """Finish work in flight and release connections."""

    # -- writing -----------------------------------------------------------------------------

    @abc.abstractmethod
    async def append(self, batch: DecodedBatch) -> Committed:
        """Commit a batch durably: the log row, its events, its message ids, the latest values.

        Returns only after the commit (SQLite: committed in WAL; PostgreSQL: COMMIT acknowledged).
        """

    @abc.abstractmethod
    async def known_msg_ids(self, pairs: Sequence[tuple[int, str]]) -> set[tuple[int, str]]:
        """Which (device_pk, msg_id) pairs were already committed (resend de-duplication)."""

    # -- reading -----------------------------------------------------------------------------

    @abc.abstractmethod
    async def points(
        self, series: int, start: int, end: int, *, limit: int, descending: bool = False
    ) -> list[Point]:
        """Points of one series with start <= ts < end, in time order (newest first if asked)."""

    @abc.abstractmethod
    async def aggregate(
        self,
        series: int,
        start: int,
        end: int,
        interval: int,
        functions: Sequence[str],
        *,
        edges: Sequence[int] | None = None,
    ) -> list[Bucket]:
        """Aggregates per bucket of ``interval`` ns, aligned on ``start``; empty buckets omitted.

        ``edges`` (rising, the first at or before ``start``) gives the buckets' starts instead:
        calendar buckets such as days in a time zone.

        Numeric kinds only (double, long as float, boolean as 0/1); string/json points are
        counted by ``count`` and ignored by the others.
        """

    @abc.abstractmethod
    async def latest(self, series: Sequence[int]) -> list[Latest]:
        """The newest point of each series that has one (from the latest-value table)."""

    @abc.abstractmethod
    async def events(
        self,
        device_pk: int,
        start: int,
        end: int,
        *,
        types: Sequence[str] | None = None,
        limit: int,
        descending: bool = False,
    ) -> list[StoredEvent]:
        """Events of one device with start <= ts < end, optionally of some types, in time order."""

    @abc.abstractmethod
    async def read_log(self, after_offset: int, limit: int) -> list[LogEntry]:
        """Committed batches holding items with offset > ``after_offset``, oldest first, at most
        ``limit`` batches. Entries may begin before ``after_offset``: callers skip those items."""

    @abc.abstractmethod
    async def log_bounds(self) -> tuple[int, int]:
        """(the first offset still in the log, the next offset to be written)."""

    # -- maintenance -------------------------------------------------------------------------

    @abc.abstractmethod
    async def compact(self, max_log_rows: int = 1000) -> CompactionReport:
        """Fold up to ``max_log_rows`` uncompacted log rows into per-series blocks."""

    @abc.abstractmethod
    async def trim_log(self, older_than_ns: int) -> int:
        """Drop compacted log rows committed before ``older_than_ns``; answer how many."""

    @abc.abstractmethod
    async def drop_before(self, tenant_id: str, cutoff_ns: int, max_rows: int = 10_000) -> int:
        """Retention: delete up to ``max_rows`` of the tenant's blocks, events and latest values
        older than ``cutoff_ns`` (a block goes when all its points are older). Answers how many
        rows went; call again until 0. Never holds the write lock for long."""

    @abc.abstractmethod
    async def delete_series(self, series: Sequence[int]) -> None:
        """Forget every point of some series (their sensors were deleted)."""

    async def __aenter__(self) -> TimeSeriesStore:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


__all__ = [
    "AGGREGATES",
    "Bucket",
    "CompactionReport",
    "Committed",
    "Event",
    "Latest",
    "LogEntry",
    "Point",
    "StoredEvent",
    "TimeSeriesStore",
]
