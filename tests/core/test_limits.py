"""The abuse limits' arithmetic, with the clock given: token buckets (burst, refill, a message
larger than the bucket), what a refused message is told to wait, and the peer address parsing
failed credential checks are counted by."""

from __future__ import annotations

import pytest

from roost.core.limits import (
    BYTES_EXCEEDED,
    MESSAGES_EXCEEDED,
    DeviceUse,
    RateRules,
    source_host,
)


def test_a_burst_of_two_seconds_then_the_rate() -> None:
    use = DeviceUse(RateRules(messages_per_s=5, bytes_per_s=0))
    start = use.stamp
    assert [use.take(10, start) for _ in range(10)] == [0] * 10
    assert use.take(10, start) == MESSAGES_EXCEEDED
    assert use.retry_after(10) == 1
    # A refusal spends nothing: 0.2 s later one message fits again (and only one).
    assert use.take(10, start + 0.21) == 0
    assert use.take(10, start + 0.21) == MESSAGES_EXCEEDED
    # Idle for long, the bucket holds a burst again, not more.
    assert [use.take(10, start + 100) for _ in range(11)] == [0] * 10 + [MESSAGES_EXCEEDED]


def test_bytes_are_metered_and_a_message_larger_than_the_bucket_leaves_it_in_debt() -> None:
    use = DeviceUse(RateRules(messages_per_s=0, bytes_per_s=1000))  # 2,000 byte bucket
    start = use.stamp
    assert use.take(1500, start) == 0
    assert use.take(600, start) == BYTES_EXCEEDED
    assert use.take(500, start) == 0
    # 5,000 bytes never fit a 2,000 byte bucket: they pass on a full one, and the debt is paid
    # at the rate before anything else passes.
    assert use.take(5000, start + 10) == 0
    assert use.take(1, start + 10) == BYTES_EXCEEDED
    assert use.retry_after(1) == 4  # 3.001 s, in whole seconds
    assert use.take(1, start + 12.9) == BYTES_EXCEEDED
    assert use.take(1, start + 13.01) == 0


def test_a_clock_read_behind_the_last_one_refills_nothing() -> None:
    use = DeviceUse(RateRules(messages_per_s=1, bytes_per_s=0))
    start = use.stamp
    assert [use.take(0, start + 5) for _ in range(2)] == [0, 0]
    assert use.take(0, start + 4) == MESSAGES_EXCEEDED


@pytest.mark.parametrize(
    ("peer", "host"),
    [
        ("127.0.0.1:5000", "127.0.0.1"),
        ("ws:10.1.2.3:443", "10.1.2.3"),
        ("::1:6000", "::1"),
        ("ws", "ws"),
        ("", ""),
    ],
)
def test_source_host(peer: str, host: str) -> None:
    assert source_host(peer) == host
