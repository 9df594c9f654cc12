"""Time bounds people write in query strings: RFC 3339, dates, epoch numbers, ``now-1h`` (pure).

One parser for every ``from``/``to`` query parameter, so that each route reads the same forms:

* RFC 3339: ``2026-11-22T08:30:00Z``, ``2026-11-22T09:30:00.5+01:00`` (nine fraction digits at
  most); without an offset (``2026-11-22T08:30``) the time is read in the given zone, else UTC
* a date: ``2018-05-19`` is that day's midnight in the given zone, else UTC
* an epoch number: seconds, milliseconds, microseconds or nanoseconds told apart by magnitude (as
  the ingest doors read device timestamps), integer or decimal
* relative to the server's clock: ``now``, ``now-1h``, ``now-15m``, ``now+1d``, ``-24h``, ``-7d``
  (units s, m, h, d, w). A query string turns a bare ``+`` into a space, so ``now 1h`` reads as
  ``now+1h``.

Everything returns nanoseconds since the epoch; anything else raises :class:`TimeParseError` whose
message lists the accepted forms.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from decimal import Decimal, InvalidOperation
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# What an error message and the OpenAPI document say a time bound may be.
ACCEPTED_FORMS = (
    "RFC 3339 (2026-11-22T08:30:00Z), a date (2026-11-22: midnight in tz, else UTC), "
    "epoch seconds/ms/µs/ns (1763800200), now, now-1h, now-15m, -24h or -7d "
    "(units s, m, h, d, w)"
)
# The same forms as a regular expression, for the OpenAPI ``pattern`` of such parameters; the
# empty value is "not given" (``?to=``), as the routes read it.
PATTERN = (
    r"^(\d{4}-\d{2}-\d{2}([Tt ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?([Zz]|[+-]\d{2}:?\d{2})?)?"
    r"|-?\d+(\.\d+)?"
    r"|now(\s*[+ -]\s*\d+\s*[smhdw])?"
    r"|[+-]\d+\s*[smhdw]|)$"
)
# Magnitude thresholds between epoch units (absolute value), as the ingest doors use them: seconds
# stay below 1e11 until the year 5138, milliseconds below 1e14, microseconds below 1e17.
_SECONDS_BELOW = 100_000_000_000
_MILLIS_BELOW = 100_000_000_000_000
_MICROS_BELOW = 100_000_000_000_000_000
# int64 nanoseconds span 1677-09-21 to 2262-04-11: the instants the store can hold.
MIN_NS, MAX_NS = -(2**63), 2**63 - 1
# Longest input read at all: the longest valid form is ~35 characters.
MAX_LENGTH = 64
_UNIT_NS = {
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
    "d": 86_400_000_000_000,
    "w": 604_800_000_000_000,
}
_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
_DATETIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?"
    r"([Zz]|[+-]\d{2}:?\d{2})?"
)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_RELATIVE = re.compile(r"(now)?\s*(?:([+ -])\s*(\d{1,12})\s*([smhdw]))?")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class TimeParseError(ValueError):
    """A time bound or time zone that none of the accepted forms reads."""


def parse_zone(name: str) -> ZoneInfo:
    """An IANA time zone (``Europe/Paris``, ``UTC``); TimeParseError for an unknown name."""
    try:
        if not name or len(name) > MAX_LENGTH:
            raise ValueError(name)
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise TimeParseError(
            f"{name[:MAX_LENGTH]!r} is not an IANA time zone (e.g. Europe/Paris, UTC)"
        ) from exc


def parse_instant(raw: str, *, now_ns: int, zone: tzinfo | None = None) -> int:
    """Read one time bound in any accepted form → ns since the epoch.

    ``now_ns`` anchors the relative forms; ``zone`` places dates and offset-less times (UTC when
    None).
    """
    text = raw.strip()
    if not text or len(text) > MAX_LENGTH:
        raise _refused(raw)
    ns = _read(text, now_ns, zone or UTC)
    if not MIN_NS <= ns <= MAX_NS:
        raise TimeParseError(f"{raw!r} is out of range (years 1678 to 2262)")
    return ns


def to_ns(moment: datetime) -> int:
    """An aware datetime → ns since the epoch, exactly (no float on the way)."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def _refused(raw: str) -> TimeParseError:
    return TimeParseError(f"{raw[:MAX_LENGTH]!r} is not a time: use {ACCEPTED_FORMS}")


def _read(text: str, now_ns: int, zone: tzinfo) -> int:
    if _NUMBER.fullmatch(text):
        return _epoch(text)
    date = _DATE.fullmatch(text)
    if date:
        return _wall(text, zone, (int(date[1]), int(date[2]), int(date[3])))
    stamp = _DATETIME.fullmatch(text)
    if stamp:
        return _datetime(text, stamp, zone)
    relative = _RELATIVE.fullmatch(text)
    if relative and (relative[1] or relative[2] in {"+", "-"}):
        now, sign, amount, unit = relative.groups()
        if sign is None:
            return now_ns
        offset = int(amount) * _UNIT_NS[unit]
        return now_ns - offset if sign == "-" else now_ns + offset
    raise _refused(text)


def _epoch(text: str) -> int:
    """An epoch number in s, ms, µs or ns, told apart by magnitude."""
    try:
        number = Decimal(text)
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only decimals
        raise _refused(text) from exc
    magnitude = abs(number)
    if magnitude < _SECONDS_BELOW:
        scale = 1_000_000_000
    elif magnitude < _MILLIS_BELOW:
        scale = 1_000_000
    elif magnitude < _MICROS_BELOW:
        scale = 1_000
    else:
        scale = 1
    return int((number * scale).to_integral_value())


def _wall(
    text: str,
    zone: tzinfo,
    day: tuple[int, int, int],
    clock: tuple[int, int, int] = (0, 0, 0),
) -> int:
    """A wall-clock time in ``zone`` (a skipped time moves forward, a repeated one is the first)."""
    try:
        moment = datetime(*day, *clock, tzinfo=zone)
    except ValueError as exc:
        raise TimeParseError(f"{text!r} is not a valid date or time: {exc}") from exc
    return to_ns(moment)


def _datetime(text: str, match: re.Match[str], zone: tzinfo) -> int:
    day = (int(match[1]), int(match[2]), int(match[3]))
    clock = (int(match[4]), int(match[5]), int(match[6] or 0))
    fraction = (match[7] or "").ljust(9, "0")
    offset = match[8]
    if offset is None:
        base = _wall(text, zone, day, clock)
    else:
        if offset in {"Z", "z"}:
            fixed: tzinfo = UTC
        else:
            digits = offset[1:].replace(":", "")
            minutes = int(digits[:2]) * 60 + int(digits[2:])
            if int(digits[:2]) > 23 or int(digits[2:]) > 59:
                raise TimeParseError(f"{text!r} is not a valid time: no UTC offset {offset}")
            fixed = timezone(timedelta(minutes=minutes if offset[0] == "+" else -minutes))
        base = _wall(text, fixed, day, clock)
    return base + int(fraction)
