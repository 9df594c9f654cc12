"""Abuse limits: what the per-device rate check costs a message on the hot path.

Run::

    .venv/bin/python -m bench.device_limits [--messages 1000000]

Times :meth:`roost.core.limits.DeviceUse.take` (messages and bytes buckets both on, so the
fullest check) over N calls on buckets that never run dry, and prints it beside two peers timed in
the same run: the bare ``time.monotonic()`` call the check makes, an empty method call (the floor
of any check), and the check as the
MQTT door runs it with limits off (a ``None`` test on the session's meter). Timed in process CPU
time, so that other work on a shared machine inflates the figures less.
"""

from __future__ import annotations

import argparse
import time

from roost.core.limits import DeviceUse, RateRules


class _Empty:
    """A method that does nothing: the call overhead any check pays."""

    __slots__ = ()

    def take(self, nbytes: int) -> int:
        return 0


def _per_call_ns(elapsed_s: float, calls: int) -> float:
    return elapsed_s / calls * 1e9


def run(messages: int) -> dict[str, float]:
    """Nanoseconds per call of the check and its peers."""
    # Rates so high the buckets never run dry: the timing is the check, not a refusal.
    use = DeviceUse(RateRules(messages_per_s=1e12, bytes_per_s=1e15))
    take = use.take
    start = time.process_time()
    for _ in range(messages):
        take(120)
    on = time.process_time() - start

    now = time.monotonic()
    start = time.process_time()
    for i in range(messages):
        take(120, now + i * 1e-9)
    given = time.process_time() - start

    monotonic = time.monotonic
    start = time.process_time()
    for _ in range(messages):
        monotonic()
    floor = time.process_time() - start

    empty = _Empty().take
    start = time.process_time()
    for _ in range(messages):
        empty(120)
    call = time.process_time() - start

    meter: DeviceUse | None = None
    start = time.process_time()
    for _ in range(messages):
        if meter is not None:
            meter.take(120)
    off = time.process_time() - start

    start = time.process_time()
    for _ in range(messages):
        pass
    loop = time.process_time() - start
    return {
        "take (messages + bytes)": _per_call_ns(on - loop, messages),
        "take, clock read given": _per_call_ns(given - loop, messages),
        "peer: time.monotonic()": _per_call_ns(floor - loop, messages),
        "peer: an empty method call": _per_call_ns(call - loop, messages),
        "limits off (None check)": _per_call_ns(max(off - loop, 0.0), messages),
    }


def main() -> None:
    """Print ns per message of the rate check beside its peers."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="a smoke run (100,000 calls)")
    args = parser.parse_args()
    figures = run(100_000 if args.quick else args.messages)
    for name, ns in figures.items():
        print(f"{name:28s} {ns:8.1f} ns/message")


if __name__ == "__main__":
    main()
