"""Subject grammar: NATS wildcard matching, overlap of consumer subjects, stream families."""

from __future__ import annotations

import pytest

from roost.bus.subjects import (
    check_pattern,
    check_subject,
    patterns_overlap,
    stream_family,
    stream_name,
    subject_matches,
)


@pytest.mark.parametrize(
    ("pattern", "subject", "matches"),
    [
        ("a.b", "a.b", True),
        ("a.b", "a.b.c", False),
        ("a.b.c", "a.b", False),
        ("a.*", "a.b", True),
        ("a.*", "a.b.c", False),
        ("a.*", "a", False),
        ("*.b", "a.b", True),
        ("a.*.c", "a.x.c", True),
        ("a.*.c", "a.x.d", False),
        ("a.>", "a.b", True),
        ("a.>", "a.b.c.d", True),
        ("a.>", "a", False),
        (">", "a", True),
        (">", "a.b", True),
        ("*.*", "a.b", True),
        ("*", "a.b", False),
        ("a.*.>", "a.b", False),
        ("a.*.>", "a.b.c", True),
    ],
)
def test_subject_matches_like_nats(pattern: str, subject: str, matches: bool) -> None:
    assert subject_matches(pattern, subject) is matches


@pytest.mark.parametrize(
    ("a", "b", "overlap"),
    [
        ("r.i.>", "r.i.x", True),
        ("r.i.>", "r.i", False),
        ("r.i.a.*", "r.i.b.*", False),
        ("r.i.*", "r.i.a", True),
        ("r.i.*", "r.i.a.b", False),
        ("r.i.*.c", "r.i.b.*", True),
        ("r.i.a", "r.i.a", True),
        ("r.i.a", "r.i.b", False),
        ("r.i.>", "r.*.x.y", True),
        ("r.>", ">", True),
    ],
)
def test_patterns_overlap(a: str, b: str, overlap: bool) -> None:
    assert patterns_overlap(a, b) is overlap
    assert patterns_overlap(b, a) is overlap


@pytest.mark.parametrize("bad", ["", "a..b", ".a", "a.", "a b", "a.\tb", "a.*", "a.>", "a.b*"])
def test_publish_subjects_are_literal(bad: str) -> None:
    with pytest.raises(ValueError):
        check_subject(bad)


@pytest.mark.parametrize("bad", ["", "a..b", "a.>.b", "a.b>", "a.*b", "a b"])
def test_subscription_patterns_are_checked(bad: str) -> None:
    with pytest.raises(ValueError):
        check_pattern(bad)


def test_stream_family_is_the_first_two_tokens() -> None:
    assert stream_family("roost.ingest.default") == "roost.ingest"
    assert stream_family("roost.ingest.>") == "roost.ingest"
    assert stream_name("roost.ingest") == "ROOST_INGEST"
    for bad in ("roost.ingest", "roost", "roost.*.x", "Roost.ingest.x", "roost.in gest.x"):
        with pytest.raises(ValueError):
            stream_family(bad)
