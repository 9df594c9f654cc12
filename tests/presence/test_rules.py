"""Presence from sessions and activity, policies, and the clock-skew estimate."""

from __future__ import annotations

import pytest

from roost.errors import InvalidInput
from roost.presence.rules import (
    PresencePolicy,
    SkewEstimator,
    effective_policy,
    offline_at,
    presence,
)

NOW = 1_700_000_000.0


def test_a_device_is_offline_after_missing_three_heartbeats() -> None:
    policy = PresencePolicy(interval_s=10)
    assert presence(connected=False, last_seen=NOW - 29.9, now=NOW, policy=policy) == "online"
    assert presence(connected=False, last_seen=NOW - 30.0, now=NOW, policy=policy) == "online"
    assert presence(connected=False, last_seen=NOW - 30.1, now=NOW, policy=policy) == "offline"
    assert offline_at(NOW, policy) == NOW + 30


def test_a_session_means_online_and_silence_from_the_start_means_never_seen() -> None:
    policy = PresencePolicy()
    assert presence(connected=True, last_seen=None, now=NOW, policy=policy) == "online"
    assert presence(connected=True, last_seen=NOW - 1e6, now=NOW, policy=policy) == "online"
    assert presence(connected=False, last_seen=None, now=NOW, policy=policy) == "never_seen"


def test_the_device_interval_overrides_the_model_and_the_default_applies_last() -> None:
    assert effective_policy(120, 15).interval_s == 15
    assert effective_policy(120, None).interval_s == 120
    assert effective_policy(None, None) == PresencePolicy(60.0, 3)
    assert effective_policy(None, 5, missed=5).grace_s == 25


@pytest.mark.parametrize(("interval", "missed"), [(0, 3), (-1, 3), (10, 0), (10, 101)])
def test_bad_policies_are_refused(interval: float, missed: int) -> None:
    with pytest.raises(InvalidInput):
        PresencePolicy(interval, missed)


def test_skew_is_the_median_so_a_replayed_backlog_does_not_move_it() -> None:
    skew = SkewEstimator(samples=5)
    assert skew.skew_s is None
    for delay in (2.0, 2.1, 1.9):  # a device clock 2 s ahead
        skew.add(NOW + delay, NOW)
    skew.add(NOW - 3600, NOW)  # an hour-old message forwarded from the device's buffer
    assert skew.skew_s == pytest.approx(1.95)
    for _ in range(5):
        skew.add(NOW - 0.5, NOW)  # the clock was corrected: only recent samples count
    assert skew.skew_s == pytest.approx(-0.5)
