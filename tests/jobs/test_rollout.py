"""Rollout rates (incl. exponential), abort rules and retry decisions, with a fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roost.errors import InvalidInput
from roost.jobs.lifecycle import ExecutionStatus
from roost.jobs.rollout import (
    AbortRule,
    FailureType,
    RetryRule,
    Rollout,
    abort_rule_hit,
    burst_for,
    next_release_at,
    parse_abort,
    parse_retries,
    parse_rollout,
    releases_due,
    retry_allowed,
)

E = ExecutionStatus
T0 = 1_800_000_000.0


class FakeRollout:
    """Runs passes at given times and records every release time (a fake clock)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.tat: float | None = None
        self.releases: list[float] = []

    def pass_at(self, now: float, waiting: int = 10_000) -> int:
        count, self.tat = releases_due(now, self.tat, self.rate, waiting)
        self.releases += [now] * count
        return count


# -- constant rate -----------------------------------------------------------------------------


def test_first_release_is_immediate_then_one_per_interval() -> None:
    fake = FakeRollout(60)
    assert fake.pass_at(T0) == 1
    assert fake.pass_at(T0 + 0.5) == 0
    assert next_release_at(fake.tat, 60) == pytest.approx(T0 + 1)
    assert fake.pass_at(T0 + 1.0) == 1
    assert fake.pass_at(T0 + 1.2) == 0


def test_passes_every_tenth_of_a_second_release_sixty_per_minute() -> None:
    fake = FakeRollout(60)
    for i in range(600):  # one minute of passes
        fake.pass_at(T0 + i * 0.1)
    assert len(fake.releases) == 60


def test_a_late_pass_does_not_catch_up_beyond_the_burst() -> None:
    fake = FakeRollout(60)
    fake.pass_at(T0)
    # Nothing ran for ten seconds: with a burst of 1, one release now, not ten.
    assert fake.pass_at(T0 + 10) == 1
    assert fake.pass_at(T0 + 10.5) == 0


def test_high_rates_release_a_seconds_worth_at_once() -> None:
    assert burst_for(600) == 10
    fake = FakeRollout(600)
    assert fake.pass_at(T0) == 10
    assert fake.pass_at(T0 + 0.05) == 0
    assert fake.pass_at(T0 + 0.1) == 1


def test_nothing_waiting_releases_nothing_and_keeps_the_state() -> None:
    count, tat = releases_due(T0, 123.0, 60, 0)
    assert (count, tat) == (0, 123.0)


