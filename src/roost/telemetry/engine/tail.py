"""The uncompacted tail of the log: decoded once per process, filtered by series with numpy.

Every read merges the blocks with the log rows compaction has not reached yet (offset at or above
the watermark). Log rows never change once committed, so a process keeps the rows it decoded in a
:class:`TailCache`: the writer adds each batch it commits, readers fetch only rows beyond what the
cache holds, and rows leave the cache once compaction has passed them. A cached row sorts its
series column once, the first time it is searched; after that finding one series' points in a row
is two binary searches.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from roost.telemetry.engine.batch import DecodedBatch, I64Array, decode
from roost.telemetry.engine.blocks import Columns, last_write_wins

# Decoded tail rows kept per process. The tail is what compaction has not reached yet, normally
# seconds of ingest (a 5,000-point batch is ~165 KB); 64 MiB holds ~2M points, so only a
# compaction that fell far behind makes readers fetch rows again.
TAIL_CACHE_BYTES = 64 * 1024 * 1024


class LogSource(Protocol):
    """What the tail needs from a read session."""

    def log_rows(
        self, start: int, stop: int | None, limit: int | None
    ) -> list[tuple[int, int, bytes]]:
        """(first_offset, count, data) of log rows with start <= first_offset < stop."""
        ...


class TailRow:
    """One committed batch of the log, decoded."""

    __slots__ = ("_order", "_sorted", "batch", "count", "first_offset", "nbytes")

    def __init__(self, first_offset: int, count: int, batch: DecodedBatch, nbytes: int) -> None:
        self.first_offset = first_offset
        self.count = count
        self.batch = batch
        self.nbytes = nbytes
        self._order: I64Array | None = None
        self._sorted: I64Array | None = None

    @staticmethod
    def from_blob(first_offset: int, count: int, data: bytes) -> TailRow:
        """Decode a log row."""
        batch = decode(data)
        # The columns are views on ``data``; a batch may also keep a copy of its blob.
        raw = batch.raw
        copied = len(raw) if raw is not None and raw is not data else 0
        return TailRow(first_offset, count, batch, len(data) + copied)

    @property
    def end(self) -> int:
        """The offset after this row's last item."""
        return self.first_offset + self.count

    def positions(self, series: int) -> I64Array:
        """Positions of one series' points in this batch, ascending."""
        if self._sorted is None or self._order is None:
            # Two threads may both sort a fresh row; either result is the same.
            order = np.argsort(self.batch.series, kind="stable")
            self._sorted = self.batch.series[order]
            self._order = order
            self.nbytes += 16 * len(order)
        lo = int(np.searchsorted(self._sorted, series, side="left"))
        hi = int(np.searchsorted(self._sorted, series, side="right"))
        return self._order[lo:hi]


class TailCache:
    """Decoded log rows from the watermark on, contiguous by offset, within a byte budget."""

    def __init__(self, budget_bytes: int = TAIL_CACHE_BYTES) -> None:
        self._budget = budget_bytes
        self._lock = threading.Lock()
        self._rows: deque[TailRow] = deque()
        self._bytes = 0

    def _evict_below(self, watermark: int) -> None:
        while self._rows and self._rows[0].first_offset < watermark:
            self._bytes -= self._rows.popleft().nbytes

    def snapshot(self, watermark: int) -> tuple[list[TailRow], int | None, int | None]:
        """Cached rows from ``watermark`` on, and the offsets to fetch around them:
        (rows, fetch rows in [watermark, before) unless None, fetch rows from ``after`` on)."""
        with self._lock:
            self._evict_below(watermark)
            if not self._rows:
                return [], None, watermark
            first = self._rows[0].first_offset
            before = first if watermark < first else None
            return list(self._rows), before, self._rows[-1].end

    def add(self, rows: Sequence[TailRow]) -> None:
        """Keep rows that extend the cached range at either end (and fit the budget)."""
        with self._lock:
            for row in rows:
                if not self._rows:
                    self._push(row, left=False)
                elif row.first_offset == self._rows[-1].end:
                    self._push(row, left=False)
            for row in reversed(rows):
                if self._rows and row.end == self._rows[0].first_offset:
                    self._push(row, left=True)

    def _push(self, row: TailRow, *, left: bool) -> None:
        if self._bytes + row.nbytes > self._budget:
            return
        self._bytes += row.nbytes
        if left:
            self._rows.appendleft(row)
        else:
            self._rows.append(row)

    def clear(self) -> None:
        """Forget every row."""
        with self._lock:
            self._rows.clear()
            self._bytes = 0


