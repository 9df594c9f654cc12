"""Identifier rules: slugs, tenant slugs, sensor paths, MAC addresses, generated ids."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from roost.core.ids import generate_id, is_sensor_path, is_slug, is_tenant_slug, normalise_mac

ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
SLUG_CHARS = ALNUM + "._:-"
CANONICAL_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")

slugs = st.builds(
    lambda head, tail: head + tail,
    st.sampled_from(ALNUM),
    st.text(alphabet=SLUG_CHARS, max_size=127),
)


@pytest.mark.parametrize(
    "value",
    ["a", "4", "kiosk-1", "Kiosk_1", "dev.01", "urn:dev:42", "A" * 128, "1-", "x..y", "a:b:c"],
)
def test_valid_slugs(value: str) -> None:
    assert is_slug(value)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "a b",
        "a/b",
        "a#b",
        "a+b",
        "a%b",
        "a?b",
        "a*b",
        "-a",
        ".a",
        "_a",
        ":a",
        "a" * 129,
        "x" * 200,
        "café",
        "a\n",
        "\na",
        "a\x00",
        "ａ",
        "a\tb",
        "٣",
    ],
)
def test_invalid_slugs(value: str) -> None:
    assert not is_slug(value)


@given(slugs)
def test_every_slug_from_the_alphabet_is_accepted(value: str) -> None:
    assert is_slug(value)


@given(st.text(max_size=140))
def test_a_slug_is_safe_in_topics_and_urls(value: str) -> None:
    if is_slug(value):
        assert 1 <= len(value) <= 128
        assert set(value) <= set(SLUG_CHARS) and value[0] in ALNUM
        assert not {"/", "+", "#", " ", "%"} & set(value)


@given(slugs, st.sampled_from(" /+#%?\x00\n\té"), st.integers(min_value=0, max_value=128))
def test_one_forbidden_character_spoils_a_slug(value: str, bad: str, at: int) -> None:
    at = min(at, len(value))
    assert not is_slug(value[:at] + bad + value[at:])


def test_tenant_slugs() -> None:
    for good in ("default", "acme", "a", "acme-2", "0", "a" * 64):
        assert is_tenant_slug(good), good
    for bad in ("", "Acme", "-acme", "a_b", "a.b", "a b", "a" * 65, "é"):
        assert not is_tenant_slug(bad), bad


def test_sensor_paths() -> None:
    for good in ("", "wheels", "wheels/front/left", "a.b/c_d/e-f", "4"):
        assert is_sensor_path(good), good
    for bad in ("/wheels", "wheels/", "wheels//front", "a b", "été", "a/#", "a/+", "x" * 501, "/"):
        assert not is_sensor_path(bad), bad
    assert is_sensor_path("/".join(["abcd"] * 100))  # 499 characters


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("aa:bb:cc:dd:ee:ff", "aa:bb:cc:dd:ee:ff"),
        ("AA:BB:CC:DD:EE:FF", "aa:bb:cc:dd:ee:ff"),
        ("AA-BB-CC-DD-EE-0F", "aa:bb:cc:dd:ee:0f"),
        ("aabbccddeeff", "aa:bb:cc:dd:ee:ff"),
        ("00:1A:2b:3C:4d:5E", "00:1a:2b:3c:4d:5e"),
    ],
)
def test_mac_addresses_are_normalised(raw: str, normal: str) -> None:
    assert normalise_mac(raw) == normal


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "aa:bb:cc:dd:ee",
        "aa:bb:cc:dd:ee:ff:00",
        "aa:bb-cc:dd:ee:ff",
        "aa:bb:cc:dd:eeff",
        "aabb.ccdd.eeff",
        "gg:bb:cc:dd:ee:ff",
        "aa:bb:cc:dd:ee:f",
        "aa:bb:cc:dd:ee:fff",
        " aa:bb:cc:dd:ee:ff",
        "aa:bb:cc:dd:ee:ff\n",
        "aa::bb:cc:dd:ee:ff",
        "aa bb cc dd ee ff",
        "aabbccddeef",
        "aabbccddeeff00",
        "٠٠:bb:cc:dd:ee:ff",
    ],
)
def test_bad_mac_addresses_are_refused(raw: str) -> None:
    assert normalise_mac(raw) is None


@given(st.binary(min_size=6, max_size=6), st.sampled_from([":", "-", ""]), st.booleans())
def test_any_mac_written_any_accepted_way_normalises(octets: bytes, sep: str, upper: bool) -> None:
    written = sep.join(f"{b:02x}" for b in octets)
    written = written.upper() if upper else written
    normal = normalise_mac(written)
    assert normal == ":".join(f"{b:02x}" for b in octets)
    assert normalise_mac(normal) == normal


@given(st.text(alphabet="0123456789abcdefABCDEF:-. gx", max_size=24))
def test_normalise_mac_answers_canonical_form_or_none(value: str) -> None:
    normal = normalise_mac(value)
    if normal is not None:
        assert CANONICAL_MAC.fullmatch(normal)
        assert normal.replace(":", "") == re.sub("[:-]", "", value).lower()


@given(st.text(max_size=30))
def test_normalise_mac_never_raises(value: str) -> None:
    normal = normalise_mac(value)
    assert normal is None or CANONICAL_MAC.fullmatch(normal)


def test_generated_ids_are_slugs_with_the_prefix_and_distinct() -> None:
    made = {generate_id("dev") for _ in range(1000)}
    assert len(made) == 1000
    assert all(is_slug(i) and i.startswith("dev-") for i in made)
