"""Where aggregate buckets start: on the calendar, not on the request's ``from`` (pure).

A bucket of 1h starts on a whole hour and one of 1d at midnight, whatever ``from`` says, so that
two requests over overlapping ranges answer the same buckets (as InfluxDB's ``GROUP BY time()``
does). Without a time zone:

* a whole number of weeks starts on Mondays at 00:00 UTC, a whole number of days at 00:00 UTC
  (every n days counted from 1970-01-01)
* any other interval on multiples of itself since the Unix epoch (1h: whole hours, 15m: :00, :15…)

With a time zone (``tz=Europe/Paris``), days and weeks start at local midnight, so a day is 23 or
25 hours long across a daylight-saving change, and an interval that divides a day (1h, 15m, 6h)
starts whenever the local wall clock shows a multiple of it since midnight: the hour 02:00–03:00
a spring change skips has no bucket, the one an autumn change repeats has two. Other intervals
stay on epoch multiples.
"""

from __future__ import annotations

import bisect
from datetime import UTC, date, datetime, timedelta, tzinfo

import numpy as np
import numpy.typing as npt

from roost.core.timeparse import MAX_NS, MIN_NS, to_ns

DAY_NS = 86_400_000_000_000
_WEEK_DAYS = 7
# How far apart the zone's offset is sampled to find daylight-saving changes: zones change at
# most a few times a year, never twice within hours.
_PROBE_NS = 6 * 3_600_000_000_000
# Day numbers count from these dates: the epoch for days, its first Monday for weeks.
_EPOCH_DAY = date(1970, 1, 1)
_FIRST_MONDAY = date(1970, 1, 5)


def bucket_count(start: int, end: int, interval: int) -> int:
    """About how many buckets [start, end) makes (at most one more on either side)."""
    return (end - start) // interval + 1


def bucket_edges(start: int, end: int, interval: int, zone: tzinfo | None) -> npt.NDArray[np.int64]:
    """Rising bucket starts, the first at or before ``start``, the last after ``end``.

    Bound the range with :func:`bucket_count` first: the edges are made one by one in Python.
    Edges beyond what int64 nanoseconds hold (years 1677 and 2262) are clamped to it.
    """
    edges: list[int]
    if interval % DAY_NS == 0:
        edges = _days(start, end, interval // DAY_NS, zone or UTC)
    elif zone is not None and DAY_NS % interval == 0:
        edges = _wall_clock(start, end, interval, zone)
    else:
        first = start - start % interval
        edges = list(range(first, end + interval + 1, interval))
    if edges[0] < MIN_NS or edges[-1] > MAX_NS:
        edges = sorted({min(max(edge, MIN_NS), MAX_NS) for edge in edges})
    return np.asarray(edges, dtype=np.int64)


def _local_date(ns: int, zone: tzinfo) -> date:
    seconds = ns // 1_000_000_000
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)).astimezone(zone).date()


def _midnight(day: date, zone: tzinfo) -> int:
    # fold=0 places a midnight a daylight-saving change skips at the change itself.
    return to_ns(datetime(day.year, day.month, day.day, tzinfo=zone))


def _days(start: int, end: int, days: int, zone: tzinfo) -> list[int]:
    """Local midnights every ``days`` days (Mondays when a whole number of weeks)."""
    anchor = _FIRST_MONDAY if days % _WEEK_DAYS == 0 else _EPOCH_DAY
    day = _local_date(start, zone)
    day -= timedelta(days=(day - anchor).days % days)
    edges = [_midnight(day, zone)]
    while edges[-1] <= end:
        day += timedelta(days=days)
        edges.append(_midnight(day, zone))
    return edges


def _offset(ns: int, zone: tzinfo) -> int:
    """The zone's UTC offset at an instant, in ns."""
    moment = datetime.fromtimestamp(ns // 1_000_000_000, zone)
    offset = moment.utcoffset()
    return 0 if offset is None else to_ns(datetime(1970, 1, 1, tzinfo=UTC) + offset)


def _segments(lo: int, hi: int, zone: tzinfo) -> list[tuple[int, int, int]]:
    """[start, end, UTC offset] pieces of [lo, hi) over which the zone's offset holds still."""
    pieces: list[tuple[int, int, int]] = []
    begin, offset = lo, _offset(lo, zone)
    probe = lo
    while probe < hi:
        after = min(probe + _PROBE_NS, hi)
        if _offset(after, zone) != offset:
            # The change lies in (probe, after]: bisect to the second.
            left, right = probe, after
            while right - left > 1_000_000_000:
                middle = (left + right) // 2
                if _offset(middle, zone) == offset:
                    left = middle
                else:
                    right = middle
            change = right - right % 1_000_000_000
            pieces.append((begin, change, offset))
            begin, offset = change, _offset(change, zone)
        probe = after
    pieces.append((begin, hi, offset))
    return pieces


def _wall_clock(start: int, end: int, interval: int, zone: tzinfo) -> list[int]:
    """Instants at which the local clock shows a multiple of ``interval`` since midnight."""
    # A day either side: an edge at or before start and one after end always exist.
    lo, hi = start - DAY_NS, end + DAY_NS
    edges: list[int] = []
    for begin, stop, offset in _segments(lo, hi, zone):
        edges.extend(range(begin + (-(begin + offset)) % interval, stop, interval))
    first = bisect.bisect_right(edges, start) - 1
    last = bisect.bisect_right(edges, end)
    return edges[first : last + 1]
