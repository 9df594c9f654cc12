"""Reads of one series: the blocks overlapping a range merged with the uncompacted tail.

Both reads run on a consistent snapshot (one read transaction), so a compaction committing
meanwhile can neither hide points nor show them twice. The tail's points override block points at
the same instant (they are later writes). ``aggregate`` buckets with numpy and takes the summary of
a block that lies wholly inside one bucket (and that no tail point overrides) instead of decoding
it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from roost.errors import InvalidInput
from roost.telemetry.engine.base import AGGREGATES, Bucket, Point
from roost.telemetry.engine.batch import F64Array, I64Array
from roost.telemetry.engine.blocks import (
    BlockMeta,
    Columns,
    concat_columns,
    decode_block,
    last_write_wins,
)
from roost.telemetry.engine.records import points_of
from roost.telemetry.engine.tail import LogSource, TailCache, series_tail, tail_rows

_I64_MAX = np.iinfo(np.int64).max
_I64_MIN = np.iinfo(np.int64).min


class SeriesSource(LogSource, Protocol):
    """What reads need from a read snapshot."""

    def watermark(self) -> int:
        """Every log item below this offset is in blocks."""
        ...

    def tombstones(self, series: int | None) -> dict[int, int]:
        """series → offset below which its points are dead."""
        ...

    def block_metas(self, series: int, start: int, end: int) -> list[BlockMeta]:
        """Blocks of one series holding points in [start, end), by t_start."""
        ...

    def block_data(self, keys: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        """Payloads of blocks by (series, t_start)."""
        ...


def _tail(source: SeriesSource, cache: TailCache, series: int, start: int, end: int) -> Columns:
    rows = tail_rows(source, cache, source.watermark())
    before = source.tombstones(series).get(series, 0)
    return series_tail(rows, series, start, end, before)


def _decoded(
    source: SeriesSource, series: int, metas: Sequence[BlockMeta], start: int, end: int
) -> Columns:
    """The points of some blocks (in time order) that fall in [start, end)."""
    if not metas:
        return Columns.empty()
    data = source.block_data([(series, m.t_start) for m in metas])
    cols = concat_columns([decode_block(data[(series, m.t_start)]) for m in metas])
    if metas[0].t_start < start or metas[-1].t_end >= end:
        cols = cols.take((cols.ts >= start) & (cols.ts < end))
    return cols


def read_points(
    source: SeriesSource,
    cache: TailCache,
    series: int,
    start: int,
    end: int,
    limit: int,
    descending: bool,
) -> list[Point]:
    """Points of one series with start <= ts < end, at most ``limit``, oldest (or newest) first."""
    if limit <= 0 or start >= end:
        return []
    tail = _tail(source, cache, series, start, end)
    metas = source.block_metas(series, start, end)
    # Decode only the blocks that can hold the first ``limit`` points in the asked direction:
    # once the blocks wholly inside the range hold ``limit`` points, nothing beyond them (blocks
    # or tail) can be among the answer.
    ordered = metas[::-1] if descending else metas
    chosen: list[BlockMeta] = []
    inside = 0
    boundary: int | None = None
    for i, meta in enumerate(ordered):
        chosen.append(meta)
        if meta.t_start >= start and meta.t_end < end:
            inside += meta.count
        if inside >= limit and i + 1 < len(ordered):
            boundary = meta.t_start if descending else meta.t_end
            break
    if descending:
        chosen.reverse()
    blocks = _decoded(source, series, chosen, start, end)
    if boundary is not None:
        tail = tail.take(tail.ts >= boundary if descending else tail.ts <= boundary)
    merged = last_write_wins([blocks, tail])
    if descending:
        merged = merged.take(slice(len(merged) - 1, None, -1))
    merged = merged.take(slice(0, limit))
    return points_of(merged)


def read_aggregate(
    source: SeriesSource,
    cache: TailCache,
    series: int,
    start: int,
    end: int,
    interval: int,
    functions: Sequence[str],
    edges: I64Array | None = None,
) -> list[Bucket]:
    """Aggregates per bucket, empty buckets omitted.

    Buckets are ``interval`` ns wide and aligned on ``start``, unless ``edges`` gives their
    starts (sorted, the first at or before ``start``, the last at or after ``end``): calendar
    buckets of uneven width, such as days in a time zone that changes to daylight-saving time.
    """
    check_aggregate(interval, functions)
    if start >= end:
        return []
    grid = _Grid(start, interval, edges)
    tail = _tail(source, cache, series, start, end)
    metas = source.block_metas(series, start, end)
    whole: list[BlockMeta] = []
    partial: list[BlockMeta] = []
    for meta in metas:
        inside = meta.t_start >= start and meta.t_end < end
        one_bucket = grid.one(meta.t_start) == grid.one(meta.t_end)
        overridden = int(np.searchsorted(tail.ts, meta.t_start, side="left")) < int(
            np.searchsorted(tail.ts, meta.t_end, side="right")
        )
        (whole if inside and one_bucket and not overridden else partial).append(meta)
    points = last_write_wins([_decoded(source, series, partial, start, end), tail])
    parts = [_point_partials(points, grid), _block_partials(whole, grid)]
    return _combine(parts, grid, functions)


class _Grid:
    """Where buckets start: every ``interval`` ns from ``start``, or at the given ``edges``."""

    __slots__ = ("edges", "interval", "start")

    def __init__(self, start: int, interval: int, edges: I64Array | None) -> None:
        self.start = start
        self.interval = interval
        self.edges = None if edges is None else np.asarray(edges, dtype=np.int64)
        if self.edges is not None and (
            not len(self.edges) or self.edges[0] > start or np.any(np.diff(self.edges) <= 0)
        ):
            raise InvalidInput("bucket edges must rise and begin at or before the range's start")

    def many(self, ts: I64Array) -> I64Array:
        """The bucket number of each instant."""
        if self.edges is not None:
            found: I64Array = np.searchsorted(self.edges, ts, side="right").astype(np.int64) - 1
            return found
        # Unsigned arithmetic: ts - start overflows int64 when start is far in the past.
        offset = ts.view(np.uint64) - np.uint64(self.start % 2**64)
        bucket: I64Array = (offset // np.uint64(self.interval)).astype(np.int64)
        return bucket

    def one(self, ts: int) -> int:
        """The bucket number of one instant."""
        if self.edges is not None:
            return int(np.searchsorted(self.edges, ts, side="right")) - 1
        return (ts - self.start) // self.interval

    def start_of(self, bucket: int) -> int:
        """When bucket number ``bucket`` starts."""
        if self.edges is not None:
            return int(self.edges[bucket])
        return self.start + bucket * self.interval


def check_aggregate(interval: int, functions: Sequence[str]) -> None:
    """Refuse an interval or function the aggregation does not know."""
    if interval <= 0:
        raise InvalidInput("the aggregation interval must be positive")
    unknown = sorted(set(functions) - set(AGGREGATES))
    if unknown or not functions:
        raise InvalidInput(
            f"unknown aggregate function(s) {unknown}: use some of {', '.join(AGGREGATES)}"
        )


class _Partials:
    """Per-bucket partial aggregates, one entry per (bucket, source), as parallel arrays."""

    __slots__ = ("bucket", "count", "f_ts", "f_v", "hi", "l_ts", "l_v", "lo", "n_num", "sum")

    def __init__(self, size: int) -> None:
        self.bucket: I64Array = np.zeros(size, dtype=np.int64)
        self.count: I64Array = np.zeros(size, dtype=np.int64)
        self.n_num: I64Array = np.zeros(size, dtype=np.int64)
        self.sum: F64Array = np.zeros(size, dtype=np.float64)
        self.lo: F64Array = np.full(size, np.inf)
        self.hi: F64Array = np.full(size, -np.inf)
        self.f_ts: I64Array = np.full(size, _I64_MAX, dtype=np.int64)
        self.f_v: F64Array = np.full(size, np.nan)
        self.l_ts: I64Array = np.full(size, _I64_MIN, dtype=np.int64)
        self.l_v: F64Array = np.full(size, np.nan)


def _point_partials(points: Columns, grid: _Grid) -> _Partials:
    if not len(points):
        return _Partials(0)
    bucket = grid.many(points.ts)
    edges = np.flatnonzero(np.diff(bucket)) + 1
    firsts = np.concatenate(([0], edges))
    out = _Partials(len(firsts))
    out.bucket = bucket[firsts]
    out.count = np.diff(np.append(firsts, len(bucket)))
    values = points.numeric()
    numeric = np.flatnonzero(~np.isnan(values))
    if len(numeric):
        n_bucket = bucket[numeric]
        n_values = values[numeric]
        n_ts = points.ts[numeric]
        n_edges = np.flatnonzero(np.diff(n_bucket)) + 1
        n_first = np.concatenate(([0], n_edges))
        n_last = np.append(n_edges, len(n_bucket)) - 1
        slot = np.searchsorted(out.bucket, n_bucket[n_first])
        out.n_num[slot] = np.diff(np.append(n_first, len(n_bucket)))
        out.sum[slot] = np.add.reduceat(n_values, n_first)
        out.lo[slot] = np.minimum.reduceat(n_values, n_first)
        out.hi[slot] = np.maximum.reduceat(n_values, n_first)
        out.f_ts[slot] = n_ts[n_first]
        out.f_v[slot] = n_values[n_first]
        out.l_ts[slot] = n_ts[n_last]
        out.l_v[slot] = n_values[n_last]
    return out


def _block_partials(metas: Sequence[BlockMeta], grid: _Grid) -> _Partials:
    out = _Partials(len(metas))
    for i, meta in enumerate(metas):
        s = meta.summary
        out.bucket[i] = grid.one(meta.t_start)
        out.count[i] = s.count
        if s.n_numeric and s.first_ts is not None and s.last_ts is not None:
            out.n_num[i] = s.n_numeric
            out.sum[i] = s.sum
            out.lo[i] = s.min
            out.hi[i] = s.max
            out.f_ts[i] = s.first_ts
            out.f_v[i] = s.first_value
            out.l_ts[i] = s.last_ts
            out.l_v[i] = s.last_value
    return out


def _combine(parts: list[_Partials], grid: _Grid, functions: Sequence[str]) -> list[Bucket]:
    bucket = np.concatenate([p.bucket for p in parts])
    if not len(bucket):
        return []
    keys, group = np.unique(bucket, return_inverse=True)
    size = len(keys)

    def cat(name: str) -> Any:
        return np.concatenate([getattr(p, name) for p in parts])

    count = np.bincount(group, weights=cat("count"), minlength=size)
    n_num = np.bincount(group, weights=cat("n_num"), minlength=size)
    total = np.bincount(group, weights=cat("sum"), minlength=size)
    lo = np.full(size, np.inf)
    np.minimum.at(lo, group, cat("lo"))
    hi = np.full(size, -np.inf)
    np.maximum.at(hi, group, cat("hi"))
    f_order = np.lexsort((cat("f_ts"), group))
    first = cat("f_v")[f_order[np.searchsorted(group[f_order], np.arange(size), side="left")]]
    l_order = np.lexsort((cat("l_ts"), group))
    last = cat("l_v")[l_order[np.searchsorted(group[l_order], np.arange(size), side="right") - 1]]
    columns: dict[str, list[float | int | None]] = {}
    has = (n_num > 0).tolist()
    for name in functions:
        if name == "count":
            columns[name] = [int(c) for c in count.tolist()]
            continue
        if name == "avg":
            values = (total / np.maximum(n_num, 1)).tolist()
        else:
            values = {"sum": total, "min": lo, "max": hi, "first": first, "last": last}[
                name
            ].tolist()
        columns[name] = [v if ok else None for v, ok in zip(values, has, strict=True)]
    return [
        Bucket(grid.start_of(k), {name: columns[name][i] for name in functions})
        for i, k in enumerate(keys.tolist())
    ]
