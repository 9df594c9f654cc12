"""Dynamic group filters: shape checks (validate_filter) and membership (matches)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from roost.errors import InvalidInput
from roost.inventory.rules import FILTER_FIELDS, matches, validate_filter

text = st.text(min_size=1, max_size=8)
tags = st.dictionaries(text, text, max_size=4)
devices = st.fixed_dictionaries(
    {f: st.none() | st.sampled_from(["a", "b"]) for f in FILTER_FIELDS},
    optional={"tags": tags},
)
rules = st.fixed_dictionaries(
    {}, optional={**{f: st.sampled_from(["a", "b"]) for f in FILTER_FIELDS}, "tags": tags}
)


def test_valid_filters_are_normalised() -> None:
    assert validate_filter({"site_id": "paris"}) == {"site_id": "paris"}
    assert validate_filter({"tags": {"env": "prod"}}) == {"tags": {"env": "prod"}}
    # null fields and empty tags are dropped; the rest is kept as given.
    assert validate_filter({"site_id": "paris", "model_id": None, "tags": {}}) == {
        "site_id": "paris"
    }
    every = {
        "site_id": "s",
        "model_id": "m",
        "firmware_id": "f",
        "customer_id": "c",
        "tags": {"a": "1", "b": ""},
    }
    assert validate_filter(every) == every
    source = {"tags": {"env": "prod"}}
    clean = validate_filter(source)
    clean["tags"]["env"] = "dev"
    assert source == {"tags": {"env": "prod"}}, "the answer must not share the caller's dict"


@pytest.mark.parametrize(
    ("rule", "phrase"),
    [
        (None, "object"),
        ("site_id", "object"),
        (["site_id"], "object"),
        ({}, "at least one"),
        ({"site_id": None}, "at least one"),
        ({"tags": {}}, "at least one"),
        ({"tags": None}, "at least one"),
        ({"colour": "red"}, "unknown keys ['colour']"),
        ({"site_id": "s", "site": "s"}, "unknown keys ['site']"),
        ({"site_id": 3}, "filter.site_id"),
        ({"customer_id": ["a"]}, "filter.customer_id"),
        ({"tags": ["env"]}, "filter.tags"),
        ({"tags": "env:prod"}, "filter.tags"),
        ({"tags": {"env": 1}}, "filter.tags"),
        ({"tags": {"env": None}}, "filter.tags"),
        ({"tags": {1: "x"}}, "filter.tags"),
    ],
)
def test_invalid_filters_are_refused_with_a_reason(rule: Any, phrase: str) -> None:
    with pytest.raises(InvalidInput) as info:
        validate_filter(rule)
    assert phrase in info.value.detail


def test_matches_fields_and_tags() -> None:
    device = {
        "site_id": "paris",
        "model_id": "k1",
        "firmware_id": None,
        "customer_id": None,
        "tags": {"env": "prod", "zone": "n"},
    }
    assert matches({"site_id": "paris"}, device)
    assert matches({"site_id": "paris", "model_id": "k1"}, device)
    assert not matches({"site_id": "paris", "model_id": "k2"}, device)
    assert not matches({"firmware_id": "fw1"}, device)
    assert matches({"tags": {"env": "prod"}}, device)
    assert matches({"tags": {"env": "prod", "zone": "n"}, "site_id": "paris"}, device)
    assert not matches({"tags": {"env": "dev"}}, device)
    assert not matches({"tags": {"rack": "1"}}, device)
    assert not matches({"tags": {"env": "prod"}, "site_id": "lyon"}, device)
    # A tag's value must be equal, not merely present; an empty value is a value.
    assert not matches({"tags": {"env": ""}}, device)
    assert matches({"tags": {"env": ""}}, {**device, "tags": {"env": ""}})
    # A device without tags (or with tags null) matches no tag rule.
    assert not matches({"tags": {"env": "prod"}}, {"site_id": "paris"})
    assert not matches({"tags": {"env": "prod"}}, {"tags": None})
    assert matches({"site_id": "paris"}, {"site_id": "paris", "tags": None})


@given(devices, rules)
def test_matches_is_every_part_of_the_rule(device: dict[str, Any], rule: dict[str, Any]) -> None:
    expected = all(device.get(f) == rule[f] for f in FILTER_FIELDS if f in rule) and all(
        (device.get("tags") or {}).get(k) == v for k, v in (rule.get("tags") or {}).items()
    )
    assert matches(rule, device) is expected


@given(devices)
def test_a_rule_made_from_a_device_matches_it(device: dict[str, Any]) -> None:
    rule = {f: device[f] for f in FILTER_FIELDS if device[f] is not None}
    if device.get("tags"):
        rule["tags"] = dict(device["tags"])
    if not rule:
        return
    clean = validate_filter(rule)
    assert clean == rule and validate_filter(clean) == clean
    assert matches(clean, device)
    # Changing any one tag the rule names breaks the match.
    for key in clean.get("tags", {}):
        changed = {**device, "tags": {**device["tags"], key: device["tags"][key] + "!"}}
        assert not matches(clean, changed)
