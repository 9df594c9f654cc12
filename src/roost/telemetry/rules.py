"""Telemetry and event payloads: the accepted forms, timestamps and value types (pure).

Accepted items (a message is one item or a JSON array of them, optionally wrapped as
``{"msg_id": …, "items": [...]}``):

* sensor form (the seed format): ``{"sensor_id": "4", "timestamp": 1526717967, "value": 21.5}``
* key/value form: ``{"ts": 1526717967000, "values": {"temperature": 21.5, "door": true}}``
* plain key/value: ``{"temperature": 21.5}`` (every key but ``ts``/``timestamp``/``msg_id``
  names a sensor)
* an event: ``{"event": "product_pickup", "product_id": 162, "ts": …}`` (the whole object is kept)

Timestamps are integer or decimal seconds, milliseconds, microseconds or nanoseconds told apart by
magnitude, or RFC 3339 text; a missing timestamp means "when it was received". Values are checked
against the sensor's type; an unknown sensor gets a type inferred from its first value.

A number sent as text (the seed's sample sends ``"value": "91827364"``) is taken by a double or
long sensor as the number it spells, when the text is exactly a JSON number: ``"91827364"``,
``"-12.5"``, ``"1e3"``, ``"-0"``. Anything else stays text and is refused there: ``""``, ``" 12"``,
``"+5"``, ``"012"``, ``".5"``, ``"0x1F"``, ``"1_000"``, ``"NaN"``, ``"inf"``, non-ASCII digits, and
text longer than :data:`MAX_NUMBER_TEXT`. The number then follows the sensor's rule as if it had
come unquoted: a long sensor keeps an integer exact and refuses one beyond 64 bits or a fraction;
a double sensor refuses an integer beyond 64 bits (as every door refuses that number unquoted)
and what overflows a double (``"1e999"``). Only numeric sensors read text this way: a new sensor
whose first value is text becomes a string sensor, as before.

Everything here is synchronous and allocation-light: it runs for every message on the ingest path.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Any

import orjson

from roost.telemetry.engine.batch import (
    KIND_BOOLEAN,
    KIND_DOUBLE,
    KIND_JSON,
    KIND_LONG,
    KIND_STRING,
)

# Magnitude thresholds between units, in absolute value: a seconds timestamp stays below 1e11
# until the year 5138, milliseconds below 1e14 until 5138 too, and so on.
_SECONDS_BELOW = 100_000_000_000
_MILLIS_BELOW = 100_000_000_000_000
_MICROS_BELOW = 100_000_000_000_000_000
# int64 nanoseconds reach 2262-04-11; later instants cannot be stored.
MAX_TS_NS = 2**63 - 1
MIN_TS_NS = -(2**63)
# A point more than this far ahead of the server's clock is flagged (and still stored): a device
# clock gone wrong is worth telling, not worth losing data over.
FUTURE_TOLERANCE_NS = 5 * 60 * 1_000_000_000
LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1
# A number sent as text: JSON's number grammar exactly, ASCII digits only (Python's int() and
# float() would also take spaces, "+", "_", "nan", "inf" and other scripts' digits).
_NUMBER_TEXT = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
# Longer text is not read as a number: an int64 needs at most 20 characters and a double's
# shortest form 24, so 64 leaves room for extra decimals and keeps int()/float() off huge text.
MAX_NUMBER_TEXT = 64
# The integers a JSON number may hold on every door (signed to unsigned 64-bit, what orjson keeps
# exact): text spelling one beyond is refused as that number sent unquoted is.
JSON_INT_MIN, JSON_INT_MAX = -(2**63), 2**64 - 1
TIMESTAMP_KEYS = ("ts", "timestamp")
RESERVED_KEYS = frozenset({"ts", "timestamp", "msg_id"})
# Limits of one message: beyond them the sender is told, not the database flooded.
MAX_ITEMS = 100_000
MAX_EVENT_TYPE = 128

_RFC3339 = re.compile(
    r"(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|z|[+-]\d{2}:\d{2})"
)


class ItemError(Exception):
    """One item of a message is bad; ``field`` says where."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def parse_timestamp(raw: Any) -> int:
    """A timestamp in any accepted form → ns since the epoch; raise ItemError when unusable."""
    if isinstance(raw, bool):
        raise ItemError("ts", "a timestamp cannot be true or false")
    if isinstance(raw, int):
        magnitude = -raw if raw < 0 else raw
        if magnitude < _SECONDS_BELOW:
            ns = raw * 1_000_000_000
        elif magnitude < _MILLIS_BELOW:
            ns = raw * 1_000_000
        elif magnitude < _MICROS_BELOW:
            ns = raw * 1_000
        else:
            ns = raw
    elif isinstance(raw, float):
        if not math.isfinite(raw):
            raise ItemError("ts", "a timestamp must be a finite number")
        fmagnitude = abs(raw)
        if fmagnitude < _SECONDS_BELOW:
            ns = _scaled(raw, 1_000_000_000)
        elif fmagnitude < _MILLIS_BELOW:
            ns = _scaled(raw, 1_000_000)
        elif fmagnitude < _MICROS_BELOW:
            ns = _scaled(raw, 1_000)
        else:
            ns = round(raw)
    elif isinstance(raw, str):
        ns = _parse_rfc3339(raw)
    else:
        raise ItemError("ts", "a timestamp must be a number (s, ms, µs or ns) or RFC 3339 text")
    if not MIN_TS_NS <= ns <= MAX_TS_NS:
        raise ItemError("ts", "the timestamp is out of range (years 1678 to 2262)")
    return ns


