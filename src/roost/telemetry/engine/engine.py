"""What both backends share: append preparation, the tail cache, reads and compaction planning.

A backend supplies transactions and SQL; everything else (what an append writes, how reads merge
blocks and tail, what compaction writes) is here. Reads and compaction planning are plain
synchronous functions run in a worker thread against a *read session* (a consistent snapshot):
SQLite's runs its statements on the thread's own connection, PostgreSQL's hands each statement
back to the event loop (asyncpg) and waits for it. Either way the event loop never runs the numpy
work or waits on disk.
"""

from __future__ import annotations

import abc
import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import numpy as np

from roost.telemetry.engine.base import (
    Bucket,
    Committed,
    CompactionReport,
    LogEntry,
    Point,
    TimeSeriesStore,
)
from roost.telemetry.engine.batch import DecodedBatch, decode
from roost.telemetry.engine.compaction import (
    CompactionPlan,
    CompactionSettings,
    CompactionSource,
    plan_compaction,
)
from roost.telemetry.engine.query import (
    SeriesSource,
    check_aggregate,
    read_aggregate,
    read_points,
)
from roost.telemetry.engine.records import pack_latest
from roost.telemetry.engine.tail import TAIL_CACHE_BYTES, TailCache, TailRow

T = TypeVar("T")

_I64_MIN = -(2**63)
_I64_MAX = 2**63 - 1


def clamp_ns(value: int) -> int:
    """A time or offset bound clamped into the BIGINT range the columns hold."""
    return min(max(value, _I64_MIN), _I64_MAX)


class ReadSession(SeriesSource, CompactionSource, Protocol):
    """Queries on one consistent snapshot (a read transaction)."""

    def log_after(self, after_offset: int, limit: int) -> list[tuple[int, bytes]]:
        """(first_offset, data) of the log rows holding items above ``after_offset``."""
        ...

    def block_layout(self, series: int) -> list[tuple[int, int, int]]:
        """(t_start, t_end, count) of every block of a series, by t_start."""
        ...


@dataclass(frozen=True, slots=True)
class StoreOptions:
    """Tunables shared by the backends (``open_timeseries`` keyword options)."""

    compaction: CompactionSettings = CompactionSettings()
    tail_cache_bytes: int = TAIL_CACHE_BYTES


@dataclass(slots=True)
class PreparedAppend:
    """The rows one append writes, computed before the transaction starts."""

    blob: bytes
    points: int
    count: int  # points + events
    committed_ns: int
    # (device_pk, ts, body_hash, index among the batch's events, recv, type, body)
    events: list[tuple[int, int, int, int, int, str, str]]
    msg_ids: list[tuple[int, str]]  # unique, sorted (a stable lock order on PostgreSQL)
    # Newest point of each series in the batch, sorted by series: parallel lists (the packed
    # ``point`` column of ts_latest, see records.py).
    latest_series: list[int]
    latest_ts: list[int]
    latest_points: list[bytes]

    def event_rows(self, first_offset: int) -> list[tuple[int, int, int, int, int, str, str]]:
        """Event rows with their item offsets (points come first in a batch)."""
        base = first_offset + self.points
        return [(d, ts, h, base + i, recv, t, body) for d, ts, h, i, recv, t, body in self.events]

    def latest_rows(self) -> list[tuple[int, int, bytes]]:
        """Latest-value rows: (series_pk, ts, point)."""
        return list(zip(self.latest_series, self.latest_ts, self.latest_points, strict=True))


def body_hash(body: str) -> int:
    """64 bits of BLAKE2b of an event body, as a signed integer (a BIGINT column)."""
    digest = hashlib.blake2b(body.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def prepare_append(batch: DecodedBatch, committed_ns: int | None = None) -> PreparedAppend:
    """Everything an append writes besides the offsets (known only inside the transaction)."""
    blob = batch.encode()
    committed = time.time_ns() if committed_ns is None else committed_ns
    events = [
        (e.device_pk, e.ts, body_hash(e.body), i, e.recv, e.type, e.body)
        for i, e in enumerate(batch.events)
    ]
    prepared = PreparedAppend(
        blob, batch.points, len(batch), committed, events, sorted(set(batch.msg_ids)), [], [], []
    )
    if batch.points:
        # Newest point per series; lexsort is stable, so at equal ts the later point wins.
        order = np.lexsort((batch.ts, batch.series))
        ordered = batch.series[order]
        index = order[np.append(ordered[1:] != ordered[:-1], True)]
        series = batch.series[index]
        ts = batch.ts[index]
        prepared.latest_series = series.tolist()
        prepared.latest_ts = ts.tolist()
        prepared.latest_points = pack_latest(
            series, ts, batch.recv[index], batch.slots[index], batch.kinds[index], batch.texts
        )
    return prepared


class BlockStore(TimeSeriesStore):
    """The port implemented over a log, blocks and a latest-value table; backends add SQL."""

    def __init__(self, options: StoreOptions) -> None:
        self.options = options
        self._cache = TailCache(options.tail_cache_bytes)

    # -- what a backend provides -------------------------------------------------------------

    @abc.abstractmethod
    async def _read(self, work: Callable[[ReadSession], T]) -> T:
        """Run ``work`` in a worker thread against one read snapshot."""

    @abc.abstractmethod
    async def _commit(self, batch: DecodedBatch) -> tuple[int, PreparedAppend]:
        """Prepare and commit an append; answer its first offset (and what it wrote)."""

    @abc.abstractmethod
    async def _compact(self, plan: Callable[[ReadSession], CompactionPlan]) -> CompactionPlan:
        """Plan from a snapshot, then apply the plan and move the watermark in one write
        transaction; compactions, retention and deletions of one store never overlap."""

    # -- the port ----------------------------------------------------------------------------

    async def append(self, batch: DecodedBatch) -> Committed:
        first_offset, prepared = await self._commit(batch)
        return Committed(first_offset, prepared.count)

    def _remember(self, first_offset: int, prepared: PreparedAppend) -> None:
        """Put a committed batch in the tail cache (called by the backend after the commit)."""
        if prepared.count:
            row = TailRow.from_blob(first_offset, prepared.count, prepared.blob)
            self._cache.add([row])

    async def points(
        self, series: int, start: int, end: int, *, limit: int, descending: bool = False
    ) -> list[Point]:
        start, end = clamp_ns(start), clamp_ns(end)
        return await self._read(
            lambda s: read_points(s, self._cache, series, start, end, limit, descending)
        )

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
        check_aggregate(interval, functions)
        start, end = clamp_ns(start), clamp_ns(end)
        grid = None if edges is None else np.asarray(edges, dtype=np.int64)
        return await self._read(
            lambda s: read_aggregate(s, self._cache, series, start, end, interval, functions, grid)
        )

    async def read_log(self, after_offset: int, limit: int) -> list[LogEntry]:
        if limit <= 0:
            return []

        def work(session: ReadSession) -> list[LogEntry]:
            rows = session.log_after(clamp_ns(after_offset), limit)
            return [LogEntry(o, decode(data)) for o, data in rows]

        return await self._read(work)

    async def compact(self, max_log_rows: int = 1000) -> CompactionReport:
        settings = self.options.compaction
        plan = await self._compact(
            lambda s: plan_compaction(s, self._cache, settings, max_log_rows)
        )
        return plan.report()

    async def block_layout(self, series: int) -> list[tuple[int, int, int]]:
        """(t_start, t_end, count) of each block of a series: for tests and diagnostics."""
        return await self._read(lambda s: s.block_layout(series))