def tail_rows(
    source: LogSource,
    cache: TailCache,
    watermark: int,
    *,
    max_rows: int | None = None,
    max_items: int | None = None,
) -> list[TailRow]:
    """The log rows from ``watermark`` on (at most ``max_rows``), from the cache where it can.

    With ``max_items``, rows stop once they hold that many items (at least one row is answered):
    compaction after a burst then reads the few rows it folds, not hundreds of large ones.
    """
    cached, before, after = cache.snapshot(watermark)
    rows: list[TailRow] = []
    if before is not None:
        head = _fetch(source, watermark, before, max_rows, max_items)
        cache.add(head)
        rows = head
    if _enough(rows, max_rows, max_items):
        return rows[:max_rows] if max_rows is not None else rows
    for row in cached:
        rows.append(row)
        if _enough(rows, max_rows, max_items):
            return rows
    if after is not None:
        remaining = None if max_rows is None else max_rows - len(rows)
        items = None if max_items is None else max_items - sum(row.count for row in rows)
        fresh = _fetch(source, after, None, remaining, items)
        cache.add(fresh)
        rows += fresh
    return rows


# Log rows fetched at a time when a read stops at a number of items.
_FETCH_ROWS = 8


def _fetch(
    source: LogSource, start: int, stop: int | None, max_rows: int | None, max_items: int | None
) -> list[TailRow]:
    """Decoded log rows from ``start`` on (before ``stop``), within the row and item bounds."""
    if max_items is None:
        return [TailRow.from_blob(*r) for r in source.log_rows(start, stop, max_rows)]
    rows: list[TailRow] = []
    items = 0
    while (max_rows is None or len(rows) < max_rows) and (items < max_items or not rows):
        page = _FETCH_ROWS if max_rows is None else min(_FETCH_ROWS, max_rows - len(rows))
        fetched = source.log_rows(start, stop, page)
        for r in fetched:
            row = TailRow.from_blob(*r)
            rows.append(row)
            items += row.count
            start = row.end
            if items >= max_items:
                break
        if len(fetched) < page:
            break
    return rows


def _enough(rows: list[TailRow], max_rows: int | None, max_items: int | None) -> bool:
    if max_rows is not None and len(rows) >= max_rows:
        return True
    return max_items is not None and bool(rows) and sum(r.count for r in rows) >= max_items


def series_tail(
    rows: Sequence[TailRow], series: int, start: int, end: int, before_offset: int
) -> Columns:
    """The tail's points of one series with start <= ts < end, last write winning, in time order.

    Points whose offset is below ``before_offset`` belong to a deleted series and are skipped.
    """
    parts = []
    for row in rows:
        if row.end <= before_offset:
            continue
        index = row.positions(series)
        if not len(index):
            continue
        batch = row.batch
        ts = batch.ts[index]
        keep = (ts >= start) & (ts < end)
        if before_offset > row.first_offset:
            keep &= index >= before_offset - row.first_offset
        if not keep.all():
            index = index[keep]
        parts.append(
            Columns(
                batch.ts[index],
                batch.recv[index],
                batch.slots[index],
                batch.kinds[index],
                batch.texts,
            )
        )
    return last_write_wins(parts)
