"""The rule for JSON integers (``roost.core.json``), with plain values and Hypothesis: what is in
range round-trips exactly with its types, the first integer out of range is found with its path
whatever the encoder wrote, floats stay floats, and nothing else is raised."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from roost.core.json import (
    INT_MAX,
    INT_MIN,
    OUT_OF_RANGE_CODE,
    IntegerOutOfRange,
    check_integers,
    field_path,
    loads,
)
from roost.errors import InvalidInput

in_range = st.integers(INT_MIN, INT_MAX)
# Biased towards the edges, and beyond them on both sides.
any_int = st.one_of(
    st.integers(),
    st.sampled_from([INT_MIN, INT_MAX, INT_MIN - 1, INT_MAX + 1, 2**63 - 1, 2**63, -(2**70)]),
    st.integers(INT_MAX - 3, INT_MAX + 3),
    st.integers(INT_MIN - 3, INT_MIN + 3),
    st.integers(-(10**400), 10**400),
)
finite = st.floats(allow_nan=False, allow_infinity=False)
keys = st.text(max_size=8)


def documents(ints: st.SearchStrategy[int]) -> st.SearchStrategy[Any]:
    """JSON values whose integers come from ``ints``."""
    leaves = st.none() | st.booleans() | ints | finite | st.text(max_size=30)
    return st.recursive(
        leaves,
        lambda inner: st.lists(inner, max_size=5) | st.dictionaries(keys, inner, max_size=5),
        max_leaves=25,
    )


def first_out_of_range(value: Any, path: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
    """The reference: the path of the first out-of-range integer, in document order."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return path if not INT_MIN <= value <= INT_MAX else None
    if isinstance(value, dict | list):
        children = value.items() if isinstance(value, dict) else enumerate(value)
        for key, child in children:
            found = first_out_of_range(child, (*path, key))
            if found is not None:
                return found
    return None


@given(documents(in_range))
def test_what_is_in_range_round_trips_exactly(document: Any) -> None:
    encoded = orjson.dumps(document)
    assert orjson.dumps(loads(encoded)) == encoded  # same values and same types (1 is not 1.0)
    assert orjson.dumps(loads(json.dumps(document))) == encoded
    check_integers(document)


@given(documents(any_int))
def test_the_first_integer_out_of_range_is_found_with_its_path(document: Any) -> None:
    expected = first_out_of_range(document)
    text = json.dumps(document)
    for raw in (text, text.encode(), bytearray(text.encode()), memoryview(text.encode())):
        if expected is None:
            assert orjson.dumps(loads(raw)) == orjson.dumps(document)
        else:
            with pytest.raises(IntegerOutOfRange) as caught:
                loads(raw)
            assert caught.value.path == expected
    if expected is None:
        check_integers(document)
    else:
        with pytest.raises(IntegerOutOfRange) as caught:
            check_integers(document, "body")
        assert caught.value.path == ("body", *expected)


@given(finite)
def test_a_float_of_any_magnitude_stays_a_float(number: float) -> None:
    for text in (json.dumps(number), orjson.dumps(number).decode(), repr(number)):
        value = loads(f'{{"v": {text}}}'.encode())["v"]
        assert type(value) is float and value == number


@given(st.binary(max_size=200) | st.text(alphabet='0123456789-.eE[]{},:" 9', max_size=80))
def test_nothing_but_malformed_json_or_the_rule_is_raised(data: bytes | str) -> None:
    try:
        loads(data)
    except (orjson.JSONDecodeError, IntegerOutOfRange):
        pass


def test_the_edges_and_one_beyond() -> None:
    assert loads(b"[9223372036854775807,-9223372036854775808,18446744073709551615]") == [
        2**63 - 1,
        -(2**63),
        2**64 - 1,
    ]
    for text, value in ((b"18446744073709551616", 2**64), (b"-9223372036854775809", -(2**63) - 1)):
        with pytest.raises(IntegerOutOfRange) as caught:
            loads(text)
        assert caught.value.value == value and caught.value.path == ()


def test_a_refusal_names_the_field_for_every_door() -> None:
    with pytest.raises(IntegerOutOfRange) as caught:
        loads(b'{"result": {"values": [1, 2, 36893488147419103232]}}')
    error = caught.value
    assert isinstance(error, InvalidInput) and error.status == 422
    assert error.field == "result.values.2"
    assert error.detail.startswith("result.values.2: the integer 36893488147419103232 is outside")
    assert error.errors == [
        {"field": "result.values.2", "message": error.message, "code": OUT_OF_RANGE_CODE}
    ]
    assert field_path(()) == "" and field_path(("a", 0, "b")) == "a.0.b"


def test_lookalikes_are_not_integers() -> None:
    # Long digit runs in text, fractions and exponents are not integer literals.
    document = {
        "serial": "123456789012345678901234567890",
        "fraction": 0.99999999999999999999999,
        "exponent": 12345678901234567890e0,
        "nanoseconds": 1716200000000000000,
        "u64": 9999999999999999999,
    }
    assert loads(json.dumps(document)) == document
    assert type(loads(b"123456789012345678901e0")) is float


def test_an_integer_too_long_for_a_double_is_out_of_range_not_malformed() -> None:
    with pytest.raises(IntegerOutOfRange) as caught:
        loads(b'{"n": 1' + b"0" * 400 + b"}")
    assert caught.value.field == "n" and "401 digits" in caught.value.message
    with pytest.raises(orjson.JSONDecodeError):
        loads(b'{"n": 1e400}')  # a float literal too big for a double stays malformed


def test_deep_documents_do_not_exhaust_the_stack() -> None:
    deep: Any = 2**64
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(IntegerOutOfRange) as caught:
        check_integers(deep)
    assert len(caught.value.path) == 5000
