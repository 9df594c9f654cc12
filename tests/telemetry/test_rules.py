"""Payload normalisation: forms, timestamps by magnitude and RFC 3339, values against types."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

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
    ItemError,
    coerce,
    event_type,
    infer_kind,
    item_timestamp,
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
        (KIND_DOUBLE, "21.5", "expected a number"),
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