@settings(max_examples=200, deadline=None)
@given(
    rate=st.integers(min_value=1, max_value=1000),
    gaps=st.lists(st.floats(min_value=0.0, max_value=5.0), min_size=1, max_size=200),
    waiting=st.lists(st.integers(min_value=0, max_value=50), min_size=1, max_size=200),
)
def test_no_window_exceeds_the_rate_plus_the_burst(
    rate: int, gaps: list[float], waiting: list[int]
) -> None:
    fake = FakeRollout(rate)
    now = T0
    for gap, wanted in zip(gaps, waiting * (len(gaps) // len(waiting) + 1), strict=False):
        now += gap
        assert fake.pass_at(now, wanted) <= wanted
    times = fake.releases
    burst = burst_for(rate)
    for i, start in enumerate(times):
        for j in range(i, len(times)):
            window = times[j] - start
            assert j - i + 1 <= window * rate / 60 + burst + 1e-6


# -- exponential -------------------------------------------------------------------------------


def test_exponential_rate_rises_with_notified_things_up_to_the_maximum() -> None:
    rollout = parse_rollout(
        {
            "max_per_minute": 100,
            "exponential": {
                "base_rate_per_minute": 10,
                "increment_factor": 2,
                "rate_increase_criteria": {"number_of_notified_things": 5},
            },
        }
    )
    assert rollout.rate(notified=0, succeeded=0) == 10
    assert rollout.rate(notified=4, succeeded=0) == 10
    assert rollout.rate(notified=5, succeeded=0) == 20
    assert rollout.rate(notified=12, succeeded=0) == 40
    assert rollout.rate(notified=1000, succeeded=0) == 100


def test_exponential_rate_on_succeeded_things_ignores_notified() -> None:
    rollout = parse_rollout(
        {
            "exponential": {
                "base_rate_per_minute": 3,
                "increment_factor": 1.5,
                "rate_increase_criteria": {"number_of_succeeded_things": 2},
            }
        }
    )
    assert rollout.rate(notified=50, succeeded=1) == 3
    assert rollout.rate(notified=50, succeeded=4) == pytest.approx(3 * 1.5**2)


def test_no_rollout_is_unlimited() -> None:
    assert not parse_rollout(None).limited
    assert Rollout().rate(5, 5) is None


@pytest.mark.parametrize(
    ("raw", "phrase"),
    [
        ({"max_per_minute": 0}, "max_per_minute"),
        ({"max_per_minute": 1001}, "max_per_minute"),
        ({"max_per_minute": True}, "max_per_minute"),
        ({"exponential": {"base_rate_per_minute": 5, "increment_factor": 9}}, "increment_factor"),
        (
            {"exponential": {"base_rate_per_minute": 5, "increment_factor": 2}},
            "rate_increase_criteria",
        ),
        (
            {
                "exponential": {
                    "base_rate_per_minute": 5,
                    "increment_factor": 2,
                    "rate_increase_criteria": {"number_of_notified_things": 0},
                }
            },
            "positive",
        ),
        (
            {
                "max_per_minute": 2,
                "exponential": {
                    "base_rate_per_minute": 5,
                    "increment_factor": 2,
                    "rate_increase_criteria": {"number_of_notified_things": 1},
                },
            },
            "at least",
        ),
    ],
)
def test_bad_rollouts_are_refused_saying_why(raw: dict[str, object], phrase: str) -> None:
    with pytest.raises(InvalidInput, match=phrase):
        parse_rollout(raw)


# -- abort -------------------------------------------------------------------------------------


HALF_FAILED_AFTER_4 = AbortRule(FailureType.FAILED, 4, 50)


def test_abort_waits_for_the_minimum_executed() -> None:
    assert abort_rule_hit([HALF_FAILED_AFTER_4], {"FAILED": 3}) is None
    assert abort_rule_hit([HALF_FAILED_AFTER_4], {"FAILED": 2, "SUCCEEDED": 2}) is (
        HALF_FAILED_AFTER_4
    )


def test_abort_threshold_is_a_share_of_the_executed() -> None:
    counts = {"FAILED": 1, "SUCCEEDED": 3, "QUEUED": 100, "CANCELED": 7}
    assert abort_rule_hit([HALF_FAILED_AFTER_4], counts) is None
    assert abort_rule_hit([AbortRule(FailureType.FAILED, 4, 25)], counts) is not None


def test_abort_counts_only_its_failure_type_or_all() -> None:
    counts = {"REJECTED": 2, "TIMED_OUT": 1, "SUCCEEDED": 1}
    assert abort_rule_hit([HALF_FAILED_AFTER_4], counts) is None
    assert abort_rule_hit([AbortRule(FailureType.REJECTED, 4, 50)], counts) is not None
    assert abort_rule_hit([AbortRule(FailureType.ALL, 4, 75)], counts) is not None


@given(
    failed=st.integers(0, 50),
    succeeded=st.integers(0, 50),
    pct=st.integers(1, 100),
    minimum=st.integers(1, 60),
)
def test_abort_decision_matches_the_definition(
    failed: int, succeeded: int, pct: int, minimum: int
) -> None:
    rule = AbortRule(FailureType.FAILED, minimum, pct)
    executed = failed + succeeded
    expected = executed >= minimum and failed * 100 >= pct * executed
    assert (abort_rule_hit([rule], {"FAILED": failed, "SUCCEEDED": succeeded}) is rule) == expected


def test_abort_rules_are_checked() -> None:
    rules = parse_abort(
        [{"failure_type": "FAILED", "action": "CANCEL", "min_executed": 4, "threshold_pct": 50}]
    )
    assert rules == [HALF_FAILED_AFTER_4]
    for bad, phrase in [
        ([{"failure_type": "OOPS", "min_executed": 1, "threshold_pct": 5}], "failure_type"),
        ([{"failure_type": "ALL", "min_executed": 0, "threshold_pct": 5}], "min_executed"),
        ([{"failure_type": "ALL", "min_executed": 1, "threshold_pct": 101}], "threshold_pct"),
        ([{"failure_type": "ALL", "min_executed": 1, "threshold_pct": 5, "action": "X"}], "CANCEL"),
        ({"failure_type": "ALL"}, "list"),
    ]:
        with pytest.raises(InvalidInput, match=phrase):
            parse_abort(bad)


# -- retries -----------------------------------------------------------------------------------


def test_retries_count_per_failure_type() -> None:
    rules = [RetryRule(FailureType.FAILED, 2)]
    assert retry_allowed(rules, E.FAILED, {})
    assert retry_allowed(rules, E.FAILED, {"FAILED": 1})
    assert not retry_allowed(rules, E.FAILED, {"FAILED": 2})
    assert not retry_allowed(rules, E.TIMED_OUT, {})


def test_all_counts_every_retry_and_every_covering_rule_must_allow() -> None:
    rules = [RetryRule(FailureType.ALL, 2), RetryRule(FailureType.TIMED_OUT, 5)]
    assert retry_allowed(rules, E.TIMED_OUT, {"FAILED": 1})
    assert not retry_allowed(rules, E.TIMED_OUT, {"FAILED": 1, "TIMED_OUT": 1})
    assert not retry_allowed([RetryRule(FailureType.FAILED, 0)], E.FAILED, {})


def test_rejected_and_successful_outcomes_are_never_retried() -> None:
    rules = [RetryRule(FailureType.ALL, 10)]
    for outcome in (E.REJECTED, E.SUCCEEDED, E.CANCELED, E.REMOVED):
        assert not retry_allowed(rules, outcome, {})


def test_retry_rules_are_checked() -> None:
    assert parse_retries([{"failure_type": "TIMED_OUT", "max_attempts": 10}]) == [
        RetryRule(FailureType.TIMED_OUT, 10)
    ]
    for bad, phrase in [
        ([{"failure_type": "TIMED_OUT", "max_attempts": 11}], "max_attempts"),
        ([{"failure_type": "REJECTED", "max_attempts": 1}], "failure_type"),
        (
            [
                {"failure_type": "FAILED", "max_attempts": 1},
                {"failure_type": "FAILED", "max_attempts": 2},
            ],
            "second rule",
        ),
        ([{"failure_type": "FAILED", "max_attempts": 1, "x": 1}], "unknown"),
    ]:
        with pytest.raises(InvalidInput, match=phrase):
            parse_retries(bad)
