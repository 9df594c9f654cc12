"""Device presence and clock skew (pure).

A device is **online** while it holds an MQTT or WebSocket session, or while its last activity on
any door is recent: within ``missed`` heartbeat intervals (3 by default, as the issue asks). Past
that it is **offline**; a device never heard from is **never_seen**. The interval comes from the
device's model and may be overridden per device (:func:`effective_policy`).

Clock skew is how far a device's clock runs ahead of the server's (positive: ahead), estimated as
the median of recent ``device time − receive time`` samples: the median ignores the odd message
that waited in a device's offline buffer (a very negative sample) without a threshold to tune.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass
from typing import Literal

from roost.errors import InvalidInput

Presence = Literal["online", "offline", "never_seen"]
DEFAULT_INTERVAL_S = 60.0
DEFAULT_MISSED = 3
SKEW_SAMPLES = 31


@dataclass(frozen=True, slots=True)
class PresencePolicy:
    """How often a device is expected to be heard from, and how many misses make it offline."""

    interval_s: float = DEFAULT_INTERVAL_S
    missed: int = DEFAULT_MISSED

    def __post_init__(self) -> None:
        if not self.interval_s > 0:
            raise InvalidInput("heartbeat interval must be a positive number of seconds")
        if not 1 <= self.missed <= 100:
            raise InvalidInput("missed heartbeats must be between 1 and 100")

    @property
    def grace_s(self) -> float:
        """Silence after which the device is offline."""
        return self.interval_s * self.missed


def effective_policy(
    model_interval_s: float | None,
    device_interval_s: float | None,
    missed: int | None = None,
) -> PresencePolicy:
    """The device's own interval when set, else its model's, else the default."""
    interval = device_interval_s or model_interval_s or DEFAULT_INTERVAL_S
    return PresencePolicy(interval, missed or DEFAULT_MISSED)


def presence(
    *, connected: bool, last_seen: float | None, now: float, policy: PresencePolicy
) -> Presence:
    """The device's presence at ``now`` (seconds since the epoch)."""
    if connected:
        return "online"
    if last_seen is None:
        return "never_seen"
    return "online" if now - last_seen <= policy.grace_s else "offline"


def offline_at(last_seen: float, policy: PresencePolicy) -> float:
    """When a silent device becomes offline (for the sweeper's timer)."""
    return last_seen + policy.grace_s


class SkewEstimator:
    """Median of the last samples of ``device time − receive time``, in seconds."""

    def __init__(self, samples: int = SKEW_SAMPLES) -> None:
        self._samples: deque[float] = deque(maxlen=samples)

    def add(self, device_time: float, received: float) -> None:
        self._samples.append(device_time - received)

    @property
    def skew_s(self) -> float | None:
        """The estimate; None before the first sample."""
        if not self._samples:
            return None
        return statistics.median(self._samples)
