"""State documents: merge, delete, delta, metadata, versions and limits (AWS Shadow semantics)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from roost.errors import Conflict, InvalidInput, PayloadTooLarge
from roost.state.rules import StateDocument, StateLimits, apply_update, delta

T0, T1, T2 = 1_000, 2_000, 3_000


def test_desired_change_makes_a_delta_that_a_report_clears() -> None:
    doc = apply_update(StateDocument(), {"desired": {"light": "on", "level": 3}}, now_ms=T0)
    assert (doc.version, doc.delta) == (1, {"light": "on", "level": 3})
    doc = apply_update(doc, {"reported": {"light": "on", "fw": "1.2"}}, now_ms=T1)
    assert (doc.version, doc.delta) == (2, {"level": 3})
    doc = apply_update(doc, {"reported": {"level": 3.0}}, now_ms=T2)  # 3 and 3.0: one number
    assert doc.delta == {}
    assert doc.as_dict()["reported"] == {"light": "on", "fw": "1.2", "level": 3.0}


def test_objects_merge_recursively_and_arrays_are_compared_whole() -> None:
    doc = apply_update(
        StateDocument(),
        {
            "desired": {"screen": {"brightness": 80, "playlist": ["a", "b"]}},
            "reported": {"screen": {"brightness": 80, "playlist": ["a"], "model": "x"}},
        },
        now_ms=T0,
    )
    assert doc.delta == {"screen": {"playlist": ["a", "b"]}}
    doc = apply_update(doc, {"reported": {"screen": {"playlist": ["a", "b"]}}}, now_ms=T1)
    assert doc.delta == {}
    assert doc.reported == {"screen": {"brightness": 80, "playlist": ["a", "b"], "model": "x"}}


def test_null_deletes_a_field_an_emptied_object_and_a_whole_section() -> None:
    doc = apply_update(StateDocument(), {"desired": {"a": 1, "b": {"c": 2}, "d": 4}}, now_ms=T0)
    doc = apply_update(doc, {"desired": {"a": None, "b": {"c": None}}}, now_ms=T1)
    assert doc.desired == {"d": 4}
    assert doc.metadata["desired"] == {"d": {"timestamp": T0}}
    doc = apply_update(doc, {"desired": None}, now_ms=T2)
    assert (doc.desired, doc.metadata["desired"], doc.delta) == ({}, {}, {})


def test_metadata_keeps_when_each_leaf_was_written() -> None:
    doc = apply_update(StateDocument(), {"reported": {"t": 1, "net": {"ip": "a"}}}, now_ms=T0)
    doc = apply_update(doc, {"reported": {"net": {"rssi": -60}}}, now_ms=T1)
    assert doc.metadata["reported"] == {
        "t": {"timestamp": T0},
        "net": {"ip": {"timestamp": T0}, "rssi": {"timestamp": T1}},
    }
    # A scalar replacing an object (and back) takes the new shape's metadata.
    doc = apply_update(doc, {"reported": {"net": "down"}}, now_ms=T2)
    assert doc.metadata["reported"]["net"] == {"timestamp": T2}


def test_a_stale_version_is_refused_and_the_document_is_untouched() -> None:
    doc = apply_update(StateDocument(), {"desired": {"x": 1}}, now_ms=T0)
    doc = apply_update(doc, {"desired": {"x": 2}, "version": 1}, now_ms=T1)
    assert doc.version == 2
    with pytest.raises(Conflict, match="version 1 is stale"):
        apply_update(doc, {"desired": {"x": 3}, "version": 1}, now_ms=T2)
    assert doc.desired == {"x": 2}


@pytest.mark.parametrize(
    ("update", "phrase"),
    [
        ([], "JSON object"),
        ({}, "needs desired or reported"),
        ({"desired": {"a": 1}, "color": "red"}, "unknown state field"),
        ({"desired": [1]}, "desired must be an object"),
        ({"reported": "on"}, "reported must be an object"),
        ({"desired": {"a": 1}, "version": "3"}, "version must be"),
        ({"desired": {"a": 1}, "version": True}, "version must be"),
        ({"desired": {"": 1}}, "non-empty strings"),
        ({"desired": {"a": {"b": {"c": {"d": {"e": {"f": {"g": 1}}}}}}}}, "deeper than 6"),
    ],
)
def test_malformed_updates_get_clear_errors(update: Any, phrase: str) -> None:
    with pytest.raises(InvalidInput, match=phrase):
        apply_update(StateDocument(), update, now_ms=T0)


def test_size_is_limited() -> None:
    limits = StateLimits(max_bytes=100)
    doc = apply_update(StateDocument(), {"desired": {"a": "x" * 50}}, now_ms=T0, limits=limits)
    with pytest.raises(PayloadTooLarge, match="limit is 100"):
        apply_update(doc, {"reported": {"b": "y" * 50}}, now_ms=T1, limits=limits)
    assert doc.reported == {}


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.sampled_from(["a", "b"]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["p", "q", "r"]), inner, max_size=3)
    ),
    max_leaves=12,
)
OBJECTS = st.dictionaries(st.sampled_from(["p", "q", "r", "s"]), JSON, max_size=4)


@given(desired=OBJECTS, reported=OBJECTS)
def test_reporting_the_delta_clears_it(desired: dict[str, Any], reported: dict[str, Any]) -> None:
    doc = apply_update(
        StateDocument(),
        {"desired": desired, "reported": reported},
        now_ms=T0,
        limits=StateLimits(max_bytes=1 << 20),
    )
    assert delta(doc.desired, doc.desired) == {}
    doc = apply_update(doc, {"reported": doc.delta}, now_ms=T1, limits=StateLimits(1 << 20))
    assert doc.delta == {}
    assert doc.version == 2


@pytest.mark.parametrize(
    "patch",
    [{"a": "x\x00y"}, {"a\x00": 1}, {"a": ["ok", {"b": "\x00"}]}],
    ids=["value", "key", "nested"],
)
def test_nul_characters_are_refused_because_postgresql_cannot_store_them(patch: Any) -> None:
    with pytest.raises(InvalidInput, match="NUL"):
        apply_update(StateDocument(), {"reported": patch}, now_ms=T0)


def test_numbers_beyond_64_bits_are_refused_as_input_not_crashed_on() -> None:
    with pytest.raises(InvalidInput, match="JSON"):
        apply_update(StateDocument(), {"desired": {"big": 10**30}}, now_ms=T0)
