"""Maintenance windows of a job (pure): when its executions may be released to a device.

A job's ``maintenance`` is a list of windows ``{"days": ["mon", …]?, "start": "02:00", "end":
"05:00"}`` read in each device's local time (its site's ``timezone``; UTC for a device without a
site). An execution is released only while its device is inside one of them; outside, it waits
QUEUED. A window whose ``end`` is not after its ``start`` runs past midnight (``days`` name the
day it starts on); no ``days`` means every day. The end is exclusive.

Whether a window is open depends only on the time zone, so the jobs pass asks once per time zone
among a job's waiting devices (:func:`is_open`) and wakes up when the next one opens
(:func:`next_opening`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta, tzinfo
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from roost.errors import InvalidInput

log = logging.getLogger(__name__)

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# A job rarely needs more: a weekday and a weekend window per region, each perhaps split.
MAX_WINDOWS = 20
# Window openings are looked for this far ahead: a week covers every weekly pattern, one more
# day covers a window that started yesterday (past midnight).
LOOKAHEAD_DAYS = 8


@dataclass(frozen=True, slots=True)
class Window:
    """One weekly maintenance window in local time (``days`` empty: every day)."""

    start: time
    end: time
    days: frozenset[int] = frozenset()  # 0 = Monday, as datetime.weekday()

    def starting_on(self, day: datetime) -> list[tuple[datetime, datetime]]:
        """The windows starting on ``day`` (a local midnight), as local (start, end)."""
        if self.days and day.weekday() not in self.days:
            return []
        start = day.replace(hour=self.start.hour, minute=self.start.minute)
        end = day.replace(hour=self.end.hour, minute=self.end.minute)
        if end <= start:
            end += timedelta(days=1)
        return [(start, end)]


def parse_maintenance(raw: Any) -> tuple[Window, ...]:
    """A job's ``maintenance`` checked: a list of ``{days?, start, end}`` (None: no windows)."""
    if raw is None:
        return ()
    if not isinstance(raw, list) or not raw:
        raise InvalidInput("maintenance must be a non-empty list of windows")
    if len(raw) > MAX_WINDOWS:
        raise InvalidInput(f"maintenance has at most {MAX_WINDOWS} windows")
    windows = []
    for i, item in enumerate(raw):
        label = f"maintenance[{i}]"
        if not isinstance(item, Mapping):
            raise InvalidInput(f"{label} must be an object with start, end and optional days")
        unknown = set(item) - {"days", "start", "end"}
        if unknown:
            raise InvalidInput(f"{label} has unknown fields {sorted(unknown)}")
        start = _clock_time(item.get("start"), f"{label}.start")
        end = _clock_time(item.get("end"), f"{label}.end")
        if start == end:
            raise InvalidInput(f"{label}: start and end are the same time")
        days = item.get("days")
        if days is not None and (
            not isinstance(days, list) or not days or not all(d in DAYS for d in days)
        ):
            raise InvalidInput(f"{label}.days must be a non-empty list of {list(DAYS)}")
        windows.append(Window(start, end, frozenset(DAYS.index(d) for d in days or ())))
    return tuple(windows)


def _clock_time(value: Any, label: str) -> time:
    if not isinstance(value, str):
        raise InvalidInput(f'{label} must be a local time "HH:MM"')
    hours, sep, minutes = value.partition(":")
    if (
        not sep
        or len(hours) != 2
        or len(minutes) != 2
        or not hours.isdigit()
        or not minutes.isdigit()
        or not 0 <= int(hours) <= 23
        or not 0 <= int(minutes) <= 59
    ):
        raise InvalidInput(f'{label} must be a local time "HH:MM", not {value!r}')
    return time(int(hours), int(minutes))


@lru_cache(maxsize=512)
def zone(name: str | None) -> tzinfo:
    """The time zone ``name`` (an IANA name); UTC for none or an unknown name."""
    if not name:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        log.warning("unknown time zone %r: maintenance windows are read in UTC", name)
        return UTC


def _candidates(
    windows: Sequence[Window], now: datetime, tz: tzinfo
) -> Iterable[tuple[datetime, datetime]]:
    local = now.astimezone(tz)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    for offset in range(-1, LOOKAHEAD_DAYS):
        # Wall-clock arithmetic on naive values, then the zone: DST days keep their local times.
        day = (midnight.replace(tzinfo=None) + timedelta(days=offset)).replace(tzinfo=tz)
        for window in windows:
            for start, end in window.starting_on(day):
                yield start.astimezone(UTC), end.astimezone(UTC)


def is_open(windows: Sequence[Window], now: datetime, tz_name: str | None) -> bool:
    """Whether a device in time zone ``tz_name`` is inside a window at ``now`` (always, when the
    job has no windows)."""
    if not windows:
        return True
    return any(start <= now < end for start, end in _candidates(windows, now, zone(tz_name)))


def next_opening(windows: Sequence[Window], now: datetime, tz_name: str | None) -> datetime | None:
    """When the next window opens after ``now`` for that time zone (None: never / no windows)."""
    if not windows:
        return None
    starts = [s for s, _ in _candidates(windows, now, zone(tz_name)) if s > now]
    return min(starts) if starts else None