def _scaled(value: float, scale: int) -> int:
    """``value * scale`` exactly for the whole part: 1526717967.25 s must not lose 256 ns."""
    whole = math.floor(value)
    return whole * scale + round((value - whole) * scale)


def _parse_rfc3339(text: str) -> int:
    match = _RFC3339.fullmatch(text.strip())
    if match is None:
        raise ItemError("ts", f"{text[:40]!r} is not an RFC 3339 time like 2026-11-22T08:30:00Z")
    date, clock, fraction, zone = match.groups()
    try:
        whole = datetime.fromisoformat(f"{date}T{clock}{'+00:00' if zone in 'Zz' else zone}")
    except ValueError as exc:
        raise ItemError("ts", f"{text[:40]!r} is not a valid date and time") from exc
    ns = int(whole.timestamp()) * 1_000_000_000
    if fraction:
        ns += int(fraction.ljust(9, "0"))
    return ns


def infer_kind(value: Any) -> int:
    """The kind a sensor gets when its first value is this one."""
    if isinstance(value, bool):
        return KIND_BOOLEAN
    if isinstance(value, int | float):
        # Numbers become double: an integer-looking first reading ("21") of a temperature must
        # not make the sensor refuse "21.5" later. Long sensors are declared explicitly.
        return KIND_DOUBLE
    if isinstance(value, str):
        return KIND_STRING
    return KIND_JSON


def number_from_text(text: str) -> int | float | None:
    """The JSON number ``text`` spells exactly (an int without fraction or exponent), or None."""
    if len(text) > MAX_NUMBER_TEXT or _NUMBER_TEXT.fullmatch(text) is None:
        return None
    if "." in text or "e" in text or "E" in text:
        return float(text)
    return int(text)


