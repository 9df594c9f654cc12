"""The one reader of from/to query values: every accepted form, and clear refusals."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from roost.core.timeparse import (
    ACCEPTED_FORMS,
    MAX_NS,
    TimeParseError,
    parse_instant,
    parse_zone,
    to_ns,
)

NOW = to_ns(datetime(2026, 11, 22, 8, 30, tzinfo=UTC))
S = 1_000_000_000
PARIS = parse_zone("Europe/Paris")


def ns(*fields: int) -> int:
    return to_ns(datetime(*fields, tzinfo=UTC))  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2018-05-19", ns(2018, 5, 19)),
        ("2018-05-19T08:19:27Z", ns(2018, 5, 19, 8, 19, 27)),
        ("2018-05-19t08:19:27z", ns(2018, 5, 19, 8, 19, 27)),
        ("2018-05-19 08:19:27+02:00", ns(2018, 5, 19, 6, 19, 27)),
        ("2018-05-19T08:19:27.123456789-0130", ns(2018, 5, 19, 9, 49, 27) + 123_456_789),
        ("2018-05-19T08:19", ns(2018, 5, 19, 8, 19)),
        ("1526717967", ns(2018, 5, 19, 8, 19, 27)),
        ("1526717967000", ns(2018, 5, 19, 8, 19, 27)),
        ("1526717967000000", ns(2018, 5, 19, 8, 19, 27)),
        ("1526717967000000000", ns(2018, 5, 19, 8, 19, 27)),
        ("1526717967.25", ns(2018, 5, 19, 8, 19, 27) + S // 4),
        ("-86400", ns(1969, 12, 31)),
        ("now", NOW),
        (" now ", NOW),
        ("now-1h", NOW - 3600 * S),
        ("now - 15m", NOW - 900 * S),
        ("now+1d", NOW + 86400 * S),
        ("now 1d", NOW + 86400 * S),  # a query string's bare + arrives as a space
        ("-24h", NOW - 86400 * S),
        ("-7d", NOW - 7 * 86400 * S),
        ("-2w", NOW - 14 * 86400 * S),
        ("+30s", NOW + 30 * S),
    ],
)
def test_every_form_reads_as_the_instant_it_names(text: str, expected: int) -> None:
    assert parse_instant(text, now_ns=NOW) == expected


def test_dates_and_offsetless_times_are_read_in_the_zone() -> None:
    assert parse_instant("2018-05-19", now_ns=NOW, zone=PARIS) == ns(2018, 5, 18, 22)
    assert parse_instant("2026-01-10T12:00", now_ns=NOW, zone=PARIS) == ns(2026, 1, 10, 11)
    # An explicit offset wins over the zone; relative times do not depend on it.
    assert parse_instant("2026-01-10T12:00Z", now_ns=NOW, zone=PARIS) == ns(2026, 1, 10, 12)
    assert parse_instant("now-1h", now_ns=NOW, zone=PARIS) == NOW - 3600 * S
    # The spring change skips 02:00–03:00 in Paris: 02:30 lands after the change.
    assert parse_instant("2026-03-29T02:30", now_ns=NOW, zone=PARIS) == ns(2026, 3, 29, 1, 30)


@pytest.mark.parametrize(
    "text",
    [
        "", "  ", "yesterday", "now-1y", "now-1", "1h", "now-h", "-1.5h", "2018-5-19",
        "2018-13-01", "2018-02-30", "2018-05-19T25:00Z", "2018-05-19T08:00+24:00",
        "2018-05-19T08:00:00.1234567891Z", "1e9", "0x10", "99999999999999999999999",
        "now-99999999999d", "x" * 10_000,
    ],
)  # fmt: skip
def test_anything_else_is_refused_with_the_accepted_forms(text: str) -> None:
    with pytest.raises(TimeParseError) as caught:
        parse_instant(text, now_ns=NOW)
    message = str(caught.value)
    assert "is not" in message or "out of range" in message
    if "is not a time" in message:
        assert ACCEPTED_FORMS in message
        assert len(message) < 400  # a huge input is not echoed back whole


def test_instants_beyond_the_store_are_out_of_range() -> None:
    with pytest.raises(TimeParseError, match="out of range"):
        parse_instant("2300-01-01", now_ns=NOW)
    assert parse_instant(str(MAX_NS), now_ns=NOW) == MAX_NS


@pytest.mark.parametrize("name", ["", "Mars/Olympus", "../etc/passwd", "/etc/localtime", "a" * 300])
def test_unknown_zones_are_refused(name: str) -> None:
    with pytest.raises(TimeParseError, match="IANA time zone"):
        parse_zone(name)


@given(st.text(max_size=80))
def test_no_text_makes_the_parser_raise_anything_but_its_own_error(text: str) -> None:
    try:
        value = parse_instant(text, now_ns=NOW, zone=PARIS)
    except TimeParseError:
        return
    assert -(2**63) <= value <= MAX_NS
