"""Maintenance windows of jobs (pure): parsing, open or closed per time zone, next opening."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from roost.errors import InvalidInput
from roost.jobs.windows import is_open, next_opening, parse_maintenance

# A Wednesday, 10:30 UTC (19:30 in Tokyo, 06:30 in New York in summer time).
NOW = datetime(2026, 6, 10, 10, 30, tzinfo=UTC)


def test_a_window_is_read_in_the_devices_time_zone() -> None:
    windows = parse_maintenance([{"start": "19:00", "end": "20:00"}])
    assert is_open(windows, NOW, "Asia/Tokyo")
    assert not is_open(windows, NOW, "America/New_York")
    assert not is_open(windows, NOW, None)  # UTC
    assert next_opening(windows, NOW, None) == datetime(2026, 6, 10, 19, 0, tzinfo=UTC)
    assert next_opening(windows, NOW, "America/New_York") == datetime(
        2026, 6, 10, 23, 0, tzinfo=UTC
    )


def test_windows_past_midnight_and_days() -> None:
    overnight = parse_maintenance([{"start": "22:00", "end": "11:00", "days": ["tue"]}])
    assert is_open(overnight, NOW, None)  # started Tuesday 22:00 UTC, ends Wednesday 11:00
    weekend = parse_maintenance([{"start": "02:00", "end": "05:00", "days": ["sat", "sun"]}])
    assert not is_open(weekend, NOW, None)
    assert next_opening(weekend, NOW, None) == datetime(2026, 6, 13, 2, 0, tzinfo=UTC)
    assert is_open((), NOW, "Asia/Tokyo") and next_opening((), NOW, None) is None
    # an unknown zone reads as UTC rather than blocking the job forever
    assert is_open(overnight, NOW, "Mars/Olympus_Mons")


@pytest.mark.parametrize(
    "raw",
    [
        [],
        "02:00-05:00",
        [{"start": "2:00", "end": "05:00"}],
        [{"start": "24:00", "end": "05:00"}],
        [{"start": "02:00", "end": "02:00"}],
        [{"start": "02:00", "end": "05:00", "days": ["monday"]}],
        [{"start": "02:00", "end": "05:00", "tz": "UTC"}],
    ],
)
def test_bad_windows_are_refused(raw: object) -> None:
    with pytest.raises(InvalidInput):
        parse_maintenance(raw)
