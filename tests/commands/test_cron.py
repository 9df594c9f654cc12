"""When command schedules fire: cron in a time zone, offsets, daylight saving changes, snoozing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from roost.commands.cron import (
    MAX_OFFSET_S,
    check_cron,
    check_offset,
    next_event,
    next_fire,
    parse_timezone,
    snoozed,
)
from roost.errors import Conflict, InvalidInput

BERLIN = parse_timezone("Europe/Berlin")
NEW_YORK = parse_timezone("America/New_York")
WEEKDAYS_18H = "0 18 * * 1-5"


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def fires(cron: str, tz_name: str, offset_s: int, after: datetime, n: int) -> list[datetime]:
    tz = parse_timezone(tz_name)
    out = []
    for _ in range(n):
        fire = next_fire(cron, tz, offset_s, after)
        assert fire is not None
        out.append(fire)
        after = fire
    return out


def test_a_local_time_follows_the_zone_across_the_seasons() -> None:
    # 18:00 in Berlin is 17:00 UTC in winter (CET) and 16:00 UTC in summer (CEST).
    assert next_fire(WEEKDAYS_18H, BERLIN, 0, utc(2026, 1, 14, 12)) == utc(2026, 1, 14, 17)
    assert next_fire(WEEKDAYS_18H, BERLIN, 0, utc(2026, 7, 15, 12)) == utc(2026, 7, 15, 16)


def test_weekdays_only_and_strictly_after() -> None:
    # Friday 2026-03-20 17:00 UTC is that day's event itself: the next is Monday.
    assert next_fire(WEEKDAYS_18H, BERLIN, 0, utc(2026, 3, 20, 17)) == utc(2026, 3, 23, 17)
    assert next_fire(WEEKDAYS_18H, BERLIN, 0, utc(2026, 3, 20, 16, 59)) == utc(2026, 3, 20, 17)


def test_three_hours_before_each_event_across_the_spring_change() -> None:
    # Clocks go forward in Berlin on Sunday 2026-03-29. Friday's event is 17:00 UTC (CET),
    # Monday's 16:00 UTC (CEST); three hours before each is exactly three real hours before.
    got = fires(WEEKDAYS_18H, "Europe/Berlin", -10800, utc(2026, 3, 27, 12), 2)
    assert got == [utc(2026, 3, 27, 14), utc(2026, 3, 30, 13)]


def test_an_offset_can_fire_before_the_after_time_event() -> None:
    # At 15:00 UTC the 17:00 UTC event is still ahead but its fire (14:00) has passed.
    assert next_fire(WEEKDAYS_18H, BERLIN, -10800, utc(2026, 1, 14, 15)) == utc(2026, 1, 15, 14)
    # A positive offset: 30 minutes after each event.
    assert next_fire(WEEKDAYS_18H, BERLIN, 1800, utc(2026, 1, 14, 17, 10)) == utc(
        2026, 1, 14, 17, 30
    )


def test_a_time_skipped_by_the_spring_change_fires_at_the_next_valid_minute() -> None:
    # 02:30 does not exist in Berlin on 2026-03-29 (02:00 → 03:00): it fires at 03:00 CEST.
    got = fires("30 2 * * *", "Europe/Berlin", 0, utc(2026, 3, 28, 12), 3)
    assert got == [utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 30), utc(2026, 3, 31, 0, 30)]


def test_a_time_repeated_by_the_autumn_change_fires_once() -> None:
    # 02:30 happens twice in Berlin on 2026-10-25 (CEST, then CET): it fires at the first.
    got = fires("30 2 * * *", "Europe/Berlin", 0, utc(2026, 10, 24, 12), 3)
    assert got == [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30), utc(2026, 10, 27, 1, 30)]


def test_other_zones_change_on_their_own_dates() -> None:
    # New York moves to EDT on 2026-03-08, three weeks before Europe.
    assert next_event("0 9 * * *", NEW_YORK, utc(2026, 3, 7, 0)) == utc(2026, 3, 7, 14)
    assert next_event("0 9 * * *", NEW_YORK, utc(2026, 3, 8, 0)) == utc(2026, 3, 8, 13)


def test_cron_expressions_are_checked_with_clear_reasons() -> None:
    assert check_cron("  0  18 * *   1-5 ") == "0 18 * * 1-5"
    assert check_cron("*/15 * * * MON-FRI") == "*/15 * * * MON-FRI"
    with pytest.raises(InvalidInput, match="needs 5 fields"):
        check_cron("0 18 * *")
    with pytest.raises(InvalidInput, match="needs 5 fields"):
        check_cron("0 0 18 * * *")  # seconds are not part of the contract
    with pytest.raises(InvalidInput, match="minute"):
        check_cron("61 * * * *")
    with pytest.raises(InvalidInput, match="day-of-month"):
        check_cron("0 0 31 2 *")  # never happens
    with pytest.raises(InvalidInput, match="day-of-week"):
        check_cron("0 0 * * 8")


def test_time_zones_are_iana_names() -> None:
    assert parse_timezone("UTC").key == "UTC"
    for bad in ("Mars/Olympus", "", "../../etc/passwd", "/etc/localtime", "Europe/"):
        with pytest.raises(InvalidInput, match="unknown time zone"):
            parse_timezone(bad)


def test_offsets_stay_within_a_week() -> None:
    assert check_offset(-10800) == -10800
    with pytest.raises(InvalidInput, match="offset_s"):
        check_offset(MAX_OFFSET_S + 1)


def test_snooze_moves_the_next_fire_only() -> None:
    now = utc(2026, 1, 14, 12)
    nxt = utc(2026, 1, 14, 14)
    assert snoozed(nxt, now, seconds=600) == nxt + timedelta(minutes=10)
    assert snoozed(nxt, now, until=utc(2026, 1, 14, 20)) == utc(2026, 1, 14, 20)
    # The following fire keeps the rhythm: it is computed from the cron after the snoozed fire.
    later = snoozed(nxt, now, seconds=600)
    assert next_fire(WEEKDAYS_18H, BERLIN, -10800, later) == utc(2026, 1, 15, 14)


def test_snooze_refusals() -> None:
    now = utc(2026, 1, 14, 12)
    nxt = utc(2026, 1, 14, 14)
    with pytest.raises(Conflict, match="no next fire"):
        snoozed(None, now, seconds=60)
    with pytest.raises(InvalidInput, match="either"):
        snoozed(nxt, now)
    with pytest.raises(InvalidInput, match="either"):
        snoozed(nxt, now, seconds=60, until=nxt)
    with pytest.raises(InvalidInput, match="positive"):
        snoozed(nxt, now, seconds=0)
    with pytest.raises(InvalidInput, match="future"):
        snoozed(nxt, now, until=now)
    with pytest.raises(InvalidInput, match="time zone"):
        snoozed(nxt, now, until=datetime(2026, 1, 14, 20))


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        next_fire(WEEKDAYS_18H, BERLIN, 0, datetime(2026, 1, 14, 12))
