"""Payload normalisation: forms, timestamps by magnitude and RFC 3339, values against types."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from roost.telemetry.engine.batch import (
    KIND_BOOLEAN,
    KIND_DOUBLE,
    KIND_JSON,
    KIND_LONG,
    KIND_STRING,
)
from roost.telemetry.rules import (
    MAX_NUMBER_TEXT,
    ItemError,
    coerce,
    event_type,
    infer_kind,
    item_timestamp,
    number_from_text,
    parse_timestamp,
    readings,
    unwrap,
)

SEED_TS = 1526717967  # 2018-05-19T08:19:27Z, the seed's example
SEED_NS = SEED_TS * 1_000_000_000


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (SEED_TS, SEED_NS),
        (SEED_TS * 1000, SEED_NS),
        (SEED_TS * 1_000_000, SEED_NS),
        (SEED_NS, SEED_NS),
        (SEED_TS + 0.25, SEED_NS + 250_000_000),
        (float(SEED_TS * 1000) + 0.5, SEED_NS + 500_000),
        ("2018-05-19T08:19:27Z", SEED_NS),
        ("2018-05-19T08:19:27.123456789Z", SEED_NS + 123_456_789),
        ("2018-05-19T10:19:27.5+02:00", SEED_NS + 500_000_000),
        ("2018-05-19 08:19:27z", SEED_NS),
        (0, 0),
    ],
)
def test_timestamps_in_every_unit_and_rfc3339(raw: Any, expected: int) -> None:
    assert parse_timestamp(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        True,
        None,
        "yesterday",
        "2018-05-19",
        "2018-13-40T99:99:99Z",
        float("nan"),
        float("inf"),
        [1],
        {"s": 1},
        10**30,
    ],
)
def test_unusable_timestamps_are_refused(raw: Any) -> None:
    with pytest.raises(ItemError) as caught:
        parse_timestamp(raw)
    assert caught.value.field == "ts"


@given(st.integers(min_value=1, max_value=2**62 // 10**9))
def test_seconds_and_their_finer_units_agree(seconds: int) -> None:
    # Below the magnitude thresholds every unit of the same instant means the same instant.
    if seconds >= 100_000_000_000:
        return
    ns = seconds * 1_000_000_000
    assert parse_timestamp(seconds) == ns
    if seconds * 1000 >= 100_000_000_000:
        assert parse_timestamp(seconds * 1000) == ns
    if seconds * 1_000_000 >= 100_000_000_000_000:
        assert parse_timestamp(seconds * 1_000_000) == ns
    if ns >= 100_000_000_000_000_000:
        assert parse_timestamp(ns) == ns


@given(
    st.datetimes(
        min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
    )
)
def test_rfc3339_round_trip(moment: datetime) -> None:
    text = moment.isoformat().replace("+00:00", "Z")
    expected = int(moment.replace(microsecond=0).timestamp()) * 10**9 + moment.microsecond * 1000
    assert parse_timestamp(text) == expected


def test_missing_timestamp_means_receive_time() -> None:
    assert item_timestamp({"temperature": 1}, default=42) == 42
    assert item_timestamp({"timestamp": SEED_TS}, default=42) == SEED_NS


@pytest.mark.parametrize(
    ("kind", "value", "stored"),
    [
        (KIND_DOUBLE, 21.5, 21.5),
        (KIND_DOUBLE, 21, 21.0),
        (KIND_LONG, 2**62 + 1, 2**62 + 1),
        (KIND_LONG, 3.0, 3),
        (KIND_BOOLEAN, True, True),
        (KIND_BOOLEAN, 0, False),
        (KIND_STRING, "on", "on"),
        (KIND_JSON, {"a": [1, 2]}, '{"a":[1,2]}'),
    ],
)
def test_values_fitting_their_sensor_type(kind: int, value: Any, stored: Any) -> None:
    assert coerce(kind, value) == stored
    assert type(coerce(kind, value)) is type(stored)


@pytest.mark.parametrize(
    ("kind", "value", "phrase"),
    [
        (KIND_DOUBLE, "hot", "expected a number"),
        (KIND_DOUBLE, True, "expected a number"),
        (KIND_DOUBLE, None, "null"),
        (KIND_LONG, 3.5, "expected an integer"),
        (KIND_LONG, 2**64, "64 bits"),
        (KIND_BOOLEAN, "true", "true or false"),
        (KIND_BOOLEAN, 2, "true or false"),
        (KIND_STRING, 5, "expected text"),
        (KIND_JSON, None, "null"),
    ],
)
def test_values_that_do_not_fit_are_named(kind: int, value: Any, phrase: str) -> None:
    with pytest.raises(ItemError) as caught:
        coerce(kind, value)
    assert phrase in caught.value.message


# -- numbers sent as text ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "text", "stored"),
    [
        (KIND_DOUBLE, "91827364", 91827364.0),  # the seed's sample
        (KIND_DOUBLE, "-12.5", -12.5),
        (KIND_DOUBLE, "1e3", 1000.0),
        (KIND_DOUBLE, "2.5E-3", 0.0025),
        (KIND_DOUBLE, "0", 0.0),
        (KIND_DOUBLE, "-0", 0.0),
        (KIND_DOUBLE, "0.1", 0.1),
        (KIND_DOUBLE, "18446744073709551615", 2.0**64),  # 2**64 - 1: the largest JSON integer
        (KIND_LONG, "91827364", 91827364),
        (KIND_LONG, "-42", -42),
        (KIND_LONG, "9223372036854775807", 2**63 - 1),  # exact, not through a double
        (KIND_LONG, "-9223372036854775808", -(2**63)),
        (KIND_LONG, "9007199254740993", 2**53 + 1),  # a double would make it ...992
        (KIND_LONG, "1e3", 1000),  # as the number 1e3 would be
        (KIND_LONG, "3.0", 3),
    ],
)
def test_a_number_sent_as_text_is_stored_as_that_number(kind: int, text: str, stored: Any) -> None:
    assert coerce(kind, text) == stored
    assert type(coerce(kind, text)) is type(stored)
    # Exactly what the same number sent unquoted is stored as.
    assert coerce(kind, text) == coerce(kind, orjson.loads(text))


@pytest.mark.parametrize(
    "text",
    [
        "", " ", " 12", "12 ", "12\n", "+5", "012", "00", ".5", "5.", "-", "1e", "1e+", "e3",
        "0x1F", "0b101", "0o17", "1_000", "1,5", "NaN", "nan", "inf", "-inf", "Infinity",
        "\u0661\u0662",  # Arabic-Indic digits: int() would take them
        "\uff11\uff12",  # full-width digits
        "12abc", "true", "null", "[1]", "1" * (MAX_NUMBER_TEXT + 1),
    ],
)  # fmt: skip
@pytest.mark.parametrize("kind", [KIND_DOUBLE, KIND_LONG])
def test_text_that_is_not_exactly_a_number_is_refused(kind: int, text: str) -> None:
    assert number_from_text(text) is None
    with pytest.raises(ItemError) as caught:
        coerce(kind, text)
    assert caught.value.field == "value"
    assert "exactly a JSON number" in caught.value.message


@pytest.mark.parametrize(
    ("kind", "text", "phrase"),
    [
        (KIND_LONG, "9223372036854775808", "64 bits"),  # one past the int64 maximum
        (KIND_LONG, "-9223372036854775809", "64 bits"),
        (KIND_LONG, "12.5", "expected an integer"),
        (KIND_LONG, "1e19", "expected an integer"),
        (KIND_DOUBLE, "18446744073709551616", "64 bits"),  # refused unquoted too
        (KIND_DOUBLE, "-9223372036854775809", "64 bits"),
        (KIND_DOUBLE, "1e999", "expected a number"),  # overflows a double
        (KIND_DOUBLE, "-1e400", "expected a number"),
    ],
)
def test_a_number_in_text_follows_the_sensor_rule(kind: int, text: str, phrase: str) -> None:
    with pytest.raises(ItemError) as caught:
        coerce(kind, text)
    assert phrase in caught.value.message


@pytest.mark.parametrize("kind", [KIND_BOOLEAN, KIND_STRING])
def test_only_numeric_sensors_read_text_as_a_number(kind: int) -> None:
    if kind == KIND_STRING:
        assert coerce(kind, "1") == "1"
    else:
        with pytest.raises(ItemError):
            coerce(kind, "1")
    assert infer_kind("91827364") == KIND_STRING  # a new sensor's first value decides, as before


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_any_double_sent_as_its_json_text_comes_back_exactly(value: float) -> None:
    assert coerce(KIND_DOUBLE, orjson.dumps(value).decode()) == value


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_any_int64_sent_as_text_comes_back_exactly(value: int) -> None:
    assert coerce(KIND_LONG, str(value)) == value
    assert coerce(KIND_DOUBLE, str(value)) == float(value)


@given(st.text(max_size=80))
def test_no_text_makes_coerce_raise_anything_but_item_error(text: str) -> None:
    for kind in (KIND_DOUBLE, KIND_LONG):
        try:
            number = coerce(kind, text)
        except ItemError:
            continue
        # accepted: it was a JSON number (of 64 bits at most, if an integer)
        assert number == coerce(kind, orjson.loads(text))


def test_inferred_kinds() -> None:
    assert [infer_kind(v) for v in (True, 21, 21.5, "x", {"a": 1}, [1])] == [
        KIND_BOOLEAN, KIND_DOUBLE, KIND_DOUBLE, KIND_STRING, KIND_JSON, KIND_JSON,
    ]  # fmt: skip


def test_forms_and_events() -> None:
    assert readings({"sensor_id": 4, "timestamp": SEED_TS, "value": 21.5}) == (
        "sensor",
        [("4", 21.5)],
    )
    assert readings({"ts": 1, "values": {"temperature": 21.5, "door": True}}) == (
        "values",
        [("temperature", 21.5), ("door", True)],
    )
    assert readings({"temperature": 21.5, "ts": 1, "msg_id": "m"}) == (
        "plain",
        [("temperature", 21.5)],
    )
    assert readings({"event": "product_pickup", "product_id": 162}) is None
    assert event_type({"event": "product_pickup"}) == "product_pickup"
    for bad in ({"sensor_id": "4"}, {"values": []}, {"values": {}}, {"ts": 1}, [1], "x"):
        with pytest.raises(ItemError):
            readings(bad)
    for bad_event in ({"event": ""}, {"event": 5}, {"type": "x"}, 3):
        with pytest.raises(ItemError):
            event_type(bad_event)


def test_unwrap_single_array_and_wrapper() -> None:
    assert unwrap({"temperature": 1}) == ([{"temperature": 1}], None)
    assert unwrap({"temperature": 1, "msg_id": 7}) == ([{"temperature": 1, "msg_id": 7}], "7")
    assert unwrap([{"a": 1}, {"b": 2}]) == ([{"a": 1}, {"b": 2}], None)
    assert unwrap({"msg_id": "m-1", "items": [{"a": 1}]}) == ([{"a": 1}], "m-1")