def coerce(kind: int, value: Any) -> Any:
    """The value as a sensor of ``kind`` stores it; raise ItemError when it does not fit.

    Numbers are tested first, so a number sent as text (see the module docstring) costs nothing
    to the values sent as numbers.
    """
    if kind == KIND_DOUBLE:
        if isinstance(value, float):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            number = number_from_text(value)
            if type(number) is int and not JSON_INT_MIN <= number <= JSON_INT_MAX:
                raise ItemError("value", "the integer does not fit in 64 bits")
            if number is not None and math.isfinite(number):
                return float(number)
        raise ItemError(
            "value", f"expected a number for a double sensor, got {_describe(value)}{_hint(value)}"
        )
    if kind == KIND_LONG:
        if isinstance(value, int) and not isinstance(value, bool):
            if not LONG_MIN <= value <= LONG_MAX:
                raise ItemError("value", "the integer does not fit in 64 bits")
            return value
        if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
            return int(value)
        if isinstance(value, str):
            number = number_from_text(value)
            if number is not None:
                return coerce(KIND_LONG, number)
        raise ItemError(
            "value", f"expected an integer for a long sensor, got {_describe(value)}{_hint(value)}"
        )
    if kind == KIND_BOOLEAN:
        if isinstance(value, bool):
            return value
        if value in (0, 1) and not isinstance(value, float):
            return bool(value)
        raise ItemError(
            "value", f"expected true or false for a boolean sensor, got {_describe(value)}"
        )
    if kind == KIND_STRING:
        if isinstance(value, str):
            return value
        raise ItemError("value", f"expected text for a string sensor, got {_describe(value)}")
    if value is None:
        raise ItemError("value", "a json sensor's value cannot be null")
    return orjson.dumps(value).decode()


def _hint(value: Any) -> str:
    """What a numeric sensor takes as text, said when it was sent text."""
    return " (text counts only when it is exactly a JSON number)" if isinstance(value, str) else ""


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"text {value[:20]!r}"
    if isinstance(value, int | float):
        return f"the number {value}"
    return "an array" if isinstance(value, list) else "an object"


def unwrap(document: Any) -> tuple[list[Any], str | None]:
    """A parsed message → (its items, its message id if it has one)."""
    msg_id = None
    if isinstance(document, dict) and "items" in document and isinstance(document["items"], list):
        raw_id = document.get("msg_id")
        msg_id = None if raw_id is None else str(raw_id)
        items = document["items"]
    elif isinstance(document, list):
        items = document
    else:
        items = [document]
        if isinstance(document, dict) and document.get("msg_id") is not None:
            msg_id = str(document["msg_id"])
    return items, msg_id


def item_timestamp(item: dict[str, Any], default: int) -> int:
    """The item's own timestamp, or ``default`` (the receive time) when it has none."""
    raw = item.get("ts")
    if raw is None:
        raw = item.get("timestamp")
        if raw is None:
            return default
    return parse_timestamp(raw)


def readings(item: Any) -> tuple[str, list[tuple[str, Any]]] | None:
    """The (form, [(sensor id, value)...]) of a telemetry item, or None if it is an event.

    Raises ItemError for an item that is neither.
    """
    if not isinstance(item, dict):
        raise ItemError("", f"each item must be a JSON object, got {_describe(item)}")
    if "sensor_id" in item:
        sensor = item["sensor_id"]
        if isinstance(sensor, bool) or not isinstance(sensor, str | int):
            raise ItemError("sensor_id", "sensor_id must be text or an integer")
        if "value" not in item:
            raise ItemError("value", "the sensor form needs a value")
        return "sensor", [(str(sensor), item["value"])]
    values = item.get("values")
    if values is not None:
        if not isinstance(values, dict):
            raise ItemError("values", "values must be an object of sensor: value")
        if not values:
            raise ItemError("values", "values is empty")
        return "values", list(values.items())
    if "event" in item:
        return None
    pairs = [(key, value) for key, value in item.items() if key not in RESERVED_KEYS]
    if not pairs:
        raise ItemError("", "the item names no sensor (and is not an event)")
    return "plain", pairs


def event_type(item: Any) -> str:
    """The type of an event item; raise ItemError when it is not an event."""
    if not isinstance(item, dict):
        raise ItemError("", f"each event must be a JSON object, got {_describe(item)}")
    kind = item.get("event")
    if not isinstance(kind, str) or not kind or len(kind) > MAX_EVENT_TYPE:
        raise ItemError("event", f"an event needs an 'event' type of 1-{MAX_EVENT_TYPE} characters")
    return kind
