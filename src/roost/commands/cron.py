"""When a command schedule fires: cron expressions in a time zone, an offset, snoozing (pure).

A recurring schedule names *events* with a five-field cron expression read in an IANA time zone
(``0 18 * * 1-5`` in ``Europe/Berlin``: 18:00 Berlin time on weekdays, whatever the season) and
fires ``offset_s`` seconds away from each event (``-10800``: three hours before). The offset is
elapsed time, not wall-clock time: three hours before 18:00 on the night clocks change is
still three real hours.

Daylight saving time follows Debian cron, as :mod:`cronsim` does for fixed-time expressions: a
local time skipped by the spring change fires at the first valid minute after it, and a local
time repeated by the autumn change fires once, at its first occurrence.

Snoozing moves only the next fire; the fires after it keep to the cron rhythm (a snooze longer
than the period skips the events it passes over, so nothing fires twice in a row to catch up).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from roost.errors import Conflict, InvalidInput

#: Cron expressions have exactly the five classic fields (minute resolution).
CRON_FIELDS = 5
#: An offset beyond a week would put a fire nearer another week's event than its own.
MAX_OFFSET_S = 7 * 24 * 3600


def parse_timezone(name: str) -> ZoneInfo:
    """The IANA time zone ``name`` (``Europe/Berlin``, ``UTC``); InvalidInput when unknown."""
    if not name or len(name) > 64 or name.startswith(("/", ".")) or ".." in name:
        raise InvalidInput(f"unknown time zone {name!r}: use an IANA name such as Europe/Berlin")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(
            f"unknown time zone {name!r}: use an IANA name such as Europe/Berlin"
        ) from None


def check_cron(expr: str) -> str:
    """The normalised cron expression (single spaces); InvalidInput with the reason otherwise."""
    fields = expr.split()
    if len(fields) != CRON_FIELDS:
        raise InvalidInput(
            f"invalid cron expression {expr!r}: it needs 5 fields "
            "(minute hour day-of-month month day-of-week), e.g. '0 18 * * 1-5'"
        )
    normalised = " ".join(fields)
    try:
        upcoming = CronSim(normalised, datetime(2000, 1, 1, tzinfo=UTC))
        next(upcoming)
    except CronSimError as exc:
        raise InvalidInput(f"invalid cron expression {expr!r}: {exc}") from None
    except StopIteration:
        raise InvalidInput(f"invalid cron expression {expr!r}: it never fires") from None
    return normalised


def check_offset(offset_s: int) -> int:
    """``offset_s`` when within a week either way; InvalidInput otherwise."""
    if abs(offset_s) > MAX_OFFSET_S:
        raise InvalidInput(f"offset_s must be between -{MAX_OFFSET_S} and {MAX_OFFSET_S}")
    return offset_s


def next_event(cron: str, tz: ZoneInfo, after: datetime) -> datetime | None:
    """The first event of ``cron`` in ``tz`` strictly after ``after`` (UTC), or None if none."""
    if after.tzinfo is None:
        raise ValueError("after must be timezone-aware")
    try:
        event = next(CronSim(cron, after.astimezone(tz)))
    except StopIteration:
        return None
    return event.astimezone(UTC)


def next_fire(cron: str, tz: ZoneInfo, offset_s: int, after: datetime) -> datetime | None:
    """The first fire strictly after ``after``: an event of ``cron`` in ``tz`` plus ``offset_s``.

    ``after`` and the answer are timezone-aware; the answer is in UTC. None when the expression
    has no event left (within cronsim's 50-year horizon).
    """
    shift = timedelta(seconds=offset_s)
    event = next_event(cron, tz, after - shift)
    return None if event is None else event + shift


def snoozed(
    next_fire_at: datetime | None,
    now: datetime,
    *,
    seconds: int | None = None,
    until: datetime | None = None,
) -> datetime:
    """The next fire time after a snooze by ``seconds`` or to ``until`` (exactly one given).

    Conflict when there is no next fire to move (a finished or paused schedule); InvalidInput
    for a non-positive snooze or an ``until`` that is not in the future.
    """
    if (seconds is None) == (until is None):
        raise InvalidInput('snooze with either {"seconds": n} or {"until": timestamp}')
    if next_fire_at is None:
        raise Conflict("the schedule has no next fire to snooze")
    if seconds is not None:
        if seconds <= 0:
            raise InvalidInput("seconds must be positive")
        return next_fire_at + timedelta(seconds=seconds)
    assert until is not None
    if until.tzinfo is None:
        raise InvalidInput("until must carry a time zone (e.g. 2026-11-22T18:00:00Z)")
    if until <= now:
        raise InvalidInput("until must be in the future")
    return until.astimezone(UTC)
