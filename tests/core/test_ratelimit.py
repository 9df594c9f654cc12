"""The failed-login limiter, driven by a fake clock."""

from __future__ import annotations

import pytest

from roost.core.ratelimit import FailureLimiter


class FakeClock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_refuses_after_max_failures_until_the_first_leaves_the_window(clock: FakeClock) -> None:
    limiter = FailureLimiter(3, 60, clock=clock)
    for _ in range(2):
        limiter.record_failure("alice|10.0.0.1")
        clock.advance(10)
    assert limiter.retry_after("alice|10.0.0.1") == 0  # two failures: still allowed
    limiter.record_failure("alice|10.0.0.1")  # failures at 1000, 1010, 1020
    assert limiter.retry_after("alice|10.0.0.1") == 40  # the first leaves the window at 1060
    clock.advance(39.5)
    assert limiter.retry_after("alice|10.0.0.1") == 1  # rounded up, never 0 while refused
    clock.advance(0.5)
    assert limiter.retry_after("alice|10.0.0.1") == 0  # the window slid past the first failure


def test_window_slides_one_failure_at_a_time(clock: FakeClock) -> None:
    limiter = FailureLimiter(2, 60, clock=clock)
    limiter.record_failure("k")  # t=1000
    clock.advance(30)
    limiter.record_failure("k")  # t=1030
    assert limiter.retry_after("k") == 30
    clock.advance(30)  # t=1060: the first is gone, one remains
    assert limiter.retry_after("k") == 0
    limiter.record_failure("k")  # t=1060: two again
    assert limiter.retry_after("k") == 30  # until the one at 1030 leaves


def test_keys_are_counted_separately(clock: FakeClock) -> None:
    limiter = FailureLimiter(2, 60, clock=clock)
    limiter.record_failure("alice|a", "a")
    limiter.record_failure("bob|a", "a")
    assert limiter.retry_after("alice|a") == 0
    assert limiter.retry_after("bob|a") == 0
    assert limiter.retry_after("a") == 60
    # retry_after over several keys answers the longest wait.
    assert limiter.retry_after("alice|a", "a") == 60
    assert limiter.retry_after("alice|b", "b") == 0


def test_reset_forgets_every_failure_of_a_key(clock: FakeClock) -> None:
    limiter = FailureLimiter(2, 60, clock=clock)
    limiter.record_failure("k", "other")
    limiter.record_failure("k", "other")
    assert limiter.retry_after("k") == 60
    limiter.reset("k")
    assert limiter.retry_after("k") == 0
    assert limiter.retry_after("other") == 60  # untouched
    limiter.reset("never-seen")  # harmless


def test_forgive_takes_back_only_the_latest_failure(clock: FakeClock) -> None:
    limiter = FailureLimiter(2, 60, clock=clock)
    limiter.record_failure("k")
    limiter.record_failure("k")
    limiter.forgive("k")
    assert limiter.retry_after("k") == 0
    limiter.record_failure("k")
    assert limiter.retry_after("k") == 60  # the first failure still counts
    limiter.forgive("k")
    limiter.forgive("k")
    limiter.forgive("k")  # more than were counted: harmless
    limiter.record_failure("k")
    assert limiter.retry_after("k") == 0


def test_old_failures_are_dropped_from_memory(clock: FakeClock) -> None:
    limiter = FailureLimiter(3, 60, clock=clock)
    limiter.record_failure("k")
    clock.advance(61)
    assert limiter.retry_after("k") == 0
    assert "k" not in limiter._failures


def test_memory_is_bounded_under_a_spray_of_keys(clock: FakeClock) -> None:
    limiter = FailureLimiter(3, 60, clock=clock)
    limiter.MAX_KEYS = 50
    for n in range(500):
        limiter.record_failure(f"user{n}|10.0.0.1")
        assert len(limiter._failures) <= limiter.MAX_KEYS
    # The limiter still works after clearing.
    for _ in range(3):
        limiter.record_failure("victim")
    assert limiter.retry_after("victim") == 60


def test_a_spray_of_new_keys_does_not_unlock_the_key_under_attack() -> None:
    clock = FakeClock()
    limiter = FailureLimiter(max_failures=3, window_s=60, clock=clock)
    limiter.MAX_KEYS = 100  # type: ignore[misc]
    for _ in range(3):
        limiter.record_failure("victim")
    assert limiter.retry_after("victim") > 0
    clock.advance(1)
    # An attacker fills the table with fresh keys, hoping the victim's counter is dropped.
    for n in range(500):
        limiter.record_failure(f"spray-{n}")
    assert limiter.retry_after("victim") > 0
    assert len(limiter._failures) <= limiter.MAX_KEYS
