"""Counting failed credential checks per key (username, address) in a sliding window.

Kept in process memory: each Roost process guards itself. Behind a load balancer spreading logins
over N API processes an attacker gets at most N times the budget, which still stops brute force.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable


class FailureLimiter:
    """Refuse a key after ``max_failures`` failures within ``window_s`` seconds."""

    # Bound memory under a spray of distinct usernames/addresses.
    MAX_KEYS = 100_000

    def __init__(
        self, max_failures: int, window_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str) -> deque[float] | None:
        failures = self._failures.get(key)
        if failures is None:
            return None
        horizon = self._clock() - self.window_s
        while failures and failures[0] <= horizon:
            failures.popleft()
        if not failures:
            del self._failures[key]
            return None
        return failures

    def retry_after(self, *keys: str) -> int:
        """Seconds until the most-limited key may try again; 0 when none is limited."""
        wait = 0.0
        for key in keys:
            failures = self._recent(key)
            if failures is not None and len(failures) >= self.max_failures:
                wait = max(wait, failures[0] + self.window_s - self._clock())
        return math.ceil(wait) if wait > 0 else 0

    def record_failure(self, *keys: str) -> None:
        """Count one failed attempt against every key."""
        if len(self._failures) >= self.MAX_KEYS:
            self._evict()
        now = self._clock()
        for key in keys:
            self._failures.setdefault(key, deque()).append(now)

    def _evict(self) -> None:
        """Make room without forgetting the keys under attack right now.

        Expired entries go first, then keys that are not locked (a spray of fresh usernames has
        one failure each), oldest first; only if every key left is locked do the oldest go.
        """
        for key in list(self._failures):
            self._recent(key)
        target = self.MAX_KEYS * 9 // 10
        for key in list(self._failures):
            if len(self._failures) <= target:
                return
            if len(self._failures[key]) < self.max_failures:
                del self._failures[key]
        for key in list(self._failures)[: max(len(self._failures) - target, 0)]:
            del self._failures[key]

    def forgive(self, *keys: str) -> None:
        """Take back the latest failure of each key (an attempt counted early that succeeded)."""
        for key in keys:
            failures = self._failures.get(key)
            if failures:
                failures.pop()
            if not failures:
                self._failures.pop(key, None)

    def reset(self, *keys: str) -> None:
        """Forget the failures of keys (after a success)."""
        for key in keys:
            self._failures.pop(key, None)
